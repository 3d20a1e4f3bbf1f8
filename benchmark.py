"""Benchmark the demo over a grid of bit widths x PTQ passes; write RESULTS.md, a CSV and a plot.

    python benchmark.py                                 # digits, the whole grid
    python benchmark.py --bits=W8A8,PW3 --ptq=none,gpfq  # part of the grid
    python benchmark.py --data_dir=/data/imagenet --val_size=10000   # demo flags pass through

Every row is one run of the demo's own `main()`, with the row's flags on top of the pass-through
flags. Next to the demo's eager PyTorch figures, each row also runs the quantized model exported
as QCDQ in onnxruntime (fast_eval.py). A speed section then times float, Brevitas and onnxruntime
evaluation side by side, repeated, on the digits data and on 224x224 inputs; FINN's estimates per
bit-width setting follow (bench/finn_estimates.py), and the ImageNet time table: every stage of the demo at
224x224 on a generated ImageNet-layout folder (bench/imagenet_times.py; time only, not accuracy).

Finished rows are kept in the CSV, rewritten whole after every row: an interrupted run picks up
where it stopped, and only rows whose flags changed are measured again. Delete the CSV to start over.
"""
import csv
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path
from statistics import median

# Waiting OpenMP threads sleep instead of spinning (it must be set before torch loads). On a
# machine shared with other jobs, spinning threads fight those jobs for the cores and eager
# PyTorch runs erratically, up to 50x slower; onnxruntime's threads sleep likewise (fast_eval.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from finn_demo.configurator import ConfigError, apply_overrides, flags_of  # noqa: E402

# ---------------------------------------------------------------------------------------- flags
out_dir = "results"  # where RESULTS.md and the CSVs and plots it is made from go
bits = "all"  # bit-width settings to run, comma-separated names of BIT_SETTINGS below
ptq = "all"  # PTQ settings to run, comma-separated names of PTQ_SETTINGS below
calib_size = 256  # calibration images of every row; GPxQ re-runs the model per layer per image
fast_eval = True  # also evaluate each row's quantized model as QCDQ in onnxruntime
grid_jobs = 1  # grid rows measured at once, each in a process of its own
grid_threads = 0  # PyTorch and onnxruntime threads per grid row; 0 = the cores shared among the jobs
speed = True  # write the speed section (float vs Brevitas vs onnxruntime, repeated)
speed_repeats = 5  # timed passes per path in the speed section; the table shows the median
speed_224_images = 64  # random 224x224 images per timed pass
speed_bits = "W8A8,PW4A4"  # bit-width settings timed in the speed section
finn_bits = "all"  # bit-width settings FINN compiles for its estimates (about 10 min each, 2 cores); "" = none
demo_runs = 3  # timed runs of the demo with its seed flags (digits model cached); 0 = skip
imagenet_calib_sizes = "16,64"  # ImageNet time table (224x224, generated data): two calib_size values; "" = skip
imagenet_val_sizes = "64,512"  # and two val_size values
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

import finn_mobilenetv2 as demo  # noqa: E402
from bench.finn_estimates import finn_row, finn_table, plot_finn  # noqa: E402
from bench.imagenet_times import generated_imagenet, seed_run_minutes, time_keys, time_row, time_table  # noqa: E402
from finn_demo.fast_eval import export_qcdq, fast_evaluate, ort_session  # noqa: E402
from finn_demo.files import atomic_path  # noqa: E402

