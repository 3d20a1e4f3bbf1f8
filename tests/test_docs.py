"""README.md and docs/*.md say what the code and results/ say: every repository path they name
exists, every command line they give is one its script accepts, every flag default they state is
the flag block's, and every benchmark figure they quote is the committed rows' (the generated
blocks of bench/readme.py word for word, the others below). Nothing here runs a model."""
import re
import shlex

import pytest

from finn_demo.testing.suite import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {"finn_mobilenetv2.py": "finn_mobilenetv2", "finn_build.py": "finn_build",
           "benchmark.py": "benchmark"}
MAKE_TARGETS = {"demo": "finn_mobilenetv2.py", "finn_build": "finn_build.py", "benchmark": "benchmark.py"}
# the repository's folders: a path in a page that starts with one of them names a file of the repository
TOP_FOLDERS = ("finn_demo", "bench", "tests", "results", "docs", "conda", ".ci")


def text_of(page):
    return page.read_text(encoding="utf-8")


def module(name):
    return __import__(name)


# ------------------------------------------------------------------------------------ paths
def named_paths(text):
    """Every `folder/...` path in `text` whose folder is one of the repository's (code blocks and
    prose alike; a glob such as finn_demo/hw/*.py counts)."""
    pattern = r"(?<![\w/.~<-])((?:%s)/[\w./*<>-]*[\w*])" % "|".join(map(re.escape, TOP_FOLDERS))
    return set(re.findall(pattern, text))


def missing_paths(text):
    missing = []
    for path in sorted(named_paths(text)):
        if "<" in path:  # a placeholder such as tests/<name>.py
            continue
        if not (any(ROOT.glob(path)) if "*" in path else (ROOT / path).exists()):
            missing.append(path)
    return missing


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_repository_path_a_page_names_exists(page):
    assert not missing_paths(text_of(page))
    # requirements-finn.txt's comments name modules too
    assert not missing_paths((ROOT / "requirements-finn.txt").read_text())


def test_a_moved_module_is_caught():
    assert missing_paths("see `finn_demo/verilator.py` and finn_demo/imagenet_wnids.txt") == [
        "finn_demo/imagenet_wnids.txt", "finn_demo/verilator.py"]
    assert not missing_paths("see `finn_demo/hw/verilator.py`, finn_demo/hw/*.py, `~/.cache/finn_demo/x`")


# ------------------------------------------------------------------------------- commands
def command_lines(text):
    """(script, [--name=value, ...]) of every command line in `text` that runs a root script:
    `python X.py ...` (backslash continuations joined), `make T ARGS="..."`, in code blocks and
    inline code alike."""
    text = text.replace("\\\n", " ")
    found = []
    for line in text.splitlines():
        for match in re.finditer(r"python ([\w]+\.py)((?: +--[\w-]+(?:=[^\s`]*)?| +[\w./-]+\.onnx)*)", line):
            if match.group(1) in SCRIPTS:
                found.append((match.group(1), match.group(2).split()))
        for match in re.finditer(r"make (\w+) ARGS=\"([^\"]*)\"", line):
            found.append((MAKE_TARGETS[match.group(1)], shlex.split(match.group(2))))
    return found


def refused(script, argv):
    """The configurator's message if `script` refuses `argv` (its own make_args), else None."""
    from finn_demo.common.configurator import ConfigError
    flags = [arg for arg in argv if arg.startswith("--") and arg not in ("--help", "-h")]
    try:
        module(SCRIPTS[script]).make_args(flags)
    except (ConfigError, SystemExit) as error:
        return str(error)
    return None


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_every_command_line_a_page_gives_is_accepted_by_its_script(page):
    commands = command_lines(text_of(page))
    bad = [(script, argv, refused(script, argv)) for script, argv in commands if refused(script, argv)]
    assert not bad


def test_every_python_m_module_a_page_runs_exists():
    for page in PAGES:
        for name in re.findall(r"python -m (bench\.\w+)", text_of(page)):
            assert (ROOT / (name.replace(".", "/") + ".py")).exists(), (page.name, name)


