"""FINN's compiler steps for a QONNX MobileNetV2, each one short function on a ModelWrapper.

finn_build.py hands them to FINN's builder as its first four steps (FINN's own steps partition,
specialize, fold and estimate after them); check_export.py's FINN check runs the first two.
Nothing here needs Xilinx tools:

    model = streamline(frontend(cleanup_model(qonnx_model)))
    model = convert_to_hw(lower_convs(model), qonnx_model)

FINN's Streamline and qonnx's ComposedTransformation re-run five tidying passes after each of
their transformations, also after the many that find nothing to do; `run_in_order` runs the same
transformations in the same order and skips those passes where nothing changed since they last
ran: the same graph, byte for byte, in less time (docs/finn_build.md).
"""
import contextlib
import logging

import numpy as np
from onnx import helper
from qonnx.transformation.base import Transformation
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
from qonnx.transformation.infer_data_layouts import InferDataLayouts
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.insert_topk import InsertTopK
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from qonnx.transformation.remove import RemoveIdentityOps

import finn.transformation.qonnx.qonnx_activation_handlers as activation_handlers
import finn.transformation.streamline.absorb as absorb
import finn.transformation.streamline.reorder as reorder
from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen
from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (
    InferDuplicateStreamsLayer)
from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (
    InferElementwiseBinaryOperation)
from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import InferGlobalAccPoolLayer
from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer
from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (
    InferQuantizedMatrixVectorActivation)
from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer
from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (
    InferVectorVectorActivation)
from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
from finn.transformation.streamline import Streamline
from finn.transformation.streamline.collapse_repeated import CollapseRepeatedTranspose
from finn.transformation.streamline.remove import RemoveIdentityTranspose
from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds

# FINN logs a warning per node a pass leaves alone (hundreds); the checks report what matters.
logging.getLogger("finn_logger").setLevel(logging.ERROR)
OUTPUT_SCALE = "finn_build_output_scale"  # metadata key: the logits' step, absorbed into TopK
# The tidying passes FINN's Streamline and qonnx's ComposedTransformation run after each of their
# transformations, whether it changed the graph or not. On a graph that nothing has changed since
# they last ran they change nothing, so `run_in_order` skips them there: the same graph, byte for
# byte (tests/test_finn_build.py), in less time (most transformations find nothing to do).
TIDYING = (RemoveIdentityOps, GiveUniqueNodeNames, GiveReadableTensorNames, InferShapes,
           InferDataTypes, InferDataLayouts)


class _Recorder:
    """Stands in for a model to list the transformations a composite's apply() runs on it."""

    def __init__(self):
        self.transformations = []

    def transform(self, transformation, *args, **kwargs):
        self.transformations.append(transformation)
        return self


def run_in_order(model, transformations):
    """model.transform(t) for each t in order, but a tidying pass (TIDYING) only where the graph
    changed since the tidying passes last ran."""
    untidy, tidied = True, False
    for transformation in transformations:
        if isinstance(transformation, TIDYING):
            if untidy:
                model, tidied = model.transform(transformation), True
            continue
        if tidied:  # a group of tidying passes has run since the last change
            untidy, tidied = False, False
        before = model.model.SerializeToString()
        model = model.transform(transformation)
        untidy = untidy or model.model.SerializeToString() != before
    return model


def streamline_transformations():
    """The transformations FINN's Streamline() runs, tidying passes included, in its order (read
    from its apply(), so they follow the installed FINN)."""
    recorder = _Recorder()
    Streamline().apply(recorder)
    return recorder.transformations


def composed(model, transformations):
    """qonnx's ComposedTransformation(transformations): each one, then its tidying passes, in
    rounds until a round changes nothing, run by `run_in_order`."""
    steps = [step for transformation in transformations for step in (
        transformation, RemoveIdentityOps(), GiveUniqueNodeNames(), GiveReadableTensorNames(),
        InferShapes(), InferDataTypes())]
    while True:
        before = model.model.SerializeToString()
        model = run_in_order(model, steps)
        if model.model.SerializeToString() == before:
            return model


class ScaleAfterReluError(ValueError):
    """A Mul after a Relu whose scale is not positive on every channel (message: one line)."""


