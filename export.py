"""Export the quantized model to QONNX for FINN, with the run's description in its metadata."""
from importlib.metadata import version

import onnx
from brevitas.export import export_qonnx

from files import atomic_path


def export_finn_onnx(model, example, path, metadata):
    """Write `model` as QONNX (opset 17, input named x) to `path`, whole or not at all.

    `metadata` (str -> str) goes into the file's metadata_props, visible in Netron.
    """
    model.eval()
    with atomic_path(path) as tmp:
        export_qonnx(model, args=example, export_path=str(tmp), opset_version=17, input_names=["x"],
                     dynamo=False, keep_initializers_as_inputs=False)
        graph = onnx.load(str(tmp))
        onnx.helper.set_model_props(graph, {key: str(value) for key, value in metadata.items()})
        onnx.save(graph, str(tmp))
    return path


def run_metadata(flags, **results):
    """The description a file carries: the run's flags, its results and the stack's versions."""
    versions = {f"{package}_version": version(package) for package in ("torch", "brevitas", "qonnx")}
    return {**flags, **results, **versions}
