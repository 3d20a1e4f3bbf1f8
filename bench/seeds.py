"""The benchmark's seeds section: the key grid rows on more digits models, as mean and spread.

One digits model's test set has 497 images, so one image is 0.2 points of top-1, and a model
trained from another seed quantizes differently: a 0.2-point lead of one PTQ setting on one model
can be noise. This section runs the grid rows of `seeds_bits` x `seeds_ptq` on the digits models
of the extra training seeds (`--digits_seed=N`, each model trained and cached on first use),
takes the pass-through model's rows from the grid where it ran them (measuring the others here),
and reports each setting's mean and sample standard deviation over the seeds, and which PTQ
setting wins each bit-width setting by more than the spread.
"""
from functools import partial
from statistics import mean, stdev

import finn_mobilenetv2 as demo
from bench.grid import grid_keys, measure_rows, run_row
from bench.report import code_line, markdown_table
from bench.rows import demo_model_hash
from finn_demo.common.configurator import ConfigError

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)


def parse_seeds(text, base_seed):
    """The extra training seeds of `--seeds` ("1,2"; "" = none), none of them `base_seed`, the
    pass-through model's (the grid's rows are that seed's)."""
    try:
        seeds = [int(seed) for seed in text.split(",") if seed.strip()]
    except ValueError:
        raise ConfigError(f"--seeds={text}: give digits training seeds as integers, like 1,2") from None
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds={text}: a seed is listed twice")
    if base_seed in seeds:
        raise ConfigError(f"--seeds={text}: seed {base_seed} is the pass-through model's "
                          f"(--digits_seed={base_seed}, the grid's rows); list only the others")
    return seeds


# ---------------------------------------------------------------------------------- the rows
def seeds_section(context):
    """(rows, failures): every seed's rows of seeds_bits x seeds_ptq, each with its `seed`.
    The pass-through model's rows come from the grid's rows where the grid ran them; the others
    are measured (or resumed) in the section's CSV."""
    args, passed, common, grid_rows = context.args, context.passed, context.common, context.grid_rows
    base_seed = demo.make_args(passed).digits_seed
    wanted = {(bits, ptq) for bits in args["seeds_bits"] for ptq in args["seeds_ptq"]}
    reused = [{**row, "seed": str(base_seed)} for row in grid_rows if (row["bits"], row["ptq"]) in wanted]
    done = {(row["bits"], row["ptq"]) for row in reused}
    keys = [key for key in seed_keys(args["seeds_bits"], args["seeds_ptq"], base_seed, common)
            if (key["bits"], key["ptq"]) not in done]
    for seed in args["seeds"]:
        keys += seed_keys(args["seeds_bits"], args["seeds_ptq"], seed, seed_common(passed, common, seed))
    measured, failures = measure_rows(args, keys, partial(run_seed_row, passed=passed), context.path,
                                      "seeds", CODE)
    return in_row_order(args, reused + measured), failures


def with_base_rows(seed_rows, grid_rows, base_seed=0):
    """`seed_rows` (the other seeds' rows, as seeds.csv holds them) with the pass-through model's
    rows of the same settings taken from `grid_rows`, as seeds_section takes them (unless
    `seed_rows` hold them already)."""
    if any(row["seed"] == str(base_seed) for row in seed_rows):
        return seed_rows
    pairs = {(row["bits"], row["ptq"]) for row in seed_rows}
    base = [{**row, "seed": str(base_seed)} for row in grid_rows if (row["bits"], row["ptq"]) in pairs]
    return base + seed_rows


def in_row_order(args, rows):
    """`rows` in the section's order: seeds_bits, then seeds_ptq, then seed."""
    return sorted(rows, key=partial(_row_order, args))


def seeds_render(rows, context):
    """seeds_text for rows with or without the pass-through model's (as seeds.csv holds them,
    when the section is kept): those come from the grid's rows, as seeds_section takes them."""
    base_seed = demo.make_args(context.passed).digits_seed
    with_base = with_base_rows(rows, context.grid_rows, base_seed)
    return seeds_text(in_row_order(context.args, with_base))


def _row_order(args, row):
    def place(names, name):  # a kept row's setting the flags no longer name goes last
        return names.index(name) if name in names else len(names)
    return (place(args["seeds_bits"], row["bits"]), place(args["seeds_ptq"], row["ptq"]),
            int(row["seed"]))


def seed_keys(bits_names, ptq_names, seed, common):
    """The grid's keys of `bits_names` x `ptq_names` on seed `seed`'s model (`common`: its flags
    and model, seed_common's), with their `seed`."""
    # Only the Brevitas model's figures are reported here: no onnxruntime evaluation.
    return [{"seed": str(seed), **key}
            for key in grid_keys(bits_names, ptq_names, common, fast_eval=False)]


