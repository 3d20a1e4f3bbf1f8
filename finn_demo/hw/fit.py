"""Fit a specialized FINN design to a board's budget at the highest frame rate.

For a frame rate, FINN's SetFolding picks each layer's PE/SIMD (with a wider `mvau_wwidth_max`
than FINN's default where that default cannot reach the rate, see `fold`; Requant layers, which
SetFolding leaves alone, get the least PE that keeps pace, `fold_requant`); then every layer that
holds weights, thresholds or line buffers gets the memory that fits (weights: FINN's `ram_style`
block, distributed or ultra, with `mem_mode` internal_decoupled and `runtime_writeable_weights`
1 for URAM; thresholds: `depth_trigger_bram` / `depth_trigger_uram`; sliding-window buffers:
`ram_style`; Requant parameters: `mem_mode` internal_decoupled, its one option), and every HLS
matrix or depthwise unit its multipliers (FINN's `resType`: LUTs or DSPs): from each layer's
cheapest option relative to the budget, layers move off a resource that is over until none is;
where the moves run out, the placement that fits with its fullest resource least full is found
exactly (a 0-1 program), if one does.
Fitting is not monotonic in the frame rate: a little parallelism packs weights badly (a URAM is
72 bits wide; one 4-bit weight per cycle uses 4 of them), a lot costs LUTs and DSPs. So the
search doubles the frame rate from SetFolding's least parallel design until two designs in a
row are over after one fitted (or SetFolding runs out of parallelism), then bisects between the
fastest that fits and the next that does not.
Costs are finn_demo.hw.resources': FINN's estimates plus the project's stand-ins and stream buffers.
"""
import copy
import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames

from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
from finn.transformation.fpgadataflow.set_folding import SetFolding
from finn.util.basic import getHWCustomOp

from finn_demo.hw.boards import RESOURCES
from finn_demo.hw.resources import (LARGE_FIFO_STYLES, counted, layer_cost,
                                    stream_buffer_costs, total)

# The attributes FINN's folding config carries for this design (the builder's own list).
FOLDING_ATTRIBUTES = ["PE", "SIMD", "parallel_window", "ram_style", "resType", "mem_mode",
                      "runtime_writeable_weights", "depth_trigger_uram", "depth_trigger_bram"]
NEVER = 2 ** 30  # a depth trigger no memory reaches
WEIGHT_MEMORIES = {
    "block": {"mem_mode": "internal_decoupled", "ram_style": "block"},
    "distributed": {"mem_mode": "internal_decoupled", "ram_style": "distributed"},
    "ultra": {"mem_mode": "internal_decoupled", "ram_style": "ultra",
              "runtime_writeable_weights": 1},  # FINN: URAM weights must be writeable
}
WINDOW_MEMORIES = {name: {"ram_style": name} for name in ("distributed", "block", "ultra")}
# Requant_rtl streams its parameters from FINN's memstream (the project's core has no embedded
# mode), in the memory its ram_style names.
REQUANT_MEMORIES = {name: {"mem_mode": "internal_decoupled", "ram_style": name}
                    for name in ("distributed", "block", "ultra")}
THRESHOLD_MEMORIES = {
    "auto": {"depth_trigger_bram": 0, "depth_trigger_uram": 0},  # FINN picks per stage
    "block": {"depth_trigger_bram": 1, "depth_trigger_uram": NEVER},
    "ultra": {"depth_trigger_bram": 0, "depth_trigger_uram": 1},
}
WEIGHT_WIDTHS = (36, 72, 144, 288)  # SetFolding's mvau_wwidth_max: FINN's default first
ARITHMETIC = {"lut": {"resType": "lut"}, "dsp": {"resType": "dsp"}}  # HLS units' multipliers
PACKED_MEMORIES = ("block", "ultra")  # weight memories a wider fold can pack better
PACKED_WIDTH = 288  # bits a word the packing search widens a matrix unit's weights to
LARGE_FIFOS = "large FIFOs"  # the fit's choice of FINN's large_fifo_mem_style, beside the layers'
# The exact placement's optimality gap and time limit (a safety net: HiGHS proves these small
# programs optimal in well under it; a program that reaches it keeps its best placement).
EXACT_GAP, EXACT_SECONDS = 1e-3, 60
PLACEMENTS = 3  # placements of one folding, each with the last one's data-width converters known
BISECTIONS = 5  # after doubling: the highest fitting rate to within about 2%


