"""Compile an exported QONNX MobileNetV2 with FINN, as far as FINN goes without Xilinx tools.

    python finn_build.py --model=quant_mobilenet_v2.onnx --out_dir=finn_build

The run reads top to bottom, one short function per step:
(1) FINN's frontend, (2) streamlining through the inverted residuals, (3) lowering convs to
MatMuls, (4) conversion to FINN's hardware layers, executed by FINN in Python against the QONNX
graph, (5) the dataflow partition, (6) HLS/RTL specialization for `fpga_part`, (7) folding for
`target_fps`, (8) FINN's resource and cycle estimates. It writes out_dir/hw_layers.onnx (the
specialized, folded accelerator), out_dir/estimates.json, and each step's model under
out_dir/intermediate/. Exit status 1 when a self-check fails, 2 on bad flags.
After (6) the layers only run in cppsim/rtlsim, which need Vitis HLS/Vivado: the Python check
runs on the graph of (4), which holds the same layers before specialization.
"""
import json
import logging
import os
import sys
import time
import warnings
from collections import Counter
from functools import partial
from types import SimpleNamespace

from configurator import ConfigError, apply_overrides, flags_of

# ---------------------------------------------------------------------------------------- flags
model = "quant_mobilenet_v2.onnx"  # the QONNX file finn_mobilenetv2.py exported
out_dir = "finn_build"  # where hw_layers.onnx, estimates.json and intermediate/ go
fpga_part = "xczu7ev-ffvc1156-2-e"  # the FPGA part layers are specialized and estimated for (ZCU104)
clock_ns = 5.0  # target clock period in ns (200 MHz): turns target_fps into cycles per frame
target_fps = 1000  # frames per second SetFolding parallelizes the layers for
verify_images = 8  # validation images the hardware graph runs on in Python (0 skips the check)
reuse = False  # load a step's model from out_dir/intermediate/ when there (same --model only!)
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
from onnx import helper  # noqa: E402
from qonnx.core.datatype import DataType  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.transformation.composed import ComposedTransformation  # noqa: E402
from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames  # noqa: E402
from qonnx.transformation.infer_data_layouts import InferDataLayouts  # noqa: E402
from qonnx.transformation.infer_datatypes import InferDataTypes  # noqa: E402
from qonnx.transformation.infer_shapes import InferShapes  # noqa: E402
from qonnx.transformation.insert_topk import InsertTopK  # noqa: E402
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

import finn.transformation.streamline.absorb as absorb  # noqa: E402
import finn.transformation.streamline.reorder as reorder  # noqa: E402
from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer  # noqa: E402
from finn.analysis.fpgadataflow.res_estimation import res_estimation  # noqa: E402
from finn.core.onnx_exec import execute_onnx  # noqa: E402
from finn.transformation.fpgadataflow.convert_to_hw.conv_inp_gen import InferConvInpGen  # noqa: E402
from finn.transformation.fpgadataflow.convert_to_hw.duplicate_streams import (  # noqa: E402
    InferDuplicateStreamsLayer)
from finn.transformation.fpgadataflow.convert_to_hw.elementwise_binary_operation import (  # noqa: E402
    InferElementwiseBinaryOperation)
from finn.transformation.fpgadataflow.convert_to_hw.global_acc_pool import (  # noqa: E402
    InferGlobalAccPoolLayer)
from finn.transformation.fpgadataflow.convert_to_hw.label_select import InferLabelSelectLayer  # noqa: E402
from finn.transformation.fpgadataflow.convert_to_hw.quantized_matrix_vector_activation import (  # noqa: E402
    InferQuantizedMatrixVectorActivation)
from finn.transformation.fpgadataflow.convert_to_hw.thresholding import InferThresholdingLayer  # noqa: E402
from finn.transformation.fpgadataflow.convert_to_hw.vector_vector_activation import (  # noqa: E402
    InferVectorVectorActivation)
from finn.transformation.fpgadataflow.create_dataflow_partition import (  # noqa: E402
    CreateDataflowPartition)
