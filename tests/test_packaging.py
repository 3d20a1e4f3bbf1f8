"""The pip and conda environments pin the same versions."""
import re

from conftest import ROOT


def pins(text):
    return dict(re.findall(r"^\s*(?:- )?([A-Za-z0-9_.-]+)==([^\s#]+)", text, re.M))


def test_conda_file_pins_the_same_versions_as_requirements():
    pip_pins = pins((ROOT / "requirements.txt").read_text())
    conda_pins = pins((ROOT / "conda" / "brevitas_finn.yml").read_text())
    assert len(pip_pins) >= 8
    assert conda_pins == pip_pins
