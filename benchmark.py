"""Benchmark the demo over a grid of bit widths x PTQ passes; write RESULTS.md, CSVs and plots.

    python benchmark.py                                 # digits, every section
    python benchmark.py --bits=W8A8,PW3 --ptq=none,gpfq  # part of the grid
    python benchmark.py --data_dir=/data/imagenet --val_size=10000   # demo flags pass through

The story of a run, one section each (bench/sections.py lists them, in this order): the
accuracy grid (grid.py: every row one run of the demo's own `main()` with the row's flags on
top of the pass-through flags, plus its QCDQ export in onnxruntime), the key grid rows (seeds_bits x seeds_ptq) again on the digits models of
other training seeds, as mean +- sd over the seeds with each bit-width setting's winner against
the spread (seeds.py; digits only), quantization-aware training beside the PTQ it starts from
on those models (qat.py; digits only), one QAT epoch's time at 224x224 per device (qat_time.py),
FINN's estimates per bit-width setting (finn_estimates.py),
GPFQ and Qronos in Brevitas' implementation against fast_gpxq.py (gpxq_speed.py), float vs
Brevitas vs onnxruntime speed (speed.py), and every stage of the demo at 224x224 on a generated
ImageNet-layout folder (imagenet_times.py; time only). Every section that uses the demo's model
gets the same pass-through flags, so the same model (its weights' hash is in every row); the
seeds section adds `--digits_seed=N` for its other models, each row with its own model's hash.

Finished rows are kept in the CSVs, rewritten whole after every row (bench/rows.py): an
interrupted run picks up where it stopped. A row is resumed only if its flags, its model and its
code (a hash of the source files that compute it) are the same; otherwise it is measured again.
A section turned off (`--speed=False`, `--finn_bits=`, ...) keeps the rows its CSV already holds
in RESULTS.md, marked as not re-run. Delete a CSV to start that section over; after a full run,
`python -m bench.prune` keeps only the
rows of each CSV's newest code (dropping an old machine's model and settings whose flags changed).
"""
import os
import sys
from dataclasses import replace
from pathlib import Path

# Waiting OpenMP threads sleep instead of spinning (it must be set before torch loads). On a
# machine shared with other jobs, spinning threads fight those jobs for the cores and eager
# PyTorch runs erratically, many times slower; onnxruntime's threads sleep likewise (fast_eval.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from finn_demo.common.configurator import HELP_ARGS, ConfigError, apply_overrides, flags_of  # noqa: E402

# ---------------------------------------------------------------------------------------- flags
out_dir = "results"  # where RESULTS.md and the CSVs and plots it is made from go
bits = "all"  # bit-width settings to run, comma-separated names of BIT_SETTINGS (bench/grid.py); "" = no grid rows: RESULTS.md shows the ones benchmark.csv holds
ptq = "all"  # PTQ settings to run, comma-separated names of PTQ_SETTINGS (bench/grid.py)
calib_size = 256  # calibration images of every row; GPxQ re-runs the model per layer per image
fast_eval = True  # also evaluate each row's quantized model as QCDQ in onnxruntime
grid_jobs = 1  # grid rows measured at once, each in a process of its own
grid_threads = 0  # PyTorch and onnxruntime threads per grid row; 0 = the cores shared among the jobs
seeds = "1,2"  # other digits training seeds (--digits_seed) the key rows also run on, for mean and spread; "" = skip
seeds_bits = "W4A4,PW4A4"  # the key rows: these bit-width settings (names of BIT_SETTINGS) ...
seeds_ptq = "none,gpfq,qronos,qronos+bn_corr,relu6_to_relu+qronos,relu6_calibrated+qronos+bn_corr,relu6_calibrated+qronos+bn_corr+learned_act_range+qdrop,learned_round_blockwise"  # ... x these PTQ settings (PTQ_SETTINGS)
qat_bits = "W4A4,PW3A4,W3A3,W4A4+in4"  # QAT section (digits; the pass-through model and each of --seeds'): these bit-width settings ...
qat_ptq = "none,relu6_calibrated+qronos+bn_corr,relu6_calibrated+qronos+bn_corr+qat"  # ... x these settings: no PTQ, the PTQ QAT starts from, and QAT on top (minutes a row); "" = skip
qat_time_devices = "cpu"  # QAT time section: devices one 224x224 QAT epoch is timed on ("cpu,cuda" with a GPU); "" = skip
qat_time_epochs = 3  # its epochs per run (the first warms up and is left out)
finn_bits = "W4A4,W4A4+thr,W4A4+add8,W4A4+add8+thr,W8A8,W8A8+thr,W4A4+acc14"  # settings FINN compiles at 224x224 and fits to each board (minutes each; FINN_SETTINGS in bench/finn_estimates.py); "" = none
finn_boards = "ZCU104,U250"  # the boards each of them is fitted to (finn_build.py --board)
finn_verilator = "slowest"  # RTL layers of each FINN row simulated in Verilator (finn_build.py --verilator_layers): slowest, all, or "" = none
checks_bits = "W8A8,W4A4"  # settings whose export checks are tried at 224x224 on photos, correct and with faults (bench/checks224.py); "" = skip
gpxq = True  # time GPTQ, GPFQ and Qronos: Brevitas' implementation against fast_gpxq.py
gpxq_bits = "PW4,PW3"  # bit-width settings of that comparison
gpxq_algorithms = "gptq,gpfq,qronos"  # and its algorithms
gpxq_calib_size = 128  # its calibration images
gpxq_repeats = 3  # its timed runs per implementation, alternating; the table shows the medians
speed = True  # write the speed section (float vs Brevitas vs onnxruntime, repeated)
speed_repeats = 5  # timed passes per path in the speed section; the table shows the median
speed_224_images = 64  # random 224x224 images per timed pass
speed_bits = "W8A8,PW4A4"  # bit-width settings timed in the speed section
demo_runs = 3  # timed runs of the demo with its seed flags (digits model cached); 0 = skip
imagenet_calib_sizes = "16,64"  # ImageNet time table (224x224, generated data): two calib_size values; "" = skip
imagenet_val_sizes = "64,512"  # and two val_size values
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

