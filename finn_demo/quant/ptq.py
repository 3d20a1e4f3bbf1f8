"""Post-training quantization (step 2 of the demo): one short function per Brevitas PTQ pass,
the passes declared once as data (PTQ_PASSES, in their run order), and `quantize_and_recover`,
which quantizes (maps.py) and runs the passes its options turn on, looping over that table.

    model = quantize_and_recover(float_model, calib_loader, example, bit_width_maps(4),
                                 gpfq=True, bn_corr=True, bias_corr=True)

The order, the flags (PTQ_FLAGS) and which options combine (ptq_options_problem) all read
PTQ_PASSES: the demo's flag checks (finn_demo/validate.py) ask the same function.
"""
import copy
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch
from brevitas.core.scaling import ParameterFromRuntimeStatsScaling
from brevitas.graph.calibrate import (
    QuantizationStatusManager, bias_correction_mode, calibration_mode, extend_collect_stats_steps,
    finalize_collect_stats, norm_correction_mode, set_collect_stats_to_average)
from brevitas.graph.equalize import activation_equalization_mode
from brevitas.graph.gpfq import gpfq_mode
from brevitas.graph.gptq import gptq_mode
from brevitas.graph.qronos import Qronos
from brevitas_examples.common.axe import a2gpfq_mode, a2gptq_mode
from torch import nn
from tqdm import tqdm

from finn_demo.data.datasets import batches
from finn_demo.quant.accumulators import may_overflow
from finn_demo.quant.act_ranges import apply_learned_act_range
from finn_demo.quant.fast_gpxq import (
    FastGPFQ, FastQronos, available_bytes, pass_bytes, run_gpfq_mode, run_gptq_mode)
from finn_demo.quant.learned_round import MODES as LEARNED_ROUND_MODES
from finn_demo.quant.learned_round import apply_learned_round
from finn_demo.quant.maps import (
    default_quantize_maps_finn, float_relu6, preprocess_for_finn_quantize, quantize_finn)

# GPTQ, GPFQ and Qronos implementations: fast_gpxq.py's, or Brevitas' own loop (for comparison)
GPXQ_IMPLS = ("fast", "brevitas")


def ptq_options_problem(*, gptq=False, gpfq=False, learned_round="none",
                        accumulator_bit_width=None, gpxq_impl="fast", learned_act_range=False,
                        learned_act_range_bn=False, qdrop=0.0, **other_flags):
    """The first rule these PTQ options break, as one line naming the flags, or None.

    Takes any of PTQ_FLAGS by keyword; those not named here are checked only for the rule that
    the weight rounding passes (PtqPass.sets_weights) exclude each other.
    """
    if learned_round not in LEARNED_ROUND_MODES:
        return f"--learned_round={learned_round!r}: choose {', '.join(LEARNED_ROUND_MODES)}"
    if isinstance(qdrop, bool) or not isinstance(qdrop, (int, float)) or not 0 <= qdrop < 1:
        return (f"--qdrop={qdrop!r}: the probability of keeping an activation float while a "
                "block trains, from 0 (off) up to but not including 1 (0.5 is QDrop's)")
    if qdrop and not (learned_act_range or learned_round == "blockwise"):
        return (f"--qdrop={qdrop}: QDrop acts while blocks train; add --learned_act_range=True or "
                "--learned_round=blockwise (or set --qdrop=0)")
    if learned_act_range_bn and not learned_act_range:
        return ("--learned_act_range_bn=True trains BatchNorm beside the learned ranges; add "
                "--learned_act_range=True")
    flags = dict(other_flags, gptq=gptq, gpfq=gpfq, learned_round=learned_round)
    rounding = [ptq_pass.flag for ptq_pass in PTQ_PASSES
                if ptq_pass.sets_weights and _turned_on(flags.get(ptq_pass.flag, False))]
    if len(rounding) > 1:
        return (f"--{' and --'.join(rounding)} are all weight rounding; choose one "
                "(set the others to False, or --learned_round=none)")
    if accumulator_bit_width and not (gptq or gpfq):
        return (f"--accumulator_bit_width={accumulator_bit_width}: AXE is a variant of GPTQ and "
                "GPFQ; add --gpfq=True or --gptq=True")
    if gpxq_impl not in GPXQ_IMPLS:
        return f"--gpxq_impl={gpxq_impl!r}: choose {' or '.join(GPXQ_IMPLS)}"
    return None


