"""Exact requantization: a Requant_rtl layer (FINN's node on the project's core,
requant_rtl.py) in place of a Thresholding_rtl layer wherever it computes the same output on
every input, proven, not sampled.

A threshold layer with N thresholds a channel (255 at 8 bits) gives ActVal + #{k: x >= T_k}.
Where its thresholds are a uniform staircase, a Requant computes it from two numbers a channel
and one multiplier: clip(floor(x*scale + bias + 1/2)). FINN computes the thresholds from the
QONNX scales, so they are uniform only to rounding; on integer inputs they are the integer
thresholds ceil(T_k), clipped to the input's range, and what a Requant must reproduce is that
integer staircase, exactly.

Parameters (`exact_parameters`), after FINN's bit-width minimization, when the input range is
known: each threshold bounds where the line crosses its level (`crossing_bounds`: from both
sides inside the input range, from one side where FINN clipped it to the range's end), the
step with the most room between those bounds (`centred_step`), and per channel the fewest
MANTISSA_BITS whose scale m * 2**e (and a bias B * 2**e) meets every bound
(`dyadic_parameters`). An 8-bit output over a wide accumulator can need more mantissa bits than
finn-rtllib's requant core keeps (docs/finn_build.md): hence the project's core, which takes
the integers as they are. Scale and bias are stored in float64, which holds
them exactly, so FINN's Python model (Requant.execute_node: x*scale + bias + 1/2) computes them
without rounding.

Exactness, proven on two staircases: thresholds on integer inputs and a multiply-add with a
positive scale are both non-decreasing step functions of the input. If they agree at each
threshold, at one below it and at the ends of the input range, they agree on every integer
input between. `mismatches` evaluates, at those points and per channel, FINN's Python model and
the integers the core computes with (`decompose_params`: (x*scale + bias) >> shift, saturated)
against the thresholds. A layer with a mismatch stays Thresholding, with the reason;
`proof_failures` proves the folded design's Requant layers again against the thresholds they
replaced, and a failure stops the build, naming the layer. The layers use `internal_decoupled`:
the integers stream from FINN's memstream.
"""
from collections import Counter

import numpy as np
from onnx import helper
from qonnx.transformation.general import GiveUniqueNodeNames

from finn.custom_op.fpgadataflow.requant import Requant
from finn.util.basic import getHWCustomOp

from finn_demo.hw import requant_rtl  # noqa: F401  registers the project's Requant_rtl

MEM_MODE = "internal_decoupled"  # integers streamed from memory, not six-decimal text
# Scale mantissa bits tried per channel, fewest first: a narrow scale keeps a lane in one DSP.
MANTISSA_BITS = (16, 20, 24, 28, 32)
NUDGES = 8  # scale mantissas tried on either side of the centred line's


def staircase(thresholds, points, act_val):
    """A threshold layer's output at integer `points` ([P, C]) for `thresholds` [C, N]:
    act_val + how many thresholds each point reaches (x >= T)."""
    counts = [np.searchsorted(row, points[:, c], side="right") for c, row in enumerate(thresholds)]
    return act_val + np.stack(counts, axis=1)


def step_points(thresholds, low, high):
    """[P, C] integer inputs per channel: each threshold, the input below it, and the input
    range's ends (thresholds [C, N], integers)."""
    ends = np.full((len(thresholds), 2), [low, high])
    points = np.concatenate([thresholds, thresholds - 1, ends], axis=1)
    return np.clip(points, low, high).T


def python_model(node, points, scale, bias):
    """FINN's Python model of the Requant `node` (Requant.execute_node) at `points` ([P, C])."""
    context = {node.input[0]: points.astype(np.float32), node.input[1]: scale, node.input[2]: bias}
    Requant(node).execute_node(context, None)
    return context[node.output[0]]


def rtl_integers(inst, model):
    """(scale, bias, shift) per channel: the integers the project's core computes with
    (requant_rtl's decompose_params), from their [PE][CF] layout to channel order."""
    params = inst.decompose_params(model)
    return tuple(np.asarray(params[key], dtype=object).T.reshape(-1)
                 for key in ("scale", "bias", "shift"))


def rtl_model(points, integers, odt):
    """The RTL's output at integer `points` ([P, C]): clip((x*scale + bias) >> shift), in
    Python integers (the product may be wider than 64 bits)."""
    scale, bias, shift = integers
    value = (points.astype(np.int64).astype(object) * scale + bias) >> shift
    return np.minimum(np.maximum(value, int(odt.min())), int(odt.max()))


def crossing_bounds(thresholds, low, high):
    """(upper, lower) [C, N]: where the line must cross level k+1 (at p_k) for inputs in
    [low, high] to reach it exactly from the integer threshold T_k on: lower < p_k <= upper.
    FINN clips thresholds to the input range, so a threshold at or below its start is reached by
    every input (p_k <= low, no lower bound) and one above its end by none (p_k > high, no upper
    bound): such thresholds bound the line from one side only."""
    upper = np.where(thresholds <= high, np.maximum(thresholds, low), np.inf)
    lower = np.where(thresholds > low, np.minimum(thresholds - 1, high), -np.inf)
    return upper, lower