# Bit widths: weights of the pointwise (1x1) convs, and of depthwise / first conv where they
# differ. As in the README's layer-map snippets (which change Conv2d weights only), the classifier
# keeps 8-bit weights. Depthwise and first convs stay at 8 bits in the low-bit settings: they hold
# few weights (little FINN area to save) and lose the most.
_EIGHT_BIT_EDGES = ["--first_conv_bit_width=8", "--last_linear_bit_width=8"]
BIT_SETTINGS = {
    "W8A8": [],
    "PW4": ["--weight_bit_width=4", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES],
    "W4": ["--weight_bit_width=4", "--last_linear_bit_width=8"],
    "PW3": ["--weight_bit_width=3", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES],
    "PW4A4": ["--weight_bit_width=4", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES,
              "--act_bit_width=4"],
    "W4A4": ["--weight_bit_width=4", *_EIGHT_BIT_EDGES, "--act_bit_width=4"],
}
BIT_DESCRIPTIONS = {
    "W8A8": "8-bit weights and activations (the demo's default)",
    "PW4": "pointwise convs 4-bit; depthwise, first conv and classifier 8-bit; activations 8-bit "
           "(README snippet 3)",
    "W4": "every conv 4-bit, classifier 8-bit, activations 8-bit (README snippet 1)",
    "PW3": "pointwise convs 3-bit; depthwise, first conv and classifier 8-bit; activations 8-bit",
    "PW4A4": "pointwise convs 4-bit; depthwise, first conv and classifier 8-bit; activations 4-bit",
    "W4A4": "every conv and activation 4-bit, first conv and classifier 8-bit (like finn-examples' "
            "MobileNet-v1; the input quantizer is an activation: 4-bit too)",
}
PTQ_SETTINGS = {
    "none": [],
    "bias_corr": ["--bias_corr=True"],
    "act_eq+bias_corr": ["--act_eq=True", "--bias_corr=True"],
    "gptq": ["--gptq=True"],
    "gpfq": ["--gpfq=True"],
    "act_eq+bias_corr+gpfq": ["--act_eq=True", "--bias_corr=True", "--gpfq=True"],
    "qronos": ["--qronos=True"],
    "bn_corr": ["--bn_corr=True"],
    "bias_corr+bn_corr": ["--bias_corr=True", "--bn_corr=True"],
}
# Demo flags every row starts from (pass-through flags override them). FINN's frontend takes
# minutes per model: the rows run the demo's structural and QONNX-equivalence checks only.
DEMO_DEFAULTS = ["--check_finn=False"]
# The project's accuracy goals on the digits data: (PTQ judged, largest drop in points).
GOALS = {"W8A8": ("none", 0.2), "PW3": ("best", 0.5), "PW4A4": ("best", 1.0)}
CSV_NAME, SPEED_CSV_NAME, PLOT_NAME = "benchmark.csv", "speed.csv", "benchmark.png"
FINN_CSV_NAME, FINN_PLOT_NAME = "finn.csv", "finn_estimates.png"
IMAGENET_CSV_NAME = "imagenet_times.csv"
GPXQ_REPORT_NAME = "gpxq_speed.md"  # bench/gpxq_speed.py's report, included when present


def make_args(argv=()):
    """(benchmark flags, demo flags passed through) from `--name=value` arguments."""
    own = [arg for arg in argv if arg[2:].split("=", 1)[0] in FLAGS]
    passed = [arg for arg in argv if arg not in own]
    for arg in passed:
        if arg[2:].split("=", 1)[0] == "output":
            raise ConfigError("--output: the benchmark exports each row to a temporary file")
    demo.make_args(passed)  # refuse unknown flags and wrong types now, not an hour in
    args = apply_overrides(FLAGS, own)
    args["bits"] = _choose(args["bits"], BIT_SETTINGS, "bits")
    args["ptq"] = _choose(args["ptq"], PTQ_SETTINGS, "ptq")
    args["speed_bits"] = _choose(args["speed_bits"], BIT_SETTINGS, "speed_bits")
    args["finn_bits"] = _choose(args["finn_bits"], BIT_SETTINGS, "finn_bits")
    for name in ("imagenet_calib_sizes", "imagenet_val_sizes"):
        args[name] = _two_sizes(args[name], name, args["imagenet_calib_sizes"] != "")
    for name, least in (("grid_jobs", 1), ("grid_threads", 0), ("speed_repeats", 1), ("demo_runs", 0)):
        if args[name] < least:
            raise ConfigError(f"--{name}={args[name]}: must be {least} or more")
    return args, passed


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


def _choose(names, settings, flag):
    chosen = list(settings) if names == "all" else [name for name in names.split(",") if name]
    unknown = [name for name in chosen if name not in settings]
    if unknown:
        raise ConfigError(f"--{flag}: unknown {', '.join(unknown)}; choose from {', '.join(settings)}")
    return chosen


