"""The benchmark's accuracy grid: bit-width settings x PTQ settings, one demo run per row.

Every row is one run of the demo's own `main()` with the row's flags on top of the pass-through
flags; next to the demo's eager PyTorch figures it also runs the quantized model exported as QCDQ
in onnxruntime (fast_eval.py). `grid_section` measures the rows, `best_table` and `grid_table`
show them, `plot` draws them.
"""
import tempfile
import time
from functools import partial
from pathlib import Path
from statistics import median

import torch

import finn_mobilenetv2 as demo
from bench.report import code_line, kept_rows, markdown_table, pyplot, save_figure
from bench.rows import resumable
from bench.section_code import code_hash
from finn_demo.quant.accumulators import widest_hidden
from finn_demo.common.configurator import ConfigError
from finn_demo.fast_eval import fast_evaluate

PLOT_NAME = "benchmark.png"
CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)

# Bit widths: weights of the pointwise (1x1) convs, and of depthwise / first conv where they
# differ. As in the README's layer-map snippets (which change Conv2d weights only), the classifier
# keeps 8-bit weights. Depthwise and first convs stay at 8 bits in the low-bit settings: they hold
# few weights (little FINN area to save) and lose the most.
_EIGHT_BIT_EDGES = ["--first_conv_bit_width=8", "--last_linear_bit_width=8"]
# FINN designs at 4-bit activations keep an 8-bit input (finn-examples' MobileNet-v1 does).
_FOUR_BIT_ACTS = ["--act_bit_width=4", "--input_bit_width=8"]
BIT_SETTINGS = {
    "W8A8": [],
    "PW4": ["--weight_bit_width=4", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES],
    "W4": ["--weight_bit_width=4", "--last_linear_bit_width=8"],
    "PW3": ["--weight_bit_width=3", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES],
    "PW4A4": ["--weight_bit_width=4", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES, *_FOUR_BIT_ACTS],
    "W4A4": ["--weight_bit_width=4", *_EIGHT_BIT_EDGES, *_FOUR_BIT_ACTS],
    "PW3A4": ["--weight_bit_width=3", "--depthwise_bit_width=8", *_EIGHT_BIT_EDGES, *_FOUR_BIT_ACTS],
    "W4A4+add8": ["--weight_bit_width=4", *_EIGHT_BIT_EDGES, *_FOUR_BIT_ACTS, "--add_bit_width=8"],
    "W3A3": ["--weight_bit_width=3", *_EIGHT_BIT_EDGES, "--act_bit_width=3", "--input_bit_width=8"],
    "W4A4+in4": ["--weight_bit_width=4", *_EIGHT_BIT_EDGES, "--act_bit_width=4", "--input_bit_width=4"],
}
BIT_DESCRIPTIONS = {
    "W8A8": "8-bit weights and activations (the demo's default)",
    "PW4": "pointwise convs 4-bit; depthwise, first conv and classifier 8-bit; activations 8-bit "
           "(README snippet 3)",
    "W4": "every conv 4-bit, classifier 8-bit, activations 8-bit (README snippet 1)",
    "PW3": "pointwise convs 3-bit; depthwise, first conv and classifier 8-bit; activations 8-bit",
    "PW4A4": "pointwise convs 4-bit; depthwise, first conv and classifier 8-bit; activations 4-bit, "
             "input 8-bit",
    "W4A4": "every conv and activation 4-bit; first conv, classifier and input 8-bit (like "
            "finn-examples' MobileNet-v1)",
    "PW3A4": "pointwise convs 3-bit; depthwise, first conv and classifier 8-bit; activations 4-bit, "
             "input 8-bit",
    "W4A4+add8": "as W4A4, with the residual stream (every Add's inputs and output) at 8 bits",
    "W3A3": "every conv and activation 3-bit; first conv and classifier 8-bit, input 8-bit",
    "W4A4+in4": "as W4A4, with the network input 4-bit too (only first conv and classifier 8-bit)",
}
# QAT in the benchmark's rows: every digits training image, this many epochs at this rate, on
# top of the PTQ setting QAT (its name) extends.
QAT_FLAGS = ["--qat_epochs=15", "--qat_lr=1e-3"]
QAT = "relu6_calibrated+qronos+bn_corr+qat"
PTQ_SETTINGS = {
    "none": [],
    "bias_corr": ["--bias_corr=True"],
    "act_eq+bias_corr": ["--act_eq=True", "--bias_corr=True"],
    "gptq": ["--gptq=True"],
    "gpfq": ["--gpfq=True"],
    "act_eq+bias_corr+gpfq": ["--act_eq=True", "--bias_corr=True", "--gpfq=True"],
    "qronos": ["--qronos=True"],
    "qronos+bn_corr": ["--qronos=True", "--bn_corr=True"],
    "relu6_to_relu+qronos": ["--relu6_to_relu=True", "--qronos=True"],
    # AXE: GPFQ keeping every hidden layer's dot products in signed 16/14/12-bit accumulators
    "gpfq+acc16": ["--gpfq=True", "--accumulator_bit_width=16"],
    "gpfq+acc14": ["--gpfq=True", "--accumulator_bit_width=14"],
    "gpfq+acc12": ["--gpfq=True", "--accumulator_bit_width=12"],
    "learned_round": ["--learned_round=layerwise"],
    "learned_round_blockwise": ["--learned_round=blockwise"],
    "bn_corr": ["--bn_corr=True"],
    "bias_corr+bn_corr": ["--bias_corr=True", "--bn_corr=True"],
    # ReLU6's range from calibration (MSE at 4 bits), capped at 6, where the float network clips
    "relu6_calibrated": ["--relu6_range=calibrated"],
    "relu6_calibrated+qronos+bn_corr": ["--relu6_range=calibrated", "--qronos=True", "--bn_corr=True"],
    # ... then each block's activation ranges learned by reconstruction, with QDrop (BRECQ, QDrop)
    "relu6_calibrated+qronos+bn_corr+learned_act_range+qdrop": [
        "--relu6_range=calibrated", "--qronos=True", "--bn_corr=True", "--learned_act_range=True",
        "--qdrop=0.5"],
    # ... then quantization-aware training on top of that PTQ result (QAT_FLAGS)
    QAT: ["--relu6_range=calibrated", "--qronos=True", "--bn_corr=True", *QAT_FLAGS],
    # not PTQ, the other ReLU6 choice: an unclipped ReLU with a calibrated range (Brevitas' default)
    "relu6_to_relu": ["--relu6_to_relu=True"],
    "relu6_to_relu+act_eq+bias_corr+gpfq": ["--relu6_to_relu=True", "--act_eq=True",
                                            "--bias_corr=True", "--gpfq=True"],
}
# The project's accuracy goals on the digits data: (PTQ judged, largest drop in points).
GOALS = {"W8A8": ("none", 0.2), "PW3": ("best", 0.5), "PW4A4": ("best", 1.0)}


