"""`--help` on every root script prints its flag block: each flag with its default and comment,
grouped by the block's comment lines, and exits 0 without running anything."""
import subprocess
import sys

import pytest

from finn_demo.testing.suite import ROOT
from finn_demo.common.configurator import Flags, apply_overrides, help_text


def script_help(script, arg="--help"):
    done = subprocess.run([sys.executable, script, arg], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def flag_lines(text):
    """{name: the help line that shows it}."""
    return {line.split("=", 1)[0].strip()[2:]: line for line in text.splitlines()
            if line.startswith("  --")}


@pytest.mark.parametrize("script, module, comment, group", [
    ("finn_mobilenetv2.py", "finn_mobilenetv2", "weights of depthwise convs (groups != 1)",
     "# 1. quantization nodes: bit widths"),
    ("benchmark.py", "benchmark", "bit-width settings timed in the speed section", None),
    ("finn_build.py", "finn_build", "0 searches the highest frame rate that fits the board", None),
])
def test_help_lists_every_flag_with_its_default_and_comment(script, module, comment, group):
    text = script_help(script)
    flags = __import__(module).FLAGS
    shown = flag_lines(text)
    assert list(shown) == list(flags)  # every flag, in the block's order
    for name, default in flags.items():
        assert shown[name].split()[0] == f"--{name}={default!r}", name
    assert comment in text
    if group:
        assert group in text


def test_a_flag_comment_continued_on_the_next_line_stays_with_its_flag():
    """finn_mobilenetv2.py continues relu6_to_relu's comment on a `#   ` line: in --help it is
    the flag's second line, not a group header."""
    lines = script_help("finn_mobilenetv2.py").splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("  --relu6_to_relu="))
    assert lines[at + 1].startswith("   ") and "# it a ReLU with a calibrated range" in lines[at + 1]
    headers = [line for line in lines if line.startswith("#")]
    assert not any(header.startswith("# it a ReLU") or header.startswith("# every dot product")
                   for header in headers)


def test_h_is_help_too():
    assert "--calib_size=1000" in script_help("finn_mobilenetv2.py", "-h")


FAKE_SCRIPT = '''"""A script."""
import os
# ---------------------------------------------------------------- flags
# sizes
width = 4  # how wide
depth = 2 + 1  # how deep, computed
# names
label = "a"  # what it is called, a comment
#   continued on the next line
# kinds
kind = None  # which kind
FLAGS = flags_of(globals())
after = 1  # not a flag of the block
'''


def test_help_text_follows_the_block_as_written(tmp_path, capsys):
    path = tmp_path / "script.py"
    path.write_text(FAKE_SCRIPT)
    flags = Flags({"width": 4, "depth": 3, "label": "a", "kind": None}, str(path), "A script.")
    lines = help_text(flags).splitlines()
    start = lines.index("# sizes")
    assert [line.split("  #")[0].strip() for line in lines[start:]] == [
        "# sizes", "--width=4", "--depth=3", "# names", "--label='a'", "", "# kinds", "--kind=None"]
    assert lines[start + 2].endswith("# how deep, computed")
    # an indented comment line under a flag continues its comment, aligned under it, not a header
    label = lines[start + 4]
    assert lines[start + 5] == " " * label.index("# what") + "# continued on the next line"
    with pytest.raises(SystemExit) as exit_:
        apply_overrides(flags, ["--width=8", "--help"])
    assert exit_.value.code == 0 and "--width=4" in capsys.readouterr().out
