"""The export's structure, as FINN needs it: a Quant node on every weight and every activation
input of Conv/Gemm/MatMul (FINN turns them into integer weights and thresholds), identical
scales on the inputs of each Add or Concat (it adds integers, with no rescaling), and BatchNorm
kept as its own node (it folds it into thresholds itself)."""
import numpy as np
import torch

from finn_demo.checks.result import CheckResult, passed_if_complete

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")  # the layers FINN maps to integer MACs
JOIN_OPS = ("Add", "Concat")  # where two quantized streams meet and FINN adds/stacks integers
QUANT_OPS = ("Quant", "IntQuant", "BipolarQuant")  # qonnx's quantizers; input 1 is the scale
# Nodes that move values without computing new ones: a Quant before them still describes their
# output exactly. Averaging (GlobalAveragePool, AveragePool) is not among them: a mean of
# integers leaves the grid, so a layer after it needs a Quant of its own.
VALUE_PRESERVING_OPS = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                        "MaxPool")


def quant_source(model, tensor):
    """The Quant node whose output reaches `tensor` with its values unchanged, or None."""
    producer = model.find_producer(tensor)
    while producer is not None and producer.op_type in VALUE_PRESERVING_OPS:
        producer = model.find_producer(producer.input[0])
    return producer if producer is not None and producer.op_type in QUANT_OPS else None


def _compute_nodes(model):
    return [node for node in model.graph.node if node.op_type in COMPUTE_OPS]


def check_weight_quant(model):
    """Every Conv/Gemm/MatMul's weights (input 1) come from a Quant: FINN folds it into integers."""
    nodes = _compute_nodes(model)
    offenders = [f"{node.name} ({node.op_type}): weight {node.input[1]} is not quantized"
                 for node in nodes if quant_source(model, node.input[1]) is None]
    return passed_if_complete("weight_quant", offenders, len(nodes), "Conv/Gemm/MatMul nodes",
                  "a Quant on their weights")


def check_input_quant(model):
    """Every Conv/Gemm/MatMul's activation input (input 0) comes from a Quant: FINN needs integers in."""
    nodes = _compute_nodes(model)
    offenders = []
    for node in nodes:
        if quant_source(model, node.input[0]) is None:
            producer = model.find_producer(node.input[0])
            source = producer.op_type if producer is not None else "the graph input"
            offenders.append(f"{node.name} ({node.op_type}): input comes from {source}, not a Quant")
    return passed_if_complete("input_quant", offenders, len(nodes), "Conv/Gemm/MatMul nodes",
                  "a Quant on their input")


def _join_offence(model, node):
    """Why the quantized streams joined by `node` do not share one scale, or None if they do."""
    dynamic = [name for name in node.input if model.get_initializer(name) is None]
    scales = []
    for name in dynamic:
        quant = quant_source(model, name)
        if quant is None:
            return f"{node.name} ({node.op_type}): input {name} does not come from a Quant"
        scale = model.get_initializer(quant.input[1])
        if scale is None:
            return f"{node.name} ({node.op_type}): the scale of {quant.name} is not a constant"
        scales.append((quant.name, np.asarray(scale)))
    first_name, first = scales[0]
    for quant_name, scale in scales[1:]:
        # Exact: Brevitas aligns by sharing one quantizer, so aligned scales are bit-identical.
        if first.shape != scale.shape or not np.array_equal(first, scale):
            return (f"{node.name} ({node.op_type}): scale {np.ravel(first)[:3]} of {first_name} "
                    f"!= {np.ravel(scale)[:3]} of {quant_name}")
    return None


def check_add_scales(model):
    """The Quants feeding each Add/Concat of two or more streams have identical scales.

    An Add with a constant operand (a bias) joins nothing and is left out.
    """
    joins = [node for node in model.graph.node if node.op_type in JOIN_OPS
             and sum(model.get_initializer(name) is None for name in node.input) >= 2]
    offenders = [offence for offence in (_join_offence(model, node) for node in joins) if offence]
    return passed_if_complete("add_scales", offenders, len(joins), "Add/Concat joins",
                  "one scale on all their inputs")


def _convs_without_batchnorm(model):
    return [node.name for node in model.get_nodes_by_op_type("Conv")
            if not any(consumer.op_type == "BatchNormalization"
                       for consumer in model.find_consumers(node.output[0]))]


def check_batchnorm(model, expected=None):
    """BatchNormalization is still in the graph, as many as `expected` (the source's BN layers).

    FINN folds BatchNorm into its thresholds itself; a graph whose BN was merged into the
    weights before quantization is a different, usually less accurate, model.
    """
    count = len(model.get_nodes_by_op_type("BatchNormalization"))
    wanted = f"{expected} expected" if expected is not None else "at least 1 expected"
    figures = {"batchnorm_nodes": count, "expected": expected}
    if count == 0 or (expected is not None and count != expected):
        offenders = [f"{name} (Conv): not followed by BatchNormalization"
                     for name in _convs_without_batchnorm(model)]
        return CheckResult("batchnorm", "fail", f"{count} BatchNormalization nodes, {wanted}",
                           offenders, figures)
    return CheckResult("batchnorm", "pass", f"{count} BatchNormalization nodes ({wanted})",
                       figures=figures)


def batchnorm_layers(module):
    """How many BatchNorm layers a (Brevitas) PyTorch model holds: the count its export should keep."""
    return sum(isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) for layer in module.modules())
