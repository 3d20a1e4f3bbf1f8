"""The FINN quantization nodes: Brevitas layer maps FINN's frontend ingests, and the graph
preparation and insertion that use them (step 1 of the demo).

Brevitas has no FINN target (`brevitas.graph.target` holds only flexml), so the FINN maps are
written here, on `brevitas.graph.quantize.quantize`. The choices follow what FINN's frontend
ingests: float per-channel weight scales and per-tensor activation scales (FINN turns them into
thresholds), BatchNorm kept as its own node, scales aligned before every Add.
"""
import inspect
from contextlib import contextmanager

import brevitas
import brevitas.nn as qnn
from brevitas.core.function_wrapper.ops_ste import ScalarClampSte
from brevitas.core.restrict_val import FloatRestrictValue
from brevitas.fx import symbolic_trace
from brevitas.graph.per_input import AdaptiveAvgPoolToAvgPool
from brevitas.graph.quantize import preprocess_for_quantize, quantize
from brevitas.graph.standardize import MeanMethodToAdaptiveAvgPool2d
from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase
from brevitas.quant import (
    Int8ActPerTensorFloat, Int8ActPerTensorFloatMSE, Int8WeightPerChannelFloatMSE, Int32Bias,
    Uint8ActPerTensorFloat, Uint8ActPerTensorFloatMaxInit, Uint8ActPerTensorFloatMSE)
from brevitas.quant.base import MSESymmetricScale
from torch import nn

RELU6_RANGES = ("fixed", "calibrated")  # bit_width_maps' relu6_range: how ReLU6's range is set


class MaxClampedRestrictValue(FloatRestrictValue):
    """Brevitas' float restriction of a learned range, with a ceiling: the range is used as
    min(|value|, scaling_max_val) wherever the scaling implementation reads its parameter, after
    calibration and while training it. The gradient passes the clamp (Brevitas' ScalarClampSte),
    so a range trained past the ceiling can come back below it; calibration's statistic is
    clamped before it becomes the parameter, so training starts at or below the ceiling."""

    def __init__(self, scaling_max_val: float):
        super().__init__()
        self.max_val = float(scaling_max_val)
        self.clamp_max = ScalarClampSte(0.0, self.max_val)

    def restrict_init_inplace_module(self):
        return _InplaceAbsClampMax(self.max_val)

    @brevitas.jit.script_method
    def forward(self, x):
        return self.clamp_max(self.apply_abs(x))


class _InplaceAbsClampMax(nn.Module):
    """|x| clamped to `max_val`, in place: what ParameterFromRuntimeStatsScaling applies to its
    calibration statistic before copying it into the trainable range."""

    def __init__(self, max_val):
        super().__init__()
        self.max_val = max_val

    def forward(self, x):
        x.abs_().clamp_(max=self.max_val)


class Uint8ActPerTensorFloatMaxClamped(Uint8ActPerTensorFloat):
    """Brevitas' unsigned per-tensor activation quantizer (range from the calibration
    percentile, then trainable) whose range never exceeds `scaling_max_val`: a ReLU6 quantized
    with it clips where the float one does or earlier, never later."""
    restrict_scaling_impl = MaxClampedRestrictValue
    # Without its own, Brevitas restricts the integer threshold (2**bits - 1) with the scaling's
    # restriction, whose ceiling would cut it to 6.
    restrict_threshold_impl = FloatRestrictValue
    scaling_max_val = 6.0


class Uint8ActPerTensorFloatMSEMaxClamped(MSESymmetricScale, Uint8ActPerTensorFloatMaxClamped):
    """As Uint8ActPerTensorFloatMaxClamped, the range from Brevitas' MSE search (capped)."""