from finn.transformation.fpgadataflow.set_folding import SetFolding  # noqa: E402
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers  # noqa: E402
from finn.transformation.move_reshape import RemoveCNVtoFCFlatten  # noqa: E402
from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN  # noqa: E402
from finn.transformation.streamline import Streamline  # noqa: E402
from finn.transformation.streamline.collapse_repeated import CollapseRepeatedTranspose  # noqa: E402
from finn.transformation.streamline.remove import RemoveIdentityTranspose  # noqa: E402
from finn.transformation.streamline.round_thresholds import RoundAndClipThresholds  # noqa: E402
from finn.util.basic import getHWCustomOp  # noqa: E402

from check_export import (  # noqa: E402
    FINN_TOLERANCE, CheckResult, compare_logits, metadata_of, run_graph, run_images)

# FINN logs a warning per node a pass leaves alone (hundreds); the self-checks report what matters.
logging.getLogger("finn_logger").setLevel(logging.ERROR)
HW_DOMAIN = "finn.custom_op.fpgadataflow"
OUTPUT_SCALE = "finn_build_output_scale"  # metadata key: the logits' step, absorbed into TopK


def make_args(argv=()):
    """The flags above with `--name=value` overrides from `argv` applied."""
    return SimpleNamespace(**apply_overrides(FLAGS, argv))


class Steps:
    """Runs each step on a model, prints one line with its seconds, saves the result.

    With reuse on, a step whose model is already in out_dir/intermediate/ is loaded instead.
    """

    def __init__(self, out_dir, reuse):
        self.folder = os.path.join(out_dir, "intermediate")
        os.makedirs(self.folder, exist_ok=True)
        self.reuse, self.seconds, self.count = reuse, {}, 0

    def __call__(self, name, function, model, *args):
        self.count += 1
        path = os.path.join(self.folder, f"{self.count}_{name}.onnx")
        start = time.perf_counter()
        if self.reuse and os.path.exists(path):
            model, how = ModelWrapper(path), "loaded"
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # FINN warns once per node it leaves alone
                model = function(model, *args)
            model.save(path)
            how = "done"
        self.seconds[name] = time.perf_counter() - start
        types = Counter(node.op_type for node in model.graph.node)
        print(f"[{self.count}] {name:15} {how} in {self.seconds[name]:6.1f} s: "
              + ", ".join(f"{count} {op}" for op, count in types.most_common()), flush=True)
        return model


# ------------------------------------------------------------------------------------ the steps
def frontend(model):
    """QONNX cleanup, then FINN's ConvertQONNXtoFINN: Quant nodes become MultiThreshold + Mul."""
    return cleanup_model(model).transform(ConvertQONNXtoFINN())


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
    return model.transform(Streamline())


def lower_convs(model):
    """Convs to Im2Col + MatMul in channels-last, the Transposes this adds moved and cancelled."""
    model = model.transform(LowerConvsToMatMul())
    model = model.transform(ComposedTransformation([
        absorb.AbsorbTransposeIntoMultiThreshold(),
        reorder.MoveTransposePastFork(),  # a block input feeds its first conv and its Add
        reorder.MoveTransposePastJoinAdd(),
        absorb.AbsorbConsecutiveTransposes(),
        CollapseRepeatedTranspose(),
        RemoveIdentityTranspose()]))
    model = model.transform(RoundAndClipThresholds())
    return model.transform(InferDataLayouts())


def software_input_quantizer(model, qonnx_model):
    """Replace the MultiThreshold on the float graph input by Div + Quant(scale 1).

    The input quantizer stays in software. As thresholds it rounds ties up; Brevitas' Quant
    rounds them to even, and the digits images hit exact ties (288 of 3072 inputs of one
    image), which moved logits by up to 12 output steps. Div + Quant rounds as Brevitas does.
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
    model = model.transform(ComposedTransformation([  # ... moved into the next thresholds
        absorb.AbsorbConsecutiveTransposes(), reorder.MoveScalarLinearPastInvariants(),
        absorb.AbsorbTransposeIntoFlatten(), absorb.AbsorbMulIntoMultiThreshold(),
        RemoveIdentityTranspose()]))
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


def partition(model, out_dir):
    """FINN's CreateDataflowPartition: (parent graph, the accelerator's own graph)."""
    parent = model.transform(CreateDataflowPartition(
        partition_model_dir=os.path.abspath(os.path.join(out_dir, "partition"))))
    parent.save(os.path.join(out_dir, "dataflow_parent.onnx"))
    (node,) = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    path = next(attribute.s.decode() for attribute in node.attribute if attribute.name == "model")
    return parent, ModelWrapper(path)


def specialize(model, part):
    """Each hardware layer becomes its HLS or RTL variant for `part`."""
    model = model.transform(SpecializeLayers(part))
    return model.transform(GiveUniqueNodeNames()).transform(InferShapes()).transform(InferDataTypes())


def fold(model, fps, period_ns):
    """FINN's SetFolding: PE/SIMD per layer for `fps` frames per second at `period_ns`."""
    return model.transform(SetFolding(int(1e9 / period_ns / fps))).transform(GiveUniqueNodeNames())