def choose(names, settings, flag):
    """The setting names of a comma-separated flag ("all": every one), refusing unknown names."""
    chosen = list(settings) if names == "all" else [name for name in names.split(",") if name]
    unknown = [name for name in chosen if name not in settings]
    if unknown:
        raise ConfigError(f"--{flag}: unknown {', '.join(unknown)}; choose from {', '.join(settings)}")
    return chosen


def grid_section(context):
    """(rows, failures) of the grid in the section's CSV (bench/sections.py Context)."""
    args = context.args
    keys = grid_keys(args["bits"], args["ptq"], context.common, args["fast_eval"])
    return measure_rows(args, keys, partial(run_row, passed=context.passed), context.path,
                        "benchmark grid", CODE)


def grid_keys(bits_names, ptq_names, common, fast_eval):
    """One key per bit-width setting x PTQ setting: its names, `common` (flags, model), its flags."""
    return [{"bits": bits_name, "ptq": ptq_name, **common,
             "row_flags": " ".join([*BIT_SETTINGS[bits_name], *PTQ_SETTINGS[ptq_name]]),
             "fast_eval": str(fast_eval)}
            for bits_name in bits_names for ptq_name in ptq_names]


def measure_rows(args, keys, measure, path, desc, module):
    """`resumable` on grid-like rows, `args["grid_jobs"]` at once, at the code of `module`."""
    # On a machine shared with other jobs, one thread per process avoids the threads of one
    # process spinning while waiting for a descheduled sibling: the grid finishes sooner.
    default_threads = torch.get_num_threads()
    threads = args["grid_threads"] or max(1, default_threads // args["grid_jobs"])
    torch.set_num_threads(threads)
    try:
        return resumable(path, keys, measure, desc, code_hash(module), args["grid_jobs"], threads)
    finally:
        torch.set_num_threads(default_threads)


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
        "float_top1": f"{result.float_eval.top1:.2f}",
        "quant_top1": f"{result.quant_eval.top1:.2f}",
        "drop": f"{result.float_eval.top1 - result.quant_eval.top1:.2f}",
        "float_agreement": f"{result.quant_eval.float_fidelity.agreement:.2f}",
        "sqnr_db": f"{result.quant_eval.float_fidelity.sqnr_db:.2f}",
        "max_acc_bits": str(widest_hidden(result.accumulators)[1]),
        "float_ips_eager": f"{result.float_eval.images_per_s:.1f}",
        "quant_ips_brevitas": f"{result.quant_eval.images_per_s:.1f}",
    }
    if key["fast_eval"] == "True":
        row.update(_fast_figures(result))
    row.update({f"s_{name.replace(' ', '_')}": f"{seconds:.1f}"
                for name, seconds in result.seconds.items()})
    report = getattr(result, "report", None)
    row["export_checks"] = ("off" if report is None else "passed" if report.ok else
                            "failed: " + ", ".join(name for name, check in report.checks.items()
                                                   if check.failed))
    row["s_demo_total"] = f"{wall:.1f}"
    return row


