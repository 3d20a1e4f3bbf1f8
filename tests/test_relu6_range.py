"""ReLU6 quantized on a calibrated range capped at 6 (--relu6_range=calibrated), on the suite's
small trained model: never above 6, after calibration or training; below 6 where the data stay
below it; inputs above 6 come out clipped; the export passes the demo's checks. With either
range, the PTQ passes see the float network's ReLU6 where quantization is off (maps.float_relu6)."""
import copy

import brevitas.nn as qnn
import pytest
import torch
from brevitas.graph.calibrate import quantization_status_manager

import finn_mobilenetv2 as demo
import quant_utils as qu
from finn_demo.testing.suite import SMALL
from finn_demo.quant.maps import float_relu6

CALIB = ["--calib_size=64", "--batch_size=32"]
CAP = 6.0


def plain(output):
    return getattr(output, "value", output)


def relu6_quantizers(model):
    """{name: QuantReLU}: with relu6_to_relu=False every one is a MobileNetV2 ReLU6."""
    return {name: module for name, module in model.named_modules()
            if isinstance(module, qnn.QuantReLU)}


def quant_range(module):
    """The largest value the quantizer can output: scale x (2**bits - 1)."""
    return float(module.act_quant.scale().detach()) * (2 ** int(module.act_quant.bit_width()) - 1)


@torch.no_grad()
def input_and_output_max(model, names, images):
    """{name: (input max, output max)} of the named modules on one pass of `images`; the input
    is read before the module runs (torchvision's ReLU6 works in place)."""
    seen, hooks = {}, []
    for name in names:
        module = model.get_submodule(name)
        hooks.append(module.register_forward_pre_hook(
            lambda module, args, name=name: seen.__setitem__(name, [float(plain(args[0]).max())])))
        hooks.append(module.register_forward_hook(
            lambda module, args, out, name=name: seen[name].append(float(plain(out).max()))))
    model(images)
    for hook in hooks:
        hook.remove()
    return {name: tuple(pair) for name, pair in seen.items()}


@pytest.fixture(scope="module")
def digits(cache_dir):
    """(the suite's trained float model, a 64-image calibration loader, its images)."""
    args = demo.make_args([f"--cache_dir={cache_dir}", *SMALL, *CALIB, "--device=cpu"])
    float_model, calib_loader, _, _ = demo.load_model_and_data(args)
    return float_model, calib_loader, torch.cat([images for images, _ in calib_loader])


@pytest.fixture(scope="module", params=[4, 8], ids=["A4 (MSE)", "A8 (percentile)"])
def calibrated(digits, request):
    """(the model quantized with the calibrated ReLU6 range and calibrated, its activation bits)."""
    float_model, calib_loader, images = digits
    maps = qu.bit_width_maps(act_bit_width=request.param, input_bit_width=8,
                             relu6_range="calibrated")
    return qu.quantize_and_recover(float_model, calib_loader, images[:1], maps), request.param


def test_calibrated_relu6_range_never_exceeds_6(calibrated):
    ranges = {name: quant_range(module) for name, module in relu6_quantizers(calibrated[0]).items()}
    assert len(ranges) == 13  # the suite's 3-stage model
    assert max(ranges.values()) <= CAP + 1e-5, ranges


def test_calibrated_range_lies_below_6_where_the_data_do(calibrated, digits):
    model, bits = calibrated
    float_model, _, images = digits
    ranges = {name: quant_range(module) for name, module in relu6_quantizers(model).items()}
    data = input_and_output_max(float_model, list(ranges), images)
    below = [name for name in ranges if data[name][0] < 0.8 * CAP]
    assert below, data  # the trained model has ReLU6s whose inputs never near 6
    for name in below:  # within the data's range (their quantized inputs differ a little)
        assert ranges[name] < min(CAP, 1.2 * data[name][0]), (name, ranges[name], data[name])


