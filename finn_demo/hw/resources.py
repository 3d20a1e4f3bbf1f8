"""What a folded FINN design costs: FINN's estimates, plus what they leave out.

Every figure is FINN's own (`node_res_estimation`, the analysis behind FINN's
estimate_layer_resources.json) except what the project adds, each marked in the report: a
layer's `standin_LUT`, `standin_BRAM_18K` and `standin_DSP` beside FINN's `LUT`, `BRAM_18K` and
`DSP`, and the stream buffers. The project counts FINN's figure plus its stand-in (`counted`), so
FINN's own figures stay comparable with FINN's report. The stand-ins:
- `standin_LUT` of the RTL matrix units (MVAU_rtl, VVAU_rtl), which FINN estimates at 0 LUT:
  FINN's own HLS formula (MVAU_hls / VVAU_hls `lut_estimation`, FINN-R's model) for the same
  layer with its multiplications in DSPs (`resType` dsp): adder tree, accumulator, control and
  LUTRAM weights, an upper bound for the RTL unit, whose adders sit in its DSP cascade.
  It counts weights once: the formula's LUTRAM term (c2, P*Q*W*ceil(WMEM/64)) is non-zero only
  for `mem_mode` internal_decoupled with `ram_style` distributed, or internal_embedded with
  WMEM <= 128, exactly where FINN's BRAM and URAM estimates of the layer are 0, and the layer is
  costed with the fit's memory option set (fit.option_costs). Where it is large, the fit put the
  weights in LUTRAM: with one weight a word (little parallelism), 64 bits a LUT are a smaller
  share of a ZU7EV's LUT budget than 2048 x 9 bits a BRAM_18K of its BRAM budget, or 4096 words
  a URAM (one weight each) of its URAM budget, so the fit starts every such layer in LUTRAM and
  moves layers to BRAM or URAM only while those budgets last.
- `standin_DSP` of MVAU_rtl on parts without DSP58: FINN counts ceil(PE/4)*SIMD DSP48s, but
  finn-rtllib/mvu/mvu.sv packs `mvu_lanes` PEs into one DSP48's 27-bit A port (25 on DSP48E1),
  as many as fit W-bit weights in lanes of W+A-1 bits, A the activation bits: 1 + (27 - !narrow
  - W) // (W + A - 1), so 2 at W8A8, 3 at W4A8, 4 at W4A4 (FINN's 4), more below 4 bits. The
  project counts ceil(PE/lanes)*SIMD; the stand-in is that minus FINN's count (negative where
  more than 4 lanes fit). DSP58 parts keep FINN's count.
- Requant_rtl, which FINN estimates at 0 of everything, by the project's core
  (rtl/requant_exact.sv, the widths its `decompose_params` gives the layer):
  - DSP per PE lane: the signed (input + 1) x scale product on the part's multiplier
    (requant_rtl.multipliers_per_lane), the bias added in its post-adder (48 bits);
  - LUT per lane: the clip, which ORs and ANDs the sum's bits above the output (6 inputs a
    LUT, twice) and selects each output bit (one LUT), and a carry chain where the sum is
    wider than the DSP's post-adder; per layer, `REQUANT_CONTROL_LUTS`. Registers are
    flip-flops, which no budget here counts.
  - its scale and bias: CF = NumChannels/PE words of PE lanes, streamed by FINN's
    memstream in the memory its `ram_style` names (the fit's choice): LUTRAM counted as FINN
    counts LUTRAM weights (ceil(CF/64) LUTs a bit), BRAM_18K as RAMB18s in their cheapest
    simple-dual-port aspect, URAM as 72 x 4096 blocks (`standin_URAM`); auto as Vivado is
    taken to choose (LUTRAM up to `LUTRAM_DEPTH` words, else BRAM).
- stream buffers: FINN's `InsertDWC` and `InsertFIFO` place the data-width converters and FIFOs
  the stitched design will have, and FINN estimates them; the FIFO depths are FINN's defaults
  (2), except on each residual skip, which must hold the block input the main branch reads
  before it emits its first pixel: FINN sizes FIFOs by RTL simulation (Vivado), so here the
  depth comes from `skip_depth`, an analytic model (the project's).
"""
import copy
import math
from collections import Counter

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames

