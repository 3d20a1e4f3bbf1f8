"""Bad input: a one-line error naming the flag or path, exit status 2, and nothing written."""
import dataclasses
import subprocess
import sys

import pytest
import torch
from torchvision.models import mobilenet_v2

import finn_mobilenetv2 as demo
from finn_demo.quant import ptq
from finn_demo.testing.imagenet_folder import make_imagenet_folder
from finn_demo.testing.suite import ROOT, SMALL

PREVIOUS = b"the previous export"


@pytest.fixture
def output(tmp_path):
    """An existing output file whose bytes must survive a failed run."""
    path = tmp_path / "out" / "quant_mobilenet_v2.onnx"
    path.parent.mkdir()
    path.write_bytes(PREVIOUS)
    return path


def assert_refused(capsys, output, argv, *fragments):
    status = demo.cli([f"--output={output}", *argv])
    message = capsys.readouterr().err.strip()
    assert status == 2
    assert message.startswith("error: ") and "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    assert output.read_bytes() == PREVIOUS
    assert sorted(path.name for path in output.parent.iterdir()) == [output.name]


@pytest.mark.parametrize("argv, fragments", [
    (["--weight_bit_width=0"], ["--weight_bit_width=0", "from 2 to 16"]),
    (["--act_bit_width=33"], ["--act_bit_width=33"]),
    (["--depthwise_bit_width=4.5"], ["--depthwise_bit_width=4.5"]),
    (["--first_conv_bit_width='8'"], ["--first_conv_bit_width"]),
    (["--weight_bit_width=4.0"], ["--weight_bit_width expects a int"]),
    (["--act_eq_alpha=1.5"], ["--act_eq_alpha=1.5", "[0, 1]"]),
    (["--calib_size=0"], ["--calib_size=0", "positive"]),
    (["--qronos_alpha=0.0"], ["--qronos_alpha=0.0", "positive"]),
    (["--val_size=-5"], ["--val_size=-5"]),
    (["--batch_size=0"], ["--batch_size=0"]),
    (["--gptq=True", "--gpfq=True"], ["--gptq and --gpfq", "choose one"]),
    (["--accumulator_bit_width=16"], ["--accumulator_bit_width=16", "--gpfq=True"]),
    (["--qronos=True", "--accumulator_bit_width=16"], ["--accumulator_bit_width=16", "GPTQ and GPFQ"]),
    (["--gpfq=True", "--accumulator_bit_width=2"], ["--accumulator_bit_width=2", "from 3 to 32"]),
    (["--input_bit_width=1"], ["--input_bit_width=1", "from 2 to 16"]),
    (["--add_bit_width=17"], ["--add_bit_width=17", "from 2 to 16"]),
    (["--relu6_range=max"], ["--relu6_range='max'", "fixed or calibrated"]),
    (["--relu6_range=calibrated", "--relu6_to_relu=True"], ["--relu6_range=calibrated", "--relu6_to_relu=True"]),
    (["--gpfq=True", "--qronos=True"], ["--gpfq and --qronos", "choose one"]),
    (["--gptq=True", "--learned_round=layerwise"], ["--gptq and --learned_round", "choose one"]),
    (["--learned_round=blockwise_all"], ["--learned_round='blockwise_all'", "choose none, layerwise"]),
    (["--learned_round_iters=0"], ["--learned_round_iters=0", "positive"]),
    (["--learned_act_range=True", "--learned_act_range_iters=0"], ["--learned_act_range_iters=0", "positive"]),
    (["--learned_act_range=True", "--qdrop=1.0"], ["--qdrop=1.0", "up to but not including 1"]),
    (["--qdrop=0.5"], ["--qdrop=0.5", "--learned_act_range=True"]),
    (["--learned_act_range_bn=True"], ["--learned_act_range_bn=True", "--learned_act_range=True"]),
    (["--bias_cor=True"], ["unknown flag --bias_cor"]),
    (["--batch_size=abc"], ["--batch_size expects a int", "'abc'"]),
    (["--gpfq=yes"], ["--gpfq expects True or False"]),
    (["gpfq"], ["--name=value"]),
    (["--weights=IMAGENET1K_V9", "--data_dir=somewhere"], ["--weights='IMAGENET1K_V9'", "IMAGENET1K_V1"]),
    (["--device=tpu"], ["--device='tpu'"]),
    (["--eval_backend=ort"], ["--eval_backend='ort'", "onnxruntime"]),
    (["--digits_stages=8"], ["--digits_stages=8", "1 to 7"]),
    (["--weights=IMAGENET1K_V2"], ["--weights=IMAGENET1K_V2", "--data_dir"]),
])
def test_bad_flags_are_refused_before_any_work(capsys, output, argv, fragments):
    assert_refused(capsys, output, argv, *fragments)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_device_without_a_gpu_is_refused(capsys, output):
    assert_refused(capsys, output, ["--device=cuda"], "--device=cuda", "--device=cpu")


