"""The benchmark's RESULTS.md: the header that says what made it, each section's code hash,
the model check across sections, and the file written whole. The sections' own tables and
texts are in their modules (grid, speed, finn_estimates, imagenet_times, gpxq_speed)."""
import os
import platform
from importlib.metadata import version

import torch

from bench.rows import FINN_BUILD_CODE, SHARED_CODE
from finn_demo.files import atomic_path


def pyplot():
    """matplotlib's pyplot on its file-only backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(figure, path):
    """Write `figure` to `path` as PNG, whole or not at all, and free it."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    pyplot().close(figure)


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def header_text(command, commit, model):
    """The report's first lines: what made it, at which code, on what, with which model."""
    return [
        "# Benchmark: MobileNetV2 PTQ for FINN", "",
        f"Made by `{command}` with benchmark.py at {commit} ({platform.machine()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__}, brevitas {version('brevitas')}, "
        f"onnxruntime {version('onnxruntime')}). Every row of every section is keyed by its flags, "
        f"its model and its *code*: a sha256 (first 12 hex digits) over the files {', '.join(SHARED_CODE)} "
        f"and the section's own bench module (the FINN section also {', '.join(FINN_BUILD_CODE)}, "
        "which only it runs), named under each section. A resumed row was measured "
        "at that same code; one measured at other code is measured again.", "",
        f"Model: the float weights' sha256 (first 12 hex digits, bench/rows.py `model_hash`) is "
        f"`{model}` in every section that uses the demo's model (grid, speed on the demo data, "
        "GPFQ/Qronos speed); the FINN section's rows name their own (the ImageNet-shaped model).", ""]


def code_line(rows, files):
    """Which code measured a section's rows (the rows' code column), and over which files."""
    codes = sorted({row.get("code", "?") for row in rows})
    return [f"*Code* of this section's rows: `{'`, `'.join(codes)}` (shared files and "
            f"{', '.join(files)}).", ""]


def failures_text(failures):
    if not failures:
        return []
    return ["## Failed rows (not in the tables; the next run tries them again)", "",
            *[f"- {key}: {message}" for key, message in failures], ""]


def write_report(path, lines):
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
