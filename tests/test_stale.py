"""`python -m bench.stale`: a section is stale when the code its rows were measured at has changed
since, and the report names the files whose change made it so."""
import subprocess
import sys
from types import SimpleNamespace

import pytest

import bench.rows
import bench.sections
import bench.stale
from bench.rows import read_rows, resumable, write_rows
from bench.section_code import code_hash
from finn_demo.testing.suite import ROOT

# Two sections, a and b, of a tiny repository: each imports the demo and bench/rows.py.
SECTIONS = (SimpleNamespace(csv="a.csv", modules=("bench.a",)),
            SimpleNamespace(csv="b.csv", modules=("bench.b",)))
FILES = {"finn_mobilenetv2.py": "import finn_demo.data\n", "finn_demo/data.py": "# data\n",
         "bench/rows.py": "# rows\n", "bench/a.py": "import finn_mobilenetv2\nfrom bench import rows\n",
         "bench/b.py": "import finn_mobilenetv2\nfrom bench import rows\n"}


def git(path, *command):
    subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *command],
                   cwd=path, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A tiny repository with the shared code and two sections, committed, and results/ whose
    rows were measured at that commit."""
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.setattr(bench.rows, "ROOT", tmp_path)
    monkeypatch.setattr(bench.sections, "SECTIONS", SECTIONS)
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "code")
    commit = bench.rows.git_commit()[0]
    (tmp_path / "results").mkdir()
    for section in SECTIONS:
        write_rows(tmp_path / "results" / section.csv,
                   [{"bits": "W8A8", "code": code_hash(*section.modules), "commit": commit}])
    return tmp_path


def lines(folder):
    return {status.name: status.line() for status in bench.stale.statuses(folder)}


def test_unchanged_code_is_fresh(repo):
    assert all(": fresh" in line for line in lines(repo / "results").values())


def test_a_section_whose_code_file_changed_is_stale_naming_that_file(repo):
    (repo / "bench/a.py").write_text(FILES["bench/a.py"] + "# changed\n")
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
    from bench.sections import SECTIONS
    measured = [section.csv for section in SECTIONS if (ROOT / "results" / section.csv).exists()]
    assert measured and [line.split(":")[0] for line in printed] == measured  # not suite_time.csv
    assert all(": fresh (" in line or ": stale (" in line for line in printed)