def _fast_figures(result):
    fast = fast_evaluate(result.model, result.val_loader)
    return {"quant_top1_ort": f"{fast.top1:.2f}", "ort_agreement": f"{fast.agreement:.2f}",
            "quant_ips_ort": f"{fast.images_per_s:.1f}",
            "ort_vs_float": f"{fast.images_per_s / result.float_eval.images_per_s:.2f}",
            "s_qcdq_export": f"{fast.export_seconds:.1f}"}


# ---------------------------------------------------------------------------------- the tables
STAGE_NAMES = {"s_qcdq_export": "QCDQ export (fast_eval)"}


def stage_times(row):
    skipped = ("s_demo_total",)
    return ", ".join(f"{STAGE_NAMES.get(name, name[2:].replace('_', ' '))} {value}"
                     for name, value in row.items()
                     if name.startswith("s_") and name not in skipped and value)


def grid_table(rows):
    header = ["bits", "PTQ", "threads", "float top-1 % (eager)", "quant top-1 % (Brevitas)", "drop (points)",
              "same top-1 as float %", "logit SQNR (dB)", "quant top-1 % (ORT QCDQ)", "ORT top-1 agreement %", "float img/s (eager)",
              "quant img/s (Brevitas eager)", "quant img/s (ORT QCDQ)", "ORT / float",
              "export checks", "stage wall times (s)", "demo total (s)"]
    cells = [[row["bits"], row["ptq"], row["threads"], row["float_top1"], row["quant_top1"], row["drop"],
              row.get("float_agreement", "-"), row.get("sqnr_db", "-"), row.get("quant_top1_ort", "-"), row.get("ort_agreement", "-"),
              row["float_ips_eager"], row["quant_ips_brevitas"], row.get("quant_ips_ort", "-"),
              row.get("ort_vs_float", "-"), row.get("export_checks", "-"), stage_times(row),
              row["s_demo_total"]] for row in rows]
    return markdown_table(header, cells)


def ranked(group):
    """A bit-width setting's rows, best first: by the Brevitas model's top-1, then, where top-1
    ties (one test image is 0.2 points of the digits), by its logits' SQNR against the float model."""
    def sqnr(row):
        return float(row.get("sqnr_db") or "-inf")
    return sorted(group, key=lambda row: (float(row["quant_top1"]), sqnr(row)), reverse=True)


def ranked_by_bits(rows):
    """{bit-width setting: its rows, `ranked`}, in the rows' order of settings."""
    return {bits_name: ranked([row for row in rows if row["bits"] == bits_name])
            for bits_name in dict.fromkeys(row["bits"] for row in rows)}


def best_table(rows):
    """The best PTQ setting of each bit-width setting (`ranked`), the runner-up, and its goal."""
    cells = []
    for bits_name, group in ranked_by_bits(rows).items():
        best, runner_up = group[0], (group[1] if len(group) > 1 else None)
        plain = next((row for row in group if row["ptq"] == "none"), None)
        cells.append([bits_name, BIT_DESCRIPTIONS[bits_name], plain["drop"] if plain else "-",
                      best["ptq"], best["quant_top1"], best["drop"], best.get("sqnr_db", "-"),
                      _runner_up_text(runner_up), _goal(bits_name, best, plain)])
    return markdown_table(["bits", "setting", "drop without PTQ", "best PTQ", "its top-1 %",
                           "its drop (points)", "its logit SQNR (dB)", "runner-up: top-1 %, SQNR dB",
                           "goal"], cells)


def _runner_up_text(row):
    return "-" if row is None else f"{row['ptq']}: {row['quant_top1']}, {row.get('sqnr_db', '-')}"


def _goal(bits_name, best, plain):
    if bits_name not in GOALS or best["data"] != "digits":
        return "-"
    ptq_scope, max_drop = GOALS[bits_name]
    judged = plain if ptq_scope == "none" else best
    if judged is None:
        return "-"
    margin = max_drop - float(judged["drop"])
    return (f"drop <= {max_drop} with {'no PTQ' if ptq_scope == 'none' else 'best PTQ'}: "
            f"{'met' if margin >= 0 else 'NOT met'} ({margin:+.2f} points)")


