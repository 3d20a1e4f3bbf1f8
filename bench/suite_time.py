"""How long the README's test command takes from a fresh clone (run alone, on a quiet machine):
each run clones the repository's HEAD into a temporary folder and runs `CI=1 bash .ci/run` there
(set-up and tests, the suite in make test's two workers), or, with `--workers=1`, the set-up and
then the suite in one process. Every run starts with empty caches (the suite's digits model is
trained by every run anyway; Verilator's compile cache goes under a fresh XDG_CACHE_HOME), as on
a new CI machine. Each run appends a row to results/suite_time.csv: the commit, the code's hash,
the workers, the seconds, pytest's closing line.

    python -m bench.suite_time                    # three runs in two workers
    python -m bench.suite_time --runs=1 --workers=1
"""
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.rows import ROOT, git_commit, read_rows, write_rows
from bench.section_code import files_hash
from finn_demo.common.configurator import ConfigError, flags_of, run_module

runs = 3  # fresh-clone runs, one after another
workers = 2  # 2: `CI=1 bash .ci/run` as CI runs it; 1: the same set-up, then the suite in one process
out_dir = "results"  # where suite_time.csv goes
FLAGS = flags_of(globals())

CSV_NAME = "suite_time.csv"
# What a run's time depends on: the suite, the set-up and everything the tests import.
CODE = ("*.py", "finn_demo/**/*.py", "bench/*.py", "tests/*.py", ".ci/run", "Makefile", "pyproject.toml",
        "requirements*.txt")


def code_files():
    """The files of CODE, relative to the repository root, sorted."""
    found = {path for pattern in CODE for path in ROOT.glob(pattern) if path.is_file()}
    return sorted(path.relative_to(ROOT).as_posix() for path in found)


ONE_WORKER = "make .venv/.finn && .venv/bin/python -m pytest tests -q -p no:xdist"


def closing_line(output):
    """pytest's closing line ("277 passed in 445.12s"), or "" if it printed none."""
    lines = re.findall(r"^=*\s*(\d+ (?:passed|failed).*?)\s*=*$", output, re.MULTILINE)
    return lines[-1] if lines else ""


def failed_lines(output):
    """pytest's FAILED/ERROR summary lines, and the output's last line: what a failed run shows."""
    lines = output.strip().splitlines()
    return [line for line in lines if line.startswith(("FAILED ", "ERROR "))] + lines[-1:]


def timed_run(workers_, folder):
    """(seconds, exit status, pytest's closing line) of one fresh-clone run in `folder`; a failed
    run's summary lines are printed."""
    clone = folder / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {**os.environ, "CI": "1", "XDG_CACHE_HOME": str(folder / "cache")}
    command = ["bash", ".ci/run"] if workers_ == 2 else ["bash", "-c", ONE_WORKER]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=clone, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    if done.returncode:
        print("\n".join(failed_lines(output)))
    return seconds, done.returncode, closing_line(output)


def main(args):
    if args["workers"] not in (1, 2) or args["runs"] < 1:
        raise ConfigError(f"--workers={args['workers']} --runs={args['runs']}: workers 1 or 2, "
                          "runs 1 or more")
    commit, dirty = git_commit(exclude=(args["out_dir"],))
    if not commit or dirty:
        raise ConfigError("uncommitted changes: each run clones HEAD, so commit them first (the "
                          "row names the commit it measured)")
    path, code = Path(args["out_dir"]) / CSV_NAME, files_hash(code_files())
    for run in range(1, args["runs"] + 1):
        with tempfile.TemporaryDirectory() as folder:
            seconds, status, line = timed_run(args["workers"], Path(folder))
        write_rows(path, read_rows(path) + [{
            "commit": commit, "code": code, "workers": args["workers"], "run": run,
            "seconds": f"{seconds:.0f}", "exit_status": status, "pytest": line,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores"}])
        print(f"run {run}: {seconds / 60:.1f} min, exit status {status}, {line}")


if __name__ == "__main__":
    run_module(main, FLAGS, sys.argv[1:])
