"""The benchmark's speed section: float, Brevitas and onnxruntime evaluation side by side, and
the wall time of the demo's second run.

Each row times one bit-width setting's three paths in one process, the repeats interleaved, on
the demo's validation data or on random 224x224 images; `demo_run_seconds` times the whole
`python finn_mobilenetv2.py` process as a user runs it, the digits model already cached.
"""
import os
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import median

import torch
from tqdm import tqdm

import finn_mobilenetv2 as demo
from bench.grid import BIT_SETTINGS
from bench.report import code_line, markdown_table
from bench.rows import ROOT, resumable
from bench.section_code import code_hash
from finn_demo.fast_eval import export_qcdq, ort_session

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)
MODEL_FLAGS = ("--cache_dir=", "--digits_")  # the flags that choose the digits model


def speed_section(context):
    """(rows, failures) of the speed table in the section's CSV."""
    args, passed, common = context.args, context.passed, context.common
    sources = {"demo data": common, "224x224": {"flags": f"{args['speed_224_images']} images",
                                                "model": "random (seed 0)"}}
    keys = [{"input": source, "bits": name, **identity, "row_flags": " ".join(BIT_SETTINGS[name])}
            for source, identity in sources.items() for name in args["speed_bits"]]
    measure = partial(speed_row, passed=passed, repeats=args["speed_repeats"],
                      images_224=args["speed_224_images"])
    return resumable(context.path, keys, measure, "speed", code_hash(CODE))


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
    """(wall times, failure) of `python finn_mobilenetv2.py` with the seed flags but the benchmark's
    model flags (its cache_dir and digits_* flags: the model the other sections measured, cached
    by then), as a user runs it a second time: the whole process, imports included.

    A run that fails ends the timing: failure is then (what ran, its exit status and last line).
    """
    model_flags = [arg for arg in passed if arg.startswith(MODEL_FLAGS)]
    seconds = []
    for _ in tqdm(range(runs), desc="demo runs", dynamic_ncols=True):
        with tempfile.TemporaryDirectory() as folder:
            command = [sys.executable, "finn_mobilenetv2.py", *model_flags,
                       f"--output={Path(folder) / 'm.onnx'}"]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, cwd=ROOT)
            if done.returncode:
                last_line = (done.stderr.decode(errors="replace").strip().splitlines() or ["?"])[-1]
                return [], ({"demo runs": " ".join(command[1:])},
                            f"exit status {done.returncode}: {last_line}")
            seconds.append(time.perf_counter() - start)
    return seconds, None


# ---------------------------------------------------------------------------------- the report
def speed_render(rows, context):
    return speed_text(rows, context.args)


def speed_text(rows, args):
    header = ["input", "bits", "threads", "float img/s (eager)", "Brevitas img/s (eager)",
              "ORT QCDQ img/s", "Brevitas / float", "ORT / float", "load average (before -> after)"]
    cells = [[row["input"], row["bits"], row["threads"], row["ips_float_eager"],
              row["ips_brevitas_eager"], row["ips_ort_qcdq"], row["brevitas_vs_float"],
              row["ort_vs_float"], row.get("load_1min", "-")] for row in rows]
    return [
        "## Speed", "",
        f"Median of {args['speed_repeats']} interleaved timed passes per path, all three paths "
        "in one process with the same threads, whose waits sleep rather than spin "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, onnxruntime allow_spinning=0). "
        "*demo data*: the demo's validation loader "
        "(32x32, trained digits model). *224x224*: a seeded random-weight MobileNetV2 "
        f"(1000 classes) on {args['speed_224_images']} random 224x224 images, batch 32: "
        "images/s only, its outputs are meaningless.", "",
        markdown_table(header, cells), "", *code_line(rows, CODE)]


def demo_text(seconds):
    from finn_demo.finn_install import finn_available
    finn = "runs" if demo.FLAGS["check_finn"] and finn_available() else "is off"
    return [
        "## The demo's second run", "",
        f"`python finn_mobilenetv2.py` with its seed flags (but the benchmark's cache_dir and digits_* "
        f"flags, if any), the digits model already cached: median "
        f"{median(seconds):.1f} s wall over {len(seconds)} runs (min {min(seconds):.1f} s, max "
        f"{max(seconds):.1f} s), the whole process from start to exit, export checks included "
        f"(FINN's frontend check {finn} with the seed flags here).", ""]
