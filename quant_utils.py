"""Quantize MobileNetV2 for FINN with Brevitas, and recover accuracy with Brevitas' PTQ passes.

`quantize_and_recover` runs the whole flow in its fixed order (the demo, the benchmark and the
tests all call it):

    model = quantize_and_recover(float_model, calib_loader, example, bit_width_maps(4),
                                 gpfq=True, bn_corr=True, bias_corr=True)

and each step stays one function that can be used on its own:

    model = preprocess_for_finn_quantize(float_model, example_images)
    model = quantize_finn(model, **default_quantize_maps_finn())
    calibrate(calib_loader, model)
    apply_bias_correction(calib_loader, model)

Brevitas has no FINN target (`brevitas.graph.target` holds only flexml), so the FINN maps are
written here, on `brevitas.graph.quantize.quantize`. The choices follow what FINN's frontend
ingests: float per-channel weight scales and per-tensor activation scales (FINN turns them into
thresholds), BatchNorm kept as its own node, scales aligned before every Add.
"""
import copy
import inspect
from contextlib import nullcontext
from functools import partial

import brevitas.nn as qnn
import torch
from brevitas.fx import symbolic_trace
from brevitas.graph.calibrate import bias_correction_mode, calibration_mode, norm_correction_mode
from brevitas.graph.equalize import activation_equalization_mode
from brevitas.graph.gpfq import gpfq_mode
from brevitas.graph.gptq import gptq_mode
from brevitas.graph.per_input import AdaptiveAvgPoolToAvgPool
from brevitas.graph.qronos import Qronos
from brevitas.graph.quantize import preprocess_for_quantize, quantize
from brevitas.graph.standardize import MeanMethodToAdaptiveAvgPool2d
from brevitas.quant import (
    Int8ActPerTensorFloat, Int8ActPerTensorFloatMSE, Int8WeightPerChannelFloatMSE, Int32Bias,
    Uint8ActPerTensorFloat, Uint8ActPerTensorFloatMaxInit, Uint8ActPerTensorFloatMSE)
from brevitas_examples.common.axe import a2gpfq_mode, a2gptq_mode
from torch import nn
from tqdm import tqdm

from finn_demo.accumulators import may_overflow
from finn_demo.data import batches
from finn_demo.learned_round import MODES as LEARNED_ROUND_MODES
from finn_demo.learned_round import apply_learned_round
from finn_demo.fast_gpxq import (
    FastGPFQ, FastQronos, available_bytes, pass_bytes, run_gpfq_mode, run_gptq_mode)

# GPTQ, GPFQ and Qronos implementations: fast_gpxq.py's, or Brevitas' own loop (for comparison)
GPXQ_IMPLS = ("fast", "brevitas")


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
        first_conv_name="features.0.0"):
    """The default FINN maps with the given bit widths; None overrides mean `weight_bit_width`
    (`input_bit_width`: `act_bit_width`)."""
    depthwise = depthwise_bit_width or weight_bit_width
    first_conv = first_conv_bit_width or weight_bit_width
    maps = default_quantize_maps_finn()
    maps["compute_layer_map"][nn.Conv2d][1]["weight_bit_width"] = (
        lambda module, name: first_conv if name == first_conv_name else
        depthwise if module.groups != 1 else weight_bit_width)
    maps["compute_layer_map"][nn.Linear][1]["weight_bit_width"] = (
        last_linear_bit_width or weight_bit_width)
    for _, kwargs in (*maps["quant_identity_map"].values(), *maps["quant_act_map"].values()):
        kwargs["bit_width"] = act_bit_width
    maps["input_quant"][1]["bit_width"] = input_bit_width or act_bit_width
    if act_bit_width < 8:
        # With few levels, the percentile scale (99.999th) spends them on rare peaks; an MSE-fitted
        # scale clips those instead, which keeps more top-1 at 4-bit activations.
        # It calibrates about 10x slower (RESULTS.md), so 8-bit activations keep the percentile.
        maps["quant_identity_map"]["signed"][1]["act_quant"] = Int8ActPerTensorFloatMSE
        if maps["input_quant"][1]["bit_width"] < 8:
            maps["input_quant"][1]["act_quant"] = Int8ActPerTensorFloatMSE
        maps["quant_identity_map"]["unsigned"][1]["act_quant"] = Uint8ActPerTensorFloatMSE
        maps["quant_act_map"][nn.ReLU][1]["act_quant"] = Uint8ActPerTensorFloatMSE
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


