"""Quantize MobileNetV2 with Brevitas and export it as QONNX for FINN.

Edit the flags below, or override any of them on the command line:
    python finn_mobilenetv2.py --weight_bit_width=4 --bias_corr=True
The run reads top to bottom: load model and data, (1) insert quantization nodes,
(2) recover accuracy with post-training quantization, (3) export QONNX for FINN.
The PTQ passes run in Brevitas' order, the order of the table quant_utils.PTQ_PASSES: act_eq on
the float graph, calibration, gptq / gpfq / qronos / learned_round, bn_corr, range_refit,
learned_act_range, then bias_corr last. Quantization-aware training (--qat_epochs) then trains
the PTQ result, where PTQ alone loses too much (3- and 4-bit designs).
"""
import os
import sys
import time
from types import SimpleNamespace

import torch

from finn_demo.common.configurator import ConfigError, apply_overrides, flags_of
from finn_demo.common.quiet import quiet_third_party

quiet_third_party()  # before Brevitas loads: it and torch print notices that are not the demo's

# ---------------------------------------------------------------------------------------- flags
# data and model
data_dir = ""  # ImageNet folder with val/<wnid>/ (and train/<wnid>/ if you have it); "" runs the embedded digits demo
calib_dir = ""  # ImageNet calibration images: <wnid>/*.JPEG or a flat folder; "" = data_dir's train/, else part of val/ (left out of validation)
weights = ""  # ImageNet: torchvision weights name (IMAGENET1K_V2, IMAGENET1K_V1) or a .pth file; "" = IMAGENET1K_V2
calib_size = 1000  # calibration images: a seeded random subset of the training split (ImageNet: of calib_dir, train/ or val/)
val_size = 50000  # validation images: a seeded random subset of val/ (all of it when it is smaller)
batch_size = 32  # images per batch, for calibration, PTQ and evaluation
workers = 2  # DataLoader processes decoding ImageNet images (0 = in the main process)
device = "cuda" if torch.cuda.is_available() else "cpu"  # where the model runs
seed = 0  # seeds the calibration and validation subsets, and the PTQ passes that draw at random
output = "quant_mobilenet_v2.onnx"  # the exported QONNX file
cache_dir = os.path.join(os.path.expanduser("~"), ".cache", "finn_mobilenetv2")  # digits model cache
digits_width = 1.0  # width multiplier of the digits model (smaller trains faster)
digits_epochs = 15  # training epochs of the digits model, on its first run
digits_stages = 7  # MobileNetV2 stages the digits model keeps (of 7; 3 still holds every structure)
digits_seed = 0  # seeds the digits model's training (each seed trains and caches its own model)
# 1. quantization nodes: bit widths (a weight width of None = weight_bit_width's)
weight_bit_width = 8  # weights of every Conv and Linear
act_bit_width = 8  # every activation (ReLU outputs, Add inputs, the network input)
input_bit_width = None  # the network input's quantizer (None = act_bit_width; FINN designs keep 8)
add_bit_width = None  # the residual stream (block and Add outputs), also the classifier's input and logits (None = act_bit_width)
depthwise_bit_width = None  # weights of depthwise convs (groups != 1)
first_conv_bit_width = None  # weights of the first conv, features.0.0
last_linear_bit_width = None  # weights of the final Linear classifier
relu6_to_relu = False  # False keeps ReLU6's clip at 6 (quantized on [0, 6], as the seed); True makes
#   it a ReLU with a calibrated range, Brevitas' default (the float network clips, this one does not)
relu6_range = "fixed"  # ReLU6's quantized range: "fixed" [0, 6] (the seed's), or "calibrated" like the ReLUs' but capped at 6
# 2. post-training quantization (PTQ), run in this order: act_eq, calibration, gptq / gpfq / qronos /
# learned_round, bn_corr, range_refit, learned_act_range, bias_corr (last: it corrects the mean
# error every earlier pass leaves)
act_eq = False  # activation equalization (SmoothQuant), on the float graph before quantizing
act_eq_alpha = 0.5  # its migration strength, in [0, 1]
act_eq_add_mul_node = False  # let it insert Mul nodes where scales cannot be folded
gptq = False  # GPTQ weight rounding (not with gpfq)
gpfq = False  # GPFQ weight rounding (not with gptq)
qronos = False  # Qronos weight rounding (not with gptq or gpfq)
qronos_alpha = 1e-3  # Qronos damping, times the largest eigenvalue of each layer's input covariance
gpxq_impl = "fast"  # GPTQ, GPFQ and Qronos: "fast" (fast_gpxq.py: same integer weights, far faster: RESULTS.md) or "brevitas"
accumulator_bit_width = None  # N: with gptq or gpfq, AXE (Brevitas' accumulator-aware variant) keeps
#   every dot product in a signed N-bit accumulator, the width FINN then gives it (None = off)
learned_round = "none"  # AdaRound, Brevitas' learned rounding of each weight, down or up, trained "layerwise" (per Conv/Linear) or "blockwise" (per features.N block); not with gptq/gpfq/qronos
learned_round_iters = 200  # its training steps per part, a layer or a block (batches of 32 calibration images)
bn_corr = False  # re-estimate BatchNorm statistics on the quantized model's activations
range_refit = False  # calibrate the activation ranges again after the passes above, with quantization upstream on
learned_act_range = False  # train each block's activation ranges to reproduce the float block's output (as BRECQ)
learned_act_range_iters = 200  # its training steps per block (batches of 32 calibration images)
learned_act_range_bn = False  # with learned_act_range, train the block's BatchNorm weights and biases too
qdrop = 0.0  # QDrop: while a block trains (learned_act_range, blockwise learned_round), each activation element stays float with this probability (0 = off; 0.5 is QDrop's)
bias_corr = False  # bias correction: each layer's mean output error, measured after every other pass
# quantization-aware training (QAT), after PTQ: the quantized model trained end to end to follow the
# float model's logits (distillation: labels unused), BatchNorm statistics frozen (docs/qat.md)
qat_epochs = 0  # passes over the training images (0 = off): digits' training split, ImageNet's train/
qat_lr = 1e-3  # Adam's learning rate (cosine to 0) for weights, biases and BatchNorm; ranges step relative to their size
qat_images = 0  # train on a seeded subset of this many training images (0 = all of them)
qat_checkpoint = ""  # written after every epoch; "" = the output's name with .qat.pt
resume = False  # continue QAT from qat_checkpoint (a finished run exports without training again)
# evaluation, after PTQ: one pass over the validation images scores the float and the quantized model
eval_backend = "auto"  # "onnxruntime" runs both exported (float as ONNX, quantized as QCDQ; faster on
#   CPU), "brevitas" both in PyTorch (the quantized one as the fake-quantized Brevitas model);
#   "auto" = onnxruntime for ImageNet on cpu, else brevitas
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

