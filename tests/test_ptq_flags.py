"""What each PTQ pass does to the suite's small trained model, the order they run in, and the
demo's PTQ flags end to end.

The pass tests call quant_utils directly on copies of one quantized, calibrated model, with 4-bit
pointwise weights (the benchmark's PW4: the effects are clear there, and the passes cost seconds
on 64 calibration images). "Held out" images come from the test split, never calibrated on.
"""
import copy
import dataclasses
import inspect
import re
from pathlib import Path

import brevitas.nn as qnn
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import quant_utils as qu
from finn_demo.quant import learned_round, ptq
from finn_demo.testing.suite import calibrated_model, small_digits

CALIB = ["--calib_size=64", "--batch_size=32"]
HELD_OUT = 128
PW4 = dict(weight_bit_width=4, depthwise_bit_width=8, first_conv_bit_width=8, last_linear_bit_width=8)
QUANT_LAYERS = (qnn.QuantConv2d, qnn.QuantLinear)


def value(output):
    """A layer's or model's output as a plain tensor (Brevitas returns QuantTensors)."""
    return getattr(output, "value", output)


@pytest.fixture(scope="module")
def digits(cache_dir):
    return small_digits(cache_dir, HELD_OUT)


@pytest.fixture(scope="module")
def calibrated(digits):
    """The float model quantized at PW4 and calibrated, with no PTQ pass."""
    float_model, calib_loader, held_out = digits
    return calibrated_model(float_model, calib_loader, held_out[:1], qu.bit_width_maps(**PW4))


def after(pass_name, calibrated, loader):
    """A copy of the calibrated model after one quant_utils pass (looked up when called)."""
    model = copy.deepcopy(calibrated)
    getattr(qu, pass_name)(loader, model)
    return model


@torch.no_grad()
def logits_mse(model, float_model, images):
    return float(((value(model(images)) - float_model(images)) ** 2).mean())


@torch.no_grad()
def integer_weights(model):
    return {name: module.quant_weight().int() for name, module in model.named_modules()
            if isinstance(module, QUANT_LAYERS)}


@torch.no_grad()
def outputs_by_name(model, names, images):
    """{layer name: its output} for the named layers, on one forward pass of `images`."""
    outputs, hooks = {}, []
    for name in names:
        hook = lambda module, args, out, name=name: outputs.__setitem__(name, value(out))
        hooks.append(model.get_submodule(name).register_forward_hook(hook))
    model(images)
    for hook in hooks:
        hook.remove()
    return outputs


def channel_mean_errors(model, float_model, images):
    """{layer: per-output-channel mean of (quantized minus float output)} of every Conv and Linear."""
    names = [name for name, module in model.named_modules() if isinstance(module, QUANT_LAYERS)]
    quant = outputs_by_name(model, names, images)
    reference = outputs_by_name(float_model, names, images)
    return {name: (quant[name] - reference[name]).transpose(0, 1).flatten(1).mean(dim=1)
            for name in names}


def test_bias_correction_sets_biases_that_centre_each_layers_output_error(digits, calibrated):
    float_model, loader, held_out = digits
    corrected = after("apply_bias_correction", calibrated, loader)
    layers = dict(corrected.named_modules())
    # The suite's MobileNetV2 convs have no bias: bias correction gives every layer one.
    assert all(layers[name].bias is not None and layers[name].bias.abs().sum() > 0
               for name in integer_weights(corrected))
    before = channel_mean_errors(calibrated, float_model, held_out)
    now = channel_mean_errors(corrected, float_model, held_out)
    total_before = sum(float(errors.abs().sum()) for errors in before.values())
    total_now = sum(float(errors.abs().sum()) for errors in now.values())
    assert total_now < 0.7 * total_before, (total_now, total_before)
    closer = sum(float(now[name].abs().sum()) < float(before[name].abs().sum()) for name in before)
    assert closer >= 0.75 * len(before), f"{closer} of {len(before)} layers"