def _run(loader, model, desc):
    """One pass of `loader` through `model`, for the side effects of a Brevitas context."""
    device = next(model.parameters()).device
    for images, _ in batches(loader, device, desc):
        model(images)


@torch.no_grad()
def calibrate(loader, model):
    """Collect activation statistics to set every activation scale."""
    with calibration_mode(model):
        _run(loader, model, "calibration")


@torch.no_grad()
def apply_act_equalization(loader, model, alpha=0.5, add_mul_node=False):
    """SmoothQuant-style activation equalization on the float graph model, before quantize_finn.

    With add_mul_node=False the scales are folded into the neighbouring layers (no new node);
    with True a Mul node is inserted where they cannot be folded.
    """
    with activation_equalization_mode(model, alpha, add_mul_node=add_mul_node, layerwise=False):
        _run(loader, model, "act. equalization")
    return model


@torch.no_grad()
def apply_bias_correction(loader, model):
    """Correct each layer's bias for the mean error that quantization adds to its output."""
    with bias_correction_mode(model):
        _run(loader, model, "bias correction")


@torch.no_grad()
def _gpxq_images(loader, model, desc):
    """The calibration images as batches on the model's device, decoded once (the GPxQ passes go
    over them once per layer: about 600 MB per 1000 images at 224x224), after the one quantized
    forward pass that initializes the weight quantizers GPxQ needs."""
    device = next(model.parameters()).device
    images = [images for images, _ in batches(loader, device, f"{desc} data")]
    model(images[0])
    return images


def _apply_gpxq(images, model, mode, desc):
    """Brevitas' own GPxQ loop: every calibration batch through the model once per layer."""
    with torch.no_grad():
        with mode(model) as gpxq:
            for layer in range(gpxq.num_layers):
                for batch in tqdm(images, desc=f"{desc} layer {layer + 1}/{gpxq.num_layers}",
                                  leave=False, dynamic_ncols=True):
                    gpxq.model(batch)
                gpxq.update()


def apply_gptq(loader, model, impl="fast", accumulator_bit_width=None):
    """GPTQ: round weights layer by layer, each column correcting for the rounding error of the
    columns before it. `impl` and `accumulator_bit_width` as in apply_gpfq."""
    _check_gpxq_impl(impl)
    images = _gpxq_images(loader, model, "GPTQ")
    mode = _axe_mode(a2gptq_mode, gptq_mode, model, images, accumulator_bit_width)
    fast = partial(run_gptq_mode, mode=mode, desc="GPTQ")
    if impl == "brevitas" or not _apply_fast_gpxq(images, model, fast, "GPTQ", runs=1):
        _apply_gpxq(images, model, mode, "GPTQ")


def _axe_mode(axe_mode, plain_mode, model, images, accumulator_bit_width):
    """`plain_mode`, or with an accumulator width AXE's `axe_mode` on the layers that could
    overflow it (accumulators.may_overflow; the others run `plain_mode`'s algorithm: any of
    their weights fit)."""
    if not accumulator_bit_width:
        return plain_mode
    bounded = may_overflow(model, images[0], accumulator_bit_width)
    return partial(axe_mode, max_accumulator_bit_width=accumulator_bit_width,
                   a2q_layer_filter_fnc=lambda layer: layer in bounded)


# The share of free memory fast_gpxq's pass may take; beyond it Brevitas' loop runs instead.
FAST_GPXQ_MEMORY_SHARE = 0.8


