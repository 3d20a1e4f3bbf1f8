"""The README's and docs' text that states benchmark results, made from the committed rows of
results/, so that it cannot drift from them: `python -m bench.readme` prints each block, and
tests/test_docs.py fails where a page does not hold it word for word.

The recipe rule (one answer per bit-width setting): the PTQ setting with the lowest mean drop
over the digits models the benchmark ran the setting on, ties broken by the higher mean logit
SQNR (bench/seeds.py `winner`). Where the seeds section ran a bit-width setting, its PTQ settings
on three models (seed 0's rows are the grid's); elsewhere the grid's rows on the one model, where
the rule is the grid's own ranking (bench/grid.py `ranked`).
"""
from pathlib import Path
from statistics import median

from bench.grid import BIT_DESCRIPTIONS, BIT_SETTINGS, PTQ_SETTINGS, QAT
from bench.qat import qat_summary
from bench.qat_time import IMAGENET_TRAIN_IMAGES, imagenet_epoch_hours
from bench.report import markdown_table
from bench.rows import read_rows
from bench.seeds import mean_sd, summarize, winner, with_base_rows

RESULTS = Path(__file__).resolve().parents[1] / "results"


def read_csv(name, results=RESULTS):
    """The rows of results/`name` (bench.rows.read_rows)."""
    return read_rows(Path(results) / name)


def recipe_summary(grid_rows, seeds_rows):
    """{bits: (models, summary of that bit-width setting's rows)}: seeds' bit-width settings over
    the grid's rows as seed 0 plus seeds.csv, restricted to the PTQ settings every seed ran; the
    others over the grid's rows alone."""
    seeds_bits = {row["bits"] for row in seeds_rows}
    over_seeds = summarize(with_base_rows(seeds_rows, grid_rows))
    summary = {}
    for bits in (name for name in BIT_SETTINGS if any(row["bits"] == name for row in grid_rows)):
        if bits in seeds_bits:
            groups = {key: value for key, value in over_seeds.items() if key[0] == bits}
        else:
            groups = summarize([{**row, "seed": "0"} for row in grid_rows if row["bits"] == bits])
        summary[bits] = groups
    return summary


def recipes(grid_rows, seeds_rows):
    """{bits: (recipe's PTQ setting, its figures, the no-PTQ row's figures)} by the rule above."""
    chosen = {}
    for bits, groups in recipe_summary(grid_rows, seeds_rows).items():
        best, _ = winner(groups, bits)
        chosen[bits] = (best, groups[bits, best], groups[bits, "none"])
    return chosen


def recipe_table(grid_rows, seeds_rows):
    """The README's accuracy table: per bit-width setting, the recipe the rule picks."""
    cells = []
    for bits, (ptq, figures, plain) in recipes(grid_rows, seeds_rows).items():
        cells.append([bits, BIT_DESCRIPTIONS[bits], len(figures["seeds"]), f"{figures['float_top1']:.2f}",
                      mean_sd(plain["drop"], plain["drop_sd"]), f"`{ptq}`",
                      mean_sd(figures["drop"], figures["drop_sd"]),
                      mean_sd(figures["sqnr_db"], figures["sqnr_sd"])])
    return markdown_table(["bits", "setting", "models", "float top-1 % (mean)", "drop without PTQ (points)",
                           "recipe", "its drop (points)", "its logit SQNR (dB)"], cells)


def recipe_command(grid_rows, seeds_rows, bits):
    """The demo's command line for `bits` with its recipe."""
    ptq = recipes(grid_rows, seeds_rows)[bits][0]
    return " ".join(["python finn_mobilenetv2.py", *BIT_SETTINGS[bits], *PTQ_SETTINGS[ptq]])