# ------------------------------------------------------------------------------- resumable CSV
def read_rows(path):
    if not Path(path).exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def write_rows(path, rows):
    """Write `rows` (dicts) whole or not at all; columns are the union of the rows' keys."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerows(rows)


def resumable(path, keys, measure, desc, jobs=1, threads=None):
    """(rows, failures) for `keys` (dicts of str), measuring only the rows the CSV lacks.

    `measure(key)` returns the row's figures; the CSV at `path` is rewritten after each new row.
    A row that raises is reported and left out, so the next run tries it again. Rows of other
    keys (another grid, other flags) stay in the file and out of the result. With jobs > 1 the
    rows are measured in that many processes at once, `threads` PyTorch threads each.
    """
    saved = read_rows(path)
    names = list(keys[0]) if keys else []
    done = {tuple(row.get(name) for name in names): row for row in saved}
    todo = [key for key in keys if tuple(key.values()) not in done]
    failures = []
    with tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc, dynamic_ncols=True) as bar:
        for key, (figures, error) in _measure_all(measure, todo, jobs, threads):
            bar.update()
            if error:
                failures.append((key, error))
                tqdm.write(f"row {key} failed: {error}")
                continue
            saved.append({**key, **figures})
            done[tuple(key.values())] = saved[-1]
            write_rows(path, saved)
    rows = [done[tuple(key.values())] for key in keys if tuple(key.values()) in done]
    return rows, failures


def _measure_all(measure, keys, jobs, threads):
    """(key, (figures, error message)) for each of `keys`, in the order they finish."""
    if jobs == 1:
        yield from ((key, _measure_one(measure, key)) for key in keys)
        return
    context = multiprocessing.get_context("spawn")  # forking a process that ran torch can hang
    # The workers' own progress bars would interleave on one terminal: they inherit this
    # variable when they start, and only the grid's bar is shown.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with ProcessPoolExecutor(jobs, context, initializer=torch.set_num_threads,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_measure_one, measure, key): key for key in keys}
            for future in as_completed(futures):
                yield futures[future], future.result()
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE")
        else:
            os.environ["TQDM_DISABLE"] = previous


def _measure_one(measure, key):
    try:
        return measure(key), None
    except Exception as error:  # one broken configuration must not end an hour-long grid
        return None, f"{type(error).__name__}: {error}".splitlines()[0]


# ----------------------------------------------------------------------------------- grid rows
def run_row(key, passed):
    """One demo run with the row's flags: its accuracy, speed and stage times as strings."""
    flags = [*passed, *BIT_SETTINGS[key["bits"]], *PTQ_SETTINGS[key["ptq"]]]
    # The row's quantized top-1 and images/s are the Brevitas model's; fast_eval adds onnxruntime's.
    flags.append("--eval_backend=brevitas")
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = demo.main(demo.make_args([*flags, f"--output={Path(folder) / 'model.onnx'}"]))
        wall = time.perf_counter() - start
    row = {
        "data": "ImageNet" if "--data_dir=" in " ".join(flags) else "digits",
        "threads": str(torch.get_num_threads()),
        "val_images": str(len(result.val_loader.dataset)),
        "float_top1": f"{result.float_top1:.2f}",
        "quant_top1": f"{result.quant_top1:.2f}",
        "drop": f"{result.float_top1 - result.quant_top1:.2f}",
        "float_ips_eager": f"{result.float_images_per_s:.1f}",
        "quant_ips_brevitas": f"{result.quant_images_per_s:.1f}",
    }
    if key["fast_eval"] == "True":
        fast = fast_evaluate(result.model, result.val_loader)
        row.update({
            "quant_top1_ort": f"{fast.top1:.2f}",
            "ort_agreement": f"{fast.agreement:.2f}",
            "quant_ips_ort": f"{fast.images_per_s:.1f}",
            "ort_vs_float": f"{fast.images_per_s / result.float_images_per_s:.2f}",
            "s_qcdq_export": f"{fast.export_seconds:.1f}"})
    row.update({f"s_{name.replace(' ', '_')}": f"{seconds:.1f}"
                for name, seconds in result.seconds.items()})
    report = getattr(result, "report", None)
    row["export_checks"] = ("off" if report is None else "passed" if report.ok else
                            "failed: " + ", ".join(name for name, check in report.checks.items()
                                                   if check.failed))
    row["s_demo_total"] = f"{wall:.1f}"
    return row


# ------------------------------------------------------------------------------- speed section
def images_per_s(run, batches, repeats):
    """Median images/s of `run` over `batches`, timing `repeats` whole passes."""
    count = sum(len(images) for images in batches)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        for images in batches:
            run(images)
        timings.append(count / (time.perf_counter() - start))
    return median(timings)


