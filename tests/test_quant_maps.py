"""The layer maps users edit: fresh copies, the README's three snippets, lambda arity."""
import functools
import re

import pytest
import torch
from torch import nn
from torchvision.models import mobilenet_v2

from finn_demo.testing.suite import ROOT
from quant_utils import (
    bit_width_maps, calibrate, default_quantize_maps_finn, preprocess_for_finn_quantize,
    quantize_finn)


def weight_bit_widths(model):
    """{layer name: weight bit width} of every quantized Conv and Linear."""
    return {name: int(module.weight_quant.bit_width()) for name, module in model.named_modules()
            if hasattr(module, "weight_quant") and module.weight_quant.is_quant_enabled}


def quantized(maps):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 32, 32)
    return quantize_finn(preprocess_for_finn_quantize(mobilenet_v2(num_classes=10), x), **maps)


def readme_snippets():
    """The python code blocks of README.md that edit the maps, in order."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    return [block for block in blocks if 'maps["compute_layer_map"]' in block]


@functools.lru_cache  # snippet 3 is run by two tests
def run_snippet(code):
    namespace = {"nn": nn, "maps": default_quantize_maps_finn()}
    exec(code, namespace)
    return weight_bit_widths(quantized(namespace["maps"]))


def test_default_maps_are_a_fresh_copy_each_call():
    first = default_quantize_maps_finn()
    first["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] = 2
    first["quant_act_map"][nn.ReLU][1]["bit_width"] = 2
    first["quant_identity_map"]["signed"][1]["bit_width"] = 2
    second = default_quantize_maps_finn()
    assert second["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] == 8
    assert second["quant_act_map"][nn.ReLU][1]["bit_width"] == 8
    assert second["quant_identity_map"]["signed"][1]["bit_width"] == 8


def test_default_maps_quantize_every_conv_and_linear_at_8_bits():
    widths = weight_bit_widths(quantized(default_quantize_maps_finn()))
    assert len(widths) == 53  # 52 convs and the classifier
    assert set(widths.values()) == {8}


def test_readme_has_the_three_snippets():
    assert len(readme_snippets()) == 3


def test_snippet_1_sets_every_conv_to_4_bits_and_keeps_the_linear_at_8():
    widths = run_snippet(readme_snippets()[0])
    assert widths.pop("classifier.1") == 8
    assert set(widths.values()) == {4}


def test_snippet_2_keeps_depthwise_convs_at_8_bits_and_pointwise_at_4():
    widths = run_snippet(readme_snippets()[1])
    model = mobilenet_v2(num_classes=10)
    groups = {name: module.groups for name, module in model.named_modules()
              if isinstance(module, nn.Conv2d)}
    assert widths["features.0.0"] == 4  # a full conv, not depthwise
    for name, depthwise_groups in groups.items():
        assert widths[name] == (8 if depthwise_groups != 1 else 4), name


def test_snippet_3_keeps_first_conv_and_depthwise_at_8_bits_and_pointwise_at_4():
    widths = run_snippet(readme_snippets()[2])
    assert widths["features.0.0"] == 8
    assert widths["features.1.conv.0.0"] == 8  # depthwise
    assert widths["features.1.conv.1"] == 4  # pointwise projection
    assert widths["features.18.0"] == 4  # last pointwise conv
    assert sum(width == 4 for width in widths.values()) == 34


def test_bit_width_flags_match_snippet_3():
    flags = weight_bit_widths(quantized(bit_width_maps(4, 8, depthwise_bit_width=8,
                                                        first_conv_bit_width=8,
                                                        last_linear_bit_width=8)))
    assert flags == run_snippet(readme_snippets()[2])


def activation_bit_widths(model):
    return {name: int(module.act_quant.bit_width()) for name, module in model.named_modules()
            if hasattr(module, "act_quant") and module.act_quant.is_quant_enabled}


def test_activation_bit_width_reaches_relu_and_identity_quantizers():
    assert set(activation_bit_widths(quantized(bit_width_maps(act_bit_width=4))).values()) == {4}


def test_input_bit_width_sets_the_input_quantizer_alone():
    widths = activation_bit_widths(quantized(bit_width_maps(act_bit_width=4, input_bit_width=8)))
    assert widths.pop("x_quant") == 8  # the quantizer Brevitas calls on the input x
    assert len(widths) > 40 and set(widths.values()) == {4}  # the ReLUs and the Add inputs


def test_add_bit_width_sets_the_identity_quantizers_around_the_adds():
    widths = activation_bit_widths(quantized(bit_width_maps(act_bit_width=4, input_bit_width=8,
                                                            add_bit_width=8)))
    around_adds = {name for name in widths if name.startswith("add_")}
    assert len(around_adds) == 15  # 10 Adds: after each, and before the 5 that start a stream
    relus = {name for name in widths if name.startswith("features.")}
    assert len(relus) == 35  # every ReLU6
    assert {widths[name] for name in around_adds} == {8}
    assert {widths[name] for name in relus} == {4}
    assert widths["x_quant"] == 8


def test_lambda_with_three_arguments_is_refused_naming_the_key():
    maps = default_quantize_maps_finn()
    maps["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] = lambda module, name, extra: 4
    with pytest.raises(ValueError, match="compute_layer_map.*Conv2d.*'weight_bit_width'.*3 arguments"):
        quantized(maps)


def relu6_names(model):
    return [name for name, module in model.named_modules() if isinstance(module, nn.ReLU6)]


def plain(tensor):
    return getattr(tensor, "value", tensor)


@torch.no_grad()
def inputs_and_outputs(model, names, x):
    """{name: (input max, output max)} of the named modules on one forward pass of `x`.

    The input is read before the module runs: torchvision's ReLU6 works in place."""
    inputs, outputs, hooks = {}, {}, []
    for name in names:
        module = model.get_submodule(name)
        hooks.append(module.register_forward_pre_hook(
            lambda module, args, name=name: inputs.__setitem__(name, float(plain(args[0]).max()))))
        hooks.append(module.register_forward_hook(
            lambda module, args, out, name=name: outputs.__setitem__(name, float(plain(out).max()))))
    model(x)
    for hook in hooks:
        hook.remove()
    return {name: (inputs[name], outputs[name]) for name in names}


@pytest.mark.parametrize("act_bit_width", [8, 4])
def test_quantized_relu6_clips_at_6_like_the_float_one(act_bit_width):
    torch.manual_seed(0)
    float_model = mobilenet_v2(num_classes=10).eval()
    for norm in float_model.modules():
        if isinstance(norm, nn.BatchNorm2d):  # spreads ReLU6 inputs beyond 6
            nn.init.constant_(norm.weight, 10.0)
    x = torch.randn(4, 3, 32, 32)
    names = relu6_names(float_model)
    model = quantize_finn(preprocess_for_finn_quantize(float_model, x[:1]),
                          **bit_width_maps(act_bit_width=act_bit_width))
    calibrate([(x, torch.zeros(len(x)))], model)
    assert len(names) == 35
    float_seen, quant_seen = inputs_and_outputs(float_model, names, x), inputs_and_outputs(model, names, x)
    clipped = [name for name in names if float_seen[name][0] > 6 and quant_seen[name][0] > 6]
    assert len(clipped) >= 3, clipped  # ReLU6s whose inputs the clip has to act on
    for name in names:
        assert float_seen[name][1] <= 6.0 and quant_seen[name][1] <= 6.0 + 1e-5, name
    for name in clipped:  # clipped at 6, not at a smaller calibrated range
        assert float_seen[name][1] == 6.0 and quant_seen[name][1] > 5.5, name
