"""Each PTQ flag runs to an export on a trained model, and the runs are reproducible."""
import onnx
import pytest
from onnx import numpy_helper

# GPxQ re-runs the model once per layer and GPFQ loops over every weight column in Python:
# on two cores these tests use a narrower model (still trained: about 84% top-1) and few images.
QUICK_PTQ = ["--digits_width=0.25", "--calib_size=64", "--val_size=100"]


def initializers(path):
    return {init.name: numpy_helper.to_array(init).tobytes() for init in onnx.load(str(path)).graph.initializer}


def test_default_run_keeps_accuracy_of_the_trained_model(w8a8):
    assert w8a8.float_top1 > 80.0  # a trained model, not a degenerate one
    assert abs(w8a8.quant_top1 - w8a8.float_top1) <= 2.0


def test_bias_correction_runs_to_an_export(bias_corrected):
    assert "bias_corr" in bias_corrected.seconds
    # Estimated from 256 images on a small model it may cost a point or two; a broken pass
    # falls to chance (10%).
    assert bias_corrected.quant_top1 >= bias_corrected.float_top1 - 5.0


@pytest.mark.parametrize("flag", ["--act_eq=True", "--gptq=True", "--gpfq=True"])
def test_each_ptq_flag_runs_to_an_export(run_demo, tmp_path, flag):
    result = run_demo(tmp_path / "model.onnx", flag, *QUICK_PTQ)
    assert (tmp_path / "model.onnx").stat().st_size > 100_000
    assert result.quant_top1 > 50.0


def test_act_eq_bias_corr_and_gpfq_together_run_to_an_export(run_demo, tmp_path):
    result = run_demo(tmp_path / "model.onnx", "--act_eq=True", "--bias_corr=True", "--gpfq=True",
                      *QUICK_PTQ)
    assert {"act_eq", "bias_corr", "gpfq", "calibration"} <= set(result.seconds)
    assert result.quant_top1 > 50.0


def test_same_flags_and_seed_give_same_accuracy_and_identical_weights(run_demo, w8a8, tmp_path):
    again = run_demo(tmp_path / "again.onnx")
    assert (again.float_top1, again.quant_top1) == (w8a8.float_top1, w8a8.quant_top1)
    assert initializers(again.output) == initializers(w8a8.output)


def test_another_seed_draws_another_calibration_subset(run_demo, w8a8, tmp_path):
    other = run_demo(tmp_path / "other.onnx", "--seed=1")
    assert initializers(other.output) != initializers(w8a8.output)
