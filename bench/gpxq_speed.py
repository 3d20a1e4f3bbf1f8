"""GPFQ and Qronos side by side: Brevitas' implementation against fast_gpxq.py, in one run.

    python -m bench.gpxq_speed                          # digits model, PW4 and PW3, GPFQ and Qronos
    python -m bench.gpxq_speed --bits=PW4 --algorithms=gpfq --calib_size=64   # part of it

For each bit-width setting (benchmark.py's) the demo's model is quantized and calibrated once;
each algorithm then runs on two copies of it, Brevitas' implementation first, with the same
threads. Every integer weight (weight / scale, by Brevitas' quantizer) of the two results is
compared. Demo flags pass through (--cache_dir=..., --digits_width=...). Writes gpxq_speed.md
and gpxq_speed.csv into out_dir and prints the table.
"""
import copy
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as benchmark.py, before torch loads
import brevitas.nn as qnn  # noqa: E402
import torch  # noqa: E402

from finn_demo.configurator import ConfigError, apply_overrides, flags_of  # noqa: E402

# ---------------------------------------------------------------------------------------- flags
out_dir = "results"  # where gpxq_speed.md and gpxq_speed.csv go
bits = "PW4,PW3"  # bit-width settings of benchmark.py, comma-separated
algorithms = "gpfq,qronos"  # the GPxQ passes compared, comma-separated
calib_size = 256  # calibration images, as in the benchmark's grid
threads = 1  # PyTorch threads of both implementations
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

import benchmark  # noqa: E402
import finn_mobilenetv2 as demo  # noqa: E402
import quant_utils as qu  # noqa: E402
from finn_demo.files import atomic_path  # noqa: E402

ALGORITHMS = ("gpfq", "qronos")


def make_args(argv=()):
    """(own flags, demo flags passed through) from `--name=value` arguments."""
    own = [arg for arg in argv if arg[2:].split("=", 1)[0] in FLAGS]
    passed = [arg for arg in argv if arg not in own]
    demo.make_args(passed)  # refuse unknown flags now
    args = apply_overrides(FLAGS, own)
    args["bits"] = benchmark._choose(args["bits"], benchmark.BIT_SETTINGS, "bits")
    args["algorithms"] = benchmark._choose(args["algorithms"], dict.fromkeys(ALGORITHMS), "algorithms")
    return args, passed


def calibrated_model(flags):
    """The demo's model after its step 1 (quantized, calibrated), and its calibration loader."""
    args = demo.make_args(flags)
    torch.manual_seed(args.seed)
    float_model, calib_loader, _, _ = demo.load_model_and_data(args)
    example = next(iter(calib_loader))[0][:1].to(args.device)
    model = qu.preprocess_for_finn_quantize(float_model, example)
    maps = qu.bit_width_maps(args.weight_bit_width, args.act_bit_width, args.depthwise_bit_width,
                             args.first_conv_bit_width, args.last_linear_bit_width)
    model = qu.quantize_finn(model, **maps).to(args.device)
    qu.calibrate(calib_loader, model)
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
    if algorithm == "gpfq":
        qu.apply_gpfq(loader, model, impl)
    else:
        qu.apply_qronos(loader, model, args.qronos_alpha, impl)
    return time.perf_counter() - start, integer_weights(model)


def compare_row(bits_name, algorithm, model, loader, args):
    load = os.getloadavg()[0]
    brevitas_s, brevitas = timed_run(algorithm, "brevitas", model, loader, args)
    fast_s, fast = timed_run(algorithm, "fast", model, loader, args)
    differing = {name: int((fast[name] != brevitas[name]).sum()) for name in brevitas}
    total = sum(weights.numel() for weights in brevitas.values())
    return {"bits": bits_name, "algorithm": algorithm, "brevitas_s": f"{brevitas_s:.1f}",
            "fast_s": f"{fast_s:.1f}", "speedup": f"{brevitas_s / fast_s:.1f}",
            "differing_int_weights": str(sum(differing.values())), "int_weights": str(total),
            "layers": str(len(brevitas)),
            "layers_differing": " ".join(f"{name}:{n}" for name, n in differing.items() if n) or "-",
            "load_1min": f"{load:.1f} -> {os.getloadavg()[0]:.1f}"}


def report(rows, args, passed, command):
    header = ["bits", "algorithm", "Brevitas s", "fast s", "speed-up", "differing integer weights",
              "layers with differences", "load average (before -> after)"]
    cells = [[row["bits"], row["algorithm"], row["brevitas_s"], row["fast_s"], f"{row['speedup']}x",
              f"{row['differing_int_weights']} of {row['int_weights']} ({row['layers']} layers)",
              row["layers_differing"], row["load_1min"]] for row in rows]
    return "\n".join([
        "# GPFQ and Qronos: Brevitas' implementation vs fast_gpxq.py", "",
        f"Made by `{command}` ({platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}, brevitas {benchmark._version('brevitas')}), {torch.get_num_threads()} "
        f"PyTorch thread(s) for both implementations. calib_size={args['calib_size']}; demo flags "
        f"{' '.join(passed) or 'none'}. Seconds of `apply_gpfq` / `apply_qronos` (main()'s `gpfq` "
        "/ `qronos` stage) on copies of the same calibrated model whose weight quantizers are "
        "already initialized (in main() the stage also holds that first forward pass, alike for "
        "both), Brevitas first; one timing each. Integer weights: weight / scale by Brevitas' "
        "own quantizer, of every Conv and Linear.", "",
        benchmark.markdown_table(header, cells), ""])


def main(args, passed, command="python -m bench.gpxq_speed"):
    torch.set_num_threads(args["threads"])
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for bits_name in args["bits"]:
        flags = [*passed, *benchmark.BIT_SETTINGS[bits_name], f"--calib_size={args['calib_size']}"]
        model, loader, demo_args = calibrated_model(flags)
        for algorithm in args["algorithms"]:
            rows.append(compare_row(bits_name, algorithm, model, loader, demo_args))
            print(rows[-1], flush=True)
    text = report(rows, args, passed, command)
    with atomic_path(out / "gpxq_speed.md") as tmp:
        tmp.write_text(text)
    benchmark.write_rows(out / "gpxq_speed.csv", rows)
    print(text)
    return rows


if __name__ == "__main__":
    try:
        main(*make_args(sys.argv[1:]), command=" ".join(["python -m bench.gpxq_speed", *sys.argv[1:]]))
    except ConfigError as error:
        sys.exit(f"error: {error}")