def qat_table(qat_rows):
    """The README's QAT table: per bit-width setting of results/qat.csv, the mean drop without
    PTQ, with the PTQ QAT starts from and with QAT on top, and what QAT costs on a CPU core."""
    summary, cells = qat_summary(qat_rows), []
    for bits in dict.fromkeys(bits for bits, _ in summary):
        settings = {ptq: figures for (name, ptq), figures in summary.items() if name == bits}
        trained = next((ptq for ptq in settings if ptq.endswith("+qat")), None)
        start = trained and trained[:-len("+qat")]
        if trained is None or start not in settings or "none" not in settings:
            continue
        qat = settings[trained]
        cells.append([bits, len(qat["seeds"]), f"{qat['float_top1']:.2f}",
                      *(mean_sd(settings[name]["drop"], settings[name]["drop_sd"])
                        for name in ("none", start, trained)),
                      mean_sd(qat["sqnr_db"], qat["sqnr_sd"]), f"{qat['qat_seconds'] / 60:.1f}"])
    return markdown_table(["bits", "models", "float top-1 % (mean)", "drop without PTQ (points)",
                           "drop with `relu6_calibrated+qronos+bn_corr`", "drop with that + QAT",
                           "QAT's logit SQNR (dB)", "QAT's CPU minutes (one thread)"], cells)


def qat_command(bits):
    """The demo's command line for `bits` with QAT on its PTQ recipe, as the QAT section runs it."""
    return " ".join(["python finn_mobilenetv2.py", *BIT_SETTINGS[bits], *PTQ_SETTINGS[QAT]])


def qat_cost_text(time_rows):
    """docs/qat.md's sentence on an ImageNet epoch's cost, from results/qat_time.csv's rows."""
    parts = [f"{imagenet_epoch_hours(row):.0f} hours on {row['device']} ({row['processor']}, "
             f"{row['threads']} threads: {row['images_per_s']} training images/s)" for row in time_rows]
    measured = "; ".join(parts) if parts else "not measured yet"
    gpu = "" if any(row["device"].startswith("cuda") for row in time_rows) else (
        " No GPU row yet: benchmark.py with `--qat_time_devices=cpu,cuda` on a machine with one "
        "adds it.")
    return (f"One QAT epoch over ImageNet's {IMAGENET_TRAIN_IMAGES} training images at 224x224, "
            f"by the QAT time section's rate (results/qat_time.csv): {measured}.{gpu}")


THRESHOLDS_ONLY = "+thr"  # bench/finn_estimates.py's settings built with --requant=False


def share(row, key):
    """A resource of a FINN row with its share of the board: `160096 (70%)`."""
    return f"{row[key]} ({row[key + '_pct']}%)" if row.get(key) else "-"


def finn_cost_table(finn_rows):
    """The README's (and docs/finn_build.md's) FINN table: per setting and board, the fit, the
    frame rates and the resources, from results/finn.csv's rows in their order (the designs
    finn_build.py makes by default: the thresholds-only "+thr" rows are in requant_text)."""
    cells = [[row["bits"], row["board"], row.get("fits", "-"), row.get("estimated_fps", "-"),
              row.get("simulated_fps") or "-",
              *(share(row, key) for key in ("LUT", "BRAM_18K", "URAM", "DSP"))]
             for row in finn_rows if not row["bits"].endswith(THRESHOLDS_ONLY)]
    return markdown_table(["bits", "board", "fits", "est. frames/s", "simulated frames/s", "LUT",
                           "BRAM_18K", "URAM", "DSP"], cells)


def build_times_text(finn_rows):
    """docs/finn_build.md's sentence on build times, from results/finn.csv's `s_build`."""
    boards = list(dict.fromkeys(row["board"] for row in finn_rows))
    settings = list(dict.fromkeys(row["bits"] for row in finn_rows))
    seconds = {(row["bits"], row["board"]): int(row["s_build"]) for row in finn_rows}
    first, others = boards[0], boards[1:]
    text = (f"In the benchmark's FINN rows (`s_build` in `results/finn.csv`: each whole "
            f"`finn_build.py` call, its Verilator step on the slowest layers included, where the "
            f"row's `verilator_layers` names one), each setting's build for the {first}, steps 1-4 "
            f"included, took "
            + ", ".join(f"{bits} {seconds[bits, first]} s" for bits in settings))
    for board in others:
        text += (f"; the same exports for the {board} (`--reuse`: steps 1-4 loaded where the "
                 f"same run built them first) took "
                 + ", ".join(f"{seconds[bits, board]} s" for bits in settings if (bits, board) in seconds))
    firsts = {bits: seconds[bits, first] for bits in settings}
    slowest = max(firsts, key=firsts.get)
    ratio = firsts[slowest] / median(firsts.values())
    if ratio > 2:
        text += (f". {slowest} took {ratio:.1f} times the median: the rows keep no per-step times, "
                 "so they do not say where that time went")
    return text + "."


