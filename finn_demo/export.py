"""Export the quantized model to QONNX for FINN, with the run's description in its metadata."""
from importlib.metadata import version

import onnx
from brevitas.export import export_qonnx
from qonnx.core.modelwrapper import ModelWrapper

from finn_demo.common.files import atomic_path


def export_finn_onnx(model, example, path, metadata):
    """Write `model` as QONNX (opset 17, input named x) to `path`, whole or not at all.

    `metadata` (str -> str) goes into the file's metadata_props, visible in Netron.
    """
    model.eval()
    with atomic_path(path) as tmp:
        export_qonnx(model, args=example, export_path=str(tmp), opset_version=17, input_names=["x"],
                     dynamo=False, keep_initializers_as_inputs=False)
        graph = _constant_identities_folded(_bias_zero_points_as_vectors(onnx.load(str(tmp))))
        onnx.helper.set_model_props(graph, {key: str(value) for key, value in metadata.items()})
        onnx.save(graph, str(tmp))
    return path


def _bias_zero_points_as_vectors(graph):
    """Give each Conv bias Quant a zero point of shape (1,) instead of Brevitas' 0-d scalar.

    Same value, same meaning; but qonnx 1.0's ExtractBiasFromConv, the first step of FINN's
    ConvertQONNXtoFINN, fails on the 0-d one with "cannot reshape array of size 1" (fixed upstream
    in fastmachinelearning/qonnx pull request 238). Convs get a bias from bias correction.
    """
    model = ModelWrapper(graph)
    for conv in model.get_nodes_by_op_type("Conv"):
        quant = model.find_producer(conv.input[2]) if len(conv.input) > 2 else None
        if quant is not None and quant.op_type == "Quant":
            zero_point = model.get_initializer(quant.input[2])
            if zero_point is not None and zero_point.ndim == 0:
                model.set_initializer(quant.input[2], zero_point.reshape(1))
    return model.model


def _constant_identities_folded(graph):
    """Replace each Identity of a constant by a copy of the constant under the Identity's name.

    The exporter stores equal initializers once and reaches the others through Identity nodes,
    one per repeated constant (many in an untrained MobileNetV2, whose BatchNorm statistics are
    all equal). qonnx's FoldConstants (in cleanup_model, the first thing the checks and FINN's
    frontend do) folds one node per pass over the whole graph, so its time grows with their
    number times the graph's size; folded here, in one pass, they cost nothing later.
    """
    model = ModelWrapper(graph)
    for node in list(model.graph.node):
        value = model.get_initializer(node.input[0]) if node.op_type == "Identity" else None
        if value is not None:
            model.set_initializer(node.output[0], value)
            model.graph.node.remove(node)
    return model.model


def run_metadata(flags, **results):
    """The description a file carries: the run's flags, its results and the stack's versions."""
    versions = {f"{package}_version": version(package) for package in ("torch", "brevitas", "qonnx")}
    return {**flags, **results, **versions}