def _turned_on(value):
    """Whether a pass's flag asks for it: a true value, except learned_round's "none"."""
    return bool(value) and value != "none"


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


def _restart_statistics(scaling):
    """Put a calibrated range back to the state Brevitas builds it in: its first batch's
    statistic multiplies the buffer, and init_scale multiplies the value by the buffer."""
    scaling.counter = 0
    scaling.buffer.fill_(1.0)
    scaling.value.data.fill_(1.0)


@torch.no_grad()
def apply_range_refit(loader, model):
    """Calibrate every statistics-based activation range again on the model as the passes before
    left it, with its weights and the activations upstream quantized (calibration_mode runs all
    in float): Brevitas' calibration pieces, each range the average of its batches' statistics.
    Fixed ranges (ReLU6's [0, 6], ParameterScaling) have no statistics and stay. Run it on the
    model calibrate() calibrated, not on a deepcopy of it: on a copy, Brevitas' MSE scaling
    search recurses without end."""
    for module in model.modules():
        if isinstance(module, ParameterFromRuntimeStatsScaling):
            _restart_statistics(module)
    model.apply(extend_collect_stats_steps)
    model.apply(set_collect_stats_to_average)
    # Training mode makes the activation quantizers collect statistics; quantization stays on.
    QuantizationStatusManager.enable_act_quantization(model, is_training=True)
    try:
        _run(loader, model, "range refit")
    finally:
        QuantizationStatusManager.enable_act_quantization(model, is_training=False)
        model.apply(finalize_collect_stats)


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


@dataclass(frozen=True)
class PtqPass:
    """One PTQ pass: quantize_and_recover runs `run(calib_loader, model, **options)` in the stage
    `name` when the flag `flag` is on (None: always), passing each of `options` ({run's keyword:
    the flag that sets it}) that the caller gave; the others keep `run`'s own default."""
    name: str
    flag: str | None
    run: Callable
    options: dict = field(default_factory=dict)
    float_graph: bool = False  # runs on the float graph, before quantize_finn
    sets_weights: bool = False  # weight rounding: sets the final integer weights, one per run


_GPXQ_OPTIONS = {"impl": "gpxq_impl", "accumulator_bit_width": "accumulator_bit_width"}
_RANDOM = {"qdrop": "qdrop", "seed": "seed"}  # the passes that draw at random (QDrop, steps' images)

# The passes in the order they run, Brevitas' ptq_evaluate.py order; the float-graph ones first.
PTQ_PASSES = (
    # act_eq rescales float weights before they are quantized
    PtqPass("act_eq", "act_eq", apply_act_equalization,
            {"alpha": "act_eq_alpha", "add_mul_node": "act_eq_add_mul_node"}, float_graph=True),
    PtqPass("calibration", None, calibrate),
    # the weight rounding passes (ptq_options_problem allows one) set the final integer weights
    PtqPass("gptq", "gptq", apply_gptq, _GPXQ_OPTIONS, sets_weights=True),
    PtqPass("gpfq", "gpfq", apply_gpfq, _GPXQ_OPTIONS, sets_weights=True),
    PtqPass("qronos", "qronos", apply_qronos, {"alpha": "qronos_alpha", "impl": "gpxq_impl"},
            sets_weights=True),
    PtqPass("learned_round", "learned_round", apply_learned_round,
            {"mode": "learned_round", "iters": "learned_round_iters", **_RANDOM}, sets_weights=True),
    # bn_corr re-estimates BatchNorm on the activations of those final weights
    PtqPass("bn_corr", "bn_corr", apply_bn_correction),
    # the activation ranges refitted, then learned, on what the passes before left (learning
    # starts from range_refit's ranges)
    PtqPass("range_refit", "range_refit", apply_range_refit),
    PtqPass("learned_act_range", "learned_act_range", apply_learned_act_range,
            {"iters": "learned_act_range_iters", "bn": "learned_act_range_bn", **_RANDOM}),
    # bias_corr corrects the mean error every pass before it left, so it is last: run earlier,
    # the weight rounding and BatchNorm re-estimation would change the error it corrected
    PtqPass("bias_corr", "bias_corr", apply_bias_correction),
)


