"""The benchmark's RESULTS.md: the header that says what made it, each section's code hash,
the model check across sections, a section's lines, and the file written whole. The sections'
own tables and texts are in their modules (bench/sections.py lists them)."""
import os
import platform
from pathlib import Path
from importlib.metadata import version

import torch

from bench.rows import ROOT
from bench.section_code import module_file, section_status
from finn_demo.common.files import atomic_path


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
        "its model and its *code*: a sha256 (first 12 hex digits) over the section's own bench "
        "module and every file of this repository it imports (bench/section_code.py: function-level "
        "imports only from the section's module and the tools it calls, so only the FINN section "
        "hashes the FINN build's code), named under each section with the commit its newest row "
        "was measured at. A resumed row was measured at that same code; one measured at other code is measured "
        "again. `python -m bench.stale` names the sections whose code has changed since, and the "
        "files that changed.", "",
        f"Model: the float weights' sha256 (first 12 hex digits, bench/rows.py `model_hash`) is "
        f"`{model}` in every section this run measured with the demo's model (grid, seeds' seed "
        "0, speed on the demo data, GPFQ/Qronos speed); a section marked not re-run keeps the "
        "model its rows were measured with (its CSV's `model` column); the FINN section's rows "
        "name their own (the ImageNet-shaped model).", ""]


def code_line(rows, module):
    """Which code measured a section's rows (the rows' code column), at which commit, and whether
    that code (`module` and what it imports) has changed since, as of writing the report."""
    if not rows:  # a section with nothing measured has no code to name
        return []
    codes = sorted({row.get("code", "?") for row in rows})
    status = section_status("", rows, [module])
    path = module_file(module, ROOT)
    own = path.relative_to(ROOT).as_posix() if path else module
    since = ("has not changed since" if status.fresh else
             f"has changed since, in {', '.join(status.changed) or 'files git cannot name'}")
    return [f"*Code* of this section's rows: `{'`, `'.join(codes)}` ({own} and the "
            "repository files it imports). Its newest row was measured at commit "
            f"{status.commit or '(not recorded)'}; the code it depends on {since} "
            "(`python -m bench.stale` tells for today's code).", ""]


def kept_rows(path):
    """The rows a section's CSV holds that RESULTS.md shows when a run leaves the section off:
    each key's newest row (a key is a row's columns before `code`; rows are appended as
    measured), of the models its newest code measured. A partial re-run (some keys at newer
    code) thus keeps the other keys' rows beside its own; `python -m bench.prune` after a full
    run drops what the newest code no longer measures."""
    from bench.rows import read_rows
    rows = read_rows(path)
    if not rows or "code" not in rows[-1]:
        return rows
    key = list(rows[-1])[:list(rows[-1]).index("code")]
    models = {row.get("model") for row in rows if row["code"] == rows[-1]["code"]}
    newest = {tuple(row[name] for name in key): row for row in rows if row.get("model") in models}
    return [row for row in rows if newest.get(tuple(row[name] for name in key)) is row]


def kept_text(path, text, *args):
    """A section this run left off, rendered from kept_rows, so that a partial re-run keeps
    RESULTS.md whole; its code line says whether that code has changed since. Nothing if the CSV
    holds no rows."""
    rows = kept_rows(path)
    if not rows:
        return []
    title, *rest = text(rows, *args)
    return [title, "", f"*Not re-run by this command: the rows {Path(path).name} already held.*",
            *rest]


def section_lines(render, ran, rows, context):
    """A section's lines: `render` of this run's rows; where this run left the section off
    (`ran` false), of the rows its CSV already holds (kept_text); nothing where it ran and
    measured nothing."""
    if rows:
        return render(rows, context)
    return [] if ran else kept_text(context.path, render, context)


def failures_text(failures):
    if not failures:
        return []
    return ["## Failed rows (not in the tables; the next run tries them again)", "",
            *[f"- {key}: {message}" for key, message in failures], ""]


def write_report(path, lines):
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