def estimate(model, part, period_ns):
    """FINN's analytical estimates: per layer resources and cycles, totals, throughput."""
    resources = model.analysis(partial(res_estimation, fpgapart=part))
    cycles = model.analysis(exp_cycles_per_layer)
    layers = [{"name": node.name, "op_type": node.op_type,
               **{key: resources[node.name].get(key, 0)
                  for key in ("LUT", "BRAM_18K", "URAM", "DSP")},
               "cycles": cycles[node.name]} for node in model.graph.node]
    totals = {key: sum(layer[key] for layer in layers) for key in ("LUT", "BRAM_18K", "URAM", "DSP")}
    slowest = max(layers, key=lambda layer: layer["cycles"])
    return {"part": part, "clock_ns": period_ns, "layers": layers, "totals": totals,
            "max_cycles": slowest["cycles"], "bottleneck": slowest["name"],
            "estimated_fps": 1e9 / period_ns / slowest["cycles"]}


# ------------------------------------------------------------------------------------ checks
def check_partition(parent, accelerator, qonnx_model):
    """Every Conv/Gemm, residual Add and pooling is a hardware layer in the partition, no
    hardware layer reads or writes floats, and only input scaling / output stay outside.
    Returns a list of failures (empty when all holds)."""
    failures = []
    source = Counter(node.op_type for node in qonnx_model.graph.node)
    inside = Counter(node.op_type for node in accelerator.graph.node)
    expected = {("MVAU", "VVAU"): source["Conv"] + source["Gemm"] + source["MatMul"],
                ("ElementwiseAdd",): source["Add"],
                ("GlobalAccPool", "Pool"): source["GlobalAveragePool"] + source["AveragePool"]}
    for ops, count in expected.items():
        found = sum(inside[op] for op in ops)
        if found != count:
            failures.append(f"{'/'.join(ops)} inside: {found}, the QONNX graph has {count} layers")
    not_hw = [node.name for node in accelerator.graph.node if not node.domain.startswith(HW_DOMAIN)]
    if not_hw:
        failures.append(f"not hardware layers inside: {', '.join(not_hw)}")
    floats = []
    for node in accelerator.graph.node:
        layer = getHWCustomOp(node)
        dtypes = [layer.get_input_datatype(0), layer.get_output_datatype(0)]
        if any(not dtype.is_integer() for dtype in dtypes):
            floats.append(f"{node.name} ({dtypes[0]} -> {dtypes[1]})")
    if floats:
        failures.append(f"float data inside: {', '.join(floats)}")
    outside = [node.op_type for node in parent.graph.node
               if node.op_type != "StreamingDataflowPartition"]
    allowed = {"Div", "Quant", "MultiThreshold", "Transpose", "Mul", "TopK"}  # input/output scaling
    if set(outside) - allowed:
        failures.append(f"left outside the partition: {', '.join(outside)}")
    return failures, outside


def check_hw_graph(hw_model, qonnx_model, count):
    """Run the hardware graph (before specialization) with FINN's Python execution on `count`
    validation images: its integer logits times the output scale must give the QONNX graph's
    logits (check_export's FINN tolerance, same top-1) and LabelSelect must pick their top-1."""
    images = run_images(metadata_of(qonnx_model), count)
    if images is None:
        return CheckResult("hw_graph", "fail", "no images: the file's metadata names no data "
                           "set (a file from finn_mobilenetv2.py does); --verify_images=0 skips")
    reference = run_graph(cleanup_model(qonnx_model), images)
    (label_select,) = hw_model.get_nodes_by_op_type("LabelSelect")
    scale = float(hw_model.get_metadata_prop(OUTPUT_SCALE) or 1.0)
    logits, labels = [], []
    for image in images.numpy():
        context = execute_onnx(hw_model, {hw_model.graph.input[0].name: image[None]},
                               return_full_exec_context=True)
        logits.append(context[label_select.input[0]].reshape(1, -1) * scale)
        labels.append(int(context[hw_model.graph.output[0].name].ravel()[0]))
    logits = np.concatenate(logits)
    result = compare_logits("hw_graph", logits, reference, FINN_TOLERANCE,
                            scale, "hardware graph vs QONNX")
    wrong = [index for index, label in enumerate(labels)
             if logits[index, label] != logits[index].max()]
    if wrong:
        result.status = "fail"
        result.offenders += [f"image {index}: LabelSelect chose {labels[index]}, not the largest "
                             "logit" for index in wrong]
    return result