def _apply_fast_gpxq(images, model, run, desc, runs=2):
    """GPTQ, GPFQ or Qronos by fast_gpxq: `run(images, model)`, one node-by-node pass over the
    calibration batches, holding `runs` models' activations (GPFQ and Qronos: quantized and float).

    False, having done nothing, where that pass would not fit in memory: it holds every
    calibration image's activations at once (gigabytes at 224x224), Brevitas' loop one batch.
    """
    with torch.no_grad():
        needed, free = pass_bytes(model, images, runs), available_bytes(images[0].device)
        if free is not None and needed > FAST_GPXQ_MEMORY_SHARE * free:
            print(f"{desc}: the fast path would hold about {needed / 1e9:.1f} GB of activations "
                  f"for {sum(len(batch) for batch in images)} images, {free / 1e9:.1f} GB are free: "
                  "running Brevitas' implementation instead (the same weights, slower; "
                  "a smaller --calib_size keeps the fast one)")
            return False
        run(images, model)
    return True


def _check_gpxq_impl(impl):
    if impl not in GPXQ_IMPLS:
        raise ValueError(f"impl={impl!r}: choose one of {', '.join(GPXQ_IMPLS)}")


def apply_gpfq(loader, model, impl="fast", accumulator_bit_width=None):
    """GPFQ: greedy path-following weight quantization, against the float layer's output.

    impl="fast" runs fast_gpxq.py (the same integer weights, many times faster); "brevitas"
    runs Brevitas' own gpfq_mode loop.
    accumulator_bit_width=N: AXE, Brevitas' accumulator-aware GPFQ (brevitas_examples' A2GPFQ),
    which keeps every dot product of every layer, at the extremes of its input's integer range,
    inside a signed N-bit accumulator: the width FINN then gives it.
    """
    _check_gpxq_impl(impl)
    images = _gpxq_images(loader, model, "GPFQ")
    mode = _axe_mode(a2gpfq_mode, gpfq_mode, model, images, accumulator_bit_width)
    fast = partial(run_gpfq_mode, algorithm_impl=FastGPFQ, desc="GPFQ", mode=mode)
    if impl == "brevitas" or not _apply_fast_gpxq(images, model, fast, "GPFQ"):
        _apply_gpxq(images, model, mode, "GPFQ")


def apply_qronos(loader, model, alpha=1e-3, impl="fast"):
    """Qronos: round weights layer by layer against the float layer's output, correcting both the
    rounding error so far and the error the quantized layers before feed in (brevitas.graph.qronos).

    `alpha` damps each layer's input covariance before it is inverted. Brevitas defaults to 1e-6,
    but a few hundred calibration images give the late 1x1 convs (up to 960 input channels, at
    1x1 pixels for 32x32 inputs) a covariance of lower rank than its size; on the digits model
    1e-3 followed the float model more closely on training images held out from calibration.
    Like GPTQ and GPFQ it sets the final weights: use one of the three. `impl` as in apply_gpfq.
    """
    _check_gpxq_impl(impl)
    images = _gpxq_images(loader, model, "Qronos")
    fast = partial(run_gpfq_mode, algorithm_impl=partial(FastQronos, alpha=alpha), act_order=True,
                   desc="Qronos")
    if impl == "brevitas" or not _apply_fast_gpxq(images, model, fast, "Qronos"):
        qronos_mode = partial(gpfq_mode, act_order=True, algorithm_impl=partial(Qronos, alpha=alpha))
        _apply_gpxq(images, model, qronos_mode, "Qronos")


@torch.no_grad()
def apply_bn_correction(loader, model):
    """Re-estimate BatchNorm statistics on the quantized model's own activations (Brevitas'
    norm_correction_mode). BatchNorm stays its own node: FINN folds it into thresholds as before.
    """
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    before = [(norm.running_mean.clone(), norm.running_var.clone()) for norm in norms]
    with norm_correction_mode(model):
        _run(loader, model, "BN correction")
    # A channel whose input is always zero (a dead ReLU upstream) gets variance 0 and NaN
    # statistics from norm_correction_mode: keep its original statistics.
    for norm, (mean, var) in zip(norms, before):
        bad = ~(torch.isfinite(norm.running_mean) & torch.isfinite(norm.running_var))
        norm.running_mean[bad], norm.running_var[bad] = mean[bad], var[bad]
    model.eval()  # norm_correction_mode leaves BatchNorm in training mode