def ptq_flags(passes):
    """The flags `passes` read, each once: every pass's own flag and its options' flags."""
    names = []
    for ptq_pass in passes:
        names += ([ptq_pass.flag] if ptq_pass.flag else []) + list(ptq_pass.options.values())
    return tuple(dict.fromkeys(names))


# quantize_and_recover's PTQ keyword arguments: the demo's flags of the same names.
PTQ_FLAGS = ptq_flags(PTQ_PASSES)


def _untimed(name, model=None):
    return nullcontext()


def _check_options(options):
    """Raise TypeError on an option no pass reads, ValueError on options that do not combine."""
    # the table as it is now, not PTQ_FLAGS as it was at import: a pass registered since counts
    unknown = [name for name in options if name not in ptq_flags(PTQ_PASSES)]
    if unknown:
        raise TypeError(f"quantize_and_recover: unknown PTQ option(s) {', '.join(unknown)}; "
                        f"the options are {', '.join(ptq_flags(PTQ_PASSES))}")
    problem = ptq_options_problem(**options)
    if problem:
        raise ValueError(problem)


def _run_passes(passes, calib_loader, model, options, stage):
    """Each of `passes` that `options` turn on, in order, each in its own stage."""
    for ptq_pass in passes:
        if ptq_pass.flag is None or _turned_on(options.get(ptq_pass.flag, False)):
            given = {keyword: options[flag] for keyword, flag in ptq_pass.options.items()
                     if flag in options}
            with stage(ptq_pass.name, model):
                ptq_pass.run(calib_loader, model, **given)


def quantize_and_recover(float_model, calib_loader, example, maps=None, relu6_to_relu=False, *,
                         stage=_untimed, **options):
    """Quantize a copy of `float_model` for FINN and run the PTQ passes `options` turn on, in the
    order of PTQ_PASSES: the float-graph ones (act_eq), then quantize_finn with `maps` (default:
    default_quantize_maps_finn()), then the others, calibration first.

    `example` is one input batch on the model's device. `maps` and `relu6_to_relu` (as in
    preprocess_for_finn_quantize) choose the quantization nodes. `options` are any of PTQ_FLAGS,
    the demo's flags of the same names: a pass's flag turns it on (off when not given), its
    option flags go to its function (its own default when not given); ptq_options_problem says
    which combine. accumulator_bit_width (with gptq or gpfq) as in apply_gpfq; `qdrop` applies
    to learned_act_range and to blockwise learned_round; `seed` seeds the passes that draw at
    random (which calibration images each training step uses, and QDrop's masks), so a run is
    reproducible.
    `stage(name, model)` is entered around each pass (the demo times them with it). Returns the
    quantized model; `float_model` is left unchanged.
    """
    _check_options(options)
    float_passes = [ptq_pass for ptq_pass in PTQ_PASSES if ptq_pass.float_graph]
    quantized_passes = [ptq_pass for ptq_pass in PTQ_PASSES if not ptq_pass.float_graph]
    model = preprocess_for_finn_quantize(copy.deepcopy(float_model), example, relu6_to_relu)
    _run_passes(float_passes, calib_loader, model, options, stage)
    model = quantize_finn(model, **(maps or default_quantize_maps_finn())).to(example.device)
    with float_relu6(model):  # every pass below sees ReLU6 where quantization is off
        _run_passes(quantized_passes, calib_loader, model, options, stage)
    return model