class MoveReluPastPositiveMul(Transformation):
    """Relu -> Mul(constant s) becomes Mul(s) -> Relu, for s > 0 on every element.

    Invariant: max(s * x, 0) == s * max(x, 0) for s > 0, exactly in floats too (rounding is
    monotonic and keeps the sign), so the graph computes the same values. Brevitas' activation
    equalization with add_mul_node puts such a per-channel Mul inside a quantized ReLU6 (Relu,
    Mul, unsigned Quant). Before the Relu, the Mul is one more per-channel affine map that FINN's
    Streamline folds, with the BatchNorm, into the thresholds; the Relu, now next to its Quant,
    disappears into the unsigned quantizer (ConvertQONNXtoFINN's Relu handler). A scale <= 0 does
    not commute with the Relu (zero would also make infinite thresholds): ScaleAfterReluError.
    """

    def apply(self, model):
        for relu in model.get_nodes_by_op_type("Relu"):
            found = _constant_mul_after(model, relu)
            if found is None:
                continue
            mul, data, scale = found
            if not np.all(scale > 0):
                raise ScaleAfterReluError(
                    f"{mul.name} (Mul after {relu.name}) has a scale <= 0 on "
                    f"{int(np.sum(~(scale > 0)))} of {scale.size} channels (smallest "
                    f"{float(np.min(scale)):g}): only a positive scale moves before the Relu into "
                    "FINN's thresholds")
            between, output = relu.output[0], mul.output[0]
            mul.input[data], mul.output[0] = relu.input[0], between
            relu.input[0], relu.output[0] = between, output
            model.graph.node.remove(mul)
            model.graph.node.insert(list(model.graph.node).index(relu), mul)
        return model, False


def _constant_mul_after(model, relu):
    """(mul, index of its data input, scale) when `relu` feeds only a Mul (not a graph output)
    by a constant that keeps the Relu's shape; None otherwise."""
    consumers = model.find_consumers(relu.output[0])
    if len(consumers) != 1 or consumers[0].op_type != "Mul" or relu.output[0] in [
            output.name for output in model.graph.output]:
        return None
    mul = consumers[0]
    data = list(mul.input).index(relu.output[0])
    scale = model.get_initializer(mul.input[1 - data])
    shape = model.get_tensor_shape(relu.input[0])
    if scale is None or shape is None or np.broadcast_shapes(scale.shape, shape) != tuple(shape):
        return None
    return mul, data, scale


@contextlib.contextmanager
def float64_thresholds():
    """While inside, FINN's QONNX activation handlers keep the thresholds they compute in float64.

    They compute each quantizer's thresholds from its QONNX scale in float64 (t0 + k*step), then
    store them as float32 (`np_default_dtype`): one rounding a threshold, which leaves the
    staircase uniform only to a float32 ulp. Scaled onto a wide accumulator by streamlining, that
    puts integer inputs on the wrong side of any uniform line, and no multiply-add can then
    compute the layer exactly (requant.py). Inside, their storage dtype is float64 while they
    compute thresholds (only there: their Mul and Add constants stay float32)."""
    handlers = (activation_handlers.QuantReluHandler, activation_handlers.QuantIdentityHandler)
    originals = {handler: handler._calculate_thresholds for handler in handlers}

    def in_float64(method):
        def calculate(self):
            stored = activation_handlers.np_default_dtype
            activation_handlers.np_default_dtype = np.float64
            try:
                return method(self)
            finally:
                activation_handlers.np_default_dtype = stored
        return calculate
    for handler, method in originals.items():
        handler._calculate_thresholds = in_float64(method)
    try:
        yield
    finally:
        for handler, method in originals.items():
            handler._calculate_thresholds = method


def frontend(model):
    """FINN's ConvertQONNXtoFINN on a cleaned QONNX model: Quant nodes become MultiThreshold + Mul
    (a positive scale between a Relu and its Quant moved before the Relu first), the thresholds
    kept in the float64 FINN computes them in (float64_thresholds)."""
    model = model.transform(MoveReluPastPositiveMul())
    with float64_thresholds():
        return model.transform(ConvertQONNXtoFINN())


def streamline(model):
    """Move every float scale into a MultiThreshold, through the inverted residuals.

    Each residual Add joins two streams scaled by one shared factor (the export aligns them);
    a block's input Mul also feeds its first conv. Forking that Mul into one copy per consumer
    lets the residual copies move past the Add as one Mul, the other past the conv, and
    Streamline then folds all of them (with BatchNorm and the weight scales) into thresholds.
    """
    model = model.transform(absorb.AbsorbScalarBiasIntoMultiThreshold())  # signed quants' -128
    model = model.transform(reorder.MoveMulPastFork())
    model = model.transform(reorder.MoveLinearPastEltwiseAdd())
    return run_in_order(model, streamline_transformations())  # FINN's Streamline()