@torch.no_grad()
def time_paths(float_model, quant_model, batches, repeats):
    """Median images/s of the float model, the Brevitas model (both eager) and its QCDQ export."""
    float_model.eval()
    quant_model.eval()
    with tempfile.TemporaryDirectory() as folder:
        session = ort_session(export_qcdq(quant_model, batches[0][:1], Path(folder) / "m.onnx"))
        paths = {
            "float_eager": float_model,
            "brevitas_eager": quant_model,
            "ort_qcdq": lambda images: session.run(None, {"x": images.numpy()}),
        }
        for run in paths.values():  # warm-up: first calls allocate and pick kernels
            run(batches[0])
        # Interleave the repeats so that any load on the machine hits every path alike.
        timings = {name: [] for name in paths}
        for _ in range(repeats):
            for name, run in paths.items():
                timings[name].append(images_per_s(run, batches, 1))
    return {name: median(values) for name, values in timings.items()}


def speed_row(key, passed, repeats, images_224):
    """The speed of one bit-width setting: on the demo's validation data, or 224x224 random."""
    bit_flags = BIT_SETTINGS[key["bits"]]
    if key["input"] == "demo data":
        with tempfile.TemporaryDirectory() as folder:
            args = demo.make_args([*passed, *bit_flags, f"--output={Path(folder) / 'm.onnx'}"])
            quant_model = demo.main(args).model
        float_model, _, val_loader, _ = demo.load_model_and_data(args)  # a fresh float model
        batches = [batch[0] for batch in val_loader if batch is not None]
    else:
        float_model, quant_model, batches = random_224_models(bit_flags, images_224)
    load = os.getloadavg()[0]  # other jobs on the machine slow eager PyTorch most
    speeds = time_paths(float_model, quant_model, batches, repeats)
    row = {"threads": str(torch.get_num_threads()),
           "load_1min": f"{load:.1f} -> {os.getloadavg()[0]:.1f}"}
    row.update({f"ips_{name}": f"{value:.1f}" for name, value in speeds.items()})
    row["brevitas_vs_float"] = f"{speeds['brevitas_eager'] / speeds['float_eager']:.2f}"
    row["ort_vs_float"] = f"{speeds['ort_qcdq'] / speeds['float_eager']:.2f}"
    return row


def random_224_models(bit_flags, num_images, batch_size=32):
    """A seeded random MobileNetV2 (1000 classes), float and quantized, and random 224x224 batches.

    For timing only: random weights give meaningless (often all-zero) quantized outputs.
    """
    import quant_utils as qu
    from torchvision.models import mobilenet_v2
    args = demo.make_args(bit_flags)
    torch.manual_seed(0)
    float_model = mobilenet_v2(num_classes=1000).eval()
    batches = list(torch.randn(num_images, 3, 224, 224).split(batch_size))
    model = qu.preprocess_for_finn_quantize(float_model, batches[0][:1])
    maps = qu.bit_width_maps(args.weight_bit_width, args.act_bit_width, args.depthwise_bit_width,
                             args.first_conv_bit_width, args.last_linear_bit_width)
    model = qu.quantize_finn(model, **maps)
    qu.calibrate([(images, torch.zeros(len(images))) for images in batches[:1]], model)
    return float_model, model.eval(), batches


def demo_run_seconds(passed, runs):
    """(wall times, failure) of `python finn_mobilenetv2.py` with the seed flags, as a user runs it
    a second time (the digits model is cached by then): the whole process, imports included.

    A run that fails ends the timing: failure is then (what ran, its exit status and last line).
    """
    cache = [arg for arg in passed if arg.startswith("--cache_dir=")]
    seconds = []
    for _ in tqdm(range(runs), desc="demo runs", dynamic_ncols=True):
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "finn_mobilenetv2.py", *cache, f"--output={Path(folder) / 'm.onnx'}"]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, cwd=Path(__file__).parent)
            if done.returncode:
                last_line = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                return [], ({"demo runs": " ".join(command[1:])},
                            f"exit status {done.returncode}: {last_line}")
            seconds.append(time.perf_counter() - start)
    return seconds, None


