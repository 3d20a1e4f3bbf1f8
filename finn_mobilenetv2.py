"""Quantize MobileNetV2 with Brevitas and export it as QONNX for FINN.

Edit the flags below, or override any of them on the command line:
    python finn_mobilenetv2.py --weight_bit_width=4 --bias_corr=True
The run reads top to bottom: load model and data, (1) insert quantization nodes,
(2) recover accuracy with post-training quantization, (3) export QONNX for FINN.
The PTQ passes run in Brevitas' order (quant_utils.quantize_and_recover): act_eq on the float
graph, calibration, GPTQ / GPFQ / Qronos, bn_corr, then bias_corr last.
"""
import os
import sys
import time
from contextlib import contextmanager
from types import SimpleNamespace

import torch

from finn_demo.common.configurator import ConfigError, apply_overrides, flags_of
from finn_demo.common.quiet import quiet_third_party

quiet_third_party()  # before Brevitas loads: it and torch print notices that are not the demo's

# ---------------------------------------------------------------------------------------- flags
# data and model
data_dir = ""  # ImageNet folder with train/<wnid>/ and val/<wnid>/; "" runs the embedded digits demo
weights = ""  # ImageNet: torchvision weights name (IMAGENET1K_V2, IMAGENET1K_V1) or a .pth file; "" = IMAGENET1K_V2
calib_size = 1000  # calibration images: a seeded random subset of the training split
val_size = 50000  # validation images: a seeded random subset of val/ (all of it when it is smaller)
batch_size = 32  # images per batch, for calibration, PTQ and evaluation
workers = 2  # DataLoader processes decoding ImageNet images (0 = in the main process)
device = "cuda" if torch.cuda.is_available() else "cpu"  # where the model runs
seed = 0  # seeds the calibration and validation subsets
output = "quant_mobilenet_v2.onnx"  # the exported QONNX file
cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "finn_mobilenetv2")  # digits model cache
digits_width = 1.0  # width multiplier of the digits model (smaller trains faster)
digits_epochs = 15  # training epochs of the digits model, on its first run
digits_stages = 7  # MobileNetV2 stages the digits model keeps (of 7; 3 still holds every structure)
digits_seed = 0  # seeds the digits model's training (each seed trains and caches its own model)
# 1. quantization nodes: bit widths (None = same as weight_bit_width)
weight_bit_width = 8  # weights of every Conv and Linear
act_bit_width = 8  # every activation (ReLU outputs, Add inputs, the network input)
input_bit_width = None  # the network input's quantizer (None = act_bit_width; FINN designs keep 8)
depthwise_bit_width = None  # weights of depthwise convs (groups != 1)
first_conv_bit_width = None  # weights of the first conv, features.0.0
last_linear_bit_width = None  # weights of the final Linear classifier
relu6_to_relu = False  # False keeps ReLU6's clip at 6 (quantized on [0, 6], as the seed); True makes
# it a ReLU with a calibrated range, Brevitas' default (the float network clips, this one does not)
# 2. post-training quantization (PTQ), run in this order: act_eq, calibration, gptq / gpfq / qronos /
# learned_round, bn_corr, bias_corr (last: it corrects the mean error every earlier pass leaves)
act_eq = False  # activation equalization (SmoothQuant), on the float graph before quantizing
act_eq_alpha = 0.5  # its migration strength, in [0, 1]
act_eq_add_mul_node = False  # let it insert Mul nodes where scales cannot be folded
gptq = False  # GPTQ weight rounding (not with gpfq)
gpfq = False  # GPFQ weight rounding (not with gptq)
qronos = False  # Qronos weight rounding (not with gptq or gpfq)
qronos_alpha = 1e-3  # Qronos damping, times the largest eigenvalue of each layer's input covariance
gpxq_impl = "fast"  # GPTQ, GPFQ and Qronos: "fast" (fast_gpxq.py: same integer weights, far faster: RESULTS.md) or "brevitas"
accumulator_bit_width = None  # N: with gptq or gpfq, AXE (Brevitas' accumulator-aware variant) keeps
# every dot product in a signed N-bit accumulator, the width FINN then gives it (None = off)
learned_round = "none"  # AdaRound, Brevitas' learned rounding of each weight, down or up, trained "layerwise" (per Conv/Linear) or "blockwise" (per features.N block); not with gptq/gpfq/qronos
learned_round_iters = 200  # its training steps per part, a layer or a block (batches of 32 calibration images)
bn_corr = False  # re-estimate BatchNorm statistics on the quantized model's activations
bias_corr = False  # bias correction: each layer's mean output error, measured after every other pass
# evaluation, after PTQ: one pass over the validation images scores the float and the quantized
# model on the same batches. "onnxruntime" runs both exported (float as ONNX, quantized as QCDQ;
# faster on CPU), "brevitas" both in PyTorch (the quantized one as the fake-quantized Brevitas
# model); "auto" = onnxruntime for ImageNet on cpu, else brevitas
eval_backend = "auto"
agreement_images = 500  # with onnxruntime: images each export's top-1 is compared on with its PyTorch model's
# 3. export and checks
check_export = True  # check the exported graph and run it against the Brevitas model on a few images
check_finn = False  # also run FINN's frontend on it, where finn is installed (about 2 minutes)
check_images = 8  # validation images the checks execute, layer by layer (the FINN check takes at least 8)
finn_build = False  # then compile it with FINN's builder, fitted to the ZCU104 (finn_build.py's defaults; minutes)
netron = False  # after the run, serve the exported model in Netron on localhost (pip install netron)
verbose = False  # evaluate after every step; show tracebacks on errors
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

