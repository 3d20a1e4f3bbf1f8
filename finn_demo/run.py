"""The parts of one demo run that finn_mobilenetv2.py's main strings together: load the model and
data, time each step, score and print the float and quantized models, the export's metadata."""
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch

from finn_demo.data.datasets import (
    calibrates_on_val, calibration_folder, digits_datasets, imagenet_calib_and_val, imagenet_split,
    make_loader, random_subset, split_off_calibration)
from finn_demo.data.models import (
    imagenet_train_transform, imagenet_transform, load_digits_model, load_imagenet_model)
from finn_demo.evaluate import evaluate
from finn_demo.export import run_metadata
from finn_demo.fast_eval import evaluate_float_and_quantized
from finn_demo.quant.accumulators import accumulator_bits, widest_hidden
from finn_demo.quant.qat import apply_qat


@dataclass
class RunResult:
    """What one demo run made and measured (finn_mobilenetv2.main's return value), each figure
    under one name; the two evaluations carry top1, images_per_s, backend, agreement (None
    without onnxruntime), agreement_images, scored and export_seconds."""

    args: SimpleNamespace  # the run's flags
    model: object  # the quantized Brevitas model, after every PTQ pass
    output: str  # the exported QONNX file
    calib_loader: object  # the calibration images
    val_loader: object  # the validation images both models were scored on
    float_eval: SimpleNamespace  # the float model's evaluation
    quant_eval: SimpleNamespace  # the quantized model's, plus float_fidelity and agreement_seconds
    accumulators: dict  # {layer name: accumulator bits FINN gives it}
    seconds: dict  # {stage name: wall seconds}
    qat_history: list = None  # QAT's held-out figures per epoch, epoch 0 its start (None: no QAT)
    report: object = None  # the export checks' report (None with check_export off)
    build: object = None  # finn_build.py's result (None without finn_build)


def load_model_and_data(args):
    """(float model, calibration loader, validation loader, data set name)."""
    if args.data_dir:
        calib_set, val_set, name = imagenet_data(args)
        model = load_imagenet_model(args.weights)
    else:
        train_set, val_set = digits_datasets()
        model = load_digits_model(train_set, args.cache_dir, args.digits_width, args.digits_epochs,
                                  args.digits_stages, args.digits_seed)
        calib_set = random_subset(train_set, args.calib_size, args.seed)
        name = "digits (scikit-learn load_digits, 32x32)"
    val_set = random_subset(val_set, args.val_size, args.seed)
    workers = args.workers if args.data_dir else 0  # digits are tensors already: nothing to decode
    calib_loader = make_loader(calib_set, args.batch_size, workers)
    val_loader = make_loader(val_set, args.batch_size, workers)
    return model.to(args.device), calib_loader, val_loader, name


def imagenet_data(args):
    """ImageNet mode's (calibration set, validation set, data set name); says so in one line when
    the calibration images are taken out of val/."""
    calib_set, val_set = imagenet_calib_and_val(args.data_dir, args.calib_dir,
                                                imagenet_transform(args.weights), args.calib_size,
                                                args.seed)
    if not calibrates_on_val(args.data_dir, args.calib_dir):
        return calib_set, val_set, "ImageNet"
    print(f"no train/ and no --calib_dir: {len(calib_set)} images of val/ calibrate, the other "
          f"{len(val_set)} remain for validation")
    return calib_set, val_set, "ImageNet val/ less its calibration images"


# Flags that do not change what QAT trains: a run may resume with other values of these.
QAT_NEUTRAL_FLAGS = ("output", "qat_checkpoint", "resume", "cache_dir", "device", "workers",
                     "val_size", "eval_backend", "agreement_images", "check_export", "check_finn",
                     "check_images", "finn_build", "netron", "verbose")


def qat_checkpoint_path(args):
    """--qat_checkpoint, or the output's name with .qat.pt ("" = the default)."""
    return args.qat_checkpoint or os.path.splitext(args.output)[0] + ".qat.pt"


def qat_train_set(args):
    """QAT's training images (docs/qat.md): the digits' training split as it is (the digits model
    trained without augmentation), or ImageNet's train/ (else --calib_dir, else val/'s
    calibration part, which validation leaves out) with the usual augmentation; a seeded subset
    of --qat_images of them (0 = all). Labels are not used."""
    if not args.data_dir:
        images = digits_datasets()[0]
    elif calibrates_on_val(args.data_dir, args.calib_dir):
        val_set = imagenet_split(args.data_dir, "val", imagenet_train_transform(args.weights))
        images = split_off_calibration(val_set, args.calib_size, args.seed)[0]
    elif (Path(args.data_dir) / "train").is_dir():
        images = imagenet_split(args.data_dir, "train", imagenet_train_transform(args.weights))
    else:
        images = calibration_folder(args.calib_dir, imagenet_train_transform(args.weights))
    return random_subset(images, args.qat_images or len(images), args.seed)


