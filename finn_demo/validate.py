"""Check the demo's flags before any heavy work, so a typo costs seconds, not an hour.

Each problem raises ConfigError with one line naming the flag and the fix. Checks that need the
data or the weights file (wnid folders, decodable checkpoint) happen where those are first read,
still before calibration starts.
"""
import importlib.util
from pathlib import Path

import torch

from finn_demo.common.configurator import ConfigError
from finn_demo.common.files import check_writable
from finn_demo.data.models import MOBILENET_V2_STAGES, resolve_weights
from finn_demo.finn_install import FINN_INSTALL_HINT, finn_installed
from finn_demo.quant.maps import RELU6_RANGES
from finn_demo.quant.ptq import PTQ_FLAGS, ptq_options_problem
from finn_demo.run import qat_checkpoint_path

MAX_BIT_WIDTH = 16  # Brevitas' integer quantizers go higher, but FINN's thresholds grow as 2**bits


def _check_bit_width(name, value, optional=False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= MAX_BIT_WIDTH:
        raise ConfigError(f"--{name}={value!r}: a bit width must be an integer from 2 to "
                          f"{MAX_BIT_WIDTH}{' (or None)' if optional else ''}")


def _check_positive(name, value):
    if value <= 0:
        raise ConfigError(f"--{name}={value!r}: must be positive")


def _check_device(device):
    try:
        parsed = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device={device!r}: not a device; use cpu or cuda") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device={device}: no CUDA GPU is available here; use --device=cpu")
    if parsed.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device={device!r}: the demo runs on cpu or cuda")


def _check_accumulator(args):
    bits = args.accumulator_bit_width
    if bits is None:
        return
    if isinstance(bits, bool) or not isinstance(bits, int) or not 3 <= bits <= 32:
        raise ConfigError(f"--accumulator_bit_width={bits!r}: an accumulator width must be an "
                          "integer from 3 to 32 (or None)")


def _check_relu6_range(relu6_range, relu6_to_relu):
    if relu6_range not in RELU6_RANGES:
        raise ConfigError(f"--relu6_range={relu6_range!r}: choose {' or '.join(RELU6_RANGES)}")
    if relu6_range != "fixed" and relu6_to_relu:
        raise ConfigError(f"--relu6_range={relu6_range} with --relu6_to_relu=True: no ReLU6 is left "
                          "to clip; drop one of them")


def _check_calib_dir(calib_dir, data_dir):
    if not calib_dir:
        return
    if not data_dir:
        raise ConfigError(f"--calib_dir={calib_dir}: a calibration folder is for ImageNet mode; add "
                          "--data_dir=PATH/TO/IMAGENET, or drop --calib_dir (the digits demo "
                          "calibrates on its own training digits)")
    calib, val = Path(calib_dir).resolve(), (Path(data_dir) / "val").resolve()
    if calib.is_relative_to(val) or val.is_relative_to(calib):
        raise ConfigError(f"--calib_dir={calib_dir} overlaps the validation images ({val}); point it "
                          "at other images, or drop it to calibrate on a part of val/ that "
                          "validation leaves out")


def _check_qat(args):
    if args.qat_epochs < 0 or args.qat_images < 0:
        name = "qat_epochs" if args.qat_epochs < 0 else "qat_images"
        raise ConfigError(f"--{name}={getattr(args, name)}: must be 0 (qat_epochs: off; "
                          "qat_images: all) or more")
    _check_positive("qat_lr", args.qat_lr)
    checkpoint = qat_checkpoint_path(args)
    if args.resume and not args.qat_epochs:
        raise ConfigError("--resume=True continues quantization-aware training; add "
                          "--qat_epochs=N (the run's own), or drop --resume")
    if args.resume and not Path(checkpoint).is_file():
        raise ConfigError(f"--resume=True: no QAT checkpoint {checkpoint}; run without --resume, "
                          "or pass --qat_checkpoint=FILE of the run to continue")
    if args.qat_epochs:
        check_writable(checkpoint, "--qat_checkpoint")


def validate_args(args):
    """Raise ConfigError on the first flag that cannot work."""
    _check_accumulator(args)
    problem = ptq_options_problem(**{name: getattr(args, name) for name in PTQ_FLAGS})
    if problem:
        raise ConfigError(problem)
    _check_bit_width("weight_bit_width", args.weight_bit_width)
    _check_bit_width("act_bit_width", args.act_bit_width)
    for name in ("depthwise_bit_width", "first_conv_bit_width", "last_linear_bit_width",
                 "input_bit_width", "add_bit_width"):
        _check_bit_width(name, getattr(args, name), optional=True)
    _check_relu6_range(args.relu6_range, args.relu6_to_relu)
    _check_qat(args)
    if not 0.0 <= args.act_eq_alpha <= 1.0:
        raise ConfigError(f"--act_eq_alpha={args.act_eq_alpha}: must lie in [0, 1]")
    for name in ("calib_size", "val_size", "batch_size", "digits_epochs", "digits_width",
                 "check_images", "qronos_alpha", "agreement_images", "learned_round_iters",
                 "learned_act_range_iters"):
        _check_positive(name, getattr(args, name))
    if not 1 <= args.digits_stages <= len(MOBILENET_V2_STAGES):
        raise ConfigError(f"--digits_stages={args.digits_stages}: MobileNetV2 has stages 1 to "
                          f"{len(MOBILENET_V2_STAGES)}; 3 is the shortest with every structure")
    if args.eval_backend not in ("auto", "brevitas", "onnxruntime"):
        raise ConfigError(f"--eval_backend={args.eval_backend!r}: choose auto, brevitas or onnxruntime")
    if args.workers < 0:
        raise ConfigError(f"--workers={args.workers}: must be 0 or more")
    _check_device(args.device)
    _check_calib_dir(args.calib_dir, args.data_dir)
    if args.data_dir:
        resolve_weights(args.weights)
    elif args.weights:
        raise ConfigError(f"--weights={args.weights}: ImageNet weights need --data_dir=PATH/TO/IMAGENET; "
                          "without it the digits demo trains its own model (drop --weights)")
    check_writable(args.output, "--output")
    if args.finn_build and not finn_installed():
        raise ConfigError(f"--finn_build=True needs FINN: {FINN_INSTALL_HINT} (or make .venv/.finn)")
    if args.netron and importlib.util.find_spec("netron") is None:
        raise ConfigError("--netron=True needs the netron package: pip install netron")