from finn_demo.data.datasets import digits_datasets, first_images, imagenet_datasets, make_loader, random_subset  # noqa: E402
from check_export import FINN_IMAGES, check_export as check_exported_file, format_metadata  # noqa: E402
from finn_demo.quant.accumulators import accumulator_bits, widest_hidden  # noqa: E402
from finn_demo.evaluate import evaluate  # noqa: E402
from finn_demo.fast_eval import evaluate_models  # noqa: E402
from finn_demo.export import export_finn_onnx, run_metadata  # noqa: E402
from finn_demo.data.models import imagenet_transform, load_digits_model, load_imagenet_model  # noqa: E402
import quant_utils as qu  # noqa: E402
from finn_demo.validate import validate_args  # noqa: E402


def make_args(argv=()):
    """The flags above with `--name=value` overrides from `argv` applied."""
    return SimpleNamespace(**apply_overrides(FLAGS, argv))


def load_model_and_data(args):
    """(float model, calibration loader, validation loader, data set name)."""
    if args.data_dir:
        train_set, val_set = imagenet_datasets(args.data_dir, imagenet_transform(args.weights))
        model = load_imagenet_model(args.weights)
        name = "ImageNet"
    else:
        train_set, val_set = digits_datasets()
        model = load_digits_model(train_set, args.cache_dir, args.digits_width, args.digits_epochs,
                                  args.digits_stages, args.digits_seed)
        name = "digits (scikit-learn load_digits, 32x32)"
    calib_set = random_subset(train_set, args.calib_size, args.seed)
    val_set = random_subset(val_set, args.val_size, args.seed)
    workers = args.workers if args.data_dir else 0  # digits are tensors already: nothing to decode
    calib_loader = make_loader(calib_set, args.batch_size, workers)
    val_loader = make_loader(val_set, args.batch_size, workers)
    return model.to(args.device), calib_loader, val_loader, name


def resolve_backend(args):
    """The eval_backend flag with "auto" resolved: onnxruntime for ImageNet on a CPU, where it is
    faster than eager PyTorch (several times faster than the Brevitas model); brevitas on a GPU,
    and for the digits, whose 497 small images PyTorch scores (about 1.5 s) before the exports
    would be done."""
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

    def __init__(self, args, val_loader):
        self.args, self.val_loader, self.seconds = args, val_loader, {}

    @contextmanager
    def __call__(self, name, model=None):
        start = time.perf_counter()
        yield
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        if self.args.verbose and model is not None:
            print(f"  after {name}: top-1 {evaluate(model, self.val_loader, name)[0]:.2f}%")


