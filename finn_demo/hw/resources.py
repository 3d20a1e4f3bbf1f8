"""What a folded FINN design costs: FINN's estimates, plus what they leave out.

Every figure is FINN's own (`node_res_estimation`, the analysis behind FINN's
estimate_layer_resources.json) except two the project adds, each marked in the report:
- `standin_LUT`: FINN estimates its RTL matrix units (MVAU_rtl, VVAU_rtl) at 0 LUT. The stand-in
  is FINN's own HLS formula (MVAU_hls / VVAU_hls `lut_estimation`, FINN-R's model) for the same
  layer with its multiplications in DSPs (`resType` dsp): adder tree, accumulator, control and
  LUTRAM weights, an upper bound for the RTL unit, whose adders sit in its DSP cascade.
- stream buffers: FINN's `InsertDWC` and `InsertFIFO` place the data-width converters and FIFOs
  the stitched design will have, and FINN estimates them; the FIFO depths are FINN's defaults
  (2), except on each residual skip, which must hold the block input the main branch reads
  before it emits its first pixel: FINN sizes FIFOs by RTL simulation (Vivado), so here the
  depth comes from `skip_depth`, an analytic model (the project's).
"""
import copy
import math
from collections import Counter

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames

from finn.custom_op.fpgadataflow.hls.matrixvectoractivation_hls import MVAU_hls
from finn.custom_op.fpgadataflow.hls.vectorvectoractivation_hls import VVAU_hls
from finn.transformation.fpgadataflow.insert_dwc import InsertDWC
from finn.transformation.fpgadataflow.insert_fifo import InsertFIFO
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers
from finn.util.basic import getHWCustomOp

from finn_demo.hw.boards import RESOURCES

HLS_FORMULA = {"MVAU_rtl": MVAU_hls, "VVAU_rtl": VVAU_hls}  # their LUTs by FINN's HLS model
SKIP_MARGIN_PIXELS = 2  # pipeline slack of the 1x1 convs around the depthwise one


def layer_cost(node, part):
    """{resource: count} of one hardware layer: FINN's estimate, and its LUT stand-in if any."""
    inst = getHWCustomOp(node)
    finn = inst.node_res_estimation(part)
    cost = {name: float(finn.get(name, 0)) for name in RESOURCES}
    cost["standin_LUT"] = float(standin_luts(inst, node.op_type, part))
    return cost


def standin_luts(inst, op_type, part):
    """FINN's HLS LUT formula for an RTL matrix unit with DSP multiplications; 0 for others."""
    formula = HLS_FORMULA.get(op_type)
    if formula is None:
        return 0
    res_type = inst.get_nodeattr("resType")
    inst.set_nodeattr("resType", "dsp")
    try:
        return formula.lut_estimation(inst, part)
    finally:
        inst.set_nodeattr("resType", res_type)


def total(costs):
    """Sum of per-layer costs, the stand-ins counted as LUTs."""
    sums = Counter()
    for cost in costs:
        sums.update(cost)
    return {name: sums[name] + (sums["standin_LUT"] if name == "LUT" else 0) for name in RESOURCES}


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


def stream_buffer_costs(model, part):
    """{op_type: summed cost} of the FIFOs and data-width converters `with_stream_buffers` adds,
    and the skip FIFOs' depths."""
    buffered, depths = with_stream_buffers(model, part)
    costs = {}
    for node in buffered.graph.node:
        if node.op_type.startswith(("StreamingFIFO", "StreamingDataWidthConverter")):
            row = costs.setdefault(node.op_type, Counter())
            row.update(layer_cost(node, part))
            row["count"] += 1
    return costs, depths