def suite_time_text(time_rows):
    """README's sentence on how long the test command takes, from results/suite_time.csv's rows
    of the newest commit measured (bench/suite_time.py)."""
    newest = [row for row in time_rows if row["commit"] == time_rows[-1]["commit"]]
    parts = []
    for workers, how in (("2", "`CI=1 bash .ci/run` took"), ("1", "the set-up and then the suite in one process took")):
        runs = [row for row in newest if row["workers"] == workers]
        if runs:
            minutes = sorted(int(row["seconds"]) / 60 for row in runs)
            span = (f"{minutes[0]:.1f} min" if len(minutes) == 1 else
                    f"{minutes[0]:.1f} to {minutes[-1]:.1f} min in {len(minutes)} runs")
            failed = sum(row["exit_status"] != "0" for row in runs)
            parts.append(f"{how} {span}" + (f", {failed} of them failing" if failed else ""))
    cores = newest[-1]["machine"].split(", ")[-1].replace(" cores", "")
    return (f"Timed from a fresh clone on a {cores}-core machine with empty caches, "
            f"{'; '.join(parts)} (`python -m bench.suite_time`, results/suite_time.csv).")


def requant_text(finn_rows):
    """docs/finn_build.md's before-and-after of `--requant`: each setting with a "+thr" row, per
    board, the default design against the thresholds-only one (results/finn.csv)."""
    by_key = {(row["bits"], row["board"]): row for row in finn_rows}

    def design(row):
        fits = "fits" if row.get("fits") == "yes" else "does not fit"
        return (f"{fits}, {row.get('estimated_fps', '-')} frames/s, LUT {share(row, 'LUT')}, "
                f"BRAM_18K {share(row, 'BRAM_18K')}, URAM {share(row, 'URAM')}, "
                f"DSP {share(row, 'DSP')}")
    lines = []
    for (bits, board), before in by_key.items():
        after = by_key.get((bits.removesuffix(THRESHOLDS_ONLY), board))
        if bits.endswith(THRESHOLDS_ONLY) and after is not None:
            lines.append(f"- {after['bits']} on the {board}: with Requant {design(after)}; "
                         f"thresholds only {design(before)}.")
    return "\n".join(lines)


def main():
    grid, seeds, finn = read_csv("benchmark.csv"), read_csv("seeds.csv"), read_csv("finn.csv")
    print("README.md, the accuracy table:\n")
    print(recipe_table(grid, seeds))
    print("\nREADME.md, the 4-bit-activation command:\n")
    print(recipe_command(grid, seeds, "W4A4"))
    print("\nREADME.md, the QAT table:\n")
    print(qat_table(read_csv("qat.csv")))
    print("\nREADME.md and docs/qat.md, the QAT command:\n")
    print(qat_command("W3A3"))
    print("\ndocs/qat.md, what an ImageNet epoch costs:\n")
    print(qat_cost_text(read_csv("qat_time.csv")))
    print("\nREADME.md and docs/finn_build.md, the FINN table:\n")
    print(finn_cost_table(read_csv("finn.csv")))
    print("\ndocs/finn_build.md, Requant against thresholds only:\n")
    print(requant_text(finn))
    print("\ndocs/finn_build.md, build times:\n")
    print(build_times_text(finn))
    print("\nREADME.md, the test command's time:\n")
    print(suite_time_text(read_csv("suite_time.csv")))


if __name__ == "__main__":
    main()