def grid_lines(render, ran, rows, context):
    """The grid's lines, its table even when empty: where this run left the grid off, the rows
    its CSV keeps, with a note above the title (they are also plotted, and ranked beside the
    FINN rows)."""
    shown = rows if ran else kept_rows(context.path)
    note = [f"*The grid was not re-run by this command: the rows {context.path.name} already held "
            "(each row's code and commit are in the CSV).*", ""] if not ran and shown else []
    if shown:
        plot(shown, context.out / PLOT_NAME)
    return note + render(shown, context)


def grid_render(rows, context):
    return grid_text(rows, context.args, PLOT_NAME)


def grid_text(rows, args, plot_name):
    """The grid's part of RESULTS.md: what it ran, its best rows and all rows, and the plot."""
    return [
        f"Data: {_data_text(rows)}. Every row "
        f"is one run of `finn_mobilenetv2.main()` with calib_size={args['calib_size']} and the "
        "row's flags; images/s of float and quantized model come from the same run "
        "(`--eval_backend=brevitas`: one pass over the validation images scores both models in eager "
        "PyTorch on the same batches; each model's images/s counts its own forward calls and the "
        "pass's data loading). Threads: each grid row's are in its threads column.", "",
        "Which path produced each figure: *eager* = the float torchvision model in PyTorch; "
        "*Brevitas* = the fake-quantized Brevitas model in PyTorch (the demo's own figure); "
        "*ORT QCDQ* = the same quantized model exported with `brevitas.export.export_onnx_qcdq` "
        "and run in onnxruntime (fast_eval.py: QDQ fusion into integer kernels off, convs in float "
        "between the Q/DQ pairs, as many threads as PyTorch), with its top-1 agreement with the "
        "Brevitas model. *export checks*: the demo's own check of the exported QONNX graph "
        "(structure, and QONNX execution against the Brevitas model on a few images; FINN's "
        "frontend off, see DEMO_DEFAULTS in benchmark.py).", "",
        "Fidelity to the float model, on the same test images (`finn_demo.evaluate.fidelity`): "
        "*same top-1 as float* is the share of images whose predicted class is the float model's; "
        "*logit SQNR* is 10 log10 of the float logits' energy over the energy of the quantized "
        "logits' difference from them, summed over every image and class. One test image is 0.2 "
        "points of top-1, so settings often tie; the SQNR still orders them, and *best PTQ* is "
        "the highest top-1, ties broken by SQNR (`ranked`).", "",
        "## Bit-width settings", "",
        *[f"- **{name}**: {BIT_DESCRIPTIONS[name]} (`{' '.join(flags) or 'no flags'}`)"
          for name, flags in BIT_SETTINGS.items() if name in {row["bits"] for row in rows}], "",
        "## PTQ settings", "",
        *[f"- **{name}**: `{' '.join(flags) or 'no flags'}`"
          for name, flags in PTQ_SETTINGS.items() if name in {row["ptq"] for row in rows}], "",
        "## Best PTQ per bit-width setting", "", best_table(rows), "",
        "## All rows", "", grid_table(rows), "",
        *ort_summary(rows),
        f"![accuracy per configuration]({plot_name})", "",
        *code_line(rows, CODE)]


def _data_text(rows):
    if not rows:
        return "none"
    if rows[0]["data"] == "digits":
        return (f"the embedded digits (scikit-learn load_digits at 32x32, the demo's split), "
                f"{rows[0]['val_images']} test images")
    return f"ImageNet, {rows[0]['val_images']} validation images"


def ort_summary(rows):
    """A line on ORT QCDQ's top-1 agreement and speed-up over the grid's rows, or none."""
    agreement = [float(row["ort_agreement"]) for row in rows if row.get("ort_agreement")]
    ratios = [float(row["ort_vs_float"]) for row in rows if row.get("ort_vs_float")]
    if not agreement:
        return []
    return [f"ORT QCDQ vs Brevitas top-1 agreement: min {min(agreement):.2f}%, median "
            f"{median(agreement):.2f}% over {len(agreement)} rows. ORT / float images/s: "
            f"median {median(ratios):.2f}x (min {min(ratios):.2f}x, max {max(ratios):.2f}x), "
            "each ratio from one run.", ""]


def plot(rows, path):
    """Quantized top-1 per PTQ setting, one group of bars per bit-width setting."""
    plt = pyplot()
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
    save_figure(figure, path)