# ------------------------------------------------------------------------------------- reports
def plot(rows, path):
    """Quantized top-1 per PTQ setting, one group of bars per bit-width setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bit_names = list(dict.fromkeys(row["bits"] for row in rows))
    ptq_names = list(dict.fromkeys(row["ptq"] for row in rows))
    by_key = {(row["bits"], row["ptq"]): float(row["quant_top1"]) for row in rows}
    width = 0.8 / len(ptq_names)
    figure, axes = plt.subplots(figsize=(max(6, 1.8 * len(bit_names) + 3), 4.5))
    colors = plt.cm.tab10.colors
    for index, name in enumerate(ptq_names):
        xs = [position + (index - (len(ptq_names) - 1) / 2) * width
              for position, bits_name in enumerate(bit_names) if (bits_name, name) in by_key]
        ys = [by_key[bits_name, name] for bits_name in bit_names if (bits_name, name) in by_key]
        axes.bar(xs, ys, width, label=name, color=colors[index % len(colors)])
    float_top1 = median(float(row["float_top1"]) for row in rows)
    axes.axhline(float_top1, color="black", linestyle="--", linewidth=1,
                 label=f"float ({float_top1:.2f}%)")
    lowest = min(by_key.values())
    axes.set_ylim(max(0.0, min(lowest, float_top1) - 2.0), min(100.0, float_top1 + 1.5))
    axes.set_xticks(range(len(bit_names)), bit_names)
    axes.set_xlabel("bit-width setting")
    axes.set_ylabel("quantized top-1 (%), Brevitas model")
    axes.set_title("MobileNetV2 PTQ for FINN: accuracy per configuration")
    axes.grid(axis="y", linewidth=0.3)
    axes.legend(fontsize=7, title="PTQ", title_fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


STAGE_NAMES = {"s_qcdq_export": "QCDQ export (fast_eval)"}


def stage_times(row):
    skipped = ("s_demo_total",)
    return ", ".join(f"{STAGE_NAMES.get(name, name[2:].replace('_', ' '))} {value}"
                     for name, value in row.items()
                     if name.startswith("s_") and name not in skipped and value)


def grid_table(rows):
    header = ["bits", "PTQ", "threads", "float top-1 % (eager)", "quant top-1 % (Brevitas)", "drop (points)",
              "quant top-1 % (ORT QCDQ)", "ORT top-1 agreement %", "float img/s (eager)",
              "quant img/s (Brevitas eager)", "quant img/s (ORT QCDQ)", "ORT / float",
              "export checks", "stage wall times (s)", "demo total (s)"]
    cells = [[row["bits"], row["ptq"], row["threads"], row["float_top1"], row["quant_top1"], row["drop"],
              row.get("quant_top1_ort", "-"), row.get("ort_agreement", "-"),
              row["float_ips_eager"], row["quant_ips_brevitas"], row.get("quant_ips_ort", "-"),
              row.get("ort_vs_float", "-"), row.get("export_checks", "-"), stage_times(row),
              row["s_demo_total"]] for row in rows]
    return markdown_table(header, cells)


def best_table(rows):
    """The best PTQ setting of each bit-width setting (by the Brevitas model's top-1), and its goal."""
    cells = []
    for bits_name in dict.fromkeys(row["bits"] for row in rows):
        group = [row for row in rows if row["bits"] == bits_name]
        best = max(group, key=lambda row: float(row["quant_top1"]))
        plain = next((row for row in group if row["ptq"] == "none"), None)
        goal = "-"
        if bits_name in GOALS and best["data"] == "digits":
            ptq_scope, max_drop = GOALS[bits_name]
            judged = plain if ptq_scope == "none" else best
            if judged is not None:
                margin = max_drop - float(judged["drop"])
                goal = (f"drop <= {max_drop} with {'no PTQ' if ptq_scope == 'none' else 'best PTQ'}: "
                        f"{'met' if margin >= 0 else 'NOT met'} ({margin:+.2f} points)")
        cells.append([bits_name, BIT_DESCRIPTIONS[bits_name], plain["drop"] if plain else "-",
                      best["ptq"], best["quant_top1"], best["drop"], goal])
    return markdown_table(["bits", "setting", "drop without PTQ", "best PTQ", "its top-1 %",
                           "its drop (points)", "goal (issue 5)"], cells)


def speed_table(rows):
    header = ["input", "bits", "threads", "float img/s (eager)", "Brevitas img/s (eager)",
              "ORT QCDQ img/s", "Brevitas / float", "ORT / float", "load average (before -> after)"]
    cells = [[row["input"], row["bits"], row["threads"], row["ips_float_eager"],
              row["ips_brevitas_eager"], row["ips_ort_qcdq"], row["brevitas_vs_float"],
              row["ort_vs_float"], row.get("load_1min", "-")] for row in rows]
    return markdown_table(header, cells)


def demo_text(seconds):
    from check_export import finn_available
    finn = "runs" if demo.FLAGS["check_finn"] and finn_available() else "is off"
    return [
        "## The demo's second run", "",
        f"`python finn_mobilenetv2.py` with its seed flags, the digits model already cached: median "
        f"{median(seconds):.1f} s wall over {len(seconds)} runs (min {min(seconds):.1f} s, max "
        f"{max(seconds):.1f} s), the whole process from start to exit, export checks included "
        f"(FINN's frontend check {finn} with the seed flags here).", ""]


def finn_text(finn_rows, rows):
    first = finn_rows[0]
    return [
        "## FINN: hardware cost per bit-width setting", "",
        "Each row: one demo run with the setting's flags (no PTQ) and `--finn_build=True`, i.e. "
        "finn_build.py on its export: FINN's frontend, streamlining, hardware layers, the "
        f"dataflow partition, specialization for {first.get('part', '-')}, SetFolding for "
        f"{first.get('target_fps', '-')} frames/s at a {first.get('clock_ns', '-')} ns clock, "
        "and FINN's own estimates (res_estimation, exp_cycles_per_layer) summed over the "
        "layers. No Vivado: these are FINN's analytical estimates, not synthesis results. "
        "*FINN checks*: finn_build.py's self-checks (every layer a hardware layer in one "
        "partition, the hardware graph's logits against the QONNX graph's on 8 images). "
        "*best PTQ top-1*: the best row of the accuracy grid above for the same bit widths, "
        "where the grid measured the same float model (same float top-1; '-' otherwise). The "
        "plot shows each row's own top-1 without PTQ. "
        "*of which thresholds*: the LUTs FINN's Thresholding layers take (their threshold "
        "memories in LUTRAM, FINN's default choice). FINN reports no LUT estimate for some "
        "layer types (MVAU_rtl, FMPadding, the stream layers): the totals leave them out.", "",
        markdown_table(*finn_table(finn_rows, rows, BIT_DESCRIPTIONS)), "",
        f"![accuracy against FINN's LUT and frame-rate estimates]({FINN_PLOT_NAME})", ""]


def gpxq_text(path):
    """bench/gpxq_speed.py's side-by-side report as a section, when it has been run into the same folder."""
    if not path.exists():
        return []
    text = path.read_text().strip().replace("\n# ", "\n## ")
    return [f"#{text}" if text.startswith("# ") else text, "",
            f"(From `{path.name}`, written by bench/gpxq_speed.py; run it again to measure again.)", ""]


def write_report(path, rows, speed_rows, failures, args, command, demo_seconds=(), finn_rows=(),
                 imagenet_rows=()):
    agreement = [float(row["ort_agreement"]) for row in rows if row.get("ort_agreement")]
    ratios = [float(row["ort_vs_float"]) for row in rows if row.get("ort_vs_float")]
    lines = [
        "# Benchmark: MobileNetV2 PTQ for FINN",
        "",
        f"Made by `{command}` with benchmark.py at the committed code "
        f"({platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"brevitas {_version('brevitas')}, onnxruntime {_version('onnxruntime')}). Threads: each "
        f"grid row's are in its threads column; the speed section uses {torch.get_num_threads()}.",
        "",
        f"Data: {_data_text(rows)}. Every row "
        f"is one run of `finn_mobilenetv2.main()` with calib_size={args['calib_size']} and the "
        "row's flags; images/s of float and quantized model come from the same run "
        "(the demo's `evaluate`, eager PyTorch, data loading included).",
        "",
        "Which path produced each figure: *eager* = the float torchvision model in PyTorch; "
        "*Brevitas* = the fake-quantized Brevitas model in PyTorch (the demo's own figure); "
        "*ORT QCDQ* = the same quantized model exported with `brevitas.export.export_onnx_qcdq` "
        "and run in onnxruntime (fast_eval.py: QDQ fusion into integer kernels off, convs in float "
        "between the Q/DQ pairs, as many threads as PyTorch), with its top-1 agreement with the "
        "Brevitas model. *export checks*: the demo's own check of the exported QONNX graph "
        "(structure, and QONNX execution against the Brevitas model on a few images; FINN's "
        "frontend off, see DEMO_DEFAULTS).",
        "",
        "## Bit-width settings", "",
        *[f"- **{name}**: {BIT_DESCRIPTIONS[name]} (`{' '.join(flags) or 'no flags'}`)"
          for name, flags in BIT_SETTINGS.items() if name in args["bits"]],
        "",
        "## PTQ settings", "",
        *[f"- **{name}**: `{' '.join(flags) or 'no flags'}`"
          for name, flags in PTQ_SETTINGS.items() if name in args["ptq"]],
        "",
        "## Best PTQ per bit-width setting", "",
        best_table(rows),
        "",
        "## All rows", "",
        grid_table(rows),
        "",
    ]
    if agreement:
        lines += [f"ORT QCDQ vs Brevitas top-1 agreement: min {min(agreement):.2f}%, median "
                  f"{median(agreement):.2f}% over {len(agreement)} rows. ORT / float images/s: "
                  f"median {median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x), "
                  "each ratio from one run.", ""]
    lines += [f"![accuracy per configuration]({PLOT_NAME})", ""]
    if finn_rows:
        lines += finn_text(finn_rows, rows)
    lines += gpxq_text(Path(path).parent / GPXQ_REPORT_NAME)
    if speed_rows:
        lines += [
            "## Speed", "",
            f"Median of {args['speed_repeats']} interleaved timed passes per path, all three paths "
            "in one process with the same threads, whose waits sleep rather than spin "
            f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, onnxruntime allow_spinning=0). "
            "*demo data*: the demo's validation loader "
            "(32x32, trained digits model). *224x224*: a seeded random-weight MobileNetV2 "
            f"(1000 classes) on {args['speed_224_images']} random 224x224 images, batch 32: "
            "images/s only, its outputs are meaningless.", "",
            speed_table(speed_rows), ""]
    if imagenet_rows:
        lines += imagenet_text(imagenet_rows)
    if demo_seconds:
        lines += demo_text(demo_seconds)
    if failures:
        lines += ["## Failed rows (not in the tables; the next run tries them again)", "",
                  *[f"- {key}: {message}" for key, message in failures], ""]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))


