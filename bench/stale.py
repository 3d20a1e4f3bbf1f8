"""Which sections of the committed results were measured at code that has changed since.

    python -m bench.stale                 # results/
    python -m bench.stale --out_dir=DIR

Every row of results/*.csv records `code`, the hash of the files that compute it
(bench/section_code.py `code_hash`), and, from rows measured with a `commit` column on, the commit it was
measured at. For each section this compares the code of its newest row (its last) with the hash
the benchmark would compute for that section now, and where they differ names the files changed
since that commit (`git diff --name-only COMMIT -- FILES`; for rows without a `commit`, the
commit RESULTS.md's first lines name). A stale section still holds what that code measured: a
change that alters no behaviour does not require measuring it again. Prints one line per
section and exits 0 either way.
"""
import re
import sys
from pathlib import Path

from bench import sections
from bench.rows import read_rows
from bench.section_code import section_status
from finn_demo.common.configurator import ConfigError, flags_of, run_module

out_dir = "results"  # the folder of the benchmark's CSVs and RESULTS.md
FLAGS = flags_of(globals())

REPORT_COMMIT = re.compile(r"with benchmark\.py at commit ([0-9a-f]{4,40})")


def report_commit(folder):
    """The commit RESULTS.md's header names (the commit of rows saved without a `commit`)."""
    report = Path(folder) / "RESULTS.md"
    match = report.exists() and REPORT_COMMIT.search(report.read_text())
    return match.group(1) if match else ""


def statuses(folder):
    """A Status (bench/section_code.py) per section of bench/sections.py whose CSV in `folder`
    has rows."""
    folder = Path(folder)
    fallback = report_commit(folder)
    found = []
    for section in sections.SECTIONS:
        rows = read_rows(folder / section.csv)
        if rows:
            found.append(section_status(section.csv, rows, section.modules, fallback))
    return found


def main(args):
    folder = Path(args["out_dir"])
    if not folder.is_dir():
        raise ConfigError(f"--out_dir={folder}: no such folder; point it at the benchmark's out_dir")
    for status in statuses(folder):
        print(status.line())


if __name__ == "__main__":
    run_module(main, FLAGS, sys.argv[1:])