from finn.custom_op.fpgadataflow.hls.matrixvectoractivation_hls import MVAU_hls
from finn.custom_op.fpgadataflow.hls.vectorvectoractivation_hls import VVAU_hls
from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
from finn.util.basic import get_dsp_block, getHWCustomOp

from finn_demo.hw.boards import RESOURCES
from finn_demo.hw.requant_rtl import multipliers_per_lane

STANDIN = "standin_"  # prefix of the project's additions to FINN's figure of a resource
STANDIN_RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")  # the resources some layer has a stand-in for
SKIP_MARGIN_PIXELS = 2  # pipeline slack of the 1x1 convs around the depthwise one
# The deepest memory FINN's estimates leave to LUTRAM (MVAU with weights internal_embedded:
# WMEM <= 128), taken for what Vivado's ram_style auto does with the Requant parameters.
LUTRAM_DEPTH = 128
LUTRAM_WORDS_PER_LUT = 64  # a LUT6 is 64 x 1 bit of LUTRAM (FINN's c2 term)
# FINN's large_fifo_mem_style (LargeFIFOMemStyle): the memory of every FIFO fifo.sv would back
# with BRAM or URAM; "auto" lets fifo.sv choose by depth (BRAM to 2028 words, URAM beyond).
LARGE_FIFO_STYLES = ("auto", "block", "ultra", "distributed")
URAM_WIDTH, URAM_DEPTH = 72, 4096  # a URAM288's one aspect
RAMB18_ASPECTS = ((36, 512), (18, 1024), (9, 2048), (4, 4096), (2, 8192), (1, 16384))  # UG573, SDP
# Requant_rtl's control: the pipeline's enable and the two ready outputs (its valid bits and
# registers are flip-flops, which no budget here counts), and the memstream's address counter
# (up to 11 bits).
REQUANT_CONTROL_LUTS = 4 + 11
DSP_ACCUMULATOR_BITS = 48  # a DSP48E2's (and DSP58's) post-adder: the bias adds in the DSP


def layer_cost(node, part, model=None):
    """{resource: count} of one hardware layer: FINN's estimate and the project's stand-ins
    (`standin_<resource>`, 0 where FINN's figure is the project's). `model` holds the layer's
    initializers: Requant_rtl's scales (required) and MVAU_rtl's weights (without it they are
    taken as not narrow, the fewer DSP lanes)."""
    inst = getHWCustomOp(node)
    finn = inst.node_res_estimation(part)
    cost = {name: float(finn.get(name, 0)) for name in RESOURCES}
    standins = STANDINS.get(node.op_type)
    added = standins(inst, part, model, finn) if standins else {}
    cost.update({STANDIN + name: float(added.get(name, 0)) for name in STANDIN_RESOURCES})
    return cost


def counted(cost, name):
    """What the project counts of resource `name` in `cost`: FINN's figure plus its stand-in."""
    return cost[name] + cost.get(STANDIN + name, 0)


def hls_luts(inst, formula, part):
    """FINN's HLS LUT formula (`formula`: MVAU_hls or VVAU_hls) for an RTL matrix unit, its
    multiplications in DSPs."""
    res_type = inst.get_nodeattr("resType")
    inst.set_nodeattr("resType", "dsp")
    try:
        return formula.lut_estimation(inst, part)
    finally:
        inst.set_nodeattr("resType", res_type)


def mvu_lanes(inst, part, model=None):
    """PEs one DSP48 computes in finn-rtllib/mvu/mvu.sv (NUM_LANES): W-bit weights packed into
    the A port in lanes of W + A - 1 bits, a sign bit kept unless the weights are narrow (as
    MVAU_rtl.generate_hdl decides: no weight at the type's minimum)."""
    weight_bits = inst.get_input_datatype(1).bitwidth()
    activation_bits = inst.get_input_datatype(0).bitwidth()
    a_port = 25 if get_dsp_block(part) == "DSP48E1" else 27
    if a_port == weight_bits:
        return 1
    weights = model.get_initializer(inst.onnx_node.input[1]) if model is not None else None
    narrow = (weights is not None and np.min(weights) != inst.get_input_datatype(1).min()
              and inst.get_nodeattr("mem_mode") not in ("dynamic", "external_mem"))
    return 1 + (a_port - (not narrow) - weight_bits) // (weight_bits + activation_bits - 1)