def centred_step(upper, lower, inputs, iterations=60):
    """The step per channel of the line t0 + k*step whose crossings can lie farthest inside
    their bounds (`crossing_bounds`, [C, N]): that room is a concave function of the step,
    maximized by ternary search within two inputs, over the number of steps between them, of
    the step between the first and last threshold inside the input range. A channel with fewer
    than two gets the step of `inputs`, the input range's width (at most one crossing in it)."""
    k = np.arange(upper.shape[1])

    def room(step):  # per channel: the width of the interval every t0 must lie in
        return (np.min(upper - k * step[:, None], axis=1)
                - np.max(lower - k * step[:, None], axis=1))
    inside = np.isfinite(upper) & np.isfinite(lower)
    first, last = np.argmax(inside, axis=1), upper.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    span = np.where(inside.any(axis=1), last - first, 0)
    rows = np.arange(len(upper))
    step = np.where(span > 0, (upper[rows, last] - upper[rows, first]) / np.maximum(span, 1),
                    inputs)
    step = np.maximum(step, 1e-9)
    delta = np.where(span > 0, 2 / np.maximum(span, 1), 0)
    low, high = np.maximum(step - delta, step / 2), step + delta
    for _ in range(iterations):
        left, right = low + (high - low) / 3, high - (high - low) / 3
        better = room(left) < room(right)
        low, high = np.where(better, left, low), np.where(better, high, right)
    return (low + high) / 2


def dyadic_parameters(upper, lower, act_val, step, bits):
    """(scale, bias) as float64, scale = m * 2**e with a `bits`-bit m nearest 1/step (or a
    neighbour) and bias = B * 2**e, whose multiply-add reaches level k+1 at the input `upper[k]`
    and not at `lower[k]` (one channel's `crossing_bounds`; an infinite bound asks nothing);
    None where no such B exists for the mantissas tried."""
    exponent = int(np.floor(np.log2(1 / step))) - (bits - 1)
    if exponent >= 0:  # a step under 2**-(bits-1) inputs (a channel whose thresholds coincide)
        return None
    nearest = int(round(1 / step / 2.0 ** exponent))
    levels = np.arange(1, len(upper) + 1, dtype=object) * (1 << -exponent)
    reach, below = np.isfinite(upper), np.isfinite(lower)
    reached = upper[reach].astype(np.int64).astype(object)
    unreached = lower[below].astype(np.int64).astype(object)
    for mantissa in sorted(range(nearest - NUDGES, nearest + NUDGES + 1),
                           key=lambda m: abs(m - nearest)):
        if not 2 ** (bits - 1) <= mantissa < 2 ** bits:
            continue
        # x*m + C >= level(k) at x = upper[k], < it at lower[k], in units of 2**e; a side with
        # no bound at all (every threshold outside the range) is one input's width from the other
        low = max(levels[reach] - reached * mantissa, default=None)
        high = min(levels[below] - unreached * mantissa, default=None)  # exclusive
        low = high - mantissa if low is None else low
        high = low + mantissa if high is None else high
        if low < high:
            shift = int((0.5 - act_val) * (1 << -exponent))  # floor(x*s + b + 1/2) - ActVal
            bias = coarsest_multiple(low, high) - shift
            return mantissa * 2.0 ** exponent, bias * 2.0 ** exponent
    return None


def coarsest_multiple(low, high):
    """The integer in [low, high) (low < high) with the most trailing zero bits: the constant
    the core adds then has as few bits as the room allows (its memory stores them shifted), and
    float64 holds it exactly."""
    for bits in range((high - low).bit_length(), -1, -1):
        value = -(-low >> bits) << bits  # the first multiple of 2**bits at or above low
        if value < high:
            return value


def requant_node(inst, scale_name, bias_name):
    """The Requant_rtl node standing in for the Thresholding_rtl op `inst` (PE 1, decoupled)."""
    node = inst.onnx_node
    return helper.make_node(
        "Requant_rtl", [node.input[0], scale_name, bias_name], [node.output[0]],
        domain="finn.custom_op.fpgadataflow.rtl", backend="fpgadataflow",
        name=node.name.replace("Thresholding", "Requant"),
        NumChannels=inst.get_nodeattr("NumChannels"), PE=1, narrow=0, mem_mode=MEM_MODE,
        numInputVectors=inst.get_nodeattr("numInputVectors"),
        inputDataType=inst.get_nodeattr("inputDataType"),
        outputDataType=inst.get_nodeattr("outputDataType"))


def why_not(inst):
    """Why the Thresholding_rtl op `inst` has no Requant form, or None."""
    idt, odt = inst.get_input_datatype(0), inst.get_output_datatype()
    count = inst.get_nodeattr("numSteps")
    act_val = inst.get_nodeattr("ActVal")
    if not idt.is_integer():
        return f"{idt.name} input (the Requant core multiplies integers)"
    if act_val != odt.min() or act_val + count != odt.max():
        return f"outputs {act_val}..{act_val + count} are not {odt.name}'s full range"
    return None


