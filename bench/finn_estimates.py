"""The benchmark's FINN section: MobileNetV2 at ImageNet's 224x224, compiled by finn_build.py and
fitted to each board, per bit-width setting, by FINN's estimates.

Each setting's export is one demo run in ImageNet mode on the ImageNet-shaped model
(bench/imagenet_shaped.py: torchvision's MobileNetV2, 1000 classes, seeded random weights with
recalibrated BatchNorm, 16 generated calibration images, no PTQ: the costs follow the layer
shapes and bit widths). finn_build.py builds it for each board of --finn_boards: FINN's frontend
to hardware layers once per setting (the next boards reuse them, `--reuse`), then per board
FINN's partition, specialization and bit-width minimization, the fit to the board, FINN's
estimate reports and the checks. bench/sections.py registers `finn_section` and `finn_render`.
"""
import tempfile
import time
from functools import partial
from pathlib import Path

import finn_mobilenetv2 as demo
from bench.grid import BIT_SETTINGS, PTQ_SETTINGS, QAT, ranked_by_bits
from bench.report import code_line, markdown_table, pyplot, save_figure
from bench.rows import model_hash, resumable
from bench.section_code import code_hash
from finn_demo.quant.accumulators import widest_hidden

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)
PLOT_NAME = "finn.png"
RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")
VERIFY_IMAGES = 1  # the hardware graph's check at 224x224 runs FINN's Python execution: one image
# frames/s goals per board (docs/finn_build.md): (finn-examples' MobileNet-v1 anchor, the project's target)
GOALS = {"ZCU104": (450, 1000), "U250": (1800, 2000)}
# What FINN compiles: (bit-width setting, PTQ setting). Each grid bit-width setting without PTQ
# (the costs follow the shapes and bit widths), AXE's GPFQ, whose narrower accumulators (and
# thresholds) change the design, and the low-bit settings trained with QAT (the designs QAT makes
# accurate: their exports must build and pass the checks too).
FINN_SETTINGS = {**{name: (name, None) for name in BIT_SETTINGS},
                 "W4A4+acc14": ("W4A4", "gpfq+acc14"),
                 **{f"{name}+qat": (name, QAT) for name in ("W4A4", "W3A3", "W4A4+in4")}}
# "+thr": the same export built with `--requant=False`, every activation as FINN's thresholds:
# the designs before the project's exact Requant layers (finn_build.py's default), beside them.
THRESHOLDS_ONLY = "+thr"
FINN_SETTINGS.update({name + THRESHOLDS_ONLY: FINN_SETTINGS[name]
                      for name in ("W8A8", "W4A4+add8", "W4A4")})


def setting_flags(name):
    """The demo's flags of a FINN setting's export."""
    bits, ptq = FINN_SETTINGS[name]
    return [*BIT_SETTINGS[bits], *(PTQ_SETTINGS[ptq] if ptq else [])]


def build_flags(name):
    """finn_build.py's flags particular to a FINN setting."""
    return ["--requant=False"] if name.endswith(THRESHOLDS_ONLY) else []


def export_name(name):
    """The folder of a setting's export and build: a "+thr" setting shares its export (and, by
    --reuse, the build's steps 1-4, which come before the Requant step)."""
    return name.removesuffix(THRESHOLDS_ONLY)


def finn_section(context):
    """(rows, failures): one row per setting of --finn_bits and board of --finn_boards."""
    args = context.args
    from finn_demo.finn_install import FINN_INSTALL_HINT, finn_available
    if not args["finn_bits"] or not args["finn_boards"]:
        return [], []
    if not finn_available():
        return [], [("FINN section", f"skipped: {FINN_INSTALL_HINT}")]
    from bench.imagenet_shaped import load_model, make_folder, make_weights
    with tempfile.TemporaryDirectory() as folder:
        data = make_folder(folder)
        weights = make_weights(Path(folder) / "mobilenet_v2.pth", data)
        model = model_hash(load_model(weights))
        keys = [{"bits": bits, "board": board, "row_flags": " ".join(setting_flags(bits)),
                 "build_flags": " ".join(build_flags(bits)),
                 "verilator_layers": args["finn_verilator"], "model": model}
                for bits in args["finn_bits"] for board in args["finn_boards"]]
        measure = partial(_measure, folder=Path(folder), data=data, weights=weights)
        return resumable(context.path, keys, measure, "FINN builds", code_hash(CODE))