def test_bn_correction_re_estimates_batchnorm_statistics_on_quantized_activations(digits, calibrated):
    _, loader, _ = digits
    corrected = after("apply_bn_correction", calibrated, loader)
    norms = {name: module for name, module in calibrated.named_modules()
             if isinstance(module, nn.BatchNorm2d)}
    new = dict(corrected.named_modules())
    assert all(not torch.equal(norm.running_mean, new[name].running_mean) and
               not torch.equal(norm.running_var, new[name].running_var) for name, norm in norms.items())
    # The first BatchNorm's input depends on no other BatchNorm: its new mean is that input's mean
    # in the quantized model over the calibration images.
    first = next(iter(norms))
    inputs = []
    hook = calibrated.get_submodule(first).register_forward_hook(
        lambda module, args, out: inputs.append(value(args[0])))
    with torch.no_grad():
        for images, _ in loader:
            calibrated(images)
    hook.remove()
    quant_mean = torch.cat(inputs).transpose(0, 1).flatten(1).mean(dim=1)
    assert torch.allclose(new[first].running_mean, quant_mean, rtol=1e-3, atol=1e-4)
    assert not torch.allclose(norms[first].running_mean, quant_mean, rtol=1e-3, atol=1e-4)


def test_act_eq_rescales_weights_and_keeps_the_float_function(digits):
    float_model, loader, held_out = digits
    graph = qu.preprocess_for_finn_quantize(copy.deepcopy(float_model), held_out[:1])
    before = {name: param.clone() for name, param in graph.named_parameters() if name.endswith("weight")}
    qu.apply_act_equalization(loader, graph)
    changed = [name for name, param in graph.named_parameters()
               if name in before and not torch.allclose(param, before[name])]
    assert len(changed) >= 4, changed
    with torch.no_grad():
        expected, equalized = float_model(held_out), graph(held_out)
    assert torch.allclose(equalized, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))


@pytest.mark.parametrize("pass_name", ["apply_gptq", "apply_gpfq", "apply_qronos", "apply_learned_round"])
def test_weight_rounding_changes_integer_weights_and_follows_the_float_model_closer(
        digits, calibrated, pass_name):
    float_model, loader, held_out = digits
    rounded = after(pass_name, calibrated, loader)
    old, new = integer_weights(calibrated), integer_weights(rounded)
    changed = sum(int((old[name] != new[name]).sum()) for name in old)
    assert changed >= 100, changed
    assert logits_mse(rounded, float_model, held_out) < 0.9 * logits_mse(calibrated, float_model, held_out)


def test_blockwise_learned_rounding_trains_each_block_against_the_float_blocks_output(digits, calibrated):
    float_model, loader, held_out = digits
    model = copy.deepcopy(calibrated)
    blocks = learned_round.parts(model, "blockwise")
    layers = [module for module in model.modules() if isinstance(module, QUANT_LAYERS)]
    assert sorted(map(id, (layer for part in blocks for layer in part.layers))) == sorted(map(id, layers))
    assert [part.nodes[0].target.rsplit(".", 2)[0] for part in blocks][-1] == "classifier"
    # a residual block runs its Add: the part holds the whole block, skip path included
    assert any(node.op == "call_function" and "add" in node.name for part in blocks for node in part.nodes)
    assert len(learned_round.parts(model, "layerwise")) == len(layers)
    learned_round.apply_learned_round(loader, model, "blockwise")
    old, new = integer_weights(calibrated), integer_weights(model)
    assert sum(int((old[name] != new[name]).sum()) for name in old) >= 100
    assert logits_mse(model, float_model, held_out) < 0.9 * logits_mse(calibrated, float_model, held_out)


def record_calls(monkeypatch):
    """Replace the function of every pass in quantize_and_recover's table (ptq.PTQ_PASSES) by a
    recorder of the pass's name; returns the record."""
    calls = []

    def recorder(name):
        return lambda *args, **kwargs: calls.append(name)
    monkeypatch.setattr(ptq, "PTQ_PASSES", tuple(
        dataclasses.replace(ptq_pass, run=recorder(ptq_pass.name)) for ptq_pass in ptq.PTQ_PASSES))
    return calls


def quantized(model):
    return any(isinstance(module, QUANT_LAYERS) for module in model.modules())


@pytest.mark.parametrize("rounding", ["gptq", "gpfq", "qronos", "learned_round"])
def test_passes_run_in_the_documented_order(digits, monkeypatch, rounding):
    float_model, loader, held_out = digits
    calls, stages = record_calls(monkeypatch), []

    def stage(name, model=None):
        stages.append((name, quantized(model)))
        return torch.no_grad()  # any context manager
    qu.quantize_and_recover(float_model, loader, held_out[:1], stage=stage, act_eq=True,
                            bias_corr=True, bn_corr=True, range_refit=True, learned_act_range=True,
                            **{rounding: "layerwise" if rounding == "learned_round" else True})
    assert calls == ["act_eq", "calibration", rounding, "bn_corr", "range_refit",
                     "learned_act_range", "bias_corr"]
    # act_eq on the float graph, every other pass on the quantized model
    assert stages == [(name, name != "act_eq") for name in calls]


