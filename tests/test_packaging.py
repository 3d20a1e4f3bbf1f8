"""The pip and conda environments pin the same versions; pyproject.toml installs every root module
and data file, and imports run one way (no test helper reached through tests/ or conftest, no
sys.path edit); the README and docs/ quote the committed results, and link only to files that exist."""
import ast
import graphlib
import re
import subprocess
import tomllib
from pathlib import Path

from bench.section_code import imported_files
from finn_demo.testing.suite import ROOT


def pins(text):
    return dict(re.findall(r"^\s*(?:- )?([A-Za-z0-9_.-]+)==([^\s#]+)", text, re.M))


def test_conda_file_pins_the_same_versions_as_requirements():
    pip_pins = pins((ROOT / "requirements.txt").read_text())
    conda_pins = pins((ROOT / "conda" / "brevitas_finn.yml").read_text())
    assert len(pip_pins) >= 8
    assert conda_pins == pip_pins



# ----------------------------------------------------------------------- install and imports
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def tracked(*folders):
    """The repository's files under `folders`, as git tracks them (no caches, no build output)."""
    listed = subprocess.run(["git", "ls-files", *folders], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout.split()
    return [Path(name) for name in listed]


def test_pyproject_installs_every_root_module_and_every_data_file_of_the_packages():
    assert sorted(PYPROJECT["py-modules"]) == sorted(path.stem for path in ROOT.glob("*.py"))
    for path in tracked("finn_demo", "bench"):
        if path.suffix != ".py":
            package, inside = path.parts[0], Path(*path.parts[1:])
            assert any(inside.match(pattern) for pattern in PYPROJECT["package-data"].get(package, [])), path


def imported_modules(source):
    """The absolute module names `source` imports (`import a.b`, `from a.b import c`: a.b)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def imports_from(source, *modules):
    """Those of `modules` (each with its submodules) that `source` imports."""
    return sorted({module for name in imported_modules(source) for module in modules
                   if name == module or name.startswith(module + ".")})


def edits_sys_path(source):
    """Whether `source` touches sys.path (`sys.path.insert(...)`, `from sys import path`, ...)."""
    return any(isinstance(node, ast.Attribute) and node.attr == "path"
               and isinstance(node.value, ast.Name) and node.value.id == "sys"
               or isinstance(node, ast.ImportFrom) and node.module == "sys"
               and any(alias.name == "path" for alias in node.names)
               for node in ast.walk(ast.parse(source)))


def sources(*patterns):
    return {path.relative_to(ROOT).as_posix(): path.read_text()
            for pattern in patterns for path in sorted(ROOT.glob(pattern))}


ROOT_SCRIPTS = tuple(f"{name}.py" for name in PYPROJECT["py-modules"])


def test_the_packages_import_nothing_from_the_tests():
    found = {name: imports_from(text, "tests", "conftest")
             for name, text in sources("finn_demo/**/*.py", "bench/**/*.py").items()}
    assert not {name: modules for name, modules in found.items() if modules}


def test_the_pipeline_imports_no_root_script():
    """finn_demo/'s stages sit below the root scripts; only testing/ (no stage) drives the demo."""
    found = {name: imports_from(text, *PYPROJECT["py-modules"])
             for name, text in sources("finn_demo/**/*.py").items()
             if not name.startswith("finn_demo/testing/")}
    assert not {name: modules for name, modules in found.items() if modules}


def test_no_test_imports_from_conftest_and_nothing_edits_sys_path():
    """Tests import helpers from finn_demo.testing (pytest hands them conftest's fixtures), and
    find the project because it is installed (`pip install -e .`), not by a sys.path edit."""
    tests = sources("tests/**/*.py")
    assert not [name for name, text in tests.items() if imports_from(text, "conftest")]
    assert not [name for name, text in {**tests, **sources(*ROOT_SCRIPTS)}.items() if edits_sys_path(text)]


def test_a_wrong_import_or_a_sys_path_edit_is_caught():
    assert imports_from("from tests.faults import FAULTS\nimport conftest", "tests", "conftest") == [
        "conftest", "tests"]
    assert imports_from("from conftest import SMALL", "conftest") == ["conftest"]
    assert not imports_from("import testsuite\nfrom finn_demo.testing import suite", "tests")
    assert imports_from("import quant_utils as qu", "quant_utils") == ["quant_utils"]
    assert all(map(edits_sys_path, ["import sys\nsys.path.insert(0, 'x')", "sys.path[:0] = ['x']",
                                    "from sys import path"]))
    assert not edits_sys_path("import os.path\nos.path.join('a', 'b')")


def import_cycle(root, *folders):
    """A circle of imports among the modules under `folders` (the files, first one repeated
    last), or None. Every `import` and `from` statement counts, a function-level one too (it
    runs when its function does); a package's __init__.py counts only where it is named."""
    graph = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*.py")):
            top, inner = imported_files(path, root, packages=False)
            graph[path] = {file for file in top | inner if file.relative_to(root).parts[0] in folders} - {path}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as error:
        return [path.relative_to(root).as_posix() for path in error.args[1]]
    return None


def test_finn_demo_and_bench_import_each_other_in_no_circle():
    assert import_cycle(ROOT, "finn_demo", "bench") is None


def test_a_planted_import_circle_is_found(tmp_path):
    for name, text in {"bench/report.py": "from bench.rows import ROOT\n",
                       "bench/rows.py": "def later():\n    from bench import stale\n",
                       "bench/stale.py": "import bench.report\n", "bench/__init__.py": ""}.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    circle = import_cycle(tmp_path, "bench")
    assert circle[0] == circle[-1] and sorted(circle[1:]) == ["bench/report.py", "bench/rows.py",
                                                             "bench/stale.py"]
    (tmp_path / "bench/rows.py").write_text("def later():\n    pass\n")  # the circle broken
    assert import_cycle(tmp_path, "bench") is None


def shared_function_names(modules):
    """{name: [paths]} of each public top-level function name that more than one of `modules`
    ({path: source}) defines."""
    where = {}
    for path, text in modules.items():
        for node in ast.parse(text).body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
                where.setdefault(node.name, []).append(path)
    return {name: paths for name, paths in where.items() if len(paths) > 1}


def test_no_two_modules_of_the_package_define_a_function_of_the_same_name():
    """A name says which function it is: finn_build.py's validate_build_args is not the demo's
    validate_args, FINN's make_dataflow_config not the build's make_build_config."""
    assert not shared_function_names(sources("finn_demo/**/*.py"))


def test_a_function_name_two_modules_define_is_caught():
    modules = {"a.py": "def summarize(rows):\n    pass\ndef _rows():\n    pass\n",
               "b.py": "class Design:\n    def summarize(self):\n        pass\n"
                       "def summarize():\n    pass\ndef _rows():\n    pass\n"}
    assert shared_function_names(modules) == {"summarize": ["a.py", "b.py"]}
    assert not shared_function_names({"a.py": modules["a.py"], "c.py": "def summarize_design(): pass"})

def test_ptq_page_seeds_table_is_the_summary_of_the_committed_rows():
    """docs/ptq.md's table over three digits models is bench/seeds.py's summary of the committed
    rows: seeds.csv, and the grid's rows of the same settings for the pass-through seed 0."""
    from bench.rows import read_rows
    from bench.seeds import seeds_table, summarize
    seeds = read_rows(ROOT / "results" / "seeds.csv")
    wanted = {(row["bits"], row["ptq"]) for row in seeds}
    grid = [{**row, "seed": "0"} for row in read_rows(ROOT / "results" / "benchmark.csv")
            if (row["bits"], row["ptq"]) in wanted]
    assert len(grid) == len(wanted) and {row["seed"] for row in seeds} == {"1", "2"}
    assert seeds_table(summarize(grid + seeds)) in (ROOT / "docs" / "ptq.md").read_text()


def test_every_committed_benchmark_row_records_the_code_and_model_it_was_measured_at():
    """A row without them could be from any version: benchmark.py keys each row by both."""
    import csv
    for name, columns in (("benchmark.csv", ("code", "model")), ("finn.csv", ("code", "model")),
                          ("gpxq_speed.csv", ("code", "model")), ("speed.csv", ("code",))):
        with open(ROOT / "results" / name, newline="") as file:
            rows = list(csv.DictReader(file))
        assert rows and all(row.get(column) for row in rows for column in columns), name


def test_imagenet_page_time_table_is_the_fit_of_the_committed_rows():
    """docs/imagenet.md's ImageNet times (per stage, and the seed's run in minutes) are what
    bench/imagenet_times.py fits to results/imagenet_times.csv."""
    import csv
    from bench.imagenet_times import seed_run_minutes, stage_fits
    with open(ROOT / "results" / "imagenet_times.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    fits = stage_fits(rows)
    section = (ROOT / "docs" / "imagenet.md").read_text().split("## How long an ImageNet run takes", 1)[1]
    section = section.split("\n## ", 1)[0]
    table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in section.splitlines()
             if line.startswith("| ") and not line.startswith("| stage")]
    assert len(table) >= 8
    for stage_text, per_1000, at_seed in table:
        stage = max((name for name in fits if stage_text.startswith(name)), key=len)
        _, _, _, per_image, seconds = fits[stage]
        assert per_1000 == f"{per_image * 1000:.1f}", stage_text
        assert at_seed.split(" ")[0] == f"{seconds:.0f}", stage_text
    minutes, _ = seed_run_minutes(rows)
    assert f"**{minutes:.0f} minutes**" in section


def test_benchmark_page_speed_table_is_the_committed_speed_rows():
    """Each row of docs/benchmark.md's speed table is the images/s results/speed.csv holds for it."""
    import csv
    with open(ROOT / "results" / "speed.csv", newline="") as file:
        measured = list(csv.DictReader(file))
    page = (ROOT / "docs" / "benchmark.md").read_text()
    section = page.split("| input | bits |", 1)[1].split("\n\n", 1)[0]
    table = [[cell.strip() for cell in line.split("|")[1:-1]] for line in section.splitlines()[2:]]
    assert table == [[row["input"], row["bits"], row["ips_float_eager"], row["ips_brevitas_eager"],
                      row["ips_ort_qcdq"]] for row in measured]


def markdown_pages():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_readme_and_docs_are_short_and_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    pages = markdown_pages()[1:]
    assert len(pages) >= 5 and all(f"](docs/{page.name})" in readme for page in pages)


def test_every_relative_link_points_at_an_existing_file():
    """Markdown links and images in README.md and docs/*.md: a relative target (its #anchor
    dropped) names a file or folder that exists, relative to the page."""
    broken = []
    for page in markdown_pages():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL, or an anchor on the same page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken
