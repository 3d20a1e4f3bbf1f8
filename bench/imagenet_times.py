"""The benchmark's ImageNet section: the time of every stage of the demo's ImageNet run at 224x224.

It measures time, not accuracy. No ImageNet and no pretrained weights can be downloaded where it
was written, so it makes an ImageNet-layout folder of generated JPEGs (500x375 pixels, about 106 KB
each, near ImageNet's average file size, so decoding costs what it would) and a MobileNetV2 weights
file with random weights and BatchNorm statistics (a random init with its all-equal BatchNorm
statistics would export differently). Every top-1 those runs print is meaningless.

Each row is one run of the demo's `main()` on that folder with the demo's defaults (workers,
batch size, eval_backend auto: onnxruntime on a CPU, check_images) and one set of PTQ passes, at
one calib_size and val_size. The table fits each stage as seconds = fixed + per image x images,
through the stage's median seconds at two sizes of what it grows with, and says what that gives
for the seed's run (1000 calibration, 50000 validation images). bench/sections.py registers
`imagenet_section` (a `time_row` per row) and `imagenet_text` for its report.
"""
import math
import tempfile
from functools import partial
from pathlib import Path
from statistics import median

import torch

import finn_mobilenetv2 as demo
from bench.report import code_line, markdown_table
from bench.rows import resumable
from bench.section_code import code_hash
from finn_demo.data.datasets import IMAGENET_WNIDS
from finn_demo.testing.imagenet_folder import make_imagenet_folder

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)

# The PTQ passes of each run. GPTQ, GPFQ and Qronos each set the final weights: one per run.
RUNS = {
    "none": [],
    "act_eq+bias_corr+gpfq+bn_corr": ["--act_eq=True", "--bias_corr=True", "--gpfq=True",
                                      "--bn_corr=True"],
    "gptq": ["--gptq=True"],
    "qronos": ["--qronos=True"],
    "gptq (Brevitas)": ["--gptq=True", "--gpxq_impl=brevitas"],  # its stage: "gptq (Brevitas)"
}
BREVITAS_RUNS = {"gptq (Brevitas)": "gptq"}  # runs whose PTQ stage is Brevitas' own loop
# Stages by what their time grows with; the evaluation is split into its parts: one pass over the
# validation images ("validation data": decoding them, once) scores both exports in onnxruntime.
CALIB_STAGES = ("calibration", "act_eq", "bias_corr", "gptq", "gpfq", "qronos", "bn_corr",
                *BREVITAS_RUNS)
VAL_STAGES = ("validation data", "float scoring", "quantized scoring")
FIXED_STAGES = ("load", "float export", "QCDQ export", "export", "export checks")
AGREEMENT = "agreement check"  # the float and Brevitas models in PyTorch on the first agreement_images
SEED_SIZES = {"calib_size": 1000, "val_size": 50000}
CLASSES = 10  # class folders of the generated data (their number does not change the timings)


# --------------------------------------------------------------------------------- the inputs
def random_weights_file(path, seed=0):
    """A torchvision MobileNetV2 state_dict with random weights and BatchNorm statistics."""
    from torchvision.models import mobilenet_v2
    generator = torch.Generator().manual_seed(seed)
    model = mobilenet_v2()
    for norm in (module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)):
        size = norm.num_features
        norm.weight.data = 0.5 + torch.rand(size, generator=generator)
        norm.bias.data = 0.1 * torch.randn(size, generator=generator)
        norm.running_mean = 0.1 * torch.randn(size, generator=generator)
        norm.running_var = 0.5 + torch.rand(size, generator=generator)
    torch.save(model.state_dict(), path)
    return Path(path)


def generated_imagenet(root, train_images, val_images):
    """(data_dir, weights file) in `root`: at least the given numbers of train and val images."""
    wnids = IMAGENET_WNIDS[:CLASSES]
    make_imagenet_folder(root / "imagenet", wnids, [], math.ceil(train_images / CLASSES), (500, 375))
    make_imagenet_folder(root / "imagenet", [], wnids, math.ceil(val_images / CLASSES), (500, 375), 1)
    return root / "imagenet", random_weights_file(root / "mobilenet_v2_random.pth")


# ----------------------------------------------------------------------------------- the rows
def imagenet_section(context):
    """(rows, failures) of the time table in the section's CSV, on a folder generated for the run."""
    args = context.args
    if not args["imagenet_calib_sizes"]:
        return [], []
    keys = time_keys(args["imagenet_calib_sizes"], args["imagenet_val_sizes"])
    with tempfile.TemporaryDirectory() as folder:
        data_dir, weights = generated_imagenet(Path(folder), args["imagenet_calib_sizes"][-1],
                                               args["imagenet_val_sizes"][-1])
        return resumable(context.path, keys, partial(time_row, data_dir=data_dir, weights=weights),
                         "ImageNet time table", code_hash(CODE))


def time_keys(calib_sizes, val_sizes):
    """The rows: each set of PTQ passes at both calibration sizes (with the smaller val_size), and
    one run without PTQ at the larger val_size (the validation stages do not depend on PTQ)."""
    keys = [{"run": run, "calib_size": str(size), "val_size": str(val_sizes[0])}
            for run in RUNS if run != "none" for size in calib_sizes]
    keys.append({"run": "none", "calib_size": str(calib_sizes[0]), "val_size": str(val_sizes[-1])})
    return keys


def time_row(key, data_dir, weights, flags=()):
    """One demo run for `key` (run, calib_size, val_size): each stage's seconds, as strings.
    `flags`: more demo flags (the benchmark passes none: the demo's defaults are what it times)."""
    with tempfile.TemporaryDirectory() as folder:
        result = demo.main(demo.make_args([
            f"--data_dir={data_dir}", f"--weights={weights}", "--device=cpu",
            f"--calib_size={key['calib_size']}", f"--val_size={key['val_size']}",
            f"--output={Path(folder) / 'model.onnx'}", *RUNS[key["run"]], *flags]))
    row = stage_row(result)
    if key["run"] in BREVITAS_RUNS:  # fitted apart from the fast path's stage of the same name
        row[f"s_{key['run']}"] = row.pop(f"s_{BREVITAS_RUNS[key['run']]}")
    return row


def stage_row(result):
    """The seconds of each stage of a demo run on ImageNet (its `main()` result), and the settings
    they depend on, as strings; the float and the quantized evaluation also in their parts."""
    seconds = dict(result.seconds)
    float_eval, quant = result.float_eval, result.quant_eval
    if quant.agreement is None:
        raise RuntimeError("the evaluation did not run in onnxruntime (eval_backend)")
    seconds.update({"float export": float_eval.export_seconds, "float scoring": float_eval.forward_seconds,
                    "QCDQ export": quant.export_seconds, "quantized scoring": quant.forward_seconds,
                    AGREEMENT: quant.agreement_seconds})
    row = {f"s_{name}": f"{value:.2f}" for name, value in seconds.items()}
    args = result.args
    row.update({"threads": str(torch.get_num_threads()), "agreement_images": str(quant.agreement_images),
                "check_images": str(args.check_images), "workers": str(args.workers)})
    return row


# ---------------------------------------------------------------------------------- the table
def fit(points):
    """(fixed seconds, seconds per image) of the line through the median seconds at the smallest
    and the largest size; `points` are (size, seconds)."""
    sizes = sorted({size for size, _ in points})
    at = {size: median(seconds for point_size, seconds in points if point_size == size)
          for size in sizes}
    low, high = sizes[0], sizes[-1]
    if low == high:
        return at[low], 0.0
    per_image = (at[high] - at[low]) / (high - low)
    return at[low] - per_image * low, per_image


def _points(rows, stage, size_name):
    column = f"s_{stage}"
    return [(int(row[size_name]), float(row[column])) for row in rows if row.get(column)]


# What each stage's time grows with: the row's column, and its size in the seed's run.
GROWS_WITH = {**{stage: None for stage in FIXED_STAGES},
              **{stage: "calib_size" for stage in CALIB_STAGES},
              **{stage: "val_size" for stage in VAL_STAGES}, AGREEMENT: "agreement_images"}


def seed_size(size_name):
    return demo.FLAGS["agreement_images"] if size_name == "agreement_images" else SEED_SIZES[size_name]


def stage_fits(rows):
    """{stage: (grows with, measured (size, s) points, fixed s, s per image, s at the seed's sizes)}
    for the stages the rows measured. A stage that grows with nothing is the median of its runs."""
    fits = {}
    for stage, size_name in GROWS_WITH.items():
        points = _points(rows, stage, size_name or "val_size")
        if not points:
            continue
        if size_name is None:
            seconds = median(value for _, value in points)
            fits[stage] = (size_name, points, seconds, 0.0, seconds)
        else:
            fixed, per_image = fit(points)
            fits[stage] = (size_name, points, fixed, per_image, fixed + per_image * seed_size(size_name))
    return fits


def _measured(size_name, points):
    if size_name is None:
        return f"median of {len(points)} runs: " + ", ".join(f"{value:.1f}" for _, value in points)
    sizes = sorted({size for size, _ in points})
    return ", ".join(f"{size}: {median(v for s, v in points if s == size):.1f}" for size in sizes)


def time_table(rows):
    """(header, cells) of the time table: one row per stage."""
    header = ["stage", "grows with", "measured s (images: median s)", "fixed s",
              "s per 1000 images", "s at the seed's sizes"]
    cells = []
    for stage, (size_name, points, fixed, per_image, at_seed) in stage_fits(rows).items():
        grows = "-" if size_name is None else (
            f"{size_name} (up to {seed_size(size_name)})" if size_name == "agreement_images" else size_name)
        cells.append([stage, grows, _measured(size_name, points), f"{fixed:.1f}",
                      "-" if size_name is None else f"{per_image * 1000:.1f}",
                      f"{at_seed:.1f}" if at_seed < 10 else f"{at_seed:.0f}"])
    return header, cells


def seed_run_minutes(rows):
    """(minutes of the seed's run without PTQ, {PTQ pass: the minutes it adds}) by the fits."""
    fits = stage_fits(rows)
    base = (*FIXED_STAGES, "calibration", *VAL_STAGES, AGREEMENT)
    total = sum(fits[stage][4] for stage in base if stage in fits) / 60
    passes = {stage: fits[stage][4] / 60 for stage in CALIB_STAGES if stage in fits and stage not in base}
    return total, passes


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
        f"sizes* applies the fit to {SEED_SIZES['calib_size']} calibration and {SEED_SIZES['val_size']} "
        f"validation images (agreement: {demo.FLAGS['agreement_images']}). The evaluation is "
        "shown in its parts: one pass over the validation images decodes each once (*validation "
        "data*: the pass's time outside the models) and scores the float model exported as ONNX "
        "(*float scoring*) and the quantized model exported as QCDQ (*quantized scoring*) in "
        "onnxruntime on the same batches; the two exports (*float export*, *QCDQ export*: "
        "writing each file and opening it in onnxruntime) are fixed; the *agreement check* runs "
        "the float and the Brevitas model in PyTorch on the first agreement images. GPFQ "
        "and Qronos run fast_gpxq.py (the default gpxq_impl) like GPTQ; *gptq (Brevitas)* is GPTQ "
        "in Brevitas' own gptq_mode loop (`--gpxq_impl=brevitas`), for comparison. "
        "*load* lists the generated folder's few hundred files (torchvision's ImageFolder, "
        "as on ImageNet).", "",
        markdown_table(*time_table(rows)), "",
        f"The seed's run without PTQ (8-bit, calib {SEED_SIZES['calib_size']}, val "
        f"{SEED_SIZES['val_size']}), by these fits: about "
        f"{minutes:.0f} min. Each PTQ pass adds: " + ", ".join(
            f"{name} {value:.0f} min" for name, value in passes.items()) + ".", "",
        *code_line(rows, CODE)]
