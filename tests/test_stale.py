"""`python -m bench.stale`: a section is stale when the code its rows were measured at has changed
since, and the report names the files whose change made it so."""
import subprocess
import sys

import pytest

import bench.rows
import bench.stale
from bench.rows import code_hash, read_rows, resumable, write_rows
from finn_demo.testing.suite import ROOT

SECTIONS = {"a.csv": ("bench/a.py",), "b.csv": ("bench/b.py",)}


def git(path, *command):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *command],
                   cwd=path, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A tiny repository with the shared code and two sections, committed, and results/ whose
    rows were measured at that commit."""
    for name in ("finn_mobilenetv2.py", "finn_demo/data.py", "bench/rows.py", "bench/a.py", "bench/b.py"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(f"# {name}\n")
    monkeypatch.setattr(bench.rows, "ROOT", tmp_path)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "code")
    commit = bench.rows.git_commit()[0]
    (tmp_path / "results").mkdir()
    for name, files in SECTIONS.items():
        write_rows(tmp_path / "results" / name, [{"bits": "W8A8", "code": code_hash(*files), "commit": commit}])
    return tmp_path


def lines(folder):
    return {status.name: status.line() for status in bench.stale.statuses(folder, SECTIONS)}


def test_unchanged_code_is_fresh(repo):
    assert all(": fresh" in line for line in lines(repo / "results").values())


def test_a_section_whose_code_file_changed_is_stale_naming_that_file(repo):
    (repo / "bench/a.py").write_text("# changed\n")
    found = lines(repo / "results")
    assert "stale" in found["a.csv"] and found["a.csv"].endswith("changed since: bench/a.py)")
    assert ": fresh" in found["b.csv"]


def test_a_shared_file_makes_every_section_stale(repo):
    (repo / "finn_demo/data.py").write_text("# changed\n")
    git(repo, "commit", "-qam", "a fix")
    assert all(line.endswith("changed since: finn_demo/data.py)") for line in lines(repo / "results").values())


def test_rows_without_a_commit_use_the_commit_results_md_names(repo):
    rows = read_rows(repo / "results" / "a.csv")
    write_rows(repo / "results" / "a.csv", [{key: row[key] for key in ("bits", "code")} for row in rows])
    (repo / "results" / "RESULTS.md").write_text(
        f"Made by `python benchmark.py` with benchmark.py at commit {rows[0]['commit']} (x86_64)\n")
    (repo / "bench/rows.py").write_text("# changed\n")
    assert lines(repo / "results")["a.csv"].endswith("changed since: bench/rows.py)")


def test_new_rows_record_the_commit_they_were_measured_at(tmp_path):
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    rows, _ = resumable(tmp_path / "rows.csv", [{"bits": "W8A8"}], lambda key: {"top1": "1"}, "test", "aaa")
    assert rows[0]["commit"].split("+")[0] == head
    again, _ = resumable(tmp_path / "rows.csv", [{"bits": "W8A8"}], lambda key: {"top1": "2"}, "test", "aaa")
    assert again[0]["top1"] == "1"  # the commit is not part of the key: the row is resumed


def test_the_command_prints_one_line_per_section_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "bench.stale"], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert len(printed) == len(list((ROOT / "results").glob("*.csv")))
    assert all(": fresh (" in line or ": stale (" in line for line in printed)
