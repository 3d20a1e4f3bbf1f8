"""Evaluate the float and the quantized model fast: export both to ONNX and run them in onnxruntime.

On a CPU, eager PyTorch is the slow path: Brevitas' fake-quantized model runs slower than the
float model (every quantizer is extra work), and the float model slower than onnxruntime. The
quantized model exported as QuantizeLinear/DequantizeLinear (QCDQ) and the float model exported
as plain ONNX (the same graph without quantizers) run in onnxruntime instead, which fuses Conv
with BatchNorm and ReLU and runs each Q/DQ pair as one cheap elementwise pass. Both are scored in
one pass over the validation images (each batch decoded once), and each export's top-1 is
compared with its PyTorch model's on a sample. This measures the models, not the FINN artefact:
the QONNX export for FINN is unchanged.

    float_result, quant_result, data_seconds = evaluate_float_and_quantized(
        float_model, quant_model, val_loader, example, "onnxruntime", sample=500)
    quant_result.top1, quant_result.images_per_s, quant_result.agreement
"""
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import onnxruntime as ort
import torch
from brevitas.export import export_onnx_qcdq

from finn_demo.data.datasets import first_images
from finn_demo.evaluate import fidelity, predict_all, scores, top1

# Both exports alike: opset 17, input x, output logits, dynamic batch size.
ONNX_EXPORT = dict(opset_version=17, dynamo=False, keep_initializers_as_inputs=False,
                   input_names=["x"], output_names=["logits"],
                   dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
# What measures each model's top-1, by eval_backend.
BACKENDS = {"onnxruntime": {"float": "onnxruntime (ONNX export)", "quant": "onnxruntime (QCDQ export)"},
            "brevitas": {"float": "PyTorch (eager)", "quant": "Brevitas (PyTorch)"}}


def export_qcdq(model, example, path):
    """Write the quantized `model` to `path` as QCDQ ONNX."""
    model.eval()
    export_onnx_qcdq(model, example, str(path), **ONNX_EXPORT)
    return path


def export_float(model, example, path):
    """Write the float `model` to `path` as plain ONNX."""
    model.eval()
    torch.onnx.export(model, example, str(path), **ONNX_EXPORT)
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


def session_forward(session):
    """An onnxruntime session as a forward function (CPU images -> logits) for predict_all."""
    def forward(images):
        return torch.from_numpy(session.run(None, {"x": images.numpy()})[0])
    return forward


def onnxruntime_evaluation(models, exporters, loader, example, sample=None, threads=None,
                           reference=None):
    """Each PyTorch model of `models` ({name: model}) exported by `exporters[name]` (model, example,
    path) and run in onnxruntime: all exports scored in one pass over `loader` (the others' logits
    compared with export `reference`'s, if given), then their top-1 compared with their PyTorch
    models' on the loader's first `sample` images (all if None), all models in one more pass.

    Returns a namespace: results ({name: its `scores`, with agreement (%), agreement_images and
    export_seconds: writing the file and opening it in onnxruntime}), scoring (the scoring pass,
    `predict_all`'s namespace), data_seconds (its data loading) and agreement_seconds (the whole
    agreement pass).
    """
    forwards, export_seconds = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            start = time.perf_counter()
            path = exporters[name](model, example, Path(folder) / f"{name}.onnx")
            forwards[name] = session_forward(ort_session(path, threads))
            export_seconds[name] = time.perf_counter() - start
    scoring = predict_all(forwards, loader, "cpu", "onnxruntime evaluation", reference=reference)
    start = time.perf_counter()
    reference = predict_all(models, loader, example.device, "PyTorch agreement", sample)
    agreement_seconds = time.perf_counter() - start
    results = {}
    for name in models:
        checked = reference.predictions[name]
        results[name] = scores(scoring, name)
        results[name].agreement = top1(scoring.predictions[name][:len(checked)], checked)
        results[name].agreement_images, results[name].export_seconds = len(checked), export_seconds[name]
    return SimpleNamespace(results=results, scoring=scoring, data_seconds=scoring.data_seconds,
                           agreement_seconds=agreement_seconds)


def fast_evaluate(model, loader, threads=None, sample=None):
    """The quantized `model`'s QCDQ export in onnxruntime over `loader`: its `scores` with
    agreement (%) with `model` on the first `sample` images (all if None), agreement_images,
    export_seconds and agreement_seconds. Its images/s is timed like `evaluate.evaluate` times the
    PyTorch model (data loading included), without the export or the agreement."""
    example = first_images(loader, 1).to(next(model.parameters()).device)
    evaluation = onnxruntime_evaluation({"quant": model}, {"quant": export_qcdq}, loader, example,
                                        sample, threads)
    result = evaluation.results["quant"]
    result.agreement_seconds = evaluation.agreement_seconds
    return result


def evaluate_float_and_quantized(float_model, quant_model, loader, example, backend, sample):
    """(float result, quantized result, data seconds): both models scored on the same batches of
    `loader`, each batch decoded once; data seconds is that pass's time outside the models.

    backend "onnxruntime" runs both exported (the float model as plain ONNX, the quantized one as
    QCDQ), each export's top-1 compared with its PyTorch model's on the first `sample` images;
    "brevitas" runs both in PyTorch (the quantized one as the fake-quantized Brevitas model), as
    on a GPU, where the model is not the bottleneck. Each result: its `scores`, backend, agreement
    (None without onnxruntime), agreement_images and export_seconds; the quantized one also
    agreement_seconds, the one agreement pass that checks both exports, and float_fidelity: its
    top-1 agreement with the float model and its logits' SQNR against the float model's
    (evaluate.fidelity), on every scored image.
    """
    models = {"float": float_model.eval(), "quant": quant_model.eval()}
    if backend == "onnxruntime":
        evaluation = onnxruntime_evaluation(models, {"float": export_float, "quant": export_qcdq},
                                            loader, example, sample, reference="float")
    else:
        run = predict_all(models, loader, example.device, "evaluation", reference="float")
        evaluation = SimpleNamespace(results={name: scores(run, name) for name in models},
                                     scoring=run, data_seconds=run.data_seconds, agreement_seconds=0.0)
        for result in evaluation.results.values():
            result.agreement, result.agreement_images, result.export_seconds = None, 0, 0.0
    for name, result in evaluation.results.items():
        result.backend = BACKENDS[backend][name]
    float_result, quant_result = evaluation.results["float"], evaluation.results["quant"]
    quant_result.agreement_seconds = evaluation.agreement_seconds
    quant_result.float_fidelity = fidelity(evaluation.scoring, "quant", "float")
    return float_result, quant_result, evaluation.data_seconds
