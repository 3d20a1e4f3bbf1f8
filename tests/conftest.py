"""Shared fixtures: one small trained digits model for the whole session, and a demo runner.

The model is trained once per session (width 0.5, 8 epochs: about 10 s) into a temporary cache,
so every test works on real, non-degenerate numbers without touching the user's cache.
"""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import finn_mobilenetv2 as demo  # noqa: E402

SMALL = ["--digits_width=0.5", "--digits_epochs=8", "--calib_size=256", "--val_size=200",
         "--batch_size=64"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("digits_cache")


@pytest.fixture(scope="session")
def run_demo(cache_dir):
    """Run the demo on the small digits model with `--name=value` overrides; returns its result."""
    def run(output, *overrides):
        return demo.main(demo.make_args(
            [f"--cache_dir={cache_dir}", *SMALL, f"--output={output}", *overrides]))
    return run


@pytest.fixture(scope="session")
def w8a8(run_demo, tmp_path_factory):
    """The demo's default run (8-bit weights and activations), exported once for the session."""
    return run_demo(tmp_path_factory.mktemp("w8a8") / "quant_mobilenet_v2.onnx")