def run_qat(float_model, model, val_loader, args, flags):
    """QAT on the PTQ result (in place), distilled from `float_model`; checkpointed after each
    epoch, resumed with --resume. `flags`: the run's flags, checked on resume. Returns the
    per-epoch history."""
    train_set = qat_train_set(args)
    print(f"QAT: {args.qat_epochs} epochs over {len(train_set)} training images, distilled "
          f"from the float model's logits; checkpoint {qat_checkpoint_path(args)}")
    fingerprint = {name: value for name, value in flags.items() if name not in QAT_NEUTRAL_FLAGS}
    return apply_qat(model, float_model, train_set, val_loader, args.qat_epochs, lr=args.qat_lr,
                     batch_size=args.batch_size, workers=args.workers if args.data_dir else 0,
                     seed=args.seed, checkpoint=qat_checkpoint_path(args), resume=args.resume,
                     fingerprint=fingerprint)


def resolve_backend(args):
    """The eval_backend flag with "auto" resolved: onnxruntime for ImageNet on a CPU, where it is
    faster than eager PyTorch (and than the Brevitas model); brevitas on a GPU, and for the
    digits, whose few small images PyTorch scores before the exports would be done
    (timings: the speed section of results/RESULTS.md)."""
    if args.eval_backend != "auto":
        return args.eval_backend
    on_cpu = torch.device(args.device).type == "cpu"
    return "onnxruntime" if on_cpu and args.data_dir else "brevitas"


def describe_data(name, size, scored):
    """The data set line: how many validation images were scored, and how many could not be."""
    if scored == size:
        return f"{name}, {size} validation images"
    return f"{name}, {scored} of {size} validation images, {size - scored} could not be decoded"


def print_agreement(result, reference):
    """Under a top-1 measured on an export: how often the export's top-1 is `reference`'s."""
    if result.agreement is not None:
        print(f"  its top-1 agrees with {reference}'s on {result.agreement:.2f}% of "
              f"{result.agreement_images} images")


class Stages:
    """Wall time of each step of the run; with verbose on, the accuracy after each step too."""

    def __init__(self, args, val_loader, load_seconds):
        self.args, self.val_loader, self.seconds = args, val_loader, {"load": load_seconds}

    @contextmanager
    def __call__(self, name, model=None):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.args.verbose and model is not None:
            print(f"  after {name}: top-1 {evaluate(model, self.val_loader, name)[0]:.2f}%")


def score_and_print(float_model, model, val_loader, example, args, data_name, stage):
    """Score the float model (unchanged by PTQ: it quantized a copy) and the quantized one on the
    same batches, so each validation image is decoded once; print their lines. Returns the
    scores, the fidelity, the data set line and the accumulator widths."""
    float_eval, quant, data_seconds = evaluate_float_and_quantized(
        float_model, model, val_loader, example, resolve_backend(args), args.agreement_images)
    stage.seconds.update({
        "float evaluation": float_eval.export_seconds + float_eval.forward_seconds,
        "quantized evaluation": quant.export_seconds + quant.forward_seconds + quant.agreement_seconds,
        "validation data": data_seconds})
    float_top1, quant_top1 = float_eval.top1, quant.top1
    dataset = describe_data(data_name, len(val_loader.dataset), quant.scored)
    print(f"float model: top-1 {float_top1:.2f}% on {dataset}, measured by {float_eval.backend}")
    print_agreement(float_eval, "the PyTorch float model")
    print(f"quantized model: top-1 {quant_top1:.2f}% (float {float_top1:.2f}%) on {dataset}, "
          f"measured by {quant.backend}")
    print_agreement(quant, "the Brevitas model")
    fidelity = quant.float_fidelity
    print(f"  against the float model: same top-1 class on {fidelity.agreement:.2f}% of the images, "
          f"logit SQNR {fidelity.sqnr_db:.1f} dB")
    accumulators = accumulator_bits(model, example)
    widest, widest_bits = widest_hidden(accumulators)
    (first, first_bits), *_, (last, last_bits) = accumulators.items()
    print(f"  accumulators (FINN's widths for these weights): up to {widest_bits} bits between the "
          f"first and last layer ({widest}); {first} {first_bits}, {last} {last_bits}")
    return float_eval, quant, dataset, accumulators, widest_bits


def export_metadata(flags, float_eval, quant, dataset, widest_bits):
    """The export's metadata: the run's flags (`flags`: name -> value) and what it measured."""
    fidelity = quant.float_fidelity
    return run_metadata(
        flags, float_top1=f"{float_eval.top1:.2f}", quant_top1=f"{quant.top1:.2f}",
        top1_agreement_with_float=f"{fidelity.agreement:.2f}", logit_sqnr_db=f"{fidelity.sqnr_db:.2f}",
        max_hidden_accumulator_bits=widest_bits,
        float_top1_measured_by=float_eval.backend, quant_top1_measured_by=quant.backend,
        dataset=dataset)


def serve_in_netron(path):
    """Serve the exported graph in Netron on localhost (and open a browser tab) until Ctrl-C."""
    import netron
    host, port = netron.start(str(path), browse=True)
    print(f"Netron serves {path} at http://{host}:{port} (Ctrl-C to stop)")
    try:
        netron.wait()
    except KeyboardInterrupt:
        netron.stop()


def file_state(path):
    """What identifies the file at `path` now (inode, modification time, size); None if absent."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size