def test_inputs_above_6_come_out_clipped_at_most_6(calibrated, digits):
    model, _ = calibrated
    images = digits[2][:32] * 4  # brighter than any digit: many ReLU6 inputs pass 6
    quantizers = relu6_quantizers(model)
    seen = input_and_output_max(model, list(quantizers), images)
    assert sum(inputs > CAP for inputs, _ in seen.values()) >= 3, seen
    for name, (_, output) in seen.items():
        assert output <= min(CAP, quant_range(quantizers[name])) + 1e-5, (name, seen[name])


def test_the_cap_holds_while_the_range_trains(calibrated):
    # Learned ranges train the quantizer's scaling_impl.value: the cap must hold in training
    # mode too, and let the gradient through so the range can come back below 6.
    name, quantizer = next(iter(relu6_quantizers(calibrated[0]).items()))
    quantizer = copy.deepcopy(quantizer).train()
    scaling = quantizer.act_quant.fused_activation_quant_proxy.tensor_quant.scaling_impl
    assert scaling.value.requires_grad
    with torch.no_grad():
        scaling.value.fill_(10 * CAP)
    x = torch.linspace(0, 3 * CAP, 64).reshape(1, 1, 8, 8)
    out = plain(quantizer(x))
    assert abs(float(out.detach().max()) - CAP) < 1e-5  # clipped at 6, not at 60
    out.sum().backward()
    assert scaling.value.grad is not None and float(scaling.value.grad.abs()) > 0
    with torch.no_grad():
        scaling.value.fill_(CAP / 2)
    assert float(plain(quantizer(x)).max()) <= CAP / 2 + 1e-5  # below the cap it is the range


def test_calibrated_relu6_export_passes_the_demos_checks(run_demo, tmp_path):
    result = run_demo(tmp_path / "relu6_calibrated.onnx", "--act_bit_width=4",
                      "--input_bit_width=8", "--relu6_range=calibrated", "--check_export=True")
    assert result.report.ok, result.report
    ranges = [quant_range(module) for module in relu6_quantizers(result.model).values()]
    assert max(ranges) <= CAP + 1e-5 and min(ranges) < CAP - 0.5, ranges


@pytest.fixture(scope="module", params=["fixed", "calibrated"])
def quantized_a4(digits, request):
    """The suite's model quantized at A4 with either ReLU6 range, calibrated."""
    float_model, calib_loader, images = digits
    maps = qu.bit_width_maps(act_bit_width=4, input_bit_width=8, relu6_range=request.param)
    return qu.quantize_and_recover(float_model, calib_loader, images[:1], maps)


@torch.no_grad()
def test_with_quantization_off_the_ptq_passes_see_the_float_network(quantized_a4, digits):
    # Calibration and the float paths of GPFQ, Qronos and learned rounding run the quantized
    # graph with its quantizers off; Brevitas' QuantReLU then passes a plain ReLU where the
    # float network has ReLU6. quantize_and_recover runs them inside maps.float_relu6.
    float_model, _, images = digits
    bright = images[:32] * 4  # many ReLU6 inputs pass 6
    expected = float_model(bright)
    off = dict(disable_act_quant=True, disable_weight_quant=True, disable_bias_quant=True)
    with quantization_status_manager(quantized_a4, **off, is_training=False):
        with float_relu6(quantized_a4):
            inside = plain(quantized_a4(bright))
        outside = plain(quantized_a4(bright))
    scale = float(expected.abs().max())
    assert torch.allclose(inside, expected, atol=1e-4 * scale), float((inside - expected).abs().max())
    assert not torch.allclose(outside, expected, atol=1e-2 * scale)  # the plain ReLU's graph


@torch.no_grad()
def test_float_relu6_leaves_quantized_outputs_and_the_exported_relu_as_they_were(quantized_a4, digits):
    bright = digits[2][:32] * 4
    before = plain(quantized_a4(bright))
    with float_relu6(quantized_a4):
        inside = plain(quantized_a4(bright))
    assert torch.equal(inside, before)
    impls = [module.act_quant.fused_activation_quant_proxy.activation_impl
             for module in relu6_quantizers(quantized_a4).values()]
    assert impls and all(type(impl) is torch.nn.ReLU for impl in impls)  # FINN's Relu + Quant
