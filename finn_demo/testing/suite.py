"""What the test files share and import by name (not pytest's fixtures: tests/conftest.py).

pytest finds the fixtures in tests/conftest.py itself; here are the repository's root, the flags
of the suite's small digits model, the PTQ tests' model and loaders, and the FINN tests' skip."""
import importlib
import importlib.util
import os
from pathlib import Path

# The checkout this package is imported from (the tests run in one; `pip install -e .` keeps
# the package there): the scripts, docs and results the tests run and read.
ROOT = Path(__file__).resolve().parents[2]

SMALL = ["--digits_width=0.5", "--digits_stages=3", "--digits_epochs=8", "--calib_size=256",
         "--val_size=200", "--batch_size=64", "--check_export=False",  # tests that check exports ask for it
         "--eval_backend=brevitas"]  # the onnxruntime default has its own tests (test_eval_backend.py)


def small_digits(cache_dir, held_out=128):
    """(the suite's trained float model, a 64-image calibration loader in batches of 32, the first
    `held_out` validation images, never calibrated on): what the PTQ-pass tests train and judge on."""
    import torch
    import finn_mobilenetv2 as demo
    args = demo.make_args([f"--cache_dir={cache_dir}", *SMALL, "--calib_size=64",
                           "--batch_size=32", "--device=cpu"])
    float_model, calib_loader, val_loader, _ = demo.load_model_and_data(args)
    return float_model, calib_loader, torch.cat([images for images, _ in val_loader])[:held_out]


def calibrated_model(float_model, calib_loader, example, maps):
    """`float_model` quantized with `maps` and calibrated, no PTQ pass, its weight quantizers
    initialized by one forward pass (a deepcopy before that recurses inside Brevitas)."""
    import torch
    import quant_utils as qu
    model = qu.quantize_and_recover(float_model, calib_loader, example, maps)
    with torch.no_grad():
        model(example)
    return model


def import_finn_steps():
    """finn_demo.hw.steps (FINN's steps) for the FINN tests. Only a missing `finn` package skips them, and
    not in CI (the CI variable set): there they must run, so a missing FINN is an error too."""
    if not os.environ.get("CI") and importlib.util.find_spec("finn") is None:
        import pytest  # here: only the tests call this, and the package needs no pytest
        from finn_demo.finn_install import FINN_INSTALL_HINT
        pytest.skip(f"FINN is not installed: {FINN_INSTALL_HINT}", allow_module_level=True)
    return importlib.import_module("finn_demo.hw.steps")
