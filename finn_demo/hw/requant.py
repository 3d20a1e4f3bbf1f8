"""Exact requantization: FINN's Requant_rtl in place of a Thresholding_rtl layer wherever it
computes the same output on every input, proven, not sampled.

A threshold layer with N thresholds a channel (255 at 8 bits) gives ActVal + #{k: x >= T_k}.
Where its thresholds are a uniform staircase, FINN's Requant computes it from two numbers a
channel and one multiplier: clip(floor(x*scale + bias + 1/2)). FINN computes the thresholds in
float32, so they are uniform only to float32 rounding; on integer inputs they are the integer
thresholds ceil(T_k), and what a Requant must reproduce is that integer staircase, exactly.

Parameters (`exact_parameters`), after FINN's bit-width minimization, when the input width K is
known: the staircase line with the most room between the integer thresholds (`centred_step`),
its scale rounded to the 24-bit mantissa the project's Requant_rtl multiplies by (below: FINN
would give inputs over 18 bits on a DSP48E2 a 17-bit one, too coarse for 255 steps), scale =
m * 2**e and bias = B * 2**e with integers m, B. Both are float32 numbers, so FINN's
float->fixed-point decomposition (`decompose_params`) keeps them exactly, and they are stored in
float64 so that FINN's Python model (Requant.execute_node: x*scale + bias + 1/2) computes them
without rounding.

Exactness, proven on two staircases: thresholds on integer inputs and a multiply-add with a
positive scale are both non-decreasing step functions of the input. If they agree at each
threshold, at one below it and at the ends of the input range, they agree on every integer
input between. `mismatches` evaluates, at those points and per channel, FINN's Python model and
the integers the RTL computes with (`decompose_params` for the part's DSP; x*scale + bias, an
arithmetic shift and saturation, as requant_decoupled.sv) against the thresholds. A layer with a
mismatch stays Thresholding, with the reason; `proof_failures` proves the folded design's
Requant layers again against the thresholds they replaced, and a failure stops the build,
naming the layer. Requant_rtl's embedded mode writes its scales as six-decimal text; these layers use
`internal_decoupled`, where the decomposed integers are streamed from memory.
"""
from collections import Counter

import numpy as np
from onnx import helper
from qonnx.transformation.general import GiveUniqueNodeNames

from qonnx.custom_op.registry import add_op_to_domain

from finn.custom_op.fpgadataflow.requant import Requant
from finn.custom_op.fpgadataflow.rtl import requant_rtl
from finn.util.basic import get_dsp_block, getHWCustomOp

MEM_MODE = "internal_decoupled"  # integers streamed from memory, not six-decimal text
WIDE = 3  # finn-rtllib requant's VERSION whose scale keeps 24 mantissa bits at inputs to 24 bits


class Requant_rtl(requant_rtl.Requant_rtl):
    """FINN's Requant_rtl, elaborated with finn-rtllib requant's widest datapath on every part
    (VERSION 3: a 25-bit signed scale, the input whole up to 24 bits), where FINN picks the
    part's DSP port widths: on a DSP48E2 an input over 18 bits gets a 17-bit scale mantissa,
    too coarse for a 255-step staircase over a wide accumulator. The core multiplies
    generically (`X1 * S1`), so the wider product is two DSP48E2s a lane there (resources.py
    counts them). Registered in FINN's rtl domain through qonnx's registry, so every
    Requant_rtl node is this one: its decomposition, generated RTL and proof agree."""

    def _resolve_dsp_version(self, fpgapart):
        return WIDE


add_op_to_domain("finn.custom_op.fpgadataflow.rtl", Requant_rtl)


def multipliers_per_lane(input_bits, part):
    """DSP slices one lane's scale x input product takes: the 25-bit scale and a `input_bits`
    input on the part's multiplier (27x18 on DSP48E2, 27x24 on DSP58): one where the input fits
    its narrow port, else two (the scale split across them)."""
    narrow_port = 24 if get_dsp_block(part) == "DSP58" else 18
    return 1 if input_bits <= narrow_port else 2
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


def rtl_integers(inst, model, part):
    """(scale, bias, shift) per channel and the multiplier's input width: the integers
    requant_decoupled.sv computes with (FINN's decompose_params for the part's DSP), from their
    [PE][CF] layout to channel order."""
    params = inst.decompose_params(model, inst._resolve_dsp_version(part))
    return tuple(np.asarray(params[key], dtype=object).T.reshape(-1)
                 for key in ("scale", "bias", "shift")), params["x_width"]


def rtl_model(points, integers, odt):
    """The RTL's output at integer `points` ([P, C]): clip((x*scale + bias) >> shift), in
    Python integers (the product may be wider than 64 bits)."""
    scale, bias, shift = integers
    value = (points.astype(np.int64).astype(object) * scale + bias) >> shift
    return np.minimum(np.maximum(value, int(odt.min())), int(odt.max()))


def centred_step(thresholds, iterations=60):
    """The step per channel of the line t0 + k*step whose points can lie farthest inside
    (T_k - 1, T_k] for the integer thresholds T_k [C, N]: that room is a concave function of the
    step, maximized by ternary search within one input over the staircase of the end points'
    line (dyadic_parameters then places the line within the room)."""
    k = np.arange(thresholds.shape[1])

    def room(step):  # per channel: the width of the interval every t0 must lie in
        return (np.min(thresholds - k * step[:, None], axis=1)
                - np.max(thresholds - 1 - k * step[:, None], axis=1))
    step = np.maximum((thresholds[:, -1] - thresholds[:, 0]) / (len(k) - 1), 1e-9)
    low, high = np.maximum(step - 2 / len(k), step / 2), step + 2 / len(k)
    for _ in range(iterations):
        left, right = low + (high - low) / 3, high - (high - low) / 3
        better = room(left) < room(right)
        low, high = np.where(better, left, low), np.where(better, high, right)
    return (low + high) / 2


