"""Quantization-aware training on the suite's small trained digits model at W4A4 (8-bit input,
first conv and classifier), from calibration alone: training lowers the distillation loss on
held-out images, the export is the same kind of graph as PTQ's and passes the checks, and an
interrupted run resumed from its checkpoint ends where an uninterrupted one ends.
"""
import collections

import onnx
import pytest
import torch

import finn_mobilenetv2 as demo
from finn_demo.common.configurator import ConfigError
from finn_demo.quant import qat
from finn_demo.data.datasets import imagenet_calib_and_val
from finn_demo.data.models import imagenet_transform
from finn_demo.run import qat_train_set
from finn_demo.testing.imagenet_folder import make_imagenet_folder

A4_FLAGS = ["--weight_bit_width=4", "--act_bit_width=4", "--first_conv_bit_width=8",
            "--last_linear_bit_width=8", "--input_bit_width=8"]
QAT = ["--qat_epochs=2", "--qat_images=256", "--qat_lr=3e-4"]


@pytest.fixture(scope="module")
def ptq_and_qat(run_demo, tmp_path_factory):
    """(the PTQ-only run, the same run with QAT on top), both exported and checked."""
    folder = tmp_path_factory.mktemp("qat")
    ptq = run_demo(folder / "ptq.onnx", *A4_FLAGS, "--check_export=True")
    trained = run_demo(folder / "qat.onnx", *A4_FLAGS, *QAT, "--check_export=True")
    return ptq, trained


def node_counts(path):
    return collections.Counter(node.op_type for node in onnx.load(str(path)).graph.node)


def test_training_lowers_the_distillation_loss_on_held_out_images(ptq_and_qat):
    ptq, trained = ptq_and_qat
    start, end = trained.qat_history[0], trained.qat_history[-1]
    assert [figures["epoch"] for figures in trained.qat_history] == [0, 1, 2]
    # epoch 0 is the PTQ model itself: the same model the PTQ-only run exported
    assert start["top1"] == pytest.approx(ptq.quant_eval.top1)
    assert end["loss"] < 0.8 * start["loss"], trained.qat_history
    assert trained.quant_eval.top1 >= ptq.quant_eval.top1
    # (not the logit SQNR: the loss is blind to a constant added to all of an image's logits,
    # which moves no probability and no prediction but counts against the SQNR: docs/qat.md)


def test_the_qat_export_is_ptqs_kind_of_graph_and_passes_the_checks(ptq_and_qat):
    ptq, trained = ptq_and_qat
    assert node_counts(trained.output) == node_counts(ptq.output)
    assert trained.report.ok, trained.report
    assert "equivalence" in trained.report.checks and not trained.report.checks["equivalence"].failed


def test_training_changes_weights_their_scales_ranges_and_batchnorm_but_not_its_statistics(ptq_and_qat):
    ptq, trained = ptq_and_qat
    before, after = ptq.model.state_dict(), trained.model.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert any(name.endswith(".weight") and "bn" not in name for name in changed)
    assert any(".act_quant." in name and name.endswith("scaling_impl.value") for name in changed)
    assert any(".weight_quant." in name and name.endswith("scaling_impl.value") for name in changed)
    statistics = [name for name in before if name.endswith(("running_mean", "running_var"))]
    assert statistics and not changed & set(statistics)


def test_a_resumed_run_equals_an_uninterrupted_one(run_demo, ptq_and_qat, tmp_path, monkeypatch):
    _, uninterrupted = ptq_and_qat
    output = tmp_path / "qat.onnx"
    save = qat._save_checkpoint

    def save_then_stop(*args):  # Ctrl-C right after the first epoch's checkpoint
        save(*args)
        raise KeyboardInterrupt
    monkeypatch.setattr(qat, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_demo(output, *A4_FLAGS, *QAT)
    assert not output.exists() and (tmp_path / "qat.qat.pt").is_file()
    monkeypatch.setattr(qat, "_save_checkpoint", save)
    resumed = run_demo(output, *A4_FLAGS, *QAT, "--resume=True", "--check_export=True")
    assert untimed(resumed.qat_history) == untimed(uninterrupted.qat_history)
    expected = uninterrupted.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, expected[name]), name
    assert resumed.report.ok


def untimed(history):
    """The history less each epoch's seconds (a resumed epoch takes other seconds)."""
    return [{name: value for name, value in figures.items() if name != "seconds"}
            for figures in history]


def test_resuming_a_finished_run_exports_without_training(run_demo, ptq_and_qat, monkeypatch):
    _, trained = ptq_and_qat
    monkeypatch.setattr(qat, "train_epoch", lambda *args, **kwargs: pytest.fail("trained again"))
    again = run_demo(trained.output, *A4_FLAGS, *QAT, "--resume=True")
    assert again.qat_history == trained.qat_history
    assert again.quant_eval.top1 == trained.quant_eval.top1


def test_resuming_with_other_flags_is_refused_naming_them(run_demo, ptq_and_qat):
    _, trained = ptq_and_qat
    with pytest.raises(ConfigError, match=r"--qat_lr=0\.0003"):
        run_demo(trained.output, *A4_FLAGS, *QAT, "--qat_lr=1e-3", "--resume=True")


@pytest.mark.parametrize("flags, message", [
    (["--resume=True"], "--resume=True continues quantization-aware training"),
    (["--qat_epochs=1", "--resume=True", "--qat_checkpoint=missing.pt"], "no QAT checkpoint missing.pt"),
    (["--qat_epochs=-1"], "--qat_epochs=-1"),
    (["--qat_epochs=1", "--qat_lr=0.0"], "--qat_lr=0.0"),
])
def test_bad_qat_flags_fail_in_one_line(flags, message, capsys):
    assert demo.cli(flags) == 2
    error = capsys.readouterr().err
    assert message in error and len(error.strip().splitlines()) == 1


def test_imagenet_qat_without_train_trains_on_vals_calibration_part_only(tmp_path):
    """With only val/, QAT trains on the images calibration took out of validation (augmented),
    never on one that validation scores."""
    data = make_imagenet_folder(tmp_path, [], ["n01440764", "n01443537"], per_class=4)
    args = demo.make_args([f"--data_dir={data}", "--calib_size=3", "--seed=1", "--qat_epochs=1"])
    calib, val = imagenet_calib_and_val(data, "", imagenet_transform(""), 3, seed=1)
    train = qat_train_set(args)
    trained = {train.dataset.dataset.samples[train.dataset.indices[index]][0]
               for index in train.indices}
    assert trained == {calib.dataset.samples[index][0] for index in calib.indices}
    assert not trained & {val.dataset.samples[index][0] for index in val.indices}
    assert "RandomResizedCrop" in repr(train.dataset.dataset.transform)