def mvu_dsps(inst, part, model=None):
    """DSPs of an MVAU_rtl: ceil(PE / lanes) * SIMD on DSP48 parts, FINN's count on DSP58."""
    if get_dsp_block(part) == "DSP58":
        return inst.dsp_estimation(part)
    lanes = mvu_lanes(inst, part, model)
    return math.ceil(inst.get_nodeattr("PE") / lanes) * inst.get_nodeattr("SIMD")


def mvau_rtl_standins(inst, part, model, finn):
    return {"LUT": hls_luts(inst, MVAU_hls, part), "DSP": mvu_dsps(inst, part, model) - finn["DSP"]}


def vvau_rtl_standins(inst, part, model, finn):
    return {"LUT": hls_luts(inst, VVAU_hls, part)}


def parameter_memory(depth, width, style):
    """(LUTs, BRAM_18K, URAM) of a depth x width memory in FINN's memstream with `ram_style`
    `style` (auto: Vivado's choice, taken as LUTRAM up to LUTRAM_DEPTH words, else BRAM)."""
    if style == "auto":
        style = "distributed" if depth <= LUTRAM_DEPTH else "block"
    if style == "distributed":
        return width * math.ceil(depth / LUTRAM_WORDS_PER_LUT), 0, 0
    if style == "ultra":
        return 0, 0, math.ceil(width / URAM_WIDTH) * math.ceil(depth / URAM_DEPTH)
    return 0, min(math.ceil(depth / rows) * math.ceil(width / bits)
                  for bits, rows in RAMB18_ASPECTS), 0


def requant_rtl_standins(inst, part, model, finn):
    """Requant_rtl's LUT, BRAM_18K and DSP by the project's core (module docstring)."""
    if model is None:
        raise ValueError(f"{inst.onnx_node.name}: Requant_rtl's cost needs the model (its "
                         "scale and bias initializers set its widths)")
    widths = inst._derive_decoupled_widths(model, part)  # what generate_hdl elaborates
    pe, out_bits = inst.get_nodeattr("PE"), inst.get_output_datatype().bitwidth()
    x_bits = widths["x_width"] + 1  # the input as a signed number
    total = max(x_bits + widths["s_width"] + widths["scale_shift"],
                widths["bias_width"] + widths["bias_shift"]) + 1
    above = max(0, total - widths["shift_max"] - out_bits)  # bits the clip must inspect
    adder = 0 if total <= DSP_ACCUMULATOR_BITS else total  # else a carry chain, a LUT a bit
    lane = math.ceil(above / 6) * 2 + out_bits + adder
    depth = inst.get_nodeattr("NumChannels") // pe
    lutram, bram, uram = parameter_memory(depth, widths["params_stream_width"],
                                          inst.get_nodeattr("ram_style"))
    dsps = pe * multipliers_per_lane(x_bits, widths["s_width"], part)
    return {"LUT": pe * lane + REQUANT_CONTROL_LUTS + lutram, "BRAM_18K": bram, "URAM": uram,
            "DSP": dsps}


# The layers whose cost the project adds to: {op_type: (inst, part, model, FINN's estimate) ->
# {resource: stand-in}}.
STANDINS = {"MVAU_rtl": mvau_rtl_standins, "VVAU_rtl": vvau_rtl_standins,
            "Requant_rtl": requant_rtl_standins}


def total(costs):
    """Sum of per-layer costs as the project counts them (`counted`)."""
    sums = Counter()
    for cost in costs:
        sums.update(cost)
    return {name: counted(sums, name) for name in RESOURCES}