def export(folder, data, weights, bits):
    """The setting's 224x224 export of the ImageNet-shaped model (one per setting, kept)."""
    output = folder / export_name(bits) / "model.onnx"
    if not output.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
        demo.main(demo.make_args([
            f"--data_dir={data}", f"--weights={weights}", f"--output={output}", "--calib_size=16",
            "--val_size=16", "--batch_size=8", "--workers=0", "--check_export=False",
            "--device=cpu", "--eval_backend=brevitas", *setting_flags(bits)]))
    return output


def _measure(key, folder, data, weights):
    import finn_build
    model = export(folder, data, weights, key["bits"])
    simulate = (["--outputs=estimates,verilator", f"--verilator_layers={key['verilator_layers']}"]
                if key["verilator_layers"] else [])
    start = time.perf_counter()
    result = finn_build.main(finn_build.make_args([
        f"--model={model}", f"--out_dir={model.parent / 'build'}", f"--board={key['board']}",
        f"--verify_images={VERIFY_IMAGES}", "--reuse=True", *build_flags(key["bits"]), *simulate]))
    return {**finn_row(result, time.perf_counter() - start), **simulated_columns(result)}


def finn_row(result, seconds):
    """A build's figures: fit, frame rate, resources (with % of the board), checks, seconds."""
    row = {"finn_checks": "passed" if not result.failures else "failed: " + result.failures[0],
           "s_build": f"{seconds:.0f}"}
    estimates = result.estimates
    if estimates is None:  # the build stopped before the estimates
        return row
    totals, percent = estimates["totals"], estimates["use_percent"]
    row.update({key: f"{totals[key]:.0f}" for key in RESOURCES})
    row.update({f"{key}_pct": f"{percent[key]:.0f}" for key in RESOURCES if key in percent})
    row.update({
        "fits": "yes" if estimates["fits"] else "no",
        "over": "; ".join(f"{key} +{value:.0f}" for key, value in estimates["over"].items()),
        "estimated_fps": f"{estimates['estimated_fps']:.0f}",
        "bottleneck": f"{estimates['bottleneck']} ({estimates['max_cycles']} cycles)",
        "finn_LUT": f"{estimates['finn_totals']['LUT']:.0f}",
        "hw_layers": str(len(estimates["layers"])), "clock_ns": str(estimates["clock_ns"]),
        "max_acc_bits": str(widest_hidden(estimates["accumulator_bits"])[1]),
        "part": estimates["part"]})
    return row


def simulated_columns(result):
    """The Verilator figures of a build with verilator in --outputs: each simulated layer's cycles
    per frame against FINN's estimate, how many were bit-exact, and the frame rate restated from
    the simulated cycles (verilator.simulated_rate)."""
    if result.simulated is None or result.estimates is None:
        return {}
    from finn_demo.hw.verilator import simulated_rate
    layers = result.simulated["layers"]
    return {"sim_layers": "; ".join(f"{layer['name']} {layer['cycles']} ({layer['estimated_cycles']})"
                                    for layer in layers),
            "sim_bit_exact": f"{sum(layer['bit_exact'] for layer in layers)}/{len(layers)}",
            "simulated_fps": f"{simulated_rate(result.simulated, result.estimates)[0]:.0f}",
            "simulator": result.simulated["simulator"]}


def qat_accuracy(qat_rows):
    """{FINN setting with QAT: (mean top-1 %, its description)} from the QAT section's rows (mean
    over its digits models, the drop beside it)."""
    from bench.qat import qat_summary
    summary, found = qat_summary(qat_rows), {}
    for name, (bits, ptq) in FINN_SETTINGS.items():
        figures = summary.get((bits, ptq))
        if figures is not None:
            sd = "" if figures["drop_sd"] is None else f" +- {figures['drop_sd']:.2f}"
            found[name] = (figures["float_top1"] - figures["drop"],
                           f"{ptq}; drop {figures['drop']:.2f}{sd}, {len(figures['seeds'])} models")
    return found


def best_accuracy(grid_rows):
    """{FINN setting: (top-1 %, PTQ setting)}: its bit-width setting's best row in the grid
    (grid.ranked); a setting with its own PTQ setting, that row."""
    best = {}
    for name, (bits, ptq) in FINN_SETTINGS.items():
        group = [row for row in ranked_by_bits(grid_rows).get(bits, []) if ptq in (None, row["ptq"])]
        if group:
            best[name] = (float(group[0]["quant_top1"]), group[0]["ptq"])
    return best