@dataclass
class Design:
    """One folded design: its model, frame rate and costs, and whether it fits the budget."""
    model: object
    requested_fps: float
    fps: float
    bottleneck: str
    totals: dict
    layers: list
    buffers: dict
    skip_depths: dict
    memories: dict
    budget: dict
    over: dict = field(default_factory=dict)
    mvau_wwidth_max: int = 36  # the SetFolding limit the design was folded with
    choices: dict = field(default_factory=dict)  # {layer: {memory option: cost}}, for fits_budget
    fixed: list = field(default_factory=list)  # the costs no option changes

    @property
    def fits(self):
        return not self.over


def memory_options(node):
    """{option: attributes} for the memories of a layer's weights or thresholds ({} if none)."""
    inst = getHWCustomOp(node)
    types = inst.get_nodeattr_types()
    if "ram_style" in types and "mem_mode" in types and node.op_type.startswith(("MVAU", "VVAU")):
        allowed = types["ram_style"][3]
        return {name: attrs for name, attrs in WEIGHT_MEMORIES.items() if attrs["ram_style"] in allowed}
    if "depth_trigger_uram" in types:
        return THRESHOLD_MEMORIES
    if node.op_type.startswith("Requant") and "mem_mode" in types:
        return REQUANT_MEMORIES
    if node.op_type.startswith("ConvolutionInputGenerator") and "ram_style" in types:
        return WINDOW_MEMORIES  # its line buffers
    return {}


def divisors(count):
    return [value for value in range(1, count + 1) if count % value == 0]


def packed_fold(node, memory, part, model):
    """(PE, SIMD) of a matrix unit with at least as many weights a cycle (PE x SIMD) as it is
    folded with, whose weights take the fewest of `memory` (WEIGHT_MEMORIES: block or ultra;
    ties: the fewest weights a cycle), words up to PACKED_WIDTH bits: a URAM word is 72 bits,
    so one 8-bit weight a cycle fills 8 of them, eight fill 64. Only the memory's packing and
    the streams' widths change; the layer computes the same, in no more cycles."""
    inst = getHWCustomOp(node)
    pe0, simd0 = inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")
    bits = inst.get_input_datatype(1).bitwidth()
    folds = [(pe, simd) for pe in divisors(inst.get_nodeattr("MH"))
             for simd in divisors(inst.get_nodeattr("MW")) if pe * simd >= pe0 * simd0
             and pe * simd * bits <= max(PACKED_WIDTH, pe0 * simd0 * bits)]
    before = {name: inst.get_nodeattr(name) for name in (*WEIGHT_MEMORIES[memory], "PE", "SIMD")}
    for name, value in WEIGHT_MEMORIES[memory].items():
        inst.set_nodeattr(name, value)
    counts = {}
    estimate = inst.bram_estimation if memory == "block" else inst.uram_estimation
    for pe, simd in folds:  # FINN's count of the memory (its whole cost: no stand-in has one)
        inst.set_nodeattr("PE", pe)
        inst.set_nodeattr("SIMD", simd)
        counts[pe, simd] = estimate(part)
    for name, value in before.items():
        inst.set_nodeattr(name, value)
    return min(folds, key=lambda fold: (counts[fold], fold[0] * fold[1]))


