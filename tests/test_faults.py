"""Faults around the run, each cheap to provoke: an interrupt after the export, flags the parser
accepts but the run refuses, reused intermediates of another model, failures that name their
cause, third-party noise, and FINN's tests under CI."""
import hashlib
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

import finn_mobilenetv2 as demo
from finn_demo import finn_install, run
from finn_demo.hw import cache
from finn_demo.checks import file as checks_file
from finn_demo.testing.suite import ROOT
from finn_demo.data import models
from finn_demo.common.configurator import ConfigError
from finn_demo.data.datasets import first_images
from finn_demo.testing.imagenet_folder import make_imagenet_folder


# ------------------------------------------------------------------------------------ the demo
def test_check_images_are_gathered_across_batches(tmp_path, monkeypatch):
    # An untrained 1-stage model stands in for the digits model: only the images handed to the
    # checks matter here.
    monkeypatch.setattr(run, "load_digits_model",
                        lambda *args, **kwargs: models.digits_mobilenet_v2(0.25, stages=1))
    handed = []

    def record_check(path, images, **kwargs):
        handed.append(images)
        from finn_demo.checks import Report
        return Report(str(path), {}, {})
    monkeypatch.setattr(checks_file, "check_file", record_check)
    demo.main(demo.make_args([
        f"--output={tmp_path / 'm.onnx'}", "--calib_size=4", "--val_size=10", "--batch_size=2",
        "--check_images=5", "--eval_backend=brevitas", f"--cache_dir={tmp_path}"]))
    (images,) = handed
    assert images.shape[0] == 5  # batch_size 2: three batches' worth


def test_first_images_stop_at_count_and_skip_empty_batches():
    batches = [(torch.zeros(2, 1), None), None, (torch.ones(2, 1), None), (torch.ones(2, 1), None)]
    assert first_images(batches, 3).flatten().tolist() == [0, 0, 1]


def test_verbose_flag_is_read_as_parsed_not_as_text():
    with pytest.raises(ConfigError, match="--calib_size=0"):
        demo.cli(["--calib_size=0", "--verbose=true"])  # true parses as True


def test_interrupt_after_the_export_says_it_was_written(tmp_path, monkeypatch, capsys):
    output = tmp_path / "m.onnx"

    def export_then_interrupt(args):
        output.write_bytes(b"exported")
        raise KeyboardInterrupt
    monkeypatch.setattr(demo, "main", export_then_interrupt)
    assert demo.cli([f"--output={output}"]) == 130
    message = capsys.readouterr().err
    assert f"the export {output} was written; the steps after it did not finish" in message


def test_interrupt_before_the_export_says_nothing_was_written(tmp_path, monkeypatch, capsys):
    output = tmp_path / "m.onnx"
    output.write_bytes(b"previous")

    def interrupt(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(demo, "main", interrupt)
    assert demo.cli([f"--output={output}"]) == 130
    assert "no output file was written or changed" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ finn_build --reuse
def identity_model():
    tensors = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4]) for name in "xy"]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [tensors[0]],
                              [tensors[1]])
    return ModelWrapper(qonnx_make_model(graph))


@pytest.fixture
def sources(tmp_path):
    """Two different source model files."""
    paths = [tmp_path / "a.onnx", tmp_path / "b.onnx"]
    for index, path in enumerate(paths):
        model = identity_model()
        model.set_metadata_prop("which", str(index))
        model.save(str(path))
    return paths


def count_runs(calls):
    def step(model, *args):
        calls.append(args)
        return model
    return step


def test_reuse_loads_only_intermediates_of_the_same_model_and_flags(tmp_path, sources):
    out_dir, calls = tmp_path / "build", []
    cache.StepCache(out_dir, True, sources[0])("fold", count_runs(calls), identity_model(), 1000)
    cache.StepCache(out_dir, True, sources[0])("fold", count_runs(calls), identity_model(), 1000)
    assert len(calls) == 1  # the second build loaded it
    cache.StepCache(out_dir, True, sources[1])("fold", count_runs(calls), identity_model(), 1000)
    assert len(calls) == 2  # another --model: run again
    cache.StepCache(out_dir, True, sources[1])("fold", count_runs(calls), identity_model(), 500)
    assert len(calls) == 3  # another --target_fps: run again


def test_after_a_step_runs_again_the_later_steps_run_again(tmp_path, sources):
    out_dir, calls = tmp_path / "build", []
    for part in ("xczu7ev-ffvc1156-2-e", "xcu250-figd2104-2L-e"):
        step = cache.StepCache(out_dir, True, sources[0])
        step("specialize", count_runs(calls), identity_model(), part)
        step("fold", count_runs(calls), identity_model(), 1000)
    # Another --fpga_part: specialize runs again, and fold too, on the new specialized model,
    # although fold's own flags are the same.
    assert len(calls) == 4