def main(args):
    validate_args(args)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    float_model, calib_loader, val_loader, data_name = load_model_and_data(args)
    stage = Stages(args, val_loader)
    stage.seconds["load"] = time.perf_counter() - start
    example = next(iter(calib_loader))[0][:1].to(args.device)

    # 1. Insert quantization nodes, then 2. keep or recover accuracy with post-training
    # quantization, in quant_utils.quantize_and_recover's order: act_eq on the float graph,
    # quantize + calibration, GPTQ / GPFQ / Qronos, bn_corr, bias_corr last.
    maps = qu.bit_width_maps(
        args.weight_bit_width, args.act_bit_width, args.depthwise_bit_width,
        args.first_conv_bit_width, args.last_linear_bit_width, args.input_bit_width)
    model = qu.quantize_and_recover(float_model, calib_loader, example, maps, stage=stage,
                                    **{name: getattr(args, name) for name in qu.PTQ_FLAGS})
    # Score the float model (unchanged by PTQ: it quantized a copy) and the quantized one on the
    # same batches, so each validation image is decoded once.
    float_eval, quant, data_seconds = evaluate_models(
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

    # 3. Export QONNX for FINN
    metadata = run_metadata(
        {name: getattr(args, name) for name in FLAGS if name != "cache_dir"},
        float_top1=f"{float_top1:.2f}", quant_top1=f"{quant_top1:.2f}",
        top1_agreement_with_float=f"{fidelity.agreement:.2f}", logit_sqnr_db=f"{fidelity.sqnr_db:.2f}",
        max_hidden_accumulator_bits=widest_bits,
        float_top1_measured_by=float_eval.backend, quant_top1_measured_by=quant.backend,
        dataset=dataset)
    with stage("export"):
        export_finn_onnx(model, example, args.output, metadata)
    print(f"exported {args.output}")
    report = None
    if args.check_export:
        with stage("export checks"):
            count = max(args.check_images, FINN_IMAGES) if args.check_finn else args.check_images
            images = first_images(val_loader, count)  # across batches: count may exceed batch_size
            report = check_exported_file(args.output, images, brevitas_model=model,
                                         finn=args.check_finn)
        print(format_metadata(report.metadata))
        print(report)
    build = None
    if args.finn_build:
        with stage("finn_build"):
            build = run_finn_build(args.output)
    if args.netron:
        serve_in_netron(args.output)
    return SimpleNamespace(report=report, build=build,
        float_top1=float_top1, quant_top1=quant_top1, float_images_per_s=float_eval.images_per_s,
        quant_images_per_s=quant.images_per_s, float_agreement=float_eval.agreement,
        float_eval=float_eval, quant=quant, accumulators=accumulators, seconds=stage.seconds,
        model=model, output=args.output,
        calib_loader=calib_loader, val_loader=val_loader, args=args)


def run_finn_build(path):
    """finn_build.py on the export, into a finn_build/ folder beside it; its result."""
    import finn_build
    out_dir = os.path.join(os.path.dirname(os.path.abspath(path)), "finn_build")
    print(f"FINN build of {path} into {out_dir}/")
    args = finn_build.make_args([f"--model={path}", f"--out_dir={out_dir}"])
    result = finn_build.main(args)
    for failure in result.failures:
        print(f"FAILED {failure}")
    if result.design is not None and not result.fits:  # a design that misses the board, checks or not
        print(finn_build.over_line(result, args.board))
    return result


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


def cli(argv):
    """Run the demo from command-line arguments and return its exit status: 0, 1 (a check
    failed), 2 (bad input), 3 (--finn_build: no design fits the board), 130 (Ctrl-C).

    Bad input ends the run with a one-line message (a traceback only with --verbose=True),
    the output file left as it was; Ctrl-C ends it cleanly, saying whether the export was written.
    """
    args = before = None
    try:
        args = make_args(argv)
        before = file_state(args.output)
        result = main(args)
    except ConfigError as error:
        if args is not None and args.verbose:
            raise
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        written = args is not None and file_state(args.output) != before
        print("interrupted: the run stopped cleanly; " + (
            f"the export {args.output} was written; the steps after it did not finish" if written
            else "no output file was written or changed"), file=sys.stderr)
        return 130
    failed_checks = result.report is not None and not result.report.ok
    build = result.build
    if failed_checks or (build is not None and build.failures):
        return 1
    return 3 if build is not None and build.design is not None and not build.fits else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