def thresholds_of(inst, model):
    """The layer's integer thresholds, one row per channel [C, N]."""
    thresholds = model.get_initializer(inst.onnx_node.input[1])
    return np.broadcast_to(thresholds, (inst.get_nodeattr("NumChannels"), thresholds.shape[-1]))


def mismatches(node, model, staircase_of):
    """[C] per channel: whether FINN's Python model or the RTL's integers of the Requant_rtl
    `node` (its parameters in `model`) differ somewhere from `staircase_of` = (thresholds [C, N],
    ActVal), the threshold layer it computes."""
    thresholds, act_val = staircase_of
    requant = getHWCustomOp(node)
    idt, odt = requant.get_input_datatype(0), requant.get_output_datatype()
    points = step_points(thresholds, idt.min(), idt.max())
    expected = staircase(thresholds, points, act_val)
    scale, bias = requant.get_scale(model), requant.get_bias(model)
    wrong = python_model(node, points, scale, bias) != expected
    integers = rtl_integers(requant, model)
    return (wrong | (rtl_model(points, integers, odt) != expected)).any(axis=0)


def exact_parameters(inst, model):
    """((scale, bias) float64 per channel, None) for a Requant that computes the Thresholding_rtl
    op `inst` exactly, or (None, why not). Each channel takes the fewest MANTISSA_BITS that
    reproduce its thresholds."""
    idt = inst.get_input_datatype(0)
    upper, lower = crossing_bounds(thresholds_of(inst, model).astype(np.float64),
                                   idt.min(), idt.max())
    steps = centred_step(upper, lower, idt.max() - idt.min() + 1)
    found = [next(filter(None, (dyadic_parameters(up, low, inst.get_nodeattr("ActVal"), step, bits)
                                for bits in MANTISSA_BITS)), None)
             for up, low, step in zip(upper, lower, steps)]
    missing = [c for c, parameters in enumerate(found) if parameters is None]
    if missing:
        return None, (f"no scale of up to {MANTISSA_BITS[-1]} bits reproduces every channel's "
                      f"thresholds ({len(missing)} of {len(found)} channels have none)")
    return tuple(np.array(values, dtype=np.float64) for values in zip(*found)), None


def convert(model):
    """Each Thresholding_rtl layer with a proven Requant form becomes a Requant_rtl layer:
    (model, {layer kept as Thresholding: why}, {Requant output tensor: (thresholds, ActVal)},
    the staircases `proof_failures` proves the folded design against)."""
    kept, staircases = {}, {}
    for node in list(model.graph.node):
        if node.op_type != "Thresholding_rtl":
            continue
        inst = getHWCustomOp(node)
        staircase_of = (np.array(thresholds_of(inst, model)), inst.get_nodeattr("ActVal"))
        reason = why_not(inst)
        parameters = None
        if reason is None:
            parameters, reason = exact_parameters(inst, model)
        if parameters is not None:
            names = [model.make_new_valueinfo_name() for _ in range(2)]
            for name, value in zip(names, parameters):
                model.set_initializer(name, value)
            replacement = requant_node(inst, *names)
            wrong = mismatches(replacement, model, staircase_of)
            if wrong.any():
                reason = (f"the multiply-add differs from its thresholds ({int(wrong.sum())} "
                          f"of {len(wrong)} channels)")
                for name in names:
                    model.del_initializer(name)
        if reason is not None:
            kept[node.name] = reason
            continue
        index = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(index, replacement)
        model.del_initializer(node.input[1])
        staircases[node.output[0]] = staircase_of
    return model.transform(GiveUniqueNodeNames()), kept, staircases


def proof_failures(model, staircases):
    """One line per Requant_rtl layer of the folded `model` whose Python model or RTL integers
    differ from the thresholds it replaced (`staircases`, from `convert`) on some input."""
    lines = []
    for node in model.graph.node:
        if node.op_type != "Requant_rtl":
            continue
        if node.output[0] not in staircases:
            lines.append(f"requant: {node.name}: not made by the project's proven conversion")
            continue
        wrong = mismatches(node, model, staircases[node.output[0]])
        if wrong.any():
            lines.append(f"requant: {node.name} differs from the thresholds it replaced on "
                         f"{int(wrong.sum())} of {len(wrong)} channels (first: "
                         f"{int(np.argmax(wrong))})")
    return lines


def summary(model, kept):
    """One line: how many threshold layers became Requant, how many stayed, and why."""
    requant = layer_counts(model)["Requant_rtl"]
    reasons = Counter(why.split(" (")[0] for why in kept.values())
    return (f"requant: {requant} of {requant + len(kept)} threshold layers as Requant_rtl"
            + (f", {len(kept)} kept as Thresholding: "
               + "; ".join(f"{count} x {why}" for why, count in reasons.most_common())
               if kept else ""))


def layer_counts(model):
    """{"Requant_rtl": n, "Thresholding_rtl": m}: the design's layers of each."""
    ops = Counter(node.op_type for node in model.graph.node)
    return {name: ops[name] for name in ("Requant_rtl", "Thresholding_rtl")}