def default_quantize_maps_finn():
    """The FINN layer maps, 8-bit weights and activations; a fresh copy on every call.

    Edit them before passing them to `quantize_finn`. Any kwarg may be a number, a lambda of the
    module, or a lambda of the module and its name, for example
    `maps["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] = lambda module: 8 if module.groups != 1 else 4`.
    """
    def weight_layer(quant_class):
        return (quant_class, {
            # Each channel's scale minimizes the weights' quantization MSE instead of covering
            # the largest weight: the same 8-bit result, far less loss at 3-4 bits.
            "weight_quant": Int8WeightPerChannelFloatMSE,
            "weight_bit_width": 8,
            "bias_quant": Int32Bias,
            "return_quant_tensor": True})

    return {
        # the network input's quantizer (its images are signed after normalization)
        "input_quant": (qnn.QuantIdentity, {
            "act_quant": Int8ActPerTensorFloat, "bit_width": 8, "return_quant_tensor": True}),
        "quant_identity_map": {
            "signed": (qnn.QuantIdentity, {
                "act_quant": Int8ActPerTensorFloat, "bit_width": 8, "return_quant_tensor": True}),
            "unsigned": (qnn.QuantIdentity, {
                "act_quant": Uint8ActPerTensorFloat, "bit_width": 8, "return_quant_tensor": True})},
        "compute_layer_map": {
            nn.AvgPool2d: None,  # left in float; the Linear after it requantizes its input
            nn.Conv2d: weight_layer(qnn.QuantConv2d),
            nn.Linear: weight_layer(qnn.QuantLinear)},
        "quant_act_map": {
            nn.ReLU: (qnn.QuantReLU, {
                "act_quant": Uint8ActPerTensorFloat, "bit_width": 8, "return_quant_tensor": True}),
            # MobileNetV2's ReLU6 keeps its clip: a fixed [0, 6] range (scale 6 / (2**bits - 1)),
            # so the quantized network never passes a value the float one clips, as in the seed.
            nn.ReLU6: (qnn.QuantReLU, {
                "act_quant": Uint8ActPerTensorFloatMaxInit, "max_val": 6.0, "bit_width": 8,
                "return_quant_tensor": True})},
        "unsigned_act_tuple": (nn.ReLU, nn.ReLU6, nn.Sigmoid, nn.Hardsigmoid)}


def bit_width_maps(
        weight_bit_width=8, act_bit_width=8, depthwise_bit_width=None,
        first_conv_bit_width=None, last_linear_bit_width=None, input_bit_width=None,
        first_conv_name="features.0.0", add_bit_width=None, relu6_range="fixed"):
    """The default FINN maps with the given bit widths; None overrides mean `weight_bit_width`
    (`input_bit_width`, `add_bit_width`: `act_bit_width`).

    `add_bit_width` goes to the identity quantizers Brevitas inserts (quant_identity_map): on
    every block's and every Add's output (the residual stream, the Adds' inputs among them), and
    on the pooled features and the logits around the classifier; the ReLUs keep `act_bit_width`. `relu6_range` (RELU6_RANGES): "fixed" quantizes ReLU6 on [0, 6], the
    seed's; "calibrated" takes its range from calibration like the ReLUs', capped at 6.
    """
    if relu6_range not in RELU6_RANGES:
        raise ValueError(f"relu6_range={relu6_range!r}: choose {' or '.join(RELU6_RANGES)}")
    depthwise = depthwise_bit_width or weight_bit_width
    first_conv = first_conv_bit_width or weight_bit_width
    maps = default_quantize_maps_finn()
    maps["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] = (
        lambda module, name: first_conv if name == first_conv_name else
        depthwise if module.groups != 1 else weight_bit_width)
    maps["compute_layer_map"][nn.Linear][1]["weight_bit_width"] = (
        last_linear_bit_width or weight_bit_width)
    if relu6_range == "calibrated":
        maps["quant_act_map"][nn.ReLU6] = (qnn.QuantReLU, {
            "act_quant": Uint8ActPerTensorFloatMaxClamped, "scaling_max_val": 6.0,
            "return_quant_tensor": True})
    for _, kwargs in maps["quant_act_map"].values():
        kwargs["bit_width"] = act_bit_width
    identity_bit_width = add_bit_width or act_bit_width
    for _, kwargs in maps["quant_identity_map"].values():
        kwargs["bit_width"] = identity_bit_width
    maps["input_quant"][1]["bit_width"] = input_bit_width or act_bit_width
    # With few levels, the percentile scale (99.999th) spends them on rare peaks; an MSE-fitted
    # scale clips those instead, which keeps more top-1 at 4-bit activations.
    # It calibrates several times slower (timings: RESULTS.md), so 8-bit quantizers keep the
    # percentile.
    if identity_bit_width < 8:
        maps["quant_identity_map"]["signed"][1]["act_quant"] = Int8ActPerTensorFloatMSE
        maps["quant_identity_map"]["unsigned"][1]["act_quant"] = Uint8ActPerTensorFloatMSE
    if act_bit_width < 8:
        if maps["input_quant"][1]["bit_width"] < 8:
            maps["input_quant"][1]["act_quant"] = Int8ActPerTensorFloatMSE
        maps["quant_act_map"][nn.ReLU][1]["act_quant"] = Uint8ActPerTensorFloatMSE
        if relu6_range == "calibrated":
            maps["quant_act_map"][nn.ReLU6][1]["act_quant"] = Uint8ActPerTensorFloatMSEMaxClamped
    return maps