def test_two_weight_rounding_passes_are_refused(digits):
    float_model, loader, held_out = digits
    with pytest.raises(ValueError, match="choose one"):
        qu.quantize_and_recover(float_model, loader, held_out[:1], gptq=True, gpfq=True)
    with pytest.raises(ValueError, match="choose one"):
        qu.quantize_and_recover(float_model, loader, held_out[:1], gpfq=True, learned_round="layerwise")


def test_quantize_and_recover_takes_the_demos_ptq_flags_and_refuses_others(digits, monkeypatch):
    import finn_mobilenetv2 as demo
    float_model, loader, held_out = digits
    calls = record_calls(monkeypatch)
    # the demo passes every PTQ flag; at its defaults only calibration runs
    qu.quantize_and_recover(float_model, loader, held_out[:1],
                            **{name: demo.FLAGS[name] for name in qu.PTQ_FLAGS})
    assert calls == ["calibration"]
    with pytest.raises(TypeError, match="gpfqq"):
        qu.quantize_and_recover(float_model, loader, held_out[:1], gpfqq=True)


def test_quantize_and_recover_leaves_the_float_model_unchanged(digits):
    float_model, loader, held_out = digits
    before = copy.deepcopy(float_model.state_dict())
    qu.quantize_and_recover(float_model, loader, held_out[:1], act_eq=True)
    assert all(torch.equal(before[name], tensor) for name, tensor in float_model.state_dict().items())


def initializers(path):
    return {init.name: numpy_helper.to_array(init).tobytes() for init in onnx.load(str(path)).graph.initializer}


def test_default_run_keeps_accuracy_of_the_trained_model(w8a8):
    assert w8a8.float_eval.top1 > 80.0  # a trained model, not a degenerate one
    assert abs(w8a8.quant_eval.top1 - w8a8.float_eval.top1) <= 2.0


def test_bias_correction_run_keeps_accuracy(bias_corrected):
    assert "bias_corr" in bias_corrected.seconds
    # Estimated from 256 images on a small model it may cost a point or two; a broken pass
    # falls to chance (10%).
    assert bias_corrected.quant_eval.top1 >= bias_corrected.float_eval.top1 - 5.0


def test_demo_flags_run_every_pass_in_order_to_an_export(run_demo, tmp_path):
    result = run_demo(tmp_path / "model.onnx", "--act_eq=True", "--gpfq=True", "--bn_corr=True",
                      "--bias_corr=True", *CALIB)
    ptq = [name for name in result.seconds if name in ("act_eq", "calibration", "gpfq", "bn_corr",
                                                       "bias_corr")]
    assert ptq == ["act_eq", "calibration", "gpfq", "bn_corr", "bias_corr"]
    assert len(onnx.load(str(tmp_path / "model.onnx")).graph.node) > 100
    assert result.quant_eval.top1 >= result.float_eval.top1 - 5.0  # a pass gone wrong falls to chance


def test_same_flags_and_seed_give_same_accuracy_and_identical_weights(run_demo, w8a8, tmp_path):
    again = run_demo(tmp_path / "again.onnx")
    assert (again.float_eval.top1, again.quant_eval.top1) == (w8a8.float_eval.top1, w8a8.quant_eval.top1)
    assert initializers(again.output) == initializers(w8a8.output)


def test_another_seed_draws_another_calibration_subset(run_demo, w8a8, tmp_path):
    other = run_demo(tmp_path / "other.onnx", "--seed=1")
    assert initializers(other.output) != initializers(w8a8.output)


# ------------------------------------------------------- the passes, declared once (PTQ_PASSES)
# Where the order of the passes is written in prose: (file, the text just before the list, a
# pattern that ends it). The demo's flag block comment and docstring are what --help prints.
ORDER_TEXTS = {
    "README": ("README.md", "runs them in one fixed order:", r"\n\n"),
    "docs/ptq.md": ("docs/ptq.md", "one fixed order", r"```python"),
    "demo docstring": ("finn_mobilenetv2.py", "The PTQ passes run", r'"""'),
    "demo flag block": ("finn_mobilenetv2.py", "# 2. post-training quantization", r"\n(?!#)"),
    "quant_utils docstring": ("quant_utils.py", "in the order of", r"\n\n"),
}