def skip_depth(fifo, conv_input_generator):
    """Words the FIFO on a residual skip must hold: the block input pixels the main branch
    reads before its first output, (k - 1) padded rows and k pixels for a k x k window
    (`conv_input_generator`'s), plus a small margin, at the FIFO's words per pixel."""
    kernel = conv_input_generator.get_nodeattr("ConvKernelDim")[1]
    width = conv_input_generator.get_nodeattr("IFMDim")[1]
    pixels = (kernel - 1) * width + kernel + SKIP_MARGIN_PIXELS
    folded = fifo.get_folded_input_shape()
    words_per_frame = math.prod(folded[:-1])
    normal = fifo.get_normal_input_shape()
    frame_pixels = math.prod(normal[1:-1]) or 1
    return max(2, math.ceil(pixels * words_per_frame / frame_pixels))


def branch_window(model, add):
    """The sliding-window generator on the longer input branch of a residual Add, or None."""
    seen, todo = set(), [model.find_producer(name) for name in add.input]
    while todo:
        node = todo.pop()
        if node is None or node.name in seen or node.op_type.startswith("DuplicateStreams"):
            continue
        seen.add(node.name)
        if node.op_type.startswith("ConvolutionInputGenerator"):
            return getHWCustomOp(node)
        todo += [model.find_producer(name) for name in node.input]
    return None


def size_skip_fifos(model):
    """Set the depth of the FIFO on each residual Add's skip input (fed by DuplicateStreams)."""
    depths = {}
    for add in model.graph.node:
        if not add.op_type.startswith("ElementwiseAdd"):
            continue
        window = branch_window(model, add)
        for name in add.input:
            fifo = model.find_producer(name)
            source = fifo and model.find_producer(fifo.input[0])
            if (window is not None and fifo.op_type.startswith("StreamingFIFO")
                    and source is not None and source.op_type.startswith("DuplicateStreams")):
                inst = getHWCustomOp(fifo)
                inst.set_nodeattr("depth", skip_depth(inst, window))
                depths[fifo.name] = inst.get_nodeattr("depth")
    return depths


def with_stream_buffers(model, part):
    """A copy of the folded `model` with FINN's data-width converters and FIFOs inserted and
    specialized, the skip FIFOs sized: (that model, {skip FIFO name: depth})."""
    buffered = ModelWrapper(copy.deepcopy(model.model))
    buffered = buffered.transform(InsertDWC())
    buffered = buffered.transform(InsertFIFO(create_shallow_fifos=True))
    buffered = buffered.transform(SpecializeLayers(part)).transform(GiveUniqueNodeNames())
    return buffered, size_skip_fifos(buffered)


def stream_buffer_costs(model, part, styles=("auto",)):
    """({style: {op_type: summed cost}} of the FIFOs and data-width converters
    `with_stream_buffers` adds, with the large FIFOs (those fifo.sv backs with BRAM or URAM) in
    each memory `style` of FINN's `large_fifo_mem_style` (LARGE_FIFO_STYLES), and the skip
    FIFOs' depths."""
    buffered, depths = with_stream_buffers(model, part)
    buffers = [node for node in buffered.graph.node
               if node.op_type.startswith(("StreamingFIFO", "StreamingDataWidthConverter"))]
    large = [getHWCustomOp(node) for node in buffers if node.op_type.startswith("StreamingFIFO")
             and getHWCustomOp(node).resolve_ram_style() in ("block", "ultra")]
    restyled = {inst.onnx_node.name for inst in large}
    same = [layer_cost(node, part, buffered) for node in buffers if node.name not in restyled]
    costs = {}
    for style in styles:
        for inst in large:  # as FINN's step_set_fifo_depths pins them
            inst.set_nodeattr("ram_style", style)
        costs[style] = {}
        styled = iter([layer_cost(node, part, buffered) for node in buffers
                       if node.name in restyled])
        unstyled = iter(same)
        for node in buffers:
            row = costs[style].setdefault(node.op_type, Counter())
            row.update(next(styled) if node.name in restyled else next(unstyled))
            row["count"] += 1
    return costs, depths
