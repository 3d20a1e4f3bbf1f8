"""benchmark.py's flags checked and resolved before any row runs (every setting name, every row's
demo flags, the boards and image counts): a bad flag ends the run now, not an hour in."""
import tempfile
from pathlib import Path

import finn_mobilenetv2 as demo
from bench.finn_estimates import FINN_SETTINGS
from bench.gpxq_speed import ALGORITHMS
from bench.grid import BIT_SETTINGS, PTQ_SETTINGS, choose
from bench.seeds import parse_seeds
from finn_demo.common.configurator import ConfigError
from finn_demo.finn_install import finn_available
from finn_demo.validate import validate_args

# Demo flags every row starts from (pass-through flags override them). FINN's frontend takes
# minutes per model: the rows run the demo's structural and QONNX-equivalence checks only.
DEMO_DEFAULTS = ["--check_finn=False"]


def resolve(args, passed):
    """`args` (benchmark.py's flags, parsed) with every list flag resolved and checked, and the
    demo flags `passed` through checked on every row they will run in."""
    for arg in passed:
        if arg[2:].split("=", 1)[0] == "output":
            raise ConfigError("--output: the benchmark exports each row to a temporary file")
    demo_args = demo.make_args(passed)  # refuse unknown flags and wrong types now, not an hour in
    for name, settings in (("bits", BIT_SETTINGS), ("ptq", PTQ_SETTINGS), ("seeds_bits", BIT_SETTINGS),
                           ("seeds_ptq", PTQ_SETTINGS), ("qat_bits", BIT_SETTINGS), ("qat_ptq", PTQ_SETTINGS)):
        args[name] = choose(args[name], settings, name)
    args["seeds"] = parse_seeds(args["seeds"], demo_args.digits_seed)
    _validate_rows(passed, args, "bits", "ptq")
    if args["seeds"] and not demo_args.data_dir:  # the seeds section runs on the digits only
        _validate_rows(passed, args, "seeds_bits", "seeds_ptq")
    if not demo_args.data_dir:  # so does the QAT section
        _validate_rows(passed, args, "qat_bits", "qat_ptq")
    for name in ("speed_bits", "gpxq_bits", "checks_bits"):
        args[name] = choose(args[name], BIT_SETTINGS, name)
    args["qat_time_devices"] = _devices(args["qat_time_devices"])
    if args["qat_time_epochs"] < 2:
        raise ConfigError(f"--qat_time_epochs={args['qat_time_epochs']}: must be 2 or more (the first "
                          "warms up and is not counted)")
    args["finn_bits"] = choose(args["finn_bits"], FINN_SETTINGS, "finn_bits")
    args["finn_boards"] = _boards(args["finn_boards"])
    args["finn_verilator"] = _verilator_layers(args["finn_verilator"], bool(args["finn_bits"]))
    args["gpxq_algorithms"] = choose(args["gpxq_algorithms"], dict.fromkeys(ALGORITHMS), "gpxq_algorithms")
    for name in ("imagenet_calib_sizes", "imagenet_val_sizes"):
        args[name] = _two_sizes(args[name], name, args["imagenet_calib_sizes"] != "")
    for name, least in (("grid_jobs", 1), ("grid_threads", 0), ("speed_repeats", 1), ("demo_runs", 0),
                        ("gpxq_repeats", 1), ("gpxq_calib_size", 1)):
        if args[name] < least:
            raise ConfigError(f"--{name}={args[name]}: must be {least} or more")
    return args


def _validate_rows(passed, args, bits_flag, ptq_flag):
    """Run the demo's own flag checks on the flags of every row of the flags `bits_flag` x
    `ptq_flag` (the grid's, the seeds and QAT sections') now, not an hour in."""
    output = f"--output={Path(tempfile.gettempdir()) / 'model.onnx'}"  # as each row's temporary file
    for bits_name in args[bits_flag]:
        for ptq_name in args[ptq_flag]:
            row = [*BIT_SETTINGS[bits_name], *PTQ_SETTINGS[ptq_name]]
            flags = [*DEMO_DEFAULTS, *passed, f"--calib_size={args['calib_size']}", *row, output]
            try:
                validate_args(demo.make_args(flags))
            except ConfigError as error:
                raise ConfigError(f"{error} (in the row --{bits_flag}={bits_name} "
                                  f"--{ptq_flag}={ptq_name})") from None


def _devices(text):
    """The --qat_time_devices names: cpu, or cuda where a GPU is."""
    import torch
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name != "cpu" and not name.startswith("cuda"):
            raise ConfigError(f"--qat_time_devices={text}: {name} is no device; use cpu or cuda")
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--qat_time_devices={text}: no CUDA GPU is available here; use cpu")
    return names


def _boards(text):
    """The --finn_boards names, each one FINN knows (checked where FINN is installed)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if names and finn_available():
        from finn_demo.hw.boards import BOARDS
        unknown = [name for name in names if name not in BOARDS]
        if unknown:
            raise ConfigError(f"--finn_boards={text}: {', '.join(unknown)} not a board FINN knows; "
                              f"use {', '.join(BOARDS)}")
    return names


def _verilator_layers(text, wanted):
    """--finn_verilator: "" or a finn_build.py --verilator_layers choice, with Verilator there
    (checked where FINN is installed and the FINN section runs)."""
    if not text or not wanted or not finn_available():
        return text
    from finn_demo.hw import verilator
    if text not in verilator.LAYER_CHOICES:
        raise ConfigError(f"--finn_verilator={text}: use {' or '.join(verilator.LAYER_CHOICES)}, "
                          "or --finn_verilator= for none")
    if verilator.missing():
        raise ConfigError(f"--finn_verilator={text}: {verilator.missing()}; or --finn_verilator= for none")
    return text


def _two_sizes(text, flag, wanted):
    """Two increasing image counts from "16,64" (none when the section is off)."""
    if not wanted:
        return []
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        sizes = []
    if len(sizes) != 2 or not 0 < sizes[0] < sizes[1]:
        raise ConfigError(f"--{flag}={text}: give two increasing image counts, like 16,64")
    return sizes
