"""The benchmark's QAT section: quantization-aware training on top of PTQ, beside that PTQ and no
PTQ, on every digits model of the run (the pass-through model and those of `--seeds`).

Each row is a grid row (bench/grid.py `run_row`) of one digits model; the section measures all of
its rows itself, the pass-through model's too, so every setting of a bit width is compared on the
same models. Rows of `qat_bits` x `qat_ptq` x models; the table gives each setting's mean and
sample sd over the models and its CPU seconds (one thread a row). bench/sections.py registers
`qat_section` and `qat_text`.
"""
from functools import partial
from statistics import mean

import finn_mobilenetv2 as demo
from bench.grid import BIT_DESCRIPTIONS, measure_rows
from bench.report import code_line, markdown_table
from bench.seeds import mean_sd, run_seed_row, seed_common, seed_keys, summarize

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)


def qat_section(context):
    """(rows, failures): qat_bits x qat_ptq on the pass-through model and each of --seeds'."""
    args, passed, common = context.args, context.passed, context.common
    base_seed = demo.make_args(passed).digits_seed
    keys = seed_keys(args["qat_bits"], args["qat_ptq"], base_seed, common)
    for seed in args["seeds"]:
        keys += seed_keys(args["qat_bits"], args["qat_ptq"], seed, seed_common(passed, common, seed))
    return measure_rows(args, keys, partial(run_seed_row, passed=passed), context.path, "QAT", CODE)


def qat_summary(rows):
    """{(bits, ptq): figures over the models}: seeds.summarize's, plus the mean CPU seconds of a
    whole row (`seconds`) and of its QAT stage (`qat_seconds`, None without QAT)."""
    summary = summarize(rows)
    for (bits, ptq), figures in summary.items():
        group = [row for row in rows if (row["bits"], row["ptq"]) == (bits, ptq)]
        figures["seconds"] = mean(float(row["s_demo_total"]) for row in group)
        qat = [float(row["s_qat"]) for row in group if row.get("s_qat")]
        figures["qat_seconds"] = mean(qat) if qat else None
    return summary


def qat_table(summary):
    cells = [[bits, ptq, " ".join(map(str, figures["seeds"])), f"{figures['float_top1']:.2f}",
              mean_sd(figures["drop"], figures["drop_sd"]),
              mean_sd(figures["sqnr_db"], figures["sqnr_sd"]), f"{figures['seconds']:.0f}",
              "-" if figures["qat_seconds"] is None else f"{figures['qat_seconds']:.0f}"]
             for (bits, ptq), figures in summary.items()]
    return markdown_table(["bits", "PTQ / QAT", "models (seeds)", "float top-1 % (mean)",
                           "drop (points, mean +- sd)", "logit SQNR (dB, mean +- sd)",
                           "CPU s per run (mean)", "of which QAT (s)"], cells)


def qat_text(rows):
    """The QAT section of RESULTS.md."""
    models = {int(row["seed"]): row["model"] for row in rows}
    summary = qat_summary(rows)
    settings = "; ".join(f"*{bits}*: {BIT_DESCRIPTIONS[bits]}"
                         for bits in dict.fromkeys(bits for bits, _ in summary))
    return [
        "## Quantization-aware training after PTQ", "",
        "Each bit-width setting without PTQ, with the PTQ recipe QAT starts from, and with QAT on "
        "top of it (`+qat`: bench/grid.py QAT_FLAGS), each row a demo run on one digits model. "
        "Every row of this section is measured here, on these models: "
        + ", ".join(f"seed {seed} `{models[seed]}`" for seed in sorted(models))
        + ". *drop*: float top-1 minus quantized; *sd*: the sample standard deviation over the "
        "models; *CPU s*: a whole run's wall seconds at one PyTorch thread (training the digits "
        "model excluded: cached). " + settings + ".", "",
        qat_table(summary), "",
        *code_line(rows, CODE)]