def seed_common(passed, common, seed):
    """The flags and model of seed `seed`'s rows (the model trained and cached here, not in a job)."""
    flag = f"--digits_seed={seed}"
    return {"flags": f"{common['flags']} {flag}", "model": demo_model_hash([*passed, flag])}


def run_seed_row(key, passed):
    """`run_row` on the digits model of the key's seed."""
    return run_row(key, [*passed, f"--digits_seed={key['seed']}"])


# ---------------------------------------------------------------------------------- the report
def summarize(rows):
    """{(bits, ptq): figures over the seeds}: seeds, means, and sample standard deviations
    (None with one seed)."""
    groups = {}
    for row in rows:
        groups.setdefault((row["bits"], row["ptq"]), []).append(row)
    return {setting: _figures(group) for setting, group in groups.items()}


def _figures(group):
    def values(column):
        return [float(row[column]) for row in group if row.get(column)]
    return {"seeds": sorted(int(row["seed"]) for row in group),
            "float_top1": _mean(values("float_top1")),
            "drop": mean(values("drop")), "drop_sd": _sd(values("drop")),
            "sqnr_db": _mean(values("sqnr_db")), "sqnr_sd": _sd(values("sqnr_db")),
            "agreement": _mean(values("float_agreement"))}


def _mean(values):
    return mean(values) if values else None  # None: a column the rows lack


def _sd(values):
    return stdev(values) if len(values) > 1 else None  # sample sd: None with one seed


def winner(summary, bits_name):
    """(winner, runner-up or None) of a bit-width setting: lowest mean drop, ties broken by the
    higher mean SQNR (as the grid's `ranked`)."""
    def rank(ptq):
        figures = summary[bits_name, ptq]
        sqnr = figures["sqnr_db"]
        return figures["drop"], -sqnr if sqnr is not None else float("inf")
    ordered = sorted((ptq for bits, ptq in summary if bits == bits_name), key=rank)
    return ordered[0], (ordered[1] if len(ordered) > 1 else None)


def verdict(summary, bits_name):
    """One line: which PTQ setting wins `bits_name`, by how much, against the larger sd."""
    best, runner_up = winner(summary, bits_name)
    if runner_up is None:
        return f"{best}: the only PTQ setting"
    first, second = summary[bits_name, best], summary[bits_name, runner_up]
    margin = second["drop"] - first["drop"]
    spreads = [sd for sd in (first["drop_sd"], second["drop_sd"]) if sd is not None]
    if not spreads:
        return f"{best} leads {runner_up} by {margin:.2f} points on one seed: no spread to compare"
    spread = max(spreads)
    if margin > spread:
        times = f"{margin / spread:.1f} x the larger sd" if spread else "the seeds agree exactly"
        return f"{best} beats {runner_up} by {margin:.2f} points, {times} ({spread:.2f})"
    return f"{best} leads {runner_up} by {margin:.2f} points: within the spread (larger sd {spread:.2f})"


def mean_sd(value, sd):
    """A figure as a table shows it: "mean", "mean +- sd" (sd None: one seed), "-" (none)."""
    if value is None:
        return "-"
    return f"{value:.2f}" if sd is None else f"{value:.2f} +- {sd:.2f}"


def seeds_table(summary):
    cells = [[bits, ptq, " ".join(map(str, fig["seeds"])), mean_sd(fig["float_top1"], None),
              mean_sd(fig["drop"], fig["drop_sd"]), mean_sd(fig["sqnr_db"], fig["sqnr_sd"]),
              mean_sd(fig["agreement"], None)] for (bits, ptq), fig in summary.items()]
    return markdown_table(["bits", "PTQ", "seeds", "float top-1 % (mean)", "drop (points, mean +- sd)",
                           "logit SQNR (dB, mean +- sd)", "same top-1 as float % (mean)"], cells)


def winners_table(summary):
    bit_names = list(dict.fromkeys(bits for bits, _ in summary))
    return markdown_table(["bits", "winner by mean drop: margin over the runner-up vs the spread"],
                          [[bits, verdict(summary, bits)] for bits in bit_names])


def seeds_text(rows):
    """The seeds section of RESULTS.md: which models, the mean +- sd table, the winners."""
    models = {int(row["seed"]): row["model"] for row in rows}
    summary = summarize(rows)
    return [
        "## PTQ settings over digits training seeds", "",
        "The key grid rows on digits models trained from other seeds (`--digits_seed`), so a "
        "difference between PTQ settings can be told from noise (one test image is 0.2 points). "
        "Models: " + ", ".join(f"seed {seed} `{models[seed]}`" for seed in sorted(models)) + "; the "
        "pass-through model's rows are the grid's where it ran them (at the grid's code). *sd*: the "
        "sample standard deviation over the seeds. A winner *beats* the runner-up only when its "
        "lead in mean drop exceeds the larger of the two sds.", "",
        seeds_table(summary), "", winners_table(summary), "",
        *code_line(rows, CODE)]