# quantize_and_recover's PTQ keyword arguments: the demo's flags of the same names.
PTQ_FLAGS = ("relu6_to_relu", "act_eq", "act_eq_alpha", "act_eq_add_mul_node", "gptq", "gpfq",
             "qronos", "qronos_alpha", "gpxq_impl", "accumulator_bit_width", "learned_round",
             "learned_round_iters", "bn_corr", "bias_corr")


def _untimed(name, model=None):
    return nullcontext()


def quantize_and_recover(
        float_model, calib_loader, example, maps=None, *, relu6_to_relu=False, act_eq=False,
        act_eq_alpha=0.5, act_eq_add_mul_node=False, gptq=False, gpfq=False, qronos=False,
        qronos_alpha=1e-3, gpxq_impl="fast", accumulator_bit_width=None, learned_round="none",
        learned_round_iters=200, bn_corr=False, bias_corr=False, stage=_untimed):
    """Quantize a copy of `float_model` for FINN and run the chosen PTQ passes, in this order:

    1. act_eq (on the float graph: it rescales float weights before they are quantized),
    2. quantize_finn with `maps` (default: default_quantize_maps_finn()), then calibration,
    3. one of gptq / gpfq / qronos / learned_round (they set the final integer weights),
    4. bn_corr (BatchNorm statistics of those final weights' activations),
    5. bias_corr last (it corrects the mean error that every pass before left; run earlier, the
       weight rounding and BatchNorm re-estimation would change the error it corrected).

    This is Brevitas' ptq_evaluate.py order. `example` is one input batch on the model's device.
    relu6_to_relu as in preprocess_for_finn_quantize; accumulator_bit_width (with gptq or gpfq)
    as in apply_gpfq.
    `stage(name, model)` is entered around each step (the demo times them with it). Returns the
    quantized model; `float_model` is left unchanged.
    """
    if sum((gptq, gpfq, qronos, learned_round != "none")) > 1:
        raise ValueError("gptq, gpfq, qronos and learned_round all set the final weights: choose one")
    if accumulator_bit_width and not (gptq or gpfq):
        raise ValueError("accumulator_bit_width is AXE, a variant of GPTQ and GPFQ: set one of them")
    if learned_round not in LEARNED_ROUND_MODES:
        raise ValueError(f"learned_round={learned_round!r}: choose {', '.join(LEARNED_ROUND_MODES)}")
    model = preprocess_for_finn_quantize(copy.deepcopy(float_model), example, relu6_to_relu)
    if act_eq:
        with stage("act_eq", model):
            apply_act_equalization(calib_loader, model, act_eq_alpha, act_eq_add_mul_node)
    model = quantize_finn(model, **(maps or default_quantize_maps_finn())).to(example.device)
    with stage("calibration", model):
        calibrate(calib_loader, model)
    if gptq:
        with stage("gptq", model):
            apply_gptq(calib_loader, model, gpxq_impl, accumulator_bit_width)
    if gpfq:
        with stage("gpfq", model):
            apply_gpfq(calib_loader, model, gpxq_impl, accumulator_bit_width)
    if qronos:
        with stage("qronos", model):
            apply_qronos(calib_loader, model, qronos_alpha, gpxq_impl)
    if learned_round != "none":
        with stage("learned_round", model):
            apply_learned_round(calib_loader, model, learned_round, learned_round_iters)
    if bn_corr:
        with stage("bn_corr", model):
            apply_bn_correction(calib_loader, model)
    if bias_corr:
        with stage("bias_corr", model):
            apply_bias_correction(calib_loader, model)
    return model
