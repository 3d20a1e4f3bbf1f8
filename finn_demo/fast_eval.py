"""Evaluate a quantized model fast: export it as QCDQ ONNX and run it with onnxruntime.

Brevitas' fake-quantized model runs slower than the float model in eager PyTorch (every
quantizer is extra work). The same model exported as QuantizeLinear/DequantizeLinear (QCDQ)
runs in onnxruntime instead, which fuses Conv with BatchNorm and ReLU and runs each Q/DQ pair
as one cheap elementwise pass. This is a way to measure the quantized model, not the FINN
artefact: the QONNX export for FINN is unchanged.

    result = fast_evaluate(model, val_loader)
    result.top1, result.images_per_s, result.agreement
"""
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import onnxruntime as ort
import torch
from brevitas.export import export_onnx_qcdq

from finn_demo.evaluate import evaluate, predict, top1


def export_qcdq(model, example, path):
    """Write `model` to `path` as QCDQ ONNX (opset 17, input x, dynamic batch size)."""
    model.eval()
    export_onnx_qcdq(model, example, str(path), opset_version=17, dynamo=False,
                     keep_initializers_as_inputs=False, input_names=["x"], output_names=["logits"],
                     dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    return path


def ort_session(path, threads=None, int8_kernels=False):
    """An onnxruntime CPU session with as many intra-op threads as PyTorch uses (or `threads`).

    int8_kernels=False keeps the convs in float between the Q/DQ pairs, the graph as exported;
    True lets onnxruntime fuse DequantizeLinear -> Conv -> QuantizeLinear into its integer
    kernels. Float convs compute exactly what Brevitas computes; the integer kernels' speed is
    not measured by any command here (benchmark.py's speed section times the default).
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only
    # Idle threads sleep instead of spinning, so they do not take the cores from PyTorch (or
    # from another process) between runs.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not int8_kernels:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session, loader, desc="onnxruntime evaluation"):
    """(predicted classes, labels, images per second) of an onnxruntime session over `loader`."""
    def forward(images):
        return torch.from_numpy(session.run(None, {"x": images.numpy()})[0])
    predictions, labels, seconds = predict(forward, loader, "cpu", desc)
    return predictions, labels, len(labels) / seconds


def torch_predictions(model, loader, desc="Brevitas predictions", limit=None):
    """Predicted classes of a PyTorch model over `loader` (its first `limit` images, if given)."""
    model.eval()
    return predict(model, loader, next(model.parameters()).device, desc, limit)[0]


def fast_evaluate(model, loader, threads=None, sample=None):
    """Top-1 (%), images/s and top-1 agreement (%) with `model` of its QCDQ export in onnxruntime.

    The export goes to a temporary file; images/s is timed like `evaluate.evaluate` times the
    PyTorch model (the loop over the loader, data loading included), without the export
    (export_seconds) or the Brevitas model's predictions (agreement_seconds).
    The agreement is measured on the loader's first `sample` images (all of them if None): the
    Brevitas model is the slow path this replaces.
    """
    device = next(model.parameters()).device
    example = next(iter(loader))[0][:1].to(device)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = export_qcdq(model, example, Path(folder) / "model_qcdq.onnx")
        export_seconds = time.perf_counter() - start
        predictions, labels, images_per_s = run_session(ort_session(path, threads), loader)
    start = time.perf_counter()
    reference = torch_predictions(model, loader, limit=sample)
    agreement_seconds = time.perf_counter() - start
    return SimpleNamespace(
        top1=top1(predictions, labels),
        images_per_s=images_per_s, scored=len(labels),
        agreement=top1(predictions[:len(reference)], reference),
        agreement_images=len(reference), export_seconds=export_seconds,
        agreement_seconds=agreement_seconds)


def evaluate_quantized(model, loader, backend, sample):
    """The quantized model's top-1 (%), images/s and images scored, measured by `backend`:
    "brevitas" runs the fake-quantized PyTorch model, "onnxruntime" its QCDQ export (with its
    top-1 agreement with the Brevitas model on `sample` images)."""
    if backend == "brevitas":
        accuracy, images_per_s, scored = evaluate(model, loader, "quantized evaluation")
        return SimpleNamespace(top1=accuracy, images_per_s=images_per_s, scored=scored,
                               backend="Brevitas (PyTorch)", agreement=None)
    result = fast_evaluate(model, loader, sample=sample)
    result.backend = "onnxruntime (QCDQ export)"
    return result