def test_every_inline_flag_a_page_names_is_some_scripts_flag():
    """Inline code made of `--name=value` fragments: each name is a flag of a root script."""
    names = {name for script in SCRIPTS.values() for name in module(script).FLAGS} | {"name"}  # `--name=value`: the form itself
    unknown = []
    for page in PAGES:
        for code in re.findall(r"`(--[^`\n]+)`", text_of(page)):  # inline code that is flags
            unknown += [(page.name, name) for name in re.findall(r"--(\w+)=", code) if name not in names]
    assert not unknown


def test_a_wrong_flag_or_value_in_a_command_is_caught():
    commands = command_lines("run `python finn_build.py --out_dir=x --bord=U250` then\n"
                             "```\npython finn_mobilenetv2.py --weight_bit_width=4 \\\n    --gpfq=maybe\n```\n"
                             'and make demo ARGS="--calib_size=1.5"')
    assert [script for script, _ in commands] == ["finn_build.py", "finn_mobilenetv2.py", "finn_mobilenetv2.py"]
    assert all(refused(script, argv) for script, argv in commands)


# ------------------------------------------------------------------------------- defaults
def flag_tables(text):
    """(names, defaults) of each row of a `| flag | default | ... |` table."""
    rows = []
    for table in re.findall(r"^\| flag \| default \|.*?\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M):
        for line in table.splitlines():
            cells = [cell.strip() for cell in line.split("|")[1:-1]]
            names = re.findall(r"`(\w+)`", cells[0])
            defaults = [value.strip() for value in cells[1].split(", ")]
            rows.append((names, defaults))
    return rows


def shown(value):
    """How a page writes a default: strings bare or in backticks, "" for the empty string."""
    return '""' if value == "" else str(value)


def normal(cell):
    return re.sub(r" \(.*\)$", "", cell).strip("`")


# Statements of a default in prose: (page, the words, script, flag, the value they state).
PROSE_DEFAULTS = [
    ("README.md", "against the\nBrevitas model on 8 images", "finn_mobilenetv2.py", "check_images", 8),
    ("checks.md", "validation images (8 by default)", "finn_mobilenetv2.py", "check_images", 8),
    ("ptq.md", "The default stays the seed's `fixed`", "finn_mobilenetv2.py", "relu6_range", "fixed"),
    ("ptq.md", "The demo's default stays 200 steps", "finn_mobilenetv2.py", "learned_round_iters", 200),
    ("ptq.md", "by default (`gpxq_impl=fast`)", "finn_mobilenetv2.py", "gpxq_impl", "fast"),
    ("benchmark.md", "`--seeds_bits=W4A4,PW4A4`", "benchmark.py", "seeds_bits", "W4A4,PW4A4"),
    ("benchmark.md", "`--seeds=1,2`", "benchmark.py", "seeds", "1,2"),
]


def stated_defaults(text):
    """(name, value) of every "`--name=value`, the default" and "by default (`name=value`)"."""
    return re.findall(r"`--(\w+)=([^`]*)`,? (?:the|its) default", text)


def default_errors(pages_text):
    flags = {script: module(name).FLAGS for script, name in SCRIPTS.items()}
    every = {name: value for script in flags.values() for name, value in script.items()}
    errors = []
    for page, text in pages_text.items():
        for names, defaults in flag_tables(text):
            script = "finn_build.py" if page == "finn_build.md" else None
            for name, default in zip(names, defaults):
                value = (flags[script] if script else every)[name]
                if normal(default) != shown(value):
                    errors.append((page, name, default, value))
        for name, value in stated_defaults(text):
            if value != shown(every[name]):
                errors.append((page, name, value, every[name]))
    for page, words, script, name, value in PROSE_DEFAULTS:
        if page in pages_text and (words not in pages_text[page] or flags[script][name] != value):
            errors.append((page, name, words, flags[script][name]))
    return errors


def test_every_default_a_page_states_is_the_flag_blocks():
    assert not default_errors({page.name: text_of(page) for page in PAGES})


def test_a_wrong_default_is_caught():
    page = text_of(ROOT / "docs" / "finn_build.md")
    assert default_errors({"finn_build.md": page}) == []
    wrong = page.replace("`quant_mobilenet_v2.onnx`, `finn_output`", "`quant_mobilenet_v2.onnx`, `finn_build`")
    assert default_errors({"finn_build.md": wrong}) == [("finn_build.md", "out_dir", "`finn_build`", "finn_output")]
    assert default_errors({"benchmark.md": "with `--finn_verilator=all`, the default"})


# -------------------------------------------------------------------------------- figures
def rows(name):
    from bench.readme import read_csv
    return read_csv(name)


def test_readme_accuracy_table_and_recipe_command_are_bench_readmes():
    """The README's recipe per bit width, by its rule, from results/ (`python -m bench.readme`)."""
    from bench.readme import recipe_command, recipe_table
    grid, seeds = rows("benchmark.csv"), rows("seeds.csv")
    readme = text_of(ROOT / "README.md")
    assert recipe_table(grid, seeds) in readme
    assert recipe_command(grid, seeds, "W4A4") in readme.replace(" \\\n    ", " ")


def test_readme_qat_table_and_qat_commands_are_bench_readmes():
    """The README's QAT table from results/qat.csv, and the QAT command README and docs/qat.md
    give is the one the QAT section runs (`python -m bench.readme`)."""
    from bench.readme import qat_command, qat_table
    table = qat_table(rows("qat.csv"))
    assert table.count("\n") >= 2, "results/qat.csv holds no QAT rows"
    assert table in text_of(ROOT / "README.md")
    for page in (ROOT / "README.md", ROOT / "docs" / "qat.md"):
        assert qat_command("W3A3") in text_of(page).replace(" \\\n    ", " "), page.name


def test_qat_page_imagenet_cost_is_the_committed_rows():
    from bench.readme import qat_cost_text
    time_rows = rows("qat_time.csv")
    assert time_rows, "results/qat_time.csv holds no rows"
    assert qat_cost_text(time_rows) in " ".join(text_of(ROOT / "docs" / "qat.md").split())


def test_readme_finn_table_is_the_committed_rows():
    from bench.readme import finn_cost_table
    finn = rows("finn.csv")
    assert len(finn) >= 2 and finn_cost_table(finn) in text_of(ROOT / "README.md")


def test_finn_build_page_build_times_are_the_committed_rows():
    from bench.readme import build_times_text
    page = " ".join(text_of(ROOT / "docs" / "finn_build.md").split())
    assert build_times_text(rows("finn.csv")) in page


def test_finn_build_page_requant_figures_are_the_committed_rows():
    from bench.readme import requant_text
    page = " ".join(text_of(ROOT / "docs" / "finn_build.md").split())
    text = requant_text(rows("finn.csv"))
    assert text and " ".join(text.split()) in page


def test_readme_test_command_time_is_the_committed_runs():
    from bench.readme import suite_time_text
    readme = " ".join(text_of(ROOT / "README.md").split())
    assert suite_time_text(rows("suite_time.csv")) in readme


def test_readme_benchmark_command_is_the_one_results_md_was_made_by():
    made_by = re.search(r"Made by `([^`]+)`", text_of(ROOT / "results" / "RESULTS.md")).group(1)
    readme = text_of(ROOT / "README.md").split("## Results", 1)[1]
    assert re.search(r"`(python benchmark\.py[^`]*)`", readme).group(1) == made_by


def test_finn_build_page_cost_table_is_the_readmes():
    def finn_table(text):
        section = text.split("| bits | board | fits |", 1)[1].split("\n\n", 1)[0]
        return [line for line in section.splitlines() if re.match(r"\| (W|PW)", line)]
    assert finn_table(text_of(ROOT / "docs" / "finn_build.md")) == finn_table(text_of(ROOT / "README.md"))


# ptq.md's tables of grid rows: each column header names a PTQ setting of results/benchmark.csv
GRID_TABLE_COLUMNS = {
    "GPFQ": "gpfq", "GPFQ, AXE 16 bits": "gpfq+acc16", "AXE 14 bits": "gpfq+acc14",
    "AXE 12 bits": "gpfq+acc12", "Qronos": "qronos", "learned rounding, layerwise": "learned_round",
    "learned rounding, blockwise": "learned_round_blockwise",
    "seed's ReLU6, no PTQ": "none", "calibrated ReLU6, no PTQ": "relu6_calibrated",
    "ReLU, no PTQ": "relu6_to_relu", "seed's ReLU6, act_eq+bias_corr+gpfq": "act_eq+bias_corr+gpfq",
    "ReLU, act_eq+bias_corr+gpfq": "relu6_to_relu+act_eq+bias_corr+gpfq",
    "calibrated ReLU6, qronos+bn_corr": "relu6_calibrated+qronos+bn_corr", "ReLU, qronos": "relu6_to_relu+qronos",
}


def grid_cell(row, cell):
    """How a grid row reads in a cell of the form of `cell`: top-1, then (SQNR dB[, N bits])."""
    text = row["quant_top1"]
    if "dB" in cell:
        text += f" ({row['sqnr_db']} dB" + (f", {row['max_acc_bits']} bits)" if "bits)" in cell else ")")
    return text


def grid_table_errors(text, grid):
    by_key = {(row["bits"], row["ptq"]): row for row in grid}
    errors, checked = [], 0
    for header, body in re.findall(r"^\| bits \| (.*) \|\n\|[-|]+\|\n((?:\|.*\n)+)", text, re.M):
        columns = [column.strip() for column in header.split(" | ")]
        if not all(column in GRID_TABLE_COLUMNS for column in columns):
            continue
        for line in body.splitlines():
            bits, *cells = [cell.strip() for cell in line.split("|")[1:-1]]
            for column, cell in zip(columns, cells):
                expected = grid_cell(by_key[bits, GRID_TABLE_COLUMNS[column]], cell)
                checked += 1
                if cell != expected:
                    errors.append((bits, column, cell, expected))
    return errors, checked


def test_ptq_page_grid_tables_are_the_committed_grid_rows():
    grid = rows("benchmark.csv")
    errors, checked = grid_table_errors(text_of(ROOT / "docs" / "ptq.md"), grid)
    assert checked >= 3 * 8 * 4 and not errors
    wrong = text_of(ROOT / "docs" / "ptq.md").replace("| W4A4 | 93.76 (12.67 dB, 16 bits)", "| W4A4 | 93.96 (12.67 dB, 16 bits)")
    assert grid_table_errors(wrong, grid)[0]


# Single figures in prose, each with the rows it comes from: (page, pattern with one group, value).
def prose_figures():
    grid, finn = rows("benchmark.csv"), rows("finn.csv")
    by_key = {(row["bits"], row["board"]): row for row in finn}
    return [
        ("benchmark.md", r"on at least ([\d.]+)% of the test images",
         f"{min(float(row['ort_agreement']) for row in grid if row.get('ort_agreement')):.1f}"),
        ("imagenet.md", r"(\d+) runs at calib_size", str(len(rows("imagenet_times.csv")))),
        ("finn_build.md", r"W4A4 \(every\s+conv 4-bit\) reaches (\d+) frames/s", by_key["W4A4", "ZCU104"]["estimated_fps"]),
        ("finn_build.md", r"and reaches (\d+) frames/s in the same LUT budget", by_key["PW4A4", "ZCU104"]["estimated_fps"]),
        ("finn_build.md", r"\*\*W4A4\+add8\*\*[\s\S]*?fits the ZCU104 at (\d+) frames/s", by_key["W4A4+add8", "ZCU104"]["estimated_fps"]),
        ("finn_build.md", r"\*\*W8A8\*\*, the demo's default, fits the ZCU104 at (\d+) frames/s", by_key["W8A8", "ZCU104"]["estimated_fps"]),
        ("README.md", r"W4A4\+add8 fits it at (\d+) frames/s", by_key["W4A4+add8", "ZCU104"]["estimated_fps"]),
        ("README.md", r"the demo's W8A8 at (\d+) frames/s", by_key["W8A8", "ZCU104"]["estimated_fps"]),
        ("finn_build.md", r"so the simulated rate is\s+(\d+) frames/s\. Its 8-bit", by_key["W8A8", "ZCU104"]["simulated_fps"]),
        ("finn_build.md", r"W4A4 \(every\s+conv 4-bit\) reaches \d+ frames/s; its bottleneck, `(\w+)`",
         by_key["W4A4", "ZCU104"]["bottleneck"].split()[0]),
        ("finn_build.md", r"simulates in Verilator at \d+ cycles a frame against FINN's (\d+)",
         by_key["W4A4", "ZCU104"]["bottleneck"].split("(")[1].split()[0]),
        ("ptq.md", r"it fits the ZCU104 at (\d+) frames/s", by_key["W4A4+add8", "ZCU104"]["estimated_fps"]),
        ("ptq.md", r"threshold layers: (\d+) LUT \(\d+% of the board", by_key["W4A4+add8", "ZCU104"]["LUT"]),
        ("ptq.md", r"LUT \(\d+% of the board, where\s+the budget is 70%\) and (\d+) URAM", by_key["W4A4+add8", "ZCU104"]["URAM"]),
        ("ptq.md", r"threshold layers: \d+ LUT \((\d+)% of the board", by_key["W4A4+add8", "ZCU104"]["LUT_pct"]),
        ("ptq.md", r"and \d+ URAM \((\d+)%\)\. It fits the U250", by_key["W4A4+add8", "ZCU104"]["URAM_pct"]),
        ("ptq.md", r"It fits the U250 at (\d+) frames/s, W4A4's rate", by_key["W4A4+add8", "U250"]["estimated_fps"]),
        ("finn_build.md", r"W4A4 reaches (\d+) frames/s with \d+% of its LUTs", by_key["W4A4", "U250"]["estimated_fps"]),
        ("finn_build.md", r"W4A4 reaches \d+ frames/s with (\d+)% of its LUTs", by_key["W4A4", "U250"]["LUT_pct"]),
        ("finn_build.md", r"stop at the same rate \((\d+)% and", by_key["PW4A4", "U250"]["LUT_pct"]),
        ("finn_build.md", r"stop at the same rate \(\d+% and (\d+)% of the", by_key["W4A4+add8", "U250"]["LUT_pct"]),
        ("finn_build.md", r"W3A3\+qat\*\*[\s\S]*?reaches\s+(\d+) frames/s", by_key["W3A3+qat", "ZCU104"]["estimated_fps"]),
        ("finn_build.md", r"simulated rate is (\d+) frames/s, every", by_key["W3A3+qat", "ZCU104"]["simulated_fps"]),
        ("finn_build.md", r"\(W4A4\+in4\+qat\) reaches (\d+) frames/s", by_key["W4A4+in4+qat", "ZCU104"]["estimated_fps"]),
        ("finn_build.md", r"so its\s+simulated rate is (\d+) frames/s, set by", by_key["PW4A4", "ZCU104"]["simulated_fps"]),
        ("finn_build.md", r"frames/s within the budget \((\d+) LUT", by_key["W3A3+qat", "ZCU104"]["LUT"]),
        ("README.md", r"W3A3\+qat \(3-bit, trained with QAT\) reaches (\d+) frames/s", by_key["W3A3+qat", "ZCU104"]["estimated_fps"]),
        ("README.md", r"past\s+W4A4's (\d+) in the same", by_key["W4A4", "ZCU104"]["estimated_fps"]),
    ]


def figure_errors(pages_text, figures):
    errors = []
    for page, pattern, value in figures:
        found = re.findall(pattern, pages_text[page])
        if not found or any(figure != value for figure in found):
            errors.append((page, pattern, found, value))
    return errors


def test_figures_quoted_in_prose_are_the_committed_rows():
    pages = {page.name: text_of(page) for page in PAGES}
    figures = prose_figures()
    assert not figure_errors(pages, figures)
    pages["benchmark.md"] = pages["benchmark.md"].replace("at least 99.4%", "at least 98.19%")
    assert figure_errors(pages, figures)


def test_no_page_states_how_many_rows_a_results_csv_holds():
    """Row counts go stale with every benchmark run; the CSVs and RESULTS.md hold them."""
    counted = [(page.name, match) for page in PAGES
               for match in re.findall(r"\b\d+ rows\b", text_of(page))]
    assert not counted
