"""The benchmark's GPTQ, GPFQ and Qronos speed section: Brevitas' implementation against fast_gpxq.py.

    python benchmark.py --gpxq_bits=PW4 --gpxq_algorithms=gpfq ...   # as a section of the benchmark
    python -m bench.gpxq_speed --bits=PW4 --algorithms=gpfq          # this section alone

Each row is one bit-width setting (the grid's) and one algorithm: the demo's model is quantized
and calibrated once, then the two implementations run on copies of it, alternating (Brevitas,
fast, Brevitas, fast, ...) `repeats` times each, at torch's default thread count (what the demo
uses): the row holds each one's median seconds and every timing. Every integer weight (weight /
scale, by Brevitas' quantizer) of every run is compared with the first Brevitas run's. Demo flags
pass through (--cache_dir=..., --digits_width=...). Alone, it writes gpxq_speed.csv into out_dir
(resumable like the benchmark's CSVs) and prints the table.
"""
import copy
import os
import sys
import time
from functools import partial
from pathlib import Path
from statistics import median

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmark.py, before torch loads
import brevitas.nn as qnn  # noqa: E402
import torch  # noqa: E402

from finn_demo.common.configurator import HELP_ARGS, ConfigError, apply_overrides, flags_of  # noqa: E402

# ---------------------------------------------------------------------------------------- flags
out_dir = "results"  # where gpxq_speed.csv goes
bits = "PW4,PW3"  # bit-width settings of the grid (bench/grid.py), comma-separated
algorithms = "gptq,gpfq,qronos"  # the GPxQ passes compared, comma-separated
calib_size = 128  # calibration images of every run
repeats = 3  # timed runs of each implementation, alternating; the table shows the medians
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

import finn_mobilenetv2 as demo  # noqa: E402
import quant_utils as qu  # noqa: E402
from bench.context import Context  # noqa: E402
from bench.grid import BIT_SETTINGS, choose  # noqa: E402
from bench.report import code_line, markdown_table  # noqa: E402
from bench.rows import demo_model_hash, resumable  # noqa: E402
from bench.section_code import code_hash  # noqa: E402

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)
ALGORITHMS = ("gptq", "gpfq", "qronos")
CSV_NAME = "gpxq_speed.csv"


def make_args(argv=()):
    """(own flags, demo flags passed through) from `--name=value` arguments."""
    own = [arg for arg in argv if arg in HELP_ARGS or arg[2:].split("=", 1)[0] in FLAGS]
    passed = [arg for arg in argv if arg not in own]
    demo.make_args(passed)  # refuse unknown flags now
    args = apply_overrides(FLAGS, own)
    args["bits"] = choose(args["bits"], BIT_SETTINGS, "bits")
    args["algorithms"] = choose(args["algorithms"], dict.fromkeys(ALGORITHMS), "algorithms")
    if args["repeats"] < 1:
        raise ConfigError(f"--repeats={args['repeats']}: must be 1 or more")
    return args, passed


def gpxq_section(context):
    """(rows, failures) of the comparison of --gpxq_bits x --gpxq_algorithms in the section's CSV."""
    args = context.args
    keys = [{"bits": bits_name, "algorithm": algorithm, **context.common,
             "calib_size": str(args["gpxq_calib_size"]), "repeats": str(args["gpxq_repeats"])}
            for bits_name in args["gpxq_bits"] for algorithm in args["gpxq_algorithms"]]
    return resumable(context.path, keys, partial(compare_row, passed=context.passed), "GPxQ speed",
                     code_hash(CODE))


def calibrated_model(flags):
    """The demo's model after its step 1 (quantized, calibrated), and its calibration loader."""
    args = demo.make_args(flags)
    torch.manual_seed(args.seed)
    float_model, calib_loader, _, _ = demo.load_model_and_data(args)
    example = next(iter(calib_loader))[0][:1].to(args.device)
    maps = qu.bit_width_maps(args.weight_bit_width, args.act_bit_width, args.depthwise_bit_width,
                             args.first_conv_bit_width, args.last_linear_bit_width)
    model = qu.quantize_and_recover(float_model, calib_loader, example, maps)  # no PTQ flags
    with torch.no_grad():  # initializes the weight quantizers: a deepcopy before this recurses
        model(example)
    return model, calib_loader, args


@torch.no_grad()
def integer_weights(model):
    return {name: module.quant_weight().int() for name, module in model.named_modules()
            if isinstance(module, (qnn.QuantConv2d, qnn.QuantLinear))}