def dyadic_parameters(row, act_val, step, bits):
    """(scale, bias) as float64, scale = m * 2**e with a `bits`-bit m nearest 1/step (or a
    neighbour) and bias = B * 2**e, whose multiply-add reaches level k+1 exactly from the integer
    threshold row[k] on; None where no such B exists for the mantissas tried."""
    exponent = int(np.floor(np.log2(1 / step))) - (bits - 1)
    if exponent >= 0:  # a step under 2**-(bits-1) inputs (a channel whose thresholds coincide)
        return None
    nearest = int(round(1 / step / 2.0 ** exponent))
    levels = np.arange(1, len(row) + 1, dtype=object) * (1 << -exponent)
    row = row.astype(np.int64).astype(object)
    for mantissa in sorted(range(nearest - NUDGES, nearest + NUDGES + 1),
                           key=lambda m: abs(m - nearest)):
        if not 2 ** (bits - 1) <= mantissa < 2 ** bits:
            continue
        # x*m + C >= level(k) at x = row[k] and < it at row[k] - 1, in units of 2**e
        low = max(levels - row * mantissa)
        high = min(levels - (row - 1) * mantissa)  # exclusive
        shift = int((0.5 - act_val) * (1 << -exponent))  # floor(x*s + b + 1/2) - ActVal
        bias = float32_multiple(low - shift, high - shift)
        if bias is not None:
            return mantissa * 2.0 ** exponent, bias * 2.0 ** exponent
    return None


def float32_multiple(low, high):
    """The integer in [low, high) nearest their middle that float32 holds exactly (at most 24
    significant bits: FINN's decompose_params reads the bias as float32), or None."""
    grid = 1 << max(0, max(abs(low), abs(high)).bit_length() - 24)
    middle = (low + high - 1) // 2
    for value in (middle // grid * grid, middle // grid * grid + grid):
        if low <= value < high:
            return value
    return None


def mantissa_bits(inst):
    """The scale mantissa bits the Requant RTL keeps at the layer's input width."""
    s_width, _ = Requant._derive_mul_widths(WIDE, inst.get_input_datatype(0).bitwidth())
    return s_width - 1


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
    if not idt.is_integer() or not idt.signed():
        return f"{idt.name} input (finn-plus's Requant RTL reads a signed integer)"
    if act_val != odt.min() or act_val + count != odt.max():
        return f"outputs {act_val}..{act_val + count} are not {odt.name}'s full range"
    return None


def thresholds_of(inst, model):
    """The layer's integer thresholds, one row per channel [C, N]."""
    thresholds = model.get_initializer(inst.onnx_node.input[1])
    return np.broadcast_to(thresholds, (inst.get_nodeattr("NumChannels"), thresholds.shape[-1]))


def mismatches(node, model, part, staircase_of):
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
    integers, x_width = rtl_integers(requant, model, part)
    if idt.bitwidth() > x_width:  # the RTL keeps the input's top bits only
        return np.ones(thresholds.shape[0], dtype=bool)
    return (wrong | (rtl_model(points, integers, odt) != expected)).any(axis=0)


def exact_parameters(inst, model, part):
    """((scale, bias) float64 per channel, None) for a Requant that computes the Thresholding_rtl
    op `inst` exactly, or (None, why not)."""
    thresholds = thresholds_of(inst, model).astype(np.float64)
    bits = mantissa_bits(inst)
    steps = centred_step(thresholds)
    found = [dyadic_parameters(row, inst.get_nodeattr("ActVal"), step, bits)
             for row, step in zip(thresholds, steps)]
    missing = [c for c, parameters in enumerate(found) if parameters is None]
    if missing:
        return None, (f"no {bits}-bit scale reproduces every channel's thresholds ({len(missing)} "
                      f"of {len(found)} channels have none)")
    return tuple(np.array(values, dtype=np.float64) for values in zip(*found)), None


def convert(model, part):
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
            parameters, reason = exact_parameters(inst, model, part)
        if parameters is not None:
            names = [model.make_new_valueinfo_name() for _ in range(2)]
            for name, value in zip(names, parameters):
                model.set_initializer(name, value)
            replacement = requant_node(inst, *names)
            try:
                wrong = mismatches(replacement, model, part, staircase_of)
                if wrong.any():
                    reason = (f"the multiply-add differs from its thresholds ({int(wrong.sum())} "
                              f"of {len(wrong)} channels)")
            except ValueError as error:  # decompose_params: outside the RTL's fixed-point range
                reason = f"finn-plus's Requant RTL refuses it ({error})"
            if reason is not None:
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


def proof_failures(model, part, staircases):
    """One line per Requant_rtl layer of the folded `model` whose Python model or RTL integers
    differ from the thresholds it replaced (`staircases`, from `convert`) on some input."""
    lines = []
    for node in model.graph.node:
        if node.op_type != "Requant_rtl":
            continue
        if node.output[0] not in staircases:
            lines.append(f"requant: {node.name}: not made by the project's proven conversion")
            continue
        try:
            wrong = mismatches(node, model, part, staircases[node.output[0]])
        except ValueError as error:
            lines.append(f"requant: {node.name}: finn-plus's Requant RTL refuses it ({error})")
            continue
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