from finn_demo.checks import check_run_export  # noqa: E402
from finn_demo.export import export_finn_onnx  # noqa: E402
from finn_demo.run import (  # noqa: E402
    RunResult, Stages, export_metadata, file_state, load_model_and_data, qat_checkpoint_path, run_qat,
    score_and_print, serve_in_netron)
from finn_demo.validate import validate_args  # noqa: E402
import quant_utils as qu  # noqa: E402


def make_args(argv=()):
    """The flags above with `--name=value` overrides from `argv` applied."""
    return SimpleNamespace(**apply_overrides(FLAGS, argv))


def main(args):
    validate_args(args)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    float_model, calib_loader, val_loader, data_name = load_model_and_data(args)
    stage = Stages(args, val_loader, load_seconds=time.perf_counter() - start)
    example = next(iter(calib_loader))[0][:1].to(args.device)

    # 1. Insert quantization nodes, then 2. keep or recover accuracy with post-training
    # quantization: the passes the flags turn on, in the order of quant_utils.PTQ_PASSES.
    maps = qu.bit_width_maps(
        args.weight_bit_width, args.act_bit_width, args.depthwise_bit_width,
        args.first_conv_bit_width, args.last_linear_bit_width, args.input_bit_width,
        add_bit_width=args.add_bit_width, relu6_range=args.relu6_range)
    model = qu.quantize_and_recover(float_model, calib_loader, example, maps, args.relu6_to_relu,
                                    stage=stage, **{name: getattr(args, name) for name in qu.PTQ_FLAGS})
    flags = {name: getattr(args, name) for name in FLAGS if name != "cache_dir"}
    qat_history = None
    if args.qat_epochs:  # ... and where PTQ runs out, quantization-aware training
        with stage("qat", model):
            qat_history = run_qat(float_model, model, val_loader, args, flags)
    float_eval, quant, dataset, accumulators, widest_bits = score_and_print(
        float_model, model, val_loader, example, args, data_name, stage)

    # 3. Export QONNX for FINN
    with stage("export"):
        export_finn_onnx(model, example, args.output,
                         export_metadata(flags, float_eval, quant, dataset, widest_bits))
    print(f"exported {args.output}")
    report = check_run_export(args.output, model, val_loader, args.check_images, args.check_finn,
                              stage) if args.check_export else None
    build = run_finn_build(args.output, stage) if args.finn_build else None
    if args.netron:
        serve_in_netron(args.output)
    return RunResult(args=args, model=model, output=args.output, calib_loader=calib_loader,
                     val_loader=val_loader, float_eval=float_eval, quant_eval=quant,
                     accumulators=accumulators, seconds=stage.seconds, qat_history=qat_history,
                     report=report, build=build)


def run_finn_build(path, stage):
    """finn_build.py's entry point on the export, into its default out_dir (finn_output/) beside it."""
    import finn_build
    from finn_demo.hw.build import print_build_failures
    out_dir = os.path.join(os.path.dirname(os.path.abspath(path)), finn_build.FLAGS["out_dir"])
    print(f"FINN build of {path} into {out_dir}/")
    args = finn_build.make_args([f"--model={path}", f"--out_dir={out_dir}"])
    with stage("finn_build"):
        result = finn_build.main(args)
        finn_rows = finn_build.read_finn_rows(finn_build.FINN_ROWS)  # what would fit, if it misses
        print_build_failures(result, args.board, finn_rows)
    return result


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
        if args is not None and args.qat_epochs and os.path.isfile(qat_checkpoint_path(args)):
            print(f"QAT's last finished epoch is in {qat_checkpoint_path(args)}: the same command "
                  "with --resume=True continues from it", file=sys.stderr)
        return 130
    failed_checks = result.report is not None and not result.report.ok
    build = result.build
    if failed_checks or (build is not None and build.failures):
        return 1
    return 3 if build is not None and build.design is not None and not build.fits else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