def order_text(place):
    file, start, end = ORDER_TEXTS[place]
    text = (Path(qu.__file__).parent / file).read_text(encoding="utf-8")
    return re.search(re.escape(start) + "(.*?)" + end, text, re.S).group(1)


def names_in_order(text, passes):
    """The names of `passes` that `text` gives, each as a word, in the order it first gives them."""
    found = {ptq_pass.name: re.search(rf"\b{ptq_pass.name}\b", text) for ptq_pass in passes}
    return sorted((name for name, match in found.items() if match), key=lambda name: found[name].start())


def flags_the_demo_lacks(passes):
    import finn_mobilenetv2 as demo
    return [name for name in ptq.ptq_flags(passes) if name not in demo.FLAGS]


@pytest.mark.parametrize("place", ORDER_TEXTS)
def test_every_text_that_states_the_pass_order_states_the_tables(place):
    order = [ptq_pass.name for ptq_pass in qu.PTQ_PASSES]
    assert names_in_order(order_text(place), qu.PTQ_PASSES) == order


def test_the_table_runs_the_float_graph_passes_first_and_calibration_always():
    float_graph = [ptq_pass.float_graph for ptq_pass in qu.PTQ_PASSES]
    assert float_graph == sorted(float_graph, reverse=True)  # quantize_finn runs between
    assert [ptq_pass.name for ptq_pass in qu.PTQ_PASSES if ptq_pass.flag is None] == ["calibration"]
    assert [ptq_pass.flag for ptq_pass in qu.PTQ_PASSES if ptq_pass.sets_weights] == [
        "gptq", "gpfq", "qronos", "learned_round"]


def test_the_demo_has_every_ptq_flag_at_its_pass_functions_default():
    """The demo passes all PTQ_FLAGS, a Python caller only those it sets: either way each pass
    gets the same options, a flag left out meaning the pass off or its function's default."""
    import finn_mobilenetv2 as demo
    assert not flags_the_demo_lacks(qu.PTQ_PASSES)
    assert qu.PTQ_FLAGS == ptq.ptq_flags(qu.PTQ_PASSES)
    assert "seed" in qu.PTQ_FLAGS  # taken by the passes that draw at random
    for ptq_pass in qu.PTQ_PASSES:
        if ptq_pass.flag:
            assert demo.FLAGS[ptq_pass.flag] in (False, "none"), ptq_pass.flag
        parameters = inspect.signature(ptq_pass.run).parameters
        for keyword, flag in ptq_pass.options.items():
            if flag != ptq_pass.flag:  # learned_round's flag is also its mode
                assert parameters[keyword].default == demo.FLAGS[flag], (ptq_pass.name, keyword)


def test_a_new_pass_is_one_table_entry_and_its_function(digits, monkeypatch):
    """A pass added to PTQ_PASSES runs in its place when its flag is on, with its options, and
    PTQ_FLAGS (ptq_flags of the table) holds its flags. What the table does not generate is
    held to it here: the demo's flag block (plain variables, which --help prints from the source)
    needs the new flags added by hand, and each text that states the order the new name."""
    float_model, loader, held_out = digits
    calls = record_calls(monkeypatch)
    dummy = ptq.PtqPass("dummy", "dummy", lambda loader, model, strength=1: calls.append(strength),
                        {"strength": "dummy_strength"})
    at = [ptq_pass.name for ptq_pass in ptq.PTQ_PASSES].index("bn_corr") + 1
    monkeypatch.setattr(ptq, "PTQ_PASSES", ptq.PTQ_PASSES[:at] + (dummy,) + ptq.PTQ_PASSES[at:])
    qu.quantize_and_recover(float_model, loader, held_out[:1], gpfq=True, bn_corr=True,
                            dummy=True, dummy_strength=3, bias_corr=True)
    assert calls == ["calibration", "gpfq", "bn_corr", 3, "bias_corr"]
    calls.clear()
    qu.quantize_and_recover(float_model, loader, held_out[:1], bn_corr=True, dummy_strength=3)
    assert calls == ["calibration", "bn_corr"]
    assert {"dummy", "dummy_strength"} <= set(ptq.ptq_flags(ptq.PTQ_PASSES))
    assert flags_the_demo_lacks(ptq.PTQ_PASSES) == ["dummy", "dummy_strength"]
    assert all(names_in_order(order_text(place), ptq.PTQ_PASSES) != [
        ptq_pass.name for ptq_pass in ptq.PTQ_PASSES] for place in ORDER_TEXTS)