def lower_convs(model):
    """Convs to Im2Col + MatMul in channels-last, the Transposes this adds moved and cancelled."""
    model = model.transform(LowerConvsToMatMul())
    model = composed(model, [
        absorb.AbsorbTransposeIntoMultiThreshold(),
        reorder.MoveTransposePastFork(),  # a block input feeds its first conv and its Add
        reorder.MoveTransposePastJoinAdd(),
        absorb.AbsorbConsecutiveTransposes(),
        CollapseRepeatedTranspose(),
        RemoveIdentityTranspose()])
    model = model.transform(RoundAndClipThresholds())
    return model.transform(InferDataLayouts())


def software_input_quantizer(model, qonnx_model):
    """Replace the MultiThreshold on the float graph input by Div + Quant(scale 1).

    The input quantizer stays in software. As thresholds it rounds ties up; Brevitas' Quant
    rounds them to even, and images with few grey levels (the digits) put many inputs exactly on
    ties, which moves logits by several output steps (docs/finn_build.md). Div + Quant rounds as
    Brevitas does.
    """
    source = qonnx_model.find_consumer(qonnx_model.graph.input[0].name)
    threshold = model.find_consumer(model.graph.input[0].name)
    zero_point = qonnx_model.get_initializer(source.input[2])
    if source.op_type != "Quant" or threshold.op_type != "MultiThreshold" or np.any(zero_point):
        return model
    scale, divided = model.make_new_valueinfo_name(), model.make_new_valueinfo_name()
    one, zero, bits = (model.make_new_valueinfo_name() for _ in range(3))
    model.set_initializer(scale, qonnx_model.get_initializer(source.input[1]))
    model.set_initializer(one, np.array(1.0, dtype=np.float32))
    model.set_initializer(zero, np.array(0.0, dtype=np.float32))
    model.set_initializer(bits, qonnx_model.get_initializer(source.input[3]))
    index = list(model.graph.node).index(threshold)
    model.graph.node.remove(threshold)
    model.graph.node.insert(index, helper.make_node(
        "Quant", [divided, one, zero, bits], [threshold.output[0]], domain="qonnx.custom_op.general",
        **{attribute.name: helper.get_attribute_value(attribute) for attribute in source.attribute}))
    model.graph.node.insert(index, helper.make_node("Div", [model.graph.input[0].name, scale],
                                                    [divided]))
    return model.transform(InferShapes()).transform(InferDataTypes())


def integer_add(model, node):
    """The residual Adds: two integer streams (float scale Muls must not become hardware)."""
    return node.op_type == "Add" and all(
        model.get_initializer(name) is None and model.get_tensor_datatype(name).is_integer()
        for name in node.input)


def convert_to_hw(model, qonnx_model):
    """FINN's hardware layers: MVAU (pointwise convs, first conv, classifier), VVAU (depthwise),
    ConvolutionInputGenerator + FMPadding, Thresholding, ElementwiseAdd + DuplicateStreams for
    the residuals, GlobalAccPool, LabelSelect (top-1). The logits' scale goes into TopK."""
    model = software_input_quantizer(model, qonnx_model)
    model = model.transform(InferGlobalAccPoolLayer())  # a sum, then a Mul(1/pixels) ...
    model = composed(model, [  # ... moved into the next thresholds
        absorb.AbsorbConsecutiveTransposes(), reorder.MoveScalarLinearPastInvariants(),
        absorb.AbsorbTransposeIntoFlatten(), absorb.AbsorbMulIntoMultiThreshold(),
        RemoveIdentityTranspose()])
    model = model.transform(RoundAndClipThresholds())
    last = model.find_producer(model.graph.output[0].name)
    if last.op_type == "Mul" and model.get_initializer(last.input[1]).size == 1:
        model.set_metadata_prop(OUTPUT_SCALE, str(float(model.get_initializer(last.input[1]))))
    model = model.transform(InsertTopK(k=1))
    model = model.transform(absorb.AbsorbScalarMulAddIntoTopK())
    for transformation in (
            # Thresholds first, as standalone layers: inside a VVAU/MVAU they would sit in LUTs
            # (about 10k LUTs per 48-channel VVAU) and keep the MVAUs from the RTL backend.
            InferThresholdingLayer(), InferConvInpGen(),
            InferVectorVectorActivation(),  # before MVAU: it takes the MatMuls marked depthwise
            InferQuantizedMatrixVectorActivation(), InferElementwiseBinaryOperation(integer_add),
            InferDuplicateStreamsLayer(), InferLabelSelectLayer(),
            absorb.AbsorbConsecutiveTransposes(), RemoveCNVtoFCFlatten(), InferDataLayouts(),
            GiveUniqueNodeNames(), GiveReadableTensorNames()):
        model = model.transform(transformation)
    return model
