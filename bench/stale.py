"""Which sections of the committed results were measured at code that has changed since.

    python -m bench.stale                 # results/
    python -m bench.stale --out_dir=DIR

Every row of results/*.csv records `code`, the hash of the files that compute it
(bench/rows.py `code_hash`), and, from rows measured with a `commit` column on, the commit it was
measured at. For each section this compares the code of its newest row (its last) with the hash
the benchmark would compute for that section now, and where they differ names the files changed
since that commit (`git diff --name-only COMMIT -- FILES`; for rows without a `commit`, the
commit RESULTS.md's first lines name). A stale section still holds what that code measured: a
change that alters no behaviour does not require measuring it again. Prints one line per
section and exits 0 either way.
"""
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from bench.rows import code_files, code_hash, git, read_rows
from finn_demo.common.configurator import ConfigError, flags_of, run_module

out_dir = "results"  # the folder of the benchmark's CSVs and RESULTS.md
FLAGS = flags_of(globals())

REPORT_COMMIT = re.compile(r"with benchmark\.py at commit ([0-9a-f]{4,40})")


def sections():
    """{CSV name: the section's own files, as its module hashes them with the shared code}."""
    from bench import checks224, finn_estimates, gpxq_speed, grid, imagenet_times, seeds, speed
    return {"benchmark.csv": grid.CODE, "seeds.csv": seeds.CODE, "finn.csv": finn_estimates.CODE,
            "gpxq_speed.csv": gpxq_speed.CODE, "speed.csv": speed.CODE,
            "imagenet_times.csv": imagenet_times.CODE, "checks224.csv": checks224.CODE}


@dataclass
class Status:
    name: str
    code: str  # the code hash of the section's newest row
    commit: str  # the commit that row was measured at ("" where unknown)
    current: str  # the hash of the same files now
    changed: list  # files changed since `commit` (git), where the code differs

    @property
    def fresh(self):
        return self.code == self.current

    def line(self):
        at = f"code {self.code}" + (f" at commit {self.commit}" if self.commit else "")
        if self.fresh:
            return f"{self.name}: fresh ({at}; its code has not changed since)"
        if self.changed:
            return f"{self.name}: stale ({at}; changed since: {', '.join(self.changed)})"
        why = f"git cannot compare with {self.commit}" if self.commit else "no commit recorded"
        return f"{self.name}: stale ({at}, now {self.current}; which files changed is unknown: {why})"


def report_commit(folder):
    """The commit RESULTS.md's header names (the commit of rows saved without a `commit`)."""
    report = Path(folder) / "RESULTS.md"
    match = report.exists() and REPORT_COMMIT.search(report.read_text())
    return match.group(1) if match else ""


def changed_files(commit, files):
    """Those of `files` that differ between `commit` and the working tree, or [] if git cannot say."""
    if not commit:
        return []
    diff = git("diff", "--name-only", commit.split("+")[0], "--", *files)
    return diff.stdout.split() if diff.returncode == 0 else []


def section_status(name, rows, section_files, fallback_commit=""):
    """The Status of one section from its rows (the newest is the last one written)."""
    newest = rows[-1]
    commit = newest.get("commit") or fallback_commit
    current = code_hash(*section_files)
    changed = [] if newest["code"] == current else changed_files(commit, code_files(*section_files))
    return Status(name, newest["code"], commit, current, changed)


def statuses(folder, section_code=None):
    """A Status per section CSV in `folder` that has rows."""
    folder = Path(folder)
    fallback = report_commit(folder)
    found = []
    for name, section_files in (section_code or sections()).items():
        rows = read_rows(folder / name)
        if rows:
            found.append(section_status(name, rows, section_files, fallback))
    return found


def main(args):
    folder = Path(args["out_dir"])
    if not folder.is_dir():
        raise ConfigError(f"--out_dir={folder}: no such folder; point it at the benchmark's out_dir")
    for status in statuses(folder):
        print(status.line())


if __name__ == "__main__":
    run_module(main, FLAGS, sys.argv[1:])
