"""The FINN build's own checks of FINN's graphs, after conversion and after partitioning.

The dataflow partition holds every layer as a hardware layer on integers, and the hardware
graph computes the streamlined graph's logits and, layer by layer, the QONNX graph's levels
(finn_demo/checks/layerwise.py)."""
from collections import Counter

import numpy as np
from finn.core.onnx_exec import execute_onnx
from finn.util.basic import getHWCustomOp

from finn_demo.hw import steps as fs
from finn_demo.checks import CheckResult, finn_graph_result, layerwise

HW_DOMAIN = "finn.custom_op.fpgadataflow"


def check_partition(parent, accelerator, qonnx_model):
    """Every Conv/Gemm, residual Add and pooling is a hardware layer in the partition, no
    hardware layer reads or writes floats, and only input scaling / output stay outside.
    Returns (failures, op types left outside)."""
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
    not_hw = [f"{node.name} ({node.op_type})" for node in accelerator.graph.node
              if not is_hw_layer(node)]
    if not_hw:
        failures.append(f"not hardware layers inside: {', '.join(not_hw)}")
    floats = []
    for node in accelerator.graph.node:
        if is_hw_layer(node):
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


def is_hw_layer(node):
    return node.domain.startswith(HW_DOMAIN)


def nodes_between_hw_layers(model):
    """The nodes that are not hardware layers but have one before and one after them. FINN cannot
    make one dataflow partition around them (qonnx stops with "partition depends on itself")."""
    def reachable(step):
        seen, todo = set(), [node for node in model.graph.node if is_hw_layer(node)]
        while todo:
            for neighbour in step(todo.pop()):
                if neighbour is not None and neighbour.name not in seen:
                    seen.add(neighbour.name)
                    todo.append(neighbour)
        return seen
    after = reachable(lambda node: [consumer for name in node.output
                                    for consumer in model.find_consumers(name)])
    before = reachable(lambda node: [model.find_producer(name) for name in node.input])
    return [f"{node.name} ({node.op_type})" for node in model.graph.node
            if not is_hw_layer(node) and node.name in after and node.name in before]


def check_hw_graph(hw_model, streamlined, qonnx_model, images):
    """Run the hardware graph (before specialization) with FINN's Python execution on `images`
    (a (N, C, H, W) tensor: checks.check_inputs), which need no labels:
    - its logits must equal, exactly, those of FINN's streamlined graph (step 2), whose
      thresholds compare the same integers: lowering and conversion to hardware layers change
      no value;
    - layer by layer, each MultiThreshold of the streamlined graph and each Thresholding layer of
      the hardware graph (FINN's NHWC layout), fed the QONNX graph's levels before it, must give
      the levels of the QONNX activation Quant it stands for: at most one level off, and only
      where float rounding decides (check_export.finn_graph_result, docs/checks.md);
    - LabelSelect must pick the largest logit."""
    (label_select,) = hw_model.get_nodes_by_op_type("LabelSelect")
    scale = float(hw_model.get_metadata_prop(fs.OUTPUT_SCALE) or 1.0)
    logits, labels = [], []
    on_grid = layerwise.on_input_grid(qonnx_model, images)  # both graphs then agree exactly
    for image in on_grid.numpy():
        context = execute_onnx(hw_model, {hw_model.graph.input[0].name: image[None]},
                               return_full_exec_context=True)
        logits.append(context[label_select.input[0]].reshape(1, -1) * scale)
        labels.append(int(context[hw_model.graph.output[0].name].ravel()[0]))
    logits = np.concatenate(logits)
    streamlined_logits = layerwise.run_graph(streamlined, on_grid).reshape(logits.shape)
    differing = int(np.sum(logits != streamlined_logits))
    reference = layerwise.qonnx_reference(qonnx_model, images)
    results = [finn_graph_result(streamlined, "streamlined vs QONNX", images, reference,
                                 qonnx_model, name="hw_graph"),
               finn_graph_result(hw_model, "hardware vs QONNX", images, reference, qonnx_model,
                                 batch=1, name="hw_graph")]
    result = CheckResult("hw_graph", "fail" if differing or any(r.failed for r in results) else
                         "pass", f"hardware graph vs FINN's streamlined graph: {differing} of "
                         f"{logits.size} logits differ (exact required); "
                         + "; ".join(r.summary for r in results),
                         [offender for r in results for offender in r.offenders])
    wrong = [index for index, label in enumerate(labels)
             if logits[index, label] != logits[index].max()]
    if wrong:
        result.status = "fail"
        result.offenders += [f"image {index}: LabelSelect chose {labels[index]}, not the largest "
                             "logit" for index in wrong]
    return result
