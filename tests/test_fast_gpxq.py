"""fast_gpxq.py gives the integer weights of Brevitas' own GPTQ, GPFQ and Qronos, and the demo refuses an
unknown implementation.

Brevitas' implementation costs about 10 s even on the suite's small model (it re-runs the model
per layer and rounds column by column): one model holds both 3- and 4-bit pointwise convs, and
16 calibration images come in two batches, so that statistics add up across batches as in a run.
"""
import copy

import brevitas.nn as qnn
import pytest
import torch
from torch import nn

from finn_demo.quant import fast_gpxq
import finn_mobilenetv2 as demo
import quant_utils as qu
from finn_demo.quant import ptq
from finn_demo.common.configurator import ConfigError
from finn_demo.testing.suite import SMALL

CALIB = ["--calib_size=16", "--batch_size=8"]
ALGORITHMS = {"gptq": qu.apply_gptq, "gpfq": qu.apply_gpfq, "qronos": qu.apply_qronos}


def pointwise_4_and_3_bits(module, name):
    """The benchmark's PW4 and PW3 in one model: first conv and depthwise convs at 8 bits, the
    expanding 1x1 convs at 4 bits, the projecting ones at 3 (one Brevitas run covers both)."""
    if module.groups != 1 or name == "features.0.0":
        return 8
    return 4 if ".conv.0." in name or name == "features.7.0" else 3


@pytest.fixture(scope="module")
def calibrated(cache_dir):
    """The suite's small model, quantized (classifier at 8 bits) and calibrated."""
    args = demo.make_args([f"--cache_dir={cache_dir}", *SMALL, *CALIB, "--device=cpu"])
    float_model, calib_loader, _, _ = demo.load_model_and_data(args)
    example = next(iter(calib_loader))[0][:1]
    maps = qu.bit_width_maps()
    # a lambda: Brevitas calls lambdas with (module, name), not other functions
    maps["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] = (
        lambda module, name: pointwise_4_and_3_bits(module, name))
    model = qu.quantize_and_recover(float_model, calib_loader, example, maps)
    # Initialize the weight quantizers (as apply_gpfq's warm-up pass does) before any deepcopy:
    # a copy made before recurses without end on its first forward pass.
    with torch.no_grad():
        model(example)
    return model, calib_loader


@torch.no_grad()
def integer_weights(model):
    """Each Conv's and Linear's weights as the integers Brevitas' quantizer gives (weight / scale)."""
    return {name: module.quant_weight().int() for name, module in model.named_modules()
            if isinstance(module, (qnn.QuantConv2d, qnn.QuantLinear))}


def run(algorithm, impl, model, loader):
    model = copy.deepcopy(model)
    ALGORITHMS[algorithm](loader, model, impl=impl)
    return integer_weights(model)


def test_the_compared_model_has_3_and_4_bit_pointwise_convs(calibrated):
    model, _ = calibrated
    bit_widths = {name: int(module.quant_weight().bit_width) for name, module in model.named_modules()
                  if isinstance(module, qnn.QuantConv2d) and module.kernel_size == (1, 1)}
    assert set(bit_widths.values()) == {3, 4}


@pytest.mark.parametrize("algorithm", ["gptq", "gpfq", "qronos"])
def test_fast_implementation_gives_brevitas_integer_weights(calibrated, algorithm, monkeypatch):
    model, loader = calibrated
    brevitas = run(algorithm, "brevitas", model, loader)
    fast_updates = []  # every fast update ends checking its rounding; Brevitas' own does not
    check = fast_gpxq._check_rounding
    monkeypatch.setattr(fast_gpxq, "_check_rounding", lambda layer, *args: (
        fast_updates.append(layer), check(layer, *args)))
    fast = run(algorithm, "fast", model, loader)
    unoptimized = integer_weights(copy.deepcopy(model))
    assert fast.keys() == brevitas.keys() and len(fast) >= 20  # every Conv and the Linear
    assert len(fast_updates) == len(fast)  # ... each updated by the fast path, none by Brevitas'
    # Exact: fast_gpxq takes every sum that can decide a rounding tie as Brevitas takes it.
    differing = {name: int((fast[name] != brevitas[name]).sum()) for name in fast}
    assert sum(differing.values()) == 0, {name: count for name, count in differing.items() if count}
    # ... and the weights compared are the algorithm's work, not the calibrated model's.
    changed = sum(int((fast[name] != unoptimized[name]).sum()) for name in fast)
    assert changed > 100


def test_unknown_gpxq_impl_is_refused_naming_the_flag(tmp_path):
    args = demo.make_args(["--gpxq_impl=slow", "--gpfq=True", f"--output={tmp_path / 'm.onnx'}"])
    with pytest.raises(ConfigError, match=r"--gpxq_impl='slow': choose fast or brevitas"):
        demo.main(args)


def test_apply_gpfq_refuses_an_unknown_impl():
    with pytest.raises(ValueError, match="impl='slow'"):
        qu.apply_gpfq(None, None, impl="slow")


def test_the_pass_memory_estimate_covers_the_largest_activation_of_every_image(calibrated):
    model, loader = calibrated
    images = [batch for batch, _ in loader]
    outputs = []  # bytes of each graph module's output, per image
    layers = [model.get_submodule(node.target) for node in model.graph.nodes if node.op == "call_module"]
    hooks = [layer.register_forward_hook(lambda module, args, out: outputs.append(
        fast_gpxq._nbytes(out) / len(images[0]))) for layer in layers]
    with torch.no_grad():
        model(images[0])
    for hook in hooks:
        hook.remove()
    count = sum(len(batch) for batch in images)
    # quantized and float, every image: at least the largest activation of each, twice
    assert fast_gpxq.pass_bytes(model, images) >= 2 * count * max(outputs) > 0


def test_fast_gpxq_gives_way_to_brevitas_where_its_pass_would_not_fit_in_memory(
        calibrated, monkeypatch, capsys):
    model, loader = calibrated
    needed = fast_gpxq.pass_bytes(model, [batch for batch, _ in loader])
    brevitas_runs = []
    monkeypatch.setattr(ptq, "_apply_gpxq", lambda images, model, mode, desc: brevitas_runs.append(desc))
    monkeypatch.setattr(ptq, "available_bytes", lambda device: needed)  # needs more than 80% of it
    untouched = integer_weights(model)
    assert _same(run("gpfq", "fast", model, loader), untouched)  # nothing done by the fast path...
    assert brevitas_runs == ["GPFQ"]  # ... Brevitas' loop ran instead
    assert "running Brevitas' implementation instead" in capsys.readouterr().out
    monkeypatch.setattr(ptq, "available_bytes", lambda device: 2 * needed)
    assert not _same(run("gpfq", "fast", model, loader), untouched) and brevitas_runs == ["GPFQ"]


def _same(weights, others):
    return weights.keys() == others.keys() and all(torch.equal(weights[name], others[name])
                                                   for name in weights)