def test_an_interrupted_save_leaves_no_intermediate_to_reuse(tmp_path, sources, monkeypatch):

    def save_half(self, path):
        with open(path, "wb") as file:
            file.write(b"half a model")
        raise KeyboardInterrupt
    monkeypatch.setattr(ModelWrapper, "save", save_half)
    step = cache.StepCache(tmp_path / "build", True, sources[0])
    with pytest.raises(KeyboardInterrupt):
        step("frontend", count_runs([]), identity_model())
    assert os.listdir(tmp_path / "build" / "intermediate") == []


def test_a_broken_finn_install_refuses_the_build_naming_the_module(tmp_path, monkeypatch, capsys):
    import finn_build
    broken = ModuleNotFoundError("No module named 'rich'", name="rich")
    monkeypatch.setattr(finn_install, "finn_import_error", lambda module: broken)
    monkeypatch.setattr(finn_install, "finn_installed", lambda: True)
    assert finn_build.cli([f"--out_dir={tmp_path / 'build'}"]) == 2
    message = capsys.readouterr().err.strip()
    assert "FINN is installed but module rich does not import" in message, message
    assert "\n" not in message


# ------------------------------------------------------------------------------------ benchmark
@pytest.mark.parametrize("argv, fragments", [
    (["--weight_bit_width=1", "--bits=W8A8", "--ptq=none"], ["--weight_bit_width=1", "from 2 to 16"]),
    (["--gptq=True", "--bits=W8A8", "--ptq=none,gpfq"], ["choose one", "--ptq=gpfq"]),
])
def test_benchmark_runs_the_demos_flag_checks_before_any_row(argv, fragments):
    import benchmark
    with pytest.raises(ConfigError) as caught:
        benchmark.make_args(argv)
    for fragment in fragments:
        assert fragment in str(caught.value)


# ------------------------------------------------------------------------------------ causes named
def test_an_unreadable_weights_file_names_the_exception_and_its_message(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"not a PyTorch checkpoint \(UnpicklingError: \w+"):
        models._load_weights_file(path)


def test_an_unreadable_digits_cache_names_the_exception_and_its_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(models, "train_digits_model",
                        lambda *args, **kwargs: models.digits_mobilenet_v2(0.25, stages=1))
    path = tmp_path / "digits_mobilenet_v2_w0.25_e1_s1_seed0.pt"
    path.write_bytes(b"not a checkpoint")
    path.with_suffix(".sha256").write_text(hashlib.sha256(path.read_bytes()).hexdigest())
    models.load_digits_model([0] * 10, tmp_path, 0.25, 1, 1, 0)
    assert "is unusable (UnpicklingError: " in capsys.readouterr().out


# ------------------------------------------------------------------------------------ noise
def test_a_run_prints_no_third_party_notices_but_the_projects_warnings(tmp_path):
    root = make_imagenet_folder(tmp_path, [], ["n01440764"], per_class=1)
    (root / "val" / "n01440764" / "broken.JPEG").write_bytes(b"not a jpeg")
    script = textwrap.dedent(f"""
        import sys
        import finn_mobilenetv2 as demo
        from finn_demo.data.datasets import ImageNetFolder
        folder = ImageNetFolder({str(root / 'val')!r})
        [folder[index] for index in range(len(folder))]  # warns about broken.JPEG
        sys.exit(demo.cli(["--calib_size=0"]))
    """)
    # CUDA_HOME names an existing folder: torch then logs its notice on a machine without a GPU.
    env = {**os.environ, "CUDA_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, env=env, timeout=300)
    printed = run.stdout + run.stderr
    assert run.returncode == 2, printed
    for notice in ("No CUDA runtime is found", "fast_hadamard_transform", "children_specs",
                   "brevitas.fx is deprecated"):
        assert notice not in printed, printed
    assert "skipping" in printed and "broken.JPEG" in printed, printed
    assert "error: --calib_size=0: must be positive" in printed


# ------------------------------------------------------------------------------------ CI
def collect_finn_tests(tmp_path, ci):
    """Collect test_finn_build.py in a fresh pytest where `finn` cannot be imported."""
    (tmp_path / "no_finn.py").write_text("import sys\nsys.modules['finn'] = None  # as if not installed\n")
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    if ci:
        env["CI"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/test_finn_build.py", "--collect-only", "-rs",
         "-p", "no_finn", "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)


def test_without_finn_the_finn_tests_skip_outside_ci_and_error_in_ci(tmp_path):
    local = collect_finn_tests(tmp_path, ci=False)
    assert "1 skipped" in local.stdout and "FINN is not installed" in local.stdout, local.stdout
    assert "error" not in local.stdout.lower(), local.stdout
    ci = collect_finn_tests(tmp_path, ci=True)
    assert ci.returncode not in (0, 5), ci.stdout
    assert "1 error" in ci.stdout and "ModuleNotFoundError" in ci.stdout, ci.stdout