def timed_run(algorithm, impl, model, loader, args):
    """(seconds, integer weights) of one GPxQ pass on a copy of `model`, as main() runs it."""
    model = copy.deepcopy(model)
    start = time.perf_counter()
    if algorithm == "gptq":
        qu.apply_gptq(loader, model, impl)
    elif algorithm == "gpfq":
        qu.apply_gpfq(loader, model, impl)
    else:
        qu.apply_qronos(loader, model, args.qronos_alpha, impl)
    return time.perf_counter() - start, integer_weights(model)


def compare_row(key, passed):
    """Both implementations on one setting, alternating: median seconds, every timing, and the
    largest number of integer weights any run has that differ from the first Brevitas run's."""
    flags = [*passed, *BIT_SETTINGS[key["bits"]], f"--calib_size={key['calib_size']}"]
    model, loader, args = calibrated_model(flags)
    load = os.getloadavg()[0]
    seconds = {"brevitas": [], "fast": []}
    reference, differing = None, {}
    for _ in range(int(key["repeats"])):
        for impl in seconds:  # alternating, so that load on the machine hits both alike
            run_seconds, weights = timed_run(key["algorithm"], impl, model, loader, args)
            seconds[impl].append(run_seconds)
            reference = reference or weights
            for name, values in weights.items():
                differing[name] = max(differing.get(name, 0), int((values != reference[name]).sum()))
    brevitas_s, fast_s = median(seconds["brevitas"]), median(seconds["fast"])
    return {"threads": str(torch.get_num_threads()), "brevitas_s": f"{brevitas_s:.1f}",
            "fast_s": f"{fast_s:.1f}", "speedup": f"{brevitas_s / fast_s:.1f}",
            "brevitas_runs_s": " ".join(f"{value:.1f}" for value in seconds["brevitas"]),
            "fast_runs_s": " ".join(f"{value:.1f}" for value in seconds["fast"]),
            "differing_int_weights": str(sum(differing.values())),
            "int_weights": str(sum(weights.numel() for weights in reference.values())),
            "layers": str(len(reference)),
            "layers_differing": " ".join(f"{name}:{n}" for name, n in differing.items() if n) or "-",
            "load_1min": f"{load:.1f} -> {os.getloadavg()[0]:.1f}"}


def gpxq_table(rows):
    header = ["bits", "algorithm", "threads", "Brevitas s (median)", "fast s (median)", "speed-up",
              "Brevitas runs (s)", "fast runs (s)", "differing integer weights",
              "layers with differences", "load average (before -> after)"]
    cells = [[row["bits"], row["algorithm"], row["threads"], row["brevitas_s"], row["fast_s"],
              f"{row['speedup']}x", row["brevitas_runs_s"], row["fast_runs_s"],
              f"{row['differing_int_weights']} of {row['int_weights']} ({row['layers']} layers)",
              row["layers_differing"], row["load_1min"]] for row in rows]
    return markdown_table(header, cells)


def gpxq_text(rows):
    first = rows[0]
    return [
        "## GPTQ, GPFQ and Qronos: Brevitas' implementation vs fast_gpxq.py", "",
        f"Each row: the demo's model quantized and calibrated on {first['calib_size']} calibration "
        f"images, then `apply_gptq` / `apply_gpfq` / `apply_qronos` (main()'s `gptq` / `gpfq` / `qronos` stage) run "
        f"{first['repeats']} times per implementation on copies of it, alternating (Brevitas, fast, "
        f"Brevitas, fast, ...), in one process at torch's default thread count, what the demo uses "
        f"({first['threads']} here); *s (median)* is the median of those runs, *speed-up* the ratio "
        "of the medians. The copies' weight quantizers are already initialized (in main() the "
        "stage also holds that first forward pass, alike for both). *differing integer weights*: "
        "weight / scale by Brevitas' own quantizer, of every Conv and Linear, the most that any "
        "run differs from the first Brevitas run.", "",
        gpxq_table(rows), "",
        *code_line(rows, CODE)]


def main(args, passed):
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    common = {"flags": " ".join(arg for arg in passed if not arg.startswith("--cache_dir=")),
              "model": demo_model_hash(passed)}
    section_args = {"gpxq_bits": args["bits"], "gpxq_algorithms": args["algorithms"],
                    "gpxq_calib_size": args["calib_size"], "gpxq_repeats": args["repeats"]}
    rows, failures = gpxq_section(Context(section_args, passed, common, out, out / CSV_NAME))
    print("\n".join(gpxq_text(rows) if rows else []))
    for key, message in failures:
        print(f"failed: {key}: {message}")
    return rows


if __name__ == "__main__":
    try:
        main(*make_args(sys.argv[1:]))
    except ConfigError as error:
        sys.exit(f"error: {error}")