def preprocess_for_finn_quantize(model, x, relu6_to_relu=False):
    """Trace `model` with Brevitas' tracer and standardize its graph, keeping BatchNorm and ReLU6.

    `x` is an example input: it sizes the AvgPool2d that replaces the global average pool.
    Brevitas' own default, relu6_to_relu=True, turns ReLU6 into ReLU: the quantized network
    would then pass values above 6 that the float one clips.
    Brevitas' tracer is required, not torch.fx's: Brevitas' graph rewrites silently do nothing on
    a torch.fx graph and the residual handler then spins for tens of minutes.
    """
    model = symbolic_trace(model.eval())
    model = MeanMethodToAdaptiveAvgPool2d().apply(model)
    model = AdaptiveAvgPoolToAvgPool().apply(model, x)
    return preprocess_for_quantize(
        model, trace_model=False, merge_bn=False, relu6_to_relu=relu6_to_relu)


def relu6_ceiling(proxy):
    """Where an activation quantizer's own range clips, or None: ReLU6's 6, as `max_val` (the
    fixed range) or `scaling_max_val` (the calibrated one)."""
    for name in ("max_val", "scaling_max_val"):
        if name in proxy.quant_injector:
            return float(getattr(proxy.quant_injector, name))
    return None


@contextmanager
def float_relu6(model):
    """Brevitas quantizes ReLU6 as a QuantReLU: a plain ReLU whose quantizer clips at 6. With
    quantization off (calibration's statistics, the float paths of GPFQ, Qronos and learned
    rounding) it passes values above 6, so the graph those passes take for the float network is
    not the float network. Inside this context those activations are ReLU6 again, which leaves
    quantized outputs as they were (the quantizer's range ends at or below 6). Outside it they
    are ReLU, as FINN expects the export: Relu, then a Quant that holds the clip."""
    swapped = [(proxy.fused_activation_quant_proxy, relu6_ceiling(proxy))
               for proxy in model.modules()
               if isinstance(proxy, ActQuantProxyFromInjectorBase)
               and proxy.fused_activation_quant_proxy is not None
               and isinstance(proxy.fused_activation_quant_proxy.activation_impl, nn.ReLU)
               and relu6_ceiling(proxy) is not None]
    relus = [fused.activation_impl for fused, _ in swapped]
    for fused, ceiling in swapped:
        fused.activation_impl = nn.Hardtanh(0.0, ceiling)
    try:
        yield
    finally:
        for (fused, _), relu in zip(swapped, relus):
            fused.activation_impl = relu


def _check_kwarg_lambdas(layer_map, map_name):
    for layer, entry in layer_map.items():
        for key, value in (entry[1] if entry else {}).items():
            if inspect.isfunction(value) and len(inspect.signature(value).parameters) not in (1, 2):
                raise ValueError(
                    f"{map_name}[{layer.__name__}] kwarg {key!r}: a lambda must take (module) or "
                    f"(module, name), this one takes {len(inspect.signature(value).parameters)} "
                    "arguments")


def quantize_finn(
        model, quant_identity_map=None, compute_layer_map=None, quant_act_map=None,
        unsigned_act_tuple=None, input_quant=None):
    """Insert FINN-compatible quantization nodes into a preprocessed graph model.

    A map left as None takes its value from `default_quantize_maps_finn()`; `input_quant`, the
    (class, kwargs) of the network input's quantizer, from its "input_quant".
    """
    defaults = default_quantize_maps_finn()
    compute_layer_map = compute_layer_map if compute_layer_map is not None else defaults["compute_layer_map"]
    quant_act_map = quant_act_map if quant_act_map is not None else defaults["quant_act_map"]
    _check_kwarg_lambdas(compute_layer_map, "compute_layer_map")
    _check_kwarg_lambdas(quant_act_map, "quant_act_map")
    model = quantize(
        model,
        quant_identity_map=quant_identity_map or defaults["quant_identity_map"],
        compute_layer_map=compute_layer_map,
        quant_act_map=quant_act_map,
        unsigned_act_tuple=unsigned_act_tuple or defaults["unsigned_act_tuple"],
        requantize_layer_handler_output=True)
    # Brevitas' quantize() gives the input the "signed" identity quantizer, the one it also puts
    # before Adds; the input's own quantizer takes its place (FINN designs keep 8-bit inputs).
    input_class, input_kwargs = input_quant or defaults["input_quant"]
    for node in model.graph.nodes:
        if node.op == "placeholder":  # Brevitas names the module it calls on it <input>_quant
            if not hasattr(model, f"{node.name}_quant"):
                raise RuntimeError(f"Brevitas left no {node.name}_quant module on the input")
            setattr(model, f"{node.name}_quant", input_class(**input_kwargs))
    return model