def finn_table(rows, accuracy):
    """(header, cells): per setting and board, the fit and FINN's estimates, and the setting's
    best digits top-1 from the grid (`accuracy`, best_accuracy's)."""
    header = ["bits", "board", "fits", "est. frames/s", "simulated frames/s", "LUT (% of board)", "BRAM_18K (%)",
              "URAM (%)", "DSP (%)", "digits top-1 % (best PTQ)", "widest hidden accumulator (bits)",
              "of the LUT: FINN's",
              "over the budget", "bottleneck", "simulated layers: cycles per frame (FINN's estimate)",
              "bit-exact in Verilator", "FINN checks", "build (s)"]
    cells = []
    for row in rows:
        shares = [f"{row[key]} ({row.get(key + '_pct', '-')}%)" if key in row else "-"
                  for key in RESOURCES]
        top1 = (f"{accuracy[row['bits']][0]:.2f} ({accuracy[row['bits']][1]})"
                if row["bits"] in accuracy else "- (not in the grid)")
        cells.append([row["bits"], row["board"], row.get("fits", "-"), row.get("estimated_fps", "-"),
                      row.get("simulated_fps") or "-", *shares, top1, row.get("max_acc_bits", "-"),
                      row.get("finn_LUT", "-"), row.get("over") or "-", row.get("bottleneck", "-"),
                      row.get("sim_layers") or "-", row.get("sim_bit_exact") or "-",
                      row["finn_checks"], row["s_build"]])
    return header, cells