def layer_options(node, part=None, model=None):
    """{option: attributes}: memory_options; for a matrix unit with its weights in BRAM or URAM
    also that memory at the fold that packs it best (`packed_fold`, option "<memory>@PExSIMD"),
    given `part` and `model`; and for FINN's HLS matrix and depthwise units whether they
    multiply in LUTs or DSPs (`resType`; the RTL units always use DSPs)."""
    options = dict(memory_options(node))
    if part is not None and node.op_type.startswith("MVAU"):
        inst = getHWCustomOp(node)
        for memory in PACKED_MEMORIES:
            if memory in options:
                pe, simd = packed_fold(node, memory, part, model)
                if (pe, simd) != (inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")):
                    options[f"{memory}@{pe}x{simd}"] = {**options[memory], "PE": pe, "SIMD": simd}
    if node.op_type not in ("MVAU_hls", "VVAU_hls"):
        return options
    return {"+".join(filter(None, (memory, arithmetic))): {**attrs, **ARITHMETIC[arithmetic]}
            for memory, attrs in (options or {"": {}}).items() for arithmetic in ARITHMETIC}


def option_costs(node, options, part, model):
    """{option: layer_cost} with the option's attributes set; leaves the node as it was."""
    inst = getHWCustomOp(node)
    before = {name: inst.get_nodeattr(name) for attrs in options.values() for name in attrs}
    costs = {}
    for option, attrs in options.items():
        for name, value in attrs.items():
            inst.set_nodeattr(name, value)
        costs[option] = layer_cost(node, part, model)
        for name, value in before.items():
            inst.set_nodeattr(name, value)
    return costs


def relative(cost, budget):
    """A cost as the largest share of the budget it takes (infinite for a resource with none)."""
    shares = [counted(cost, name) / budget[name] if budget[name] else
              (math.inf if counted(cost, name) else 0) for name in RESOURCES]
    return sum(shares)


def over_budget(totals, budget):
    return {name: totals[name] - budget[name] for name in RESOURCES if totals[name] > budget[name]}


def cheapest(costs, budget):
    """The option of a layer ({option: cost}) that takes the least share of the budget."""
    return min(costs, key=lambda option: relative(costs[option], budget))


def place_memories(choices, budget, fixed):
    """Choose an option per layer ({name: {option: cost}}) so the totals fit: each layer's
    cheapest option, moved by `greedy_placement` while a resource is over; where that ends over,
    the placement that fits with its fullest resource least full (`exact_placement`), if any.
    Returns ({name: option}, totals)."""
    chosen = {name: cheapest(costs, budget) for name, costs in choices.items()}
    chosen = greedy_placement(choices, budget, fixed, chosen)
    if over_budget(placement_totals(choices, chosen, fixed), budget):
        chosen = exact_placement(choices, budget, fixed) or chosen
    return chosen, placement_totals(choices, chosen, fixed)


def placement_totals(choices, chosen, fixed):
    return total(fixed + [choices[name][option] for name, option in chosen.items()])


def exact_placement(choices, budget, fixed):
    """{name: option} fitting `budget` whose fullest resource (share of its budget) is least
    full, or None where no placement fits: a 0-1 program (a variable per layer option, one option
    a layer, a row per resource, and the largest share as one more variable) solved by scipy's
    milp (HiGHS) to within EXACT_GAP of the optimum."""
    items = [(name, option) for name, costs in choices.items() for option in costs]
    usage = np.array([[counted(choices[name][option], resource) for name, option in items]
                      for resource in RESOURCES])
    used = np.array([total(fixed)[resource] for resource in RESOURCES])
    limit = np.array([budget[resource] for resource in RESOURCES], dtype=float)
    one_each = np.array([[name == layer for name, _ in items] for layer in choices], dtype=float)
    shares = usage[limit > 0] / limit[limit > 0, None]  # rows: share of a budget (t = last var)
    count = len(items)
    result = milp(np.r_[np.zeros(count), 1], integrality=np.r_[np.ones(count), 0],
                  bounds=Bounds(0, np.r_[np.ones(count), np.inf]),
                  constraints=[LinearConstraint(np.c_[one_each, np.zeros(len(choices))], 1, 1),
                               LinearConstraint(np.c_[usage, np.zeros(len(limit))], -np.inf,
                                                limit - used),
                               LinearConstraint(np.c_[shares, -np.ones(len(shares))], -np.inf,
                                                -(used / np.maximum(limit, 1))[limit > 0])],
                  options={"mip_rel_gap": EXACT_GAP, "time_limit": EXACT_SECONDS})
    if result.x is None:
        return None
    return {name: option for (name, option), value in zip(items, result.x) if value > 0.5}


def greedy_placement(choices, budget, fixed, chosen):
    """From `chosen`, the layer move that frees most of the resource most over (without putting
    another over) is made until nothing is over or no move helps."""
    def change(cost, current):  # what moving a layer from `current` to `cost` adds per resource
        return {name: counted(cost, name) - counted(current, name) for name in RESOURCES}
    totals = placement_totals(choices, chosen, fixed)
    for _ in range(10 * len(choices) + 1):
        over = over_budget(totals, budget)
        if not over:
            break
        worst = max(over, key=lambda name: over[name] / max(budget[name], 1))
        best = None
        for name, costs in choices.items():
            for option in costs:
                added = change(costs[option], costs[chosen[name]])
                trial_totals = {key: totals[key] + added[key] for key in RESOURCES}
                freed = totals[worst] - trial_totals[worst]
                if freed <= 0 or any(trial_totals[other] > max(budget[other], totals[other])
                                     for other in RESOURCES if other != worst):
                    continue
                if best is None or freed > best[0]:
                    best = (freed, {**chosen, name: option})
        if best is None:
            break
        chosen = best[1]
        totals = placement_totals(choices, chosen, fixed)
    return chosen


def fold(model, fps, clock_ns):
    """(copy of `model` folded by FINN's SetFolding for `fps` frames/s at `clock_ns`, the
    mvau_wwidth_max it was folded with).

    SetFolding widens a matrix unit's SIMD only while SIMD x weight bits stays within
    `mvau_wwidth_max` (FINN's default 36 bits), then adds PE. An 8-bit first conv has 27 inputs
    (SIMD 1, 3, 9 or 27): at 36 bits it stops at SIMD 3, 112896 cycles at 112x112, and SetFolding
    then relaxes every layer to that, about 1770 frames/s at 200 MHz. Where the default misses
    the frame rate, the next wider limit (72, 144, 288 bits) that meets it is taken (else the
    fastest); the folding config carries the resulting SIMD, so FINN needs no setting for it.

    SetFolding leaves Requant layers as they are. They go into it fully parallel (its second
    pass would fold every layer down to one left at PE 1) and come out folded by `fold_requant`.
    """
    cycles = max(1, int(1e9 / clock_ns / fps))
    fastest = None
    for width in WEIGHT_WIDTHS:
        folded = ModelWrapper(copy.deepcopy(model.model))
        for inst in requant_layers(folded):
            inst.set_nodeattr("PE", inst.get_nodeattr("NumChannels"))
        folded = folded.transform(SetFolding(cycles, mvau_wwidth_max=width))
        folded = folded.transform(GiveUniqueNodeNames())
        fold_requant(folded, cycles)
        slowest = max(folded.analysis(exp_cycles_per_layer).values())
        if fastest is None or slowest < fastest[2]:
            fastest = (folded, width, slowest)
        if slowest <= cycles:
            break
    return fastest[:2]


def requant_layers(model):
    return [getHWCustomOp(node) for node in model.graph.node if node.op_type.startswith("Requant")]


def fold_requant(model, cycles):
    """Give each Requant layer of `model` the smallest PE dividing its channels at which it takes
    at most `cycles`, or as many as the slowest other layer where that is more: it keeps pace
    with the design, no faster."""
    requant = requant_layers(model)
    names = {inst.onnx_node.name for inst in requant}
    others = [count for name, count in model.analysis(exp_cycles_per_layer).items()
              if name not in names]
    target = max([cycles, *others])
    for inst in requant:
        channels = inst.get_nodeattr("NumChannels")
        for pe in (pe for pe in range(1, channels + 1) if channels % pe == 0):
            inst.set_nodeattr("PE", pe)
            if inst.get_exp_cycles() <= target:
                break


def design_at(model, fps, part, clock_ns, budget):
    """Fold for `fps`, size the stream buffers, place the memories: a Design. Placed twice, with
    and without the wider folds that pack weights (`layer_options`): a wider fold changes stream
    widths, so its data-width converters are known only after placement. The one that fits (then
    the faster, then the nearer to fitting) is taken."""
    folded, wwidth_max = fold(model, fps, clock_ns)
    styles, skip_depths = stream_buffer_costs(folded, part, LARGE_FIFO_STYLES)
    options = {node.name: layer_options(node) for node in folded.graph.node}
    choices = {LARGE_FIFOS: {style: total(list(costs.values())) for style, costs in styles.items()}}
    fixed = []
    for node in folded.graph.node:
        if options[node.name]:
            choices[node.name] = option_costs(node, options[node.name], part, folded)
        else:
            fixed.append(dict(layer_cost(node, part, folded)))
    unpacked = (styles, skip_depths, options, choices, fixed)
    designs = [placed(folded, fps, part, clock_ns, budget, wwidth_max, unpacked, packed)
               for packed in (False, True)]
    return min(designs, key=lambda design: (not design.fits, -design.fps, shortfall(design)))


def placed(folded, fps, part, clock_ns, budget, wwidth_max, unpacked, packed):
    """The Design of the folded model with its memories (and, if `packed`, wider folds) placed;
    `unpacked`: (the stream buffers' costs per style, skip depths, options, their costs, the
    costs no option changes), as design_at computed them. A wider fold's data-width converters
    are known only once it is placed: where they put a placement that fits over, it is placed
    again with their excess taken off the budget (up to PLACEMENTS times)."""
    styles, skip_depths, options, choices, fixed = unpacked
    if packed:  # the wider folds' options beside them
        options = {node.name: layer_options(node, part, folded) for node in folded.graph.node}
        choices = {**choices, **{node.name: option_costs(node, options[node.name], part, folded)
                                 for node in folded.graph.node
                                 if any("@" in option for option in options[node.name])}}
    room = dict(budget)
    for _ in range(PLACEMENTS):
        chosen, planned = place_memories(choices, room, fixed)
        model, buffers, depths, costs = with_placement(folded, options, chosen, styles,
                                                       skip_depths, part)
        totals = total(list(costs.values()) + list(buffers.values()))
        excess = over_budget(totals, budget)
        if not excess or over_budget(planned, room):  # fits, or no placement does
            break
        room = {name: room[name] - excess.get(name, 0) for name in RESOURCES}
    cycles = model.analysis(exp_cycles_per_layer)
    bottleneck = max(cycles, key=cycles.get)
    layers = [{"name": node.name, "op_type": node.op_type, "cycles": int(cycles[node.name]),
               "memory": chosen.get(node.name), **costs[node.name]} for node in model.graph.node]
    return Design(model, fps, 1e9 / clock_ns / cycles[bottleneck], bottleneck, totals, layers,
                  {op: dict(row) for op, row in buffers.items()}, depths, chosen, budget,
                  excess, wwidth_max, choices, fixed)


def with_placement(folded, options, chosen, styles, skip_depths, part):
    """(a copy of `folded` with the `chosen` options set, its stream buffers' costs, its skip
    depths, {layer: cost}): the buffers as costed before placement unless a wider fold changed
    the streams."""
    model = ModelWrapper(copy.deepcopy(folded.model))
    for node in model.graph.node:
        if node.name in chosen:
            inst = getHWCustomOp(node)
            for name, value in options[node.name][chosen[node.name]].items():
                inst.set_nodeattr(name, value)
    style = chosen[LARGE_FIFOS]
    buffers = styles[style]
    if any("@" in option for option in chosen.values()):  # a wider fold: its stream buffers
        restyled, skip_depths = stream_buffer_costs(model, part, (style,))
        buffers = restyled[style]
    costs = {node.name: layer_cost(node, part, model) for node in model.graph.node}
    return model, buffers, skip_depths, costs


def shortfall(design):
    """How far a design is from fitting: its largest overrun as a share of the budget."""
    return max((over / max(design.budget[name], 1) for name, over in design.over.items()), default=0)


def search(model, part, clock_ns, budget, target_fps=None, progress=print):
    """The design at `target_fps`, or (None) the fastest that fits: (best, every design tried).
    `best` is the fastest design that fits, else the one closest to fitting (`over` says why)."""
    tried = []

    def attempt(fps):
        design = design_at(model, fps, part, clock_ns, budget)
        tried.append(design)
        verdict = "fits" if design.fits else "over in " + ", ".join(design.over)
        progress(f"    fold for {fps:8.1f} frames/s: {design.fps:8.1f} frames/s, {verdict}")
        return design
    if target_fps:
        return attempt(target_fps), tried
    fps, misses = attempt(1.0).fps * 2, 0  # SetFolding's least parallel design, then doubling
    while misses < 2:
        design = attempt(fps)
        misses = misses + 1 if not design.fits and any(item.fits for item in tried) else 0
        if design.fps < 0.99 * fps:  # SetFolding ran out of parallelism: nothing faster
            break
        fps *= 2
    fitting = [design for design in tried if design.fits]
    if not fitting:
        return min(tried, key=shortfall), tried
    best = max(fitting, key=lambda design: design.fps)
    higher = [design.requested_fps for design in tried
              if not design.fits and design.requested_fps > best.requested_fps]
    if higher:
        low, high = best.requested_fps, min(higher)
        for _ in range(BISECTIONS):
            middle = math.sqrt(low * high)
            design = attempt(middle)
            if design.fits:
                best = max(best, design, key=lambda item: item.fps)
                low = middle
            else:
                high = middle
    return best, tried


def fits_budget(design, budget):
    """Whether `design`'s layers fit `budget` (another board's) with their memories placed for it,
    by the costs estimated for the design's own part."""
    if over_budget(least_totals(design), budget):  # no placement can fit
        return False
    _, totals = place_memories(design.choices, budget, design.fixed)
    return not over_budget(totals, budget)


def least_totals(design):
    """Per resource, the least any memory placement of `design` uses: its fixed costs plus each
    layer's cheapest option for that resource (FINN's figure plus stand-in, as `counted`)."""
    least = total(design.fixed)
    for costs in design.choices.values():
        for name in RESOURCES:
            least[name] += min(counted(cost, name) for cost in costs.values())
    return least
