"""finn_demo/hw/requant.py on the suite's W8A8 build (finn_build_run, `--requant` on by default):
Thresholding_rtl layers become Requant_rtl only where the multiply-add computes their thresholds
on every input, the others stay with the reason, and a changed parameter fails the proof,
naming the layer; and on staircases like the 224x224 builds' hardest (a wide step, thresholds
clipped to an unsigned input's range), on every input."""
import json

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.general.multithreshold import multithreshold

from finn_demo.testing.suite import import_finn_steps

import_finn_steps()  # skips without FINN, except in CI
from finn.util.basic import getHWCustomOp  # noqa: E402

from finn_demo.hw import finn_builder, requant, requant_rtl  # noqa: E402

EXHAUSTIVE_BITS = 14  # converted layers with inputs this narrow are checked on every input


@pytest.fixture(scope="module")
def minimized(finn_build_run):
    """FINN's graph after bit-width minimization, before step_requant."""
    result, out_dir = finn_build_run
    finn_builder.prepare(out_dir)  # FINN's settings (Requant_rtl's helpers read them)
    model = ModelWrapper(str(out_dir / "intermediate_models" / "step_minimize_bit_width.onnx"))
    return model


@pytest.fixture(scope="module")
def converted(minimized):
    """requant.convert on a copy of the minimized graph: (model, kept, staircases)."""
    return requant.convert(ModelWrapper(minimized.model.SerializeToString()))


def test_the_build_converts_some_layers_keeps_the_others_and_says_why(finn_build_run):
    result, out_dir = finn_build_run
    assert result.failures == []  # the proof after folding included
    counts = result.estimates["requant"]
    design = ModelWrapper(str(out_dir / "hw_layers.onnx"))
    ops = [node.op_type for node in design.graph.node]
    assert counts["Requant_rtl"] == ops.count("Requant_rtl") >= 1
    assert counts["Thresholding_rtl"] == ops.count("Thresholding_rtl") == len(counts["kept"])
    assert all(why for why in counts["kept"].values())
    folding = json.loads((out_dir / "folding_config.json").read_text())
    assert {folding[node.name]["mem_mode"] for node in design.graph.node
            if node.op_type == "Requant_rtl"} == {requant.MEM_MODE}


def test_a_converted_layer_computes_its_thresholds_on_every_input(converted):
    """Independently of the proof: qonnx's MultiThreshold against FINN's Python Requant model and
    the RTL's integers, on every input of each converted layer with a narrow input."""
    model, _, staircases = converted
    checked = 0
    for node in model.graph.node:
        if node.op_type != "Requant_rtl":
            continue
        inst = getHWCustomOp(node)
        idt, odt = inst.get_input_datatype(0), inst.get_output_datatype()
        if idt.bitwidth() > EXHAUSTIVE_BITS:
            continue
        thresholds, act_val = staircases[node.output[0]]
        channels = inst.get_nodeattr("NumChannels")
        inputs = np.arange(idt.min(), idt.max() + 1, dtype=np.float32)[:, None].repeat(channels, 1)
        expected = multithreshold(inputs, thresholds.astype(np.float32), 1.0, act_val)
        scale, bias = inst.get_scale(model), inst.get_bias(model)
        assert np.array_equal(requant.python_model(node, inputs, scale, bias), expected)
        integers = requant.rtl_integers(inst, model)
        assert np.array_equal(requant.rtl_model(inputs, integers, odt).astype(np.float32), expected)
        checked += 1
    assert checked >= 1


def test_a_layer_whose_thresholds_are_not_a_uniform_staircase_stays_thresholding(minimized, converted):
    _, kept, staircases = converted
    model = ModelWrapper(minimized.model.SerializeToString())
    convertible = [node for node in model.graph.node if node.op_type == "Thresholding_rtl"
                   and node.name not in kept]
    node = convertible[0]
    thresholds = model.get_initializer(node.input[1]).copy()
    middle = thresholds.shape[-1] // 2
    thresholds[0, middle] += 3  # one step of one channel off the staircase by 3 inputs
    model.set_initializer(node.input[1], thresholds)
    model, kept_now, _ = requant.convert(model)
    assert set(kept_now) == set(kept) | {node.name}
    assert kept_now[node.name].startswith("no ")


def test_a_changed_requant_parameter_fails_the_proof_naming_the_layer(converted):
    model, _, staircases = converted
    model = ModelWrapper(model.model.SerializeToString())
    assert requant.proof_failures(model, staircases) == []
    node = next(node for node in model.graph.node if node.op_type == "Requant_rtl")
    bias = model.get_initializer(node.input[2]).copy()
    bias[-1] += 1.0  # one output level on the last channel
    model.set_initializer(node.input[2], bias)
    (failure,) = requant.proof_failures(model, staircases)
    assert failure.startswith(f"requant: {node.name} ") and "1 of" in failure


def staircase_line(t0, step, low, high, count=255):
    """Integer thresholds ceil(t0 + k*step), clipped to the input range as FINN leaves them."""
    return np.clip(np.ceil(t0 + np.arange(count) * step), low, high + 1)[None, :]


@pytest.mark.parametrize("t0,step,low,high,needs", [
    # 8-bit output over a wide accumulator: a 24-bit scale mantissa cannot follow 255 steps of
    # 2074 inputs; the project's core takes the wider scale
    (-264386.4, 2073.615942028985, -2 ** 23, 2 ** 23 - 1, "wider scale"),
    # a signed 8-bit quantizer after global pooling: an unsigned input, and half its thresholds
    # clipped to the input range's start (reached by every input)
    (-58.3, 0.4566929133857, 0, 2 ** 10 - 1, "clipped thresholds")])
def test_a_staircase_is_reproduced_on_every_input_of_its_range(t0, step, low, high, needs):
    thresholds = staircase_line(t0, step, low, high)
    upper, lower = requant.crossing_bounds(thresholds, low, high)
    (found,) = requant.centred_step(upper, lower, high - low + 1)
    first, *_ = (bits for bits in requant.MANTISSA_BITS
                 if requant.dyadic_parameters(upper[0], lower[0], -128, found, bits))
    scale, bias = requant.dyadic_parameters(upper[0], lower[0], -128, found, first)
    if needs == "wider scale":
        assert first > 24
    else:
        assert (thresholds <= low).sum() > 100
    inputs = np.arange(low, high + 1, dtype=np.int64)
    expected = -128 + np.searchsorted(thresholds[0], inputs, side="right")
    python = np.clip(np.floor(inputs * scale + bias + 0.5), -128, 127)  # FINN's Requant model
    assert np.array_equal(python, expected)
    (scale_int,), (bias_int,), shift = requant_rtl.fixed_point([scale], [bias])
    rtl = np.clip((inputs * scale_int + bias_int) >> shift, -128, 127)  # the core's integers
    assert np.array_equal(rtl, expected)


def test_the_layer_after_global_pooling_converts_though_its_input_is_unsigned(converted):
    """Its signed 8-bit quantizer leaves every threshold below zero clipped to the unsigned
    input's 0; the layer converts and, narrow, is checked on every input above."""
    model, _, staircases = converted
    unsigned = [node for node in model.graph.node if node.op_type == "Requant_rtl"
                and not getHWCustomOp(node).get_input_datatype(0).signed()]
    assert unsigned
    thresholds, _ = staircases[unsigned[0].output[0]]
    assert (thresholds <= 0).any()
