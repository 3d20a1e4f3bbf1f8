"""The benchmark's resumable CSVs: every section's rows, keyed by their flags, the model they
measured and the code that measured them.

A CSV is rewritten whole after every new row, so an interrupted run picks up where it stopped.
A saved row is resumed only if its key matches: its flags, its `model` (the float weights'
fingerprint) and its `code` (a hash of the source files that compute it, `code_hash`). A row
whose flags match but whose code differs is stale: it is measured again and replaces the old one.
"""
import csv
import hashlib
import multiprocessing
import os
import subprocess
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
from tqdm import tqdm

from finn_demo.common.files import atomic_path

ROOT = Path(__file__).resolve().parents[1]
# The code every section runs: the demo, its helper module, the export check, the package they
# are made of, and this file. Each section adds its own bench module; the FINN section also the
# FINN build's code (FINN_BUILD_CODE), which no other section runs. Whole files, not functions:
# a change anywhere in them re-measures the rows (simple beats clever).
# Not hashed: the installed libraries (their versions are in the report's first lines).
SHARED_CODE = ("finn_mobilenetv2.py", "quant_utils.py", "check_export.py", "finn_demo/**/*.py",
               "bench/rows.py")
FINN_BUILD_CODE = ("finn_build.py", "finn_demo/hw/*.py")


def code_files(*section_files):
    """The files a section's rows are computed by, relative to the repository root, sorted."""
    def matches(patterns):
        return {path for pattern in patterns for path in ROOT.glob(pattern)}
    found = (matches(SHARED_CODE) - matches(FINN_BUILD_CODE)) | matches(section_files)
    return sorted(path.relative_to(ROOT).as_posix() for path in found)


def code_hash(*section_files):
    """The first 12 hex digits of a sha256 over the names and contents of `code_files`."""
    digest = hashlib.sha256()
    for name in code_files(*section_files):
        digest.update(name.encode() + b"\0" + (ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def model_hash(model):
    """The first 12 hex digits of a sha256 over a model's parameters and buffers, in order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def demo_model_hash(demo_flags):
    """`model_hash` of the float model the demo loads with `demo_flags` (the digits model is
    trained and cached on first use, so every section and every grid job finds it cached)."""
    import finn_mobilenetv2 as demo
    from finn_demo.data.datasets import digits_datasets
    from finn_demo.data.models import load_digits_model, load_imagenet_model
    args = demo.make_args(demo_flags)
    if args.data_dir:
        return model_hash(load_imagenet_model(args.weights))
    return model_hash(load_digits_model(digits_datasets()[0], args.cache_dir, args.digits_width,
                                        args.digits_epochs, args.digits_stages, args.digits_seed))


def git(*command):
    """`git command` run in the repository; the CompletedProcess, its output as text."""
    return subprocess.run(["git", *command], cwd=ROOT, capture_output=True, text=True)


def git_commit(exclude=()):
    """(short commit of HEAD or "", whether files outside `exclude` have uncommitted changes)."""
    commit = git("rev-parse", "--short", "HEAD")
    if commit.returncode:
        return "", False
    excluded = [f":(exclude){path}" for path in exclude]
    dirty = git("status", "--porcelain", "--", ".", *excluded).stdout.strip()
    return commit.stdout.strip(), bool(dirty)


def git_commit_text(exclude=()):
    """'commit abc1234' or 'commit abc1234 with uncommitted changes' (changes under `exclude`,
    the results being written, do not count); 'no git commit' outside a repository."""
    commit, dirty = git_commit(exclude)
    if not commit:
        return "no git commit"
    return f"commit {commit}" + (" with uncommitted changes" if dirty else "")


def row_commit(exclude=()):
    """The `commit` column of a row measured now: the short commit, with "+changes" when the
    working tree differed from it (then the row's `code` hash is what identifies its code)."""
    commit, dirty = git_commit(exclude)
    return commit + ("+changes" if dirty else "")


# ---------------------------------------------------------------------------------- the CSVs
def read_rows(path):
    if not Path(path).exists():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def write_rows(path, rows):
    """Write `rows` (dicts) whole or not at all; columns are the union of the rows' keys."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as file:
            writer = csv.DictWriter(file, columns)
            writer.writeheader()
            writer.writerows(rows)


def _identity(row, names):
    return tuple(row.get(name) for name in names)


def resumable(path, keys, measure, desc, code, jobs=1, threads=None):
    """(rows, failures) for `keys` (dicts of str), measuring only the rows the CSV lacks at `code`.

    Each key gets a `code` column, and each new row a `commit` column (`row_commit`: the commit
    it was measured at, for `python -m bench.stale`; not part of the key). `measure(key)` returns the row's figures; the CSV at `path` is
    rewritten after each new row, which replaces any saved row of the same key at other code.
    A row that raises is reported and left out, so the next run tries it again. Rows of other
    keys (another grid, other flags) stay in the file and out of the result. With jobs > 1 the
    rows are measured in that many processes at once, `threads` PyTorch threads each.
    """
    keys = [{**key, "code": code} for key in keys]
    results = Path(path).resolve().parent
    commit = row_commit([results.relative_to(ROOT)] if results.is_relative_to(ROOT) else [])
    saved = read_rows(path)
    names = list(keys[0]) if keys else []
    done = {_identity(row, names): row for row in saved}
    todo = [key for key in keys if _identity(key, names) not in done]
    failures = []
    with tqdm(total=len(keys), initial=len(keys) - len(todo), desc=desc, dynamic_ncols=True) as bar:
        for key, (figures, error) in _measure_all(measure, todo, jobs, threads):
            bar.update()
            if error:
                failures.append((key, error))
                tqdm.write(f"row {key} failed: {error}")
                continue
            stale = _identity(key, names[:-1])  # the same key but for its code
            saved = [row for row in saved if _identity(row, names[:-1]) != stale]
            saved.append({**key, "commit": commit, **figures})
            done[_identity(key, names)] = saved[-1]
            write_rows(path, saved)
    rows = [done[_identity(key, names)] for key in keys if _identity(key, names) in done]
    return rows, failures


def _measure_all(measure, keys, jobs, threads):
    """(key, (figures, error message)) for each of `keys`, in the order they finish."""
    if jobs == 1:
        yield from ((key, _measure_one(measure, key)) for key in keys)
        return
    context = multiprocessing.get_context("spawn")  # forking a process that ran torch can hang
    # The workers' own progress bars would interleave on one terminal: they inherit this
    # variable when they start, and only the grid's bar is shown.
    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        with ProcessPoolExecutor(jobs, context, initializer=torch.set_num_threads,
                                 initargs=(threads,)) as pool:
            futures = {pool.submit(_measure_one, measure, key): key for key in keys}
            for future in as_completed(futures):
                yield futures[future], future.result()
    finally:
        if previous is None:
            os.environ.pop("TQDM_DISABLE")
        else:
            os.environ["TQDM_DISABLE"] = previous


def _measure_one(measure, key):
    try:
        return measure(key), None
    except Exception as error:  # one broken configuration must not end an hour-long grid
        return None, f"{type(error).__name__}: {error}".splitlines()[0]
