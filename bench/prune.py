"""Drop the stale rows from the benchmark's CSVs (run alone, after a full benchmark run).

The CSVs keep every row of every key (bench/rows.py), so after a run on a new machine, whose
digits model trains to other weights, the old model's rows stay beside the new ones, and after a
setting's flags change (a new key) the rows of its old flags stay too. Each CSV keeps the rows of
its newest code (the code of its last row, the last row written) whose `model` that code
measured; a CSV without a model column is left as it is.

    python -m bench.prune                 # results/
    python -m bench.prune --out_dir=DIR
    python -m bench.prune --csv=qat.csv   # one section's CSV, after a full run of that section
"""
import sys
from pathlib import Path

from bench.rows import read_rows, write_rows
from finn_demo.common.configurator import ConfigError, flags_of, run_module

out_dir = "results"  # the folder of the benchmark's CSVs
csv = ""  # prune only this CSV of out_dir (a section re-run alone); "" = every CSV
FLAGS = flags_of(globals())


def prune_rows(rows):
    """(kept rows, dropped count): the rows of the newest code."""
    if not rows or "model" not in rows[-1]:
        return rows, 0
    newest = rows[-1]["code"]
    kept = [row for row in rows if row["code"] == newest]
    return kept, len(rows) - len(kept)


def main(args):
    folder = Path(args["out_dir"])
    paths = sorted(folder.glob(args["csv"] or "*.csv"))
    if not paths:
        raise ConfigError(f"--out_dir={folder}: no {args['csv'] or 'CSV files'} there; point it at the "
                          "benchmark's out_dir" + (" and --csv at one of its CSVs" if args["csv"] else ""))
    for path in paths:
        rows = read_rows(path)
        kept, dropped = prune_rows(rows)
        if dropped:
            write_rows(path, kept)
        print(f"{path}: kept {len(kept)} rows, dropped {dropped}")


if __name__ == "__main__":
    run_module(main, FLAGS, sys.argv[1:])