def print_table(estimates):
    """Resources and cycles per layer type, then the totals."""
    rows = {}
    for layer in estimates["layers"]:
        row = rows.setdefault(layer["op_type"], Counter())
        row.update({key: layer[key] for key in ("LUT", "BRAM_18K", "URAM", "DSP")} | {"layers": 1})
        row["max_cycles"] = max(row["max_cycles"], layer["cycles"])
    print(f"{'layer type':32} {'count':>5} {'LUT':>9} {'BRAM_18K':>9} {'URAM':>5} {'DSP':>5} "
          f"{'max cycles':>10}")
    for op_type, row in sorted(rows.items(), key=lambda item: -item[1]["LUT"]):
        print(f"{op_type:32} {row['layers']:5} {row['LUT']:9.0f} {row['BRAM_18K']:9.0f} "
              f"{row['URAM']:5.0f} {row['DSP']:5.0f} {row['max_cycles']:10}")
    totals = estimates["totals"]
    print(f"{'total':32} {len(estimates['layers']):5} {totals['LUT']:9.0f} "
          f"{totals['BRAM_18K']:9.0f} {totals['URAM']:5.0f} {totals['DSP']:5.0f} "
          f"{estimates['max_cycles']:10}")
    print(f"estimated {estimates['estimated_fps']:.0f} frames/s at {1e3 / estimates['clock_ns']:.0f}"
          f" MHz on {estimates['part']} (bottleneck {estimates['bottleneck']})")


# ------------------------------------------------------------------------------------ the run
def main(args):
    if not os.path.isfile(args.model):
        raise ConfigError(f"--model={args.model}: no such file")
    os.makedirs(args.out_dir, exist_ok=True)
    qonnx_model = ModelWrapper(args.model)
    step = Steps(args.out_dir, args.reuse)
    model = step("frontend", frontend, qonnx_model)
    model = step("streamline", streamline, model)
    model = step("lower_convs", lower_convs, model)
    model = step("convert_to_hw", convert_to_hw, model, qonnx_model)
    failures = []
    if args.verify_images:
        start = time.perf_counter()
        result = check_hw_graph(model, qonnx_model, args.verify_images)
        print(f"    check: {result.summary} ({time.perf_counter() - start:.1f} s)")
        if result.failed:
            failures += [f"hw_graph: {line}" for line in [result.summary, *result.offenders]]
    start = time.perf_counter()
    parent, accelerator = partition(model, args.out_dir)
    step.count += 1
    step.seconds["partition"] = time.perf_counter() - start
    partition_failures, outside = check_partition(parent, accelerator, qonnx_model)
    failures += partition_failures
    print(f"[{step.count}] partition       done in {step.seconds['partition']:6.1f} s: "
          f"{len(accelerator.graph.node)} hardware layers inside; outside: "
          f"{', '.join(outside) or 'nothing'}", flush=True)
    accelerator = step("specialize", specialize, accelerator, args.fpga_part)
    accelerator = step("fold", fold, accelerator, args.target_fps, args.clock_ns)
    accelerator.save(os.path.join(args.out_dir, "hw_layers.onnx"))
    estimates = estimate(accelerator, args.fpga_part, args.clock_ns)
    estimates["target_fps"] = args.target_fps
    estimates["seconds"] = step.seconds
    with open(os.path.join(args.out_dir, "estimates.json"), "w") as file:
        json.dump(estimates, file, indent=2)
    print_table(estimates)
    for failure in failures:
        print(f"FAILED {failure}")
    return not failures


def cli(argv):
    try:
        ok = main(make_args(argv))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
