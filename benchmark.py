"""Benchmark the demo over a grid of bit widths x PTQ passes; write RESULTS.md, CSVs and plots.

    python benchmark.py                                 # digits, every section
    python benchmark.py --bits=W8A8,PW3 --ptq=none,gpfq  # part of the grid
    python benchmark.py --data_dir=/data/imagenet --val_size=10000   # demo flags pass through

The story of a run, one section each (bench/): the accuracy grid (grid.py: every row one run of
the demo's own `main()` with the row's flags on top of the pass-through flags, plus its QCDQ
export in onnxruntime), the key grid rows (seeds_bits x seeds_ptq) again on the digits models of
other training seeds, as mean +- sd over the seeds with each bit-width setting's winner against
the spread (seeds.py; digits only), FINN's estimates per bit-width setting (finn_estimates.py),
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
finn_bits = "W4A4,W4A4+add8,W8A8,W4A4+acc14"  # settings FINN compiles at 224x224 and fits to each board (minutes each; FINN_SETTINGS in bench/finn_estimates.py); "" = none
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

from bench.checks224 import checks_section, checks_text  # noqa: E402
from bench.cli import DEMO_DEFAULTS, resolve  # noqa: E402
from bench.finn_estimates import best_accuracy, finn_plot, finn_section, finn_text  # noqa: E402
from bench.gpxq_speed import gpxq_section, gpxq_text  # noqa: E402
from bench.grid import grid_section, grid_text, plot  # noqa: E402
from bench.imagenet_times import imagenet_section, imagenet_text  # noqa: E402
from bench.report import failures_text, header_text, kept_rows, kept_text, write_report  # noqa: E402
from bench.rows import demo_model_hash, git_commit_text  # noqa: E402
from bench.seeds import seeds_section, seeds_text_with  # noqa: E402
from bench.speed import demo_run_seconds, demo_text, speed_section, speed_text  # noqa: E402
from finn_demo.finn_install import finn_available  # noqa: E402

CSV_NAME, SPEED_CSV_NAME, PLOT_NAME = "benchmark.csv", "speed.csv", "benchmark.png"
FINN_CSV_NAME, FINN_PLOT_NAME = "finn.csv", "finn.png"
IMAGENET_CSV_NAME, GPXQ_CSV_NAME = "imagenet_times.csv", "gpxq_speed.csv"
CHECKS_CSV_NAME = "checks224.csv"
SEEDS_CSV_NAME = "seeds.csv"


def make_args(argv=()):
    """(benchmark flags, demo flags passed through) from `--name=value` arguments, every flag
    checked before any row runs (bench/cli.py)."""
    own = [arg for arg in argv if arg in HELP_ARGS or arg[2:].split("=", 1)[0] in FLAGS]
    passed = [arg for arg in argv if arg not in own]
    return resolve(apply_overrides(FLAGS, own), passed), passed


def section_text(ran, rows, path, text, *args):
    """A section's lines: its table of this run's rows; where this run left the section off
    (`ran` false), its table of the rows its CSV already holds (kept_text); nothing where it
    ran and measured nothing."""
    if rows:
        return text(rows, *args)
    return [] if ran else kept_text(path, text, *args)


def main(args, passed, command="python benchmark.py"):
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    commit = git_commit_text(exclude=[out])  # before this run writes into out_dir
    # One run, one model: every section gets the same demo flags, and its rows the same identity,
    # all their flags but where the model is cached, and the hash of the model's weights.
    passed = [*DEMO_DEFAULTS, *passed, f"--calib_size={args['calib_size']}"]
    common = {"flags": " ".join(arg for arg in passed if not arg.startswith("--cache_dir=")),
              "model": demo_model_hash(passed)}  # trains the digits model here if not cached
    lines, failures = header_text(command, commit, common["model"]), []

    grid_ran = bool(args["bits"] and args["ptq"])
    rows, failed = grid_section(args, passed, common, out / CSV_NAME) if grid_ran else ([], [])
    failures += failed
    if not grid_ran:  # shown, plotted and ranked beside the FINN rows as the CSV holds them
        rows = kept_rows(out / CSV_NAME)
        lines += [f"*The grid was not re-run by this command: the rows {CSV_NAME} already held "
                  "(each row's code and commit are in the CSV).*", ""] if rows else []
    if rows:
        plot(rows, out / PLOT_NAME)
    lines += grid_text(rows, args, PLOT_NAME)

    digits = not any(arg.startswith("--data_dir=") for arg in passed)
    if digits:  # training seeds are the digits model's
        seed_rows, failed = (seeds_section(args, passed, common, rows, out / SEEDS_CSV_NAME)
                             if args["seeds"] else ([], []))
        failures += failed
        lines += section_text(args["seeds"], seed_rows, out / SEEDS_CSV_NAME,
                              seeds_text_with(args, passed, rows))

    finn_rows, failed = finn_section(args, out / FINN_CSV_NAME)
    failures += failed
    accuracy = best_accuracy(rows)
    finn_ran = args["finn_bits"] and args["finn_boards"]
    drawn_rows = finn_rows if finn_ran else kept_rows(out / FINN_CSV_NAME)
    drawn = drawn_rows and finn_plot(drawn_rows, accuracy, out / FINN_PLOT_NAME)
    lines += section_text(finn_ran, finn_rows,
                          out / FINN_CSV_NAME, finn_text, accuracy,
                          FINN_PLOT_NAME if drawn else None)

    check_rows, failed = checks_section(args["checks_bits"], out / CHECKS_CSV_NAME,
                                        finn=finn_available())
    failures += failed
    lines += section_text(args["checks_bits"], check_rows, out / CHECKS_CSV_NAME, checks_text)

    gpxq_rows, failed = (gpxq_section(args["gpxq_bits"], args["gpxq_algorithms"],
                                      args["gpxq_calib_size"], args["gpxq_repeats"], passed,
                                      common, out / GPXQ_CSV_NAME) if args["gpxq"] else ([], []))
    failures += failed
    lines += section_text(args["gpxq"], gpxq_rows, out / GPXQ_CSV_NAME, gpxq_text)

    speed_rows, failed = (speed_section(args, passed, common, out / SPEED_CSV_NAME)
                          if args["speed"] else ([], []))
    failures += failed
    lines += section_text(args["speed"], speed_rows, out / SPEED_CSV_NAME, speed_text, args)

    imagenet_rows, failed = imagenet_section(args, out / IMAGENET_CSV_NAME)
    failures += failed
    lines += section_text(args["imagenet_calib_sizes"], imagenet_rows, out / IMAGENET_CSV_NAME,
                          imagenet_text)

    if args["speed"] and args["demo_runs"] and digits:
        demo_seconds, failure = demo_run_seconds(passed, args["demo_runs"])
        failures += [failure] if failure else []
        lines += demo_text(demo_seconds) if demo_seconds else []

    write_report(out / "RESULTS.md", lines + failures_text(failures))
    return rows, speed_rows


if __name__ == "__main__":
    try:
        main(*make_args(sys.argv[1:]), command=" ".join(["python benchmark.py", *sys.argv[1:]]))
    except ConfigError as error:
        sys.exit(f"error: {error}")
