"""The benchmark's FINN section: what each bit-width setting costs in hardware, by FINN's own
estimates, beside its accuracy.

Each row is one demo run with the setting's flags and `--finn_build=True` (no PTQ: the
estimates follow the bit widths and layer shapes; PTQ only moves the weights within them).
finn_build.py compiles the export into FINN's hardware layers, checks them against the QONNX
graph and sums FINN's per-layer estimates (res_estimation, exp_cycles_per_layer) for the part
and clock of its flags. benchmark.py calls `finn_section`, then `finn_text` and `plot_finn`.
"""
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

import finn_mobilenetv2 as demo
from bench.grid import BIT_DESCRIPTIONS, BIT_SETTINGS
from bench.report import code_line, markdown_table
from bench.rows import code_hash, resumable
from finn_demo.files import atomic_path

CODE = ("bench/finn_estimates.py", "bench/grid.py")  # the rows use the grid's bit-width settings
RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


def finn_section(args, passed, common, path):
    """(rows, failures) of the FINN builds, one per setting of --finn_bits; none without FINN."""
    from check_export import FINN_INSTALL_HINT, finn_available
    if not args["finn_bits"]:
        return [], []
    if not finn_available():
        return [], [("FINN section", f"skipped: {FINN_INSTALL_HINT}")]
    keys = [{"bits": name, **common, "row_flags": " ".join(BIT_SETTINGS[name])}
            for name in args["finn_bits"]]
    # FINN's graph passes are single-threaded Python: builds run grid_jobs at a time.
    threads = max(1, torch.get_num_threads() // args["grid_jobs"])
    return resumable(path, keys, partial(_measure, passed=passed), "FINN builds", code_hash(*CODE),
                     args["grid_jobs"], threads)


def _measure(key, passed):
    return finn_row([*passed, *BIT_SETTINGS[key["bits"]]])


def finn_row(flags):
    """One demo run with `flags` and the FINN build: accuracy, FINN's estimates, the build's checks."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = demo.main(demo.make_args(
            [*flags, "--finn_build=True", f"--output={Path(folder) / 'model.onnx'}"]))
        wall = time.perf_counter() - start
    build = result.build
    row = {"quant_top1": f"{result.quant_top1:.2f}", "float_top1": f"{result.float_top1:.2f}",
           "finn_checks": "passed" if not build.failures else "failed: " + build.failures[0],
           "s_finn_build": f"{sum(build.seconds.values()):.0f}", "s_demo_total": f"{wall:.0f}"}
    if build.estimates is None:  # the build stopped before the estimates (split partition)
        return row
    estimates = build.estimates
    row.update({key: f"{estimates['totals'][key]:.0f}" for key in RESOURCES})
    row.update({
        "hw_layers": str(len(estimates["layers"])),
        "estimated_fps": f"{estimates['estimated_fps']:.0f}",
        "bottleneck": f"{estimates['bottleneck']} ({estimates['max_cycles']} cycles)",
        "target_fps": str(estimates["target_fps"]), "clock_ns": str(estimates["clock_ns"]),
        "part": estimates["part"],
        "threshold_LUT": f"{_lut_of(estimates, 'Thresholding'):.0f}"})
    return row


def _lut_of(estimates, prefix):
    return sum(layer["LUT"] for layer in estimates["layers"] if layer["op_type"].startswith(prefix))


def best_top1(grid_rows, row):
    """(best PTQ name, its top-1) of the FINN row's bit-width setting in the accuracy grid, or
    None where the grid has no rows of that setting from the same float model."""
    group = [grid_row for grid_row in grid_rows if grid_row["bits"] == row["bits"]
             and grid_row["float_top1"] == row["float_top1"]]
    if not group:
        return None
    best = max(group, key=lambda row: float(row["quant_top1"]))
    return best["ptq"], float(best["quant_top1"])


def finn_table(rows, grid_rows, descriptions):
    """(header, cells) of the table: per bit-width setting, its accuracy and FINN's estimates."""
    header = ["bits", "setting", "float top-1 %", "top-1 % (no PTQ)", "best PTQ top-1 %", "LUT",
              "of which thresholds", "BRAM_18K", "URAM", "DSP", "est. frames/s", "bottleneck",
              "hw layers", "FINN checks", "build (s)"]
    cells = []
    for row in rows:
        best = best_top1(grid_rows, row)
        cells.append([row["bits"], descriptions[row["bits"]], row["float_top1"], row["quant_top1"],
                      f"{best[1]:.2f} ({best[0]})" if best else "-",
                      *(row.get(key, "-") for key in ("LUT", "threshold_LUT", "BRAM_18K", "URAM",
                                                       "DSP", "estimated_fps", "bottleneck",
                                                       "hw_layers")),
                      row["finn_checks"], row["s_finn_build"]])
    return header, cells


def float_mismatches(rows, grid_rows):
    """The FINN rows whose float top-1 differs from the grid's (another model, or another
    evaluation): their accuracy cannot be read beside the grid's."""
    grid_float = {row["float_top1"] for row in grid_rows}
    return [row for row in rows if grid_float and row["float_top1"] not in grid_float]


def finn_text(rows, grid_rows, plot_name):
    first = rows[0]
    mismatches = float_mismatches(rows, grid_rows)
    check = (f"**Float top-1 differs from the grid's** ({', '.join(sorted({r['float_top1'] for r in grid_rows}))}%) "
             f"in rows {', '.join(row['bits'] for row in mismatches)}: not the same model or evaluation, "
             "do not compare their accuracy with the grid's." if mismatches else
             "Float top-1: the same as the grid's in every row (the same model).")
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
        check, "",
        markdown_table(*finn_table(rows, grid_rows, BIT_DESCRIPTIONS)), "",
        f"![accuracy against FINN's LUT and frame-rate estimates]({plot_name})", "",
        *code_line(rows, CODE)]


def plot_finn(rows, path):
    """Top-1 (no PTQ, the FINN row's own run) against FINN's LUT estimate and against its frame
    rate, one point per setting."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    points = [(row["bits"], float(row["LUT"]), float(row["estimated_fps"]), float(row["quant_top1"]))
              for row in rows if row.get("LUT")]
    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, index, label in ((axes[0], 1, "LUTs (FINN estimate)"),
                             (axes[1], 2, "frames/s (FINN estimate)")):
        for point in points:
            ax.scatter(point[index], point[3], color="tab:blue")
            ax.annotate(point[0], (point[index], point[3]), textcoords="offset points",
                        xytext=(4, 4), fontsize=8)
        ax.set_xlabel(label)
        ax.grid(linewidth=0.3)
    axes[0].set_ylabel("quantized top-1 (%), no PTQ")
    figure.suptitle("MobileNetV2 for FINN: accuracy against hardware cost per bit-width setting")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