from bench import sections  # noqa: E402
from bench.cli import DEMO_DEFAULTS, resolve  # noqa: E402
from bench.context import Context  # noqa: E402
from bench.report import failures_text, header_text, kept_rows, write_report  # noqa: E402
from bench.rows import demo_model_hash, git_commit_text  # noqa: E402
from bench.speed import demo_run_seconds, demo_text  # noqa: E402


def make_args(argv=()):
    """(benchmark flags, demo flags passed through) from `--name=value` arguments, every flag
    checked before any row runs (bench/cli.py)."""
    own = [arg for arg in argv if arg in HELP_ARGS or arg[2:].split("=", 1)[0] in FLAGS]
    passed = [arg for arg in argv if arg not in own]
    return resolve(apply_overrides(FLAGS, own), passed), passed


def main(args, passed, command="python benchmark.py"):
    """Run every section of bench/sections.py in order into RESULTS.md; returns (the grid's
    rows, this run's speed rows)."""
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    commit = git_commit_text(exclude=[out])  # before this run writes into out_dir
    # One run, one model: every section gets the same demo flags, and its rows the same identity,
    # all their flags but where the model is cached, and the hash of the model's weights.
    passed = [*DEMO_DEFAULTS, *passed, f"--calib_size={args['calib_size']}"]
    common = {"flags": " ".join(arg for arg in passed if not arg.startswith("--cache_dir=")),
              "model": demo_model_hash(passed)}  # trains the digits model here if not cached
    context = Context(args, passed, common, out)
    lines, failures, measured = header_text(command, commit, common["model"]), [], {}
    for section in sections.SECTIONS:
        if section.digits_only and not context.digits:
            continue
        here = replace(context, path=out / section.csv)
        ran = section.ran(args)
        rows, failed = section.run(here) if ran else ([], [])
        failures += failed
        lines += section.lines(section.render, ran, rows, here)
        measured[section.name] = rows
        context.rows[section.name] = rows if ran else kept_rows(here.path)

    if args["speed"] and args["demo_runs"] and context.digits:
        demo_seconds, failure = demo_run_seconds(passed, args["demo_runs"])
        failures += [failure] if failure else []
        lines += demo_text(demo_seconds) if demo_seconds else []

    write_report(out / "RESULTS.md", lines + failures_text(failures))
    return context.grid_rows, measured.get("speed", [])


if __name__ == "__main__":
    try:
        main(*make_args(sys.argv[1:]), command=" ".join(["python benchmark.py", *sys.argv[1:]]))
    except ConfigError as error:
        sys.exit(f"error: {error}")