def finn_plot(rows, accuracy, path):
    """Per board, each setting's best digits top-1 against its estimated frames/s (hollow: the
    design closest to fitting, which does not fit). Nothing is drawn without both figures."""
    points = [row for row in rows if row["bits"] in accuracy and row.get("estimated_fps")]
    if not points:
        return False
    import matplotlib.ticker
    plt = pyplot()
    boards = list(dict.fromkeys(row["board"] for row in points))
    figure, axes = plt.subplots(1, len(boards), figsize=(4.5 * len(boards), 4), squeeze=False)
    for axis, board in zip(axes[0], boards):
        for row in (row for row in points if row["board"] == board):
            fps, top1 = float(row["estimated_fps"]), accuracy[row["bits"]][0]
            fits = row.get("fits") == "yes"
            axis.scatter(fps, top1, s=50, facecolors="tab:blue" if fits else "none",
                         edgecolors="tab:blue")
            axis.annotate(row["bits"] + ("" if fits else " (does not fit)"), (fps, top1),
                          textcoords="offset points", xytext=(6, 4), fontsize=8)
        goals = GOALS.get(board, ())
        for goal in goals:
            axis.axvline(goal, color="grey", linestyle=":", linewidth=1)
        spread = [float(row["estimated_fps"]) for row in points if row["board"] == board] + list(goals)
        axis.set_xscale("log")
        axis.set_xlim(min(spread) / 2, max(spread) * 2)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        axis.set_xlabel("estimated frames/s (224x224, FINN), dotted: goals")
        axis.set_ylabel("digits top-1 % (best PTQ of the grid)")
        axis.set_title(board)
        axis.grid(linewidth=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    return True


def goal_lines(rows):
    """Per board with a goal, the fastest fitting design against it."""
    lines = []
    for board, (anchor, target) in GOALS.items():
        fitting = [row for row in rows if row["board"] == board and row.get("fits") == "yes"]
        if not any(row["board"] == board for row in rows):
            continue
        if not fitting:
            lines.append(f"- {board}: no setting fits (goal {anchor} frames/s, target {target}).")
            continue
        best = max(fitting, key=lambda row: float(row["estimated_fps"]))
        fps = float(best["estimated_fps"])
        verdict = ("target met" if fps >= target else "goal met, target not" if fps >= anchor
                   else "goal not met")
        lines.append(f"- {board}: {fps:.0f} frames/s ({best['bits']}): {verdict} "
                     f"(goal {anchor}, target {target}).")
    return lines


def front(rows, accuracy):
    """{board: the fitting settings on the accuracy/speed front}: those that no other fitting
    setting of the board matches on both estimated frames/s and best digits top-1 (`accuracy`,
    best_accuracy's) while beating it on one."""
    points = {}
    for row in rows:
        if row.get("fits") == "yes" and row["bits"] in accuracy and row.get("estimated_fps"):
            points.setdefault(row["board"], []).append(
                (row["bits"], float(row["estimated_fps"]), accuracy[row["bits"]][0]))

    def beaten(point, others):
        _, fps, top1 = point
        return any(o_fps >= fps and o_top1 >= top1 and (o_fps, o_top1) != (fps, top1)
                   for _, o_fps, o_top1 in others)
    return {board: [name for name, *figures in found if not beaten((name, *figures), found)]
            for board, found in points.items()}


def front_lines(rows, accuracy):
    """One line per board: the settings on its front (front), from the table's own figures."""
    return [f"- {board}: {', '.join(names)}" for board, names in front(rows, accuracy).items()]


def finn_render(rows, context):
    """finn_text with the grid's best accuracy per setting, and the plot of `rows` beside it."""
    accuracy = {**best_accuracy(context.grid_rows), **qat_accuracy(context.rows.get("qat", []))}
    drawn = finn_plot(rows, accuracy, context.out / PLOT_NAME)
    return finn_text(rows, accuracy, PLOT_NAME if drawn else None)


def finn_text(rows, accuracy, plot_name=None):
    """The FINN section of RESULTS.md; `plot_name`: finn_plot's file beside it, if drawn."""
    return [
        "## FINN: MobileNetV2 at 224x224 fitted to each board", "",
        "Each row: finn_build.py (FINN's builder) on one setting's 224x224 export of the "
        "ImageNet-shaped model (bench/imagenet_shaped.py: torchvision's MobileNetV2 with 1000 "
        "classes, random weights, BatchNorm recalibrated on generated images; no PTQ but a "
        "setting's own, such as QAT's on those images), fitted "
        "to the board: the highest frame rate at a 5 ns clock whose estimate fits FINN's "
        "utilization limits of the board (70% of LUTs, 80% of BRAM, URAM, DSPs). FINN's "
        "analytical estimates, not synthesis. *LUT*: FINN's per-layer estimates plus the "
        "project's stand-in for the RTL matrix units FINN counts at 0 and FINN's estimates of "
        "the FIFOs and data-width converters the stitched design will have (skip FIFOs sized "
        "analytically); *of the LUT: FINN's*: the layers' own FINN figures alone. *FINN checks*: "
        f"the hardware graph on {VERIFY_IMAGES} image(s), exact against FINN's streamlined graph "
        "and layer by layer against the QONNX graph (docs/checks.md), one dataflow "
        "partition, FINN's estimates after applying the folding config equal to the fit's. "
        "These weights are random: the accuracy beside each row is the same setting's best "
        "top-1 in the grid above (digits data, the PTQ setting in brackets), and a `+qat` "
        "setting's the QAT section's mean over its models, with its drop. *W4A4+acc14*: W4A4 "
        "with AXE's GPFQ at 14-bit accumulators (`--gpfq=True --accumulator_bit_width=14`); "
        "*widest hidden accumulator*: FINN's widest accumulator after its bit-width "
        "minimization, first conv and classifier aside (AXE leaves them). *simulated*: "
        "finn_build.py's Verilator step (`--outputs=estimates,verilator --verilator_layers=` the "
        "row's `verilator_layers`, docs/finn_build.md) on one image: `slowest` is each RTL type's "
        "slowest layer by FINN's estimate and the first sliding window, each layer's cycles per "
        "frame (steady, frame 2 after frame 1) beside FINN's estimate; *simulated frames/s* is the "
        "design's rate with those cycles in place of the estimates (HLS layers, which Verilator "
        "cannot run here, keep FINN's).", "",
        markdown_table(*finn_table(rows, accuracy)), "",
        *([f"![digits top-1 against estimated frames/s per board]({plot_name})", ""]
          if plot_name else []),
        "On the front, per board (settings that fit, and that no other fitting setting matches "
        "on both estimated frames/s and digits top-1 while beating it on one):", "",
        *(front_lines(rows, accuracy) or ["- none: no setting with both figures fits"]), "",
        "Goals (frames/s; anchors: finn-examples' MobileNet-v1 at 4-bit, about 450 on the ZCU104 "
        "and 1800 on the U250):", "", *goal_lines(rows), "",
        *code_line(rows, CODE)]