def _data_text(rows):
    if not rows:
        return "none"
    if rows[0]["data"] == "digits":
        return (f"the embedded digits (scikit-learn load_digits at 32x32, the demo's split), "
                f"{rows[0]['val_images']} test images")
    return f"ImageNet, {rows[0]['val_images']} validation images"


def _version(package):
    from importlib.metadata import version
    return version(package)


def _finn_measure(key, passed):
    return finn_row([*passed, *BIT_SETTINGS[key["bits"]]])


def finn_section(args, passed, flags_text, out):
    """(rows, failures) of the FINN builds, one per setting of --finn_bits; none without FINN."""
    from check_export import FINN_INSTALL_HINT, finn_available
    if not args["finn_bits"]:
        return [], []
    if not finn_available():
        return [], [("FINN section", f"skipped: {FINN_INSTALL_HINT}")]
    keys = [{"bits": name, "flags": flags_text, "row_flags": " ".join(BIT_SETTINGS[name])}
            for name in args["finn_bits"]]
    # FINN's graph passes are single-threaded Python: builds run grid_jobs at a time.
    return resumable(out / FINN_CSV_NAME, keys, partial(_finn_measure, passed=passed),
                     "FINN builds", args["grid_jobs"], max(1, torch.get_num_threads() // args["grid_jobs"]))


def imagenet_section(args, out):
    """(rows, failures) of the ImageNet time table, on a generated folder made for the run."""
    if not args["imagenet_calib_sizes"]:
        return [], []
    keys = time_keys(args["imagenet_calib_sizes"], args["imagenet_val_sizes"])
    with tempfile.TemporaryDirectory() as folder:
        data_dir, weights = generated_imagenet(Path(folder), args["imagenet_calib_sizes"][-1],
                                               args["imagenet_val_sizes"][-1])
        return resumable(out / IMAGENET_CSV_NAME, keys,
                         partial(time_row, data_dir=data_dir, weights=weights), "ImageNet time table")


def imagenet_text(rows):
    minutes, passes = seed_run_minutes(rows)
    first = rows[0]
    return [
        "## ImageNet run: time per stage at 224x224", "",
        "Time only, not accuracy: each row of imagenet_times.csv is one run of the demo's `main()` on "
        "a generated ImageNet-layout folder (500x375 JPEGs of about ImageNet's file size) with a "
        "random-weights MobileNetV2 file, `--device=cpu` and the demo's defaults otherwise "
        f"({first['threads']} threads, {first['workers']} DataLoader workers, eval_backend auto = "
        f"onnxruntime, check_images={first['check_images']}). Each stage is fitted as fixed + per "
        "image through its median seconds at the two sizes of what it grows with; *s at the seed's "
        "sizes* applies the fit to 1000 calibration and 50000 validation images (agreement: "
        "500). The quantized evaluation is shown in its parts: the QCDQ export, onnxruntime "
        "scoring every validation image, and the Brevitas model on the agreement sample. GPFQ "
        "and Qronos run fast_gpxq.py (the default gpxq_impl), GPTQ Brevitas' own gptq_mode. "
        "*load* lists the generated folder's few hundred files: listing ImageNet's 1.33 million "
        "takes longer (not measured here).", "",
        markdown_table(*time_table(rows)), "",
        f"The seed's run without PTQ (8-bit, calib 1000, val 50000), by these fits: about "
        f"{minutes:.0f} min. Each PTQ pass adds: " + ", ".join(
            f"{name} {value:.0f} min" for name, value in passes.items()) + ".", ""]


def main(args, passed, command="python benchmark.py"):
    out = Path(args["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    passed = [*DEMO_DEFAULTS, *passed, f"--calib_size={args['calib_size']}"]
    # The rows' identity for resuming: all their flags but where the model is cached.
    flags_text = " ".join(arg for arg in passed if not arg.startswith("--cache_dir="))
    keys = [{"bits": bits_name, "ptq": ptq_name, "flags": flags_text,
             "row_flags": " ".join([*BIT_SETTINGS[bits_name], *PTQ_SETTINGS[ptq_name]]),
             "fast_eval": str(args["fast_eval"])}
            for bits_name in args["bits"] for ptq_name in args["ptq"]]
    # On a machine shared with other jobs, one thread per process avoids the threads of one
    # process spinning while waiting for a descheduled sibling: the grid finishes sooner.
    default_threads = torch.get_num_threads()
    threads = args["grid_threads"] or max(1, default_threads // args["grid_jobs"])
    torch.set_num_threads(threads)
    try:
        rows, failures = resumable(out / CSV_NAME, keys, partial(run_row, passed=passed),
                                   "benchmark grid", args["grid_jobs"], threads)
    finally:
        torch.set_num_threads(default_threads)
    finn_rows, finn_failures = finn_section(args, passed, flags_text, out)
    failures += finn_failures
    speed_rows = []
    if args["speed"]:
        sources = {"demo data": flags_text, "224x224": f"{args['speed_224_images']} images"}
        speed_keys = [{"input": source, "bits": name, "flags": flags,
                       "row_flags": " ".join(BIT_SETTINGS[name])}
                      for source, flags in sources.items() for name in args["speed_bits"]]
        speed_rows, speed_failures = resumable(
            out / SPEED_CSV_NAME, speed_keys,
            lambda key: speed_row(key, passed, args["speed_repeats"], args["speed_224_images"]),
            "speed")
        failures += speed_failures
    imagenet_rows, imagenet_failures = imagenet_section(args, out)
    failures += imagenet_failures
    demo_seconds = []
    if args["speed"] and args["demo_runs"] and not any(arg.startswith("--data_dir=") for arg in passed):
        demo_seconds, failure = demo_run_seconds(passed, args["demo_runs"])
        failures += [failure] if failure else []
    if rows:
        plot(rows, out / PLOT_NAME)
    if finn_rows:
        plot_finn(finn_rows, out / FINN_PLOT_NAME)
    write_report(out / "RESULTS.md", rows, speed_rows, failures, args, command, demo_seconds,
                 finn_rows, imagenet_rows)
    return rows, speed_rows


if __name__ == "__main__":
    try:
        main(*make_args(sys.argv[1:]), command=" ".join(["python benchmark.py", *sys.argv[1:]]))
    except ConfigError as error:
        sys.exit(f"error: {error}")