def test_output_in_a_missing_folder_is_refused(capsys, output, tmp_path):
    status = demo.cli([f"--output={tmp_path / 'missing' / 'model.onnx'}"])
    assert status == 2
    assert "--output" in capsys.readouterr().err
    assert not (tmp_path / "missing").exists()


def imagenet_argv(data_dir, weights):
    return [f"--data_dir={data_dir}", f"--weights={weights}", "--workers=0"]


@pytest.mark.parametrize("layout, fragments", [
    ("missing", ["does not exist", "--data_dir"]),
    ("no_val", ["no val/ folder"]),
    ("not_wnids", ["not ImageNet wnids", "cats"]),
    ("empty_val", ["holds no images"]),
])
def test_bad_data_dir_is_refused(capsys, output, tmp_path, imagenet_weights, layout, fragments):
    root = tmp_path / "imagenet"
    if layout == "no_val":
        make_imagenet_folder(root, ["n01440764"], [])  # makes no val/
    elif layout == "not_wnids":
        make_imagenet_folder(root, ["n01440764", "cats"], ["n01440764"])
    elif layout == "empty_val":
        make_imagenet_folder(root, ["n01440764"], [])
        (root / "val" / "n01440764").mkdir(parents=True)
    assert_refused(capsys, output, imagenet_argv(root, imagenet_weights), *fragments)


@pytest.mark.parametrize("content, fragments", [
    (None, ["does not exist"]),
    (b"not a checkpoint", ["is not a PyTorch checkpoint"]),
    ("classes10", ["does not fit torchvision's MobileNetV2"]),
])
def test_bad_weights_file_is_refused(capsys, output, tmp_path, content, fragments):
    root = make_imagenet_folder(tmp_path / "imagenet", ["n01440764"], ["n01440764"])
    weights = tmp_path / "weights.pth"
    if content == "classes10":
        torch.save(mobilenet_v2(num_classes=10).state_dict(), weights)
    elif content is not None:
        weights.write_bytes(content)
    assert_refused(capsys, output, imagenet_argv(root, weights), "--weights", *fragments)


def test_verbose_shows_the_traceback():
    with pytest.raises(Exception, match="--calib_size=0"):
        demo.cli(["--calib_size=0", "--verbose=True"])


def test_command_line_error_is_one_line_without_traceback(output):
    run = subprocess.run([sys.executable, str(ROOT / "finn_mobilenetv2.py"), "--weight_bit_width=1",
                          f"--output={output}"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: --weight_bit_width=1")
    assert "Traceback" not in run.stderr
    assert output.read_bytes() == PREVIOUS


def test_ctrl_c_during_calibration_ends_cleanly(capsys, monkeypatch, output, cache_dir):
    def interrupted(loader, model):
        raise KeyboardInterrupt
    monkeypatch.setattr(ptq, "PTQ_PASSES", tuple(
        dataclasses.replace(ptq_pass, run=interrupted) if ptq_pass.name == "calibration" else ptq_pass
        for ptq_pass in ptq.PTQ_PASSES))
    status = demo.cli([f"--cache_dir={cache_dir}", *SMALL, f"--output={output}"])
    assert status == 130
    assert capsys.readouterr().err.strip().split("\r")[-1].startswith("interrupted: the run stopped")
    assert output.read_bytes() == PREVIOUS


def test_failure_during_export_leaves_the_previous_file_and_no_partial_file(
        monkeypatch, output, cache_dir):
    from finn_demo import export

    def failing_save(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(export.onnx, "save", failing_save)
    assert demo.cli([f"--cache_dir={cache_dir}", *SMALL, f"--output={output}"]) == 130
    assert output.read_bytes() == PREVIOUS
    assert sorted(path.name for path in output.parent.iterdir()) == [output.name]


def test_netron_without_the_package_is_refused(capsys, output, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "netron" else real_find_spec(name, *args))
    assert_refused(capsys, output, ["--netron=True"], "--netron=True", "pip install netron")


def test_finn_build_without_finn_is_refused(capsys, output, monkeypatch):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "finn" else real_find_spec(name, *args))
    assert_refused(capsys, output, ["--finn_build=True"], "--finn_build=True", "finn-plus")
