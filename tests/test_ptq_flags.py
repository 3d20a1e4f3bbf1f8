"""What each PTQ pass does to the suite's small trained model, the order they run in, and the
demo's PTQ flags end to end.

The pass tests call quant_utils directly on copies of one quantized, calibrated model, with 4-bit
pointwise weights (the benchmark's PW4: the effects are clear there, and the passes cost seconds
on 64 calibration images). "Held out" images come from the test split, never calibrated on.
"""
import copy

import brevitas.nn as qnn
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import quant_utils as qu
from finn_demo.quant import learned_round
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
    """Replace calibrate and every PTQ pass where quantize_and_recover calls them (quant_utils'
    code, finn_demo/quant/ptq.py) by a recorder; returns the record."""
    from finn_demo.quant import ptq
    calls = []
    names = {"apply_act_equalization": "act_eq", "calibrate": "calibration", "apply_gptq": "gptq",
             "apply_gpfq": "gpfq", "apply_qronos": "qronos", "apply_learned_round": "learned_round",
             "apply_bn_correction": "bn_corr",
             "apply_bias_correction": "bias_corr"}
    for function, name in names.items():
        monkeypatch.setattr(ptq, function, lambda *args, name=name, **kwargs: calls.append(name))
    return calls


@pytest.mark.parametrize("rounding", ["gptq", "gpfq", "qronos", "learned_round"])
def test_passes_run_in_the_documented_order(digits, monkeypatch, rounding):
    float_model, loader, held_out = digits
    calls, stages = record_calls(monkeypatch), []

    def stage(name, model=None):
        stages.append(name)
        return torch.no_grad()  # any context manager
    qu.quantize_and_recover(float_model, loader, held_out[:1], stage=stage, act_eq=True,
                            bias_corr=True, bn_corr=True,
                            **{rounding: "layerwise" if rounding == "learned_round" else True})
    assert calls == ["act_eq", "calibration", rounding, "bn_corr", "bias_corr"]
    assert stages == calls


def test_two_weight_rounding_passes_are_refused(digits):
    float_model, loader, held_out = digits
    with pytest.raises(ValueError, match="choose one"):
        qu.quantize_and_recover(float_model, loader, held_out[:1], gptq=True, gpfq=True)
    with pytest.raises(ValueError, match="choose one"):
        qu.quantize_and_recover(float_model, loader, held_out[:1], gpfq=True, learned_round="layerwise")


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
