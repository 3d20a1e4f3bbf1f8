"""check_export: the real export passes every check, and each check fails on a graph broken for it.

The broken graphs are copies of the session's trained w8a8 export with one thing changed by hand,
so each failing test shows that its check catches what it claims to. FINN's frontend runs once,
on the suite's trained 3-stage MobileNetV2 (every structure of the full model in 19 convs instead
of 52: qonnx's graph passes take time quadratic in the node count; under 2 minutes here).
"""
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.batchnorm_to_affine import BatchNormToAffine
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.remove import remove_node_and_rewire
from qonnx.util.cleanup import cleanup_model

import check_export as ce

ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 3  # qonnx executes the graph node by node: about a second per image per graph


def distinct_digits(loader, count):
    """`count` validation images, each of another digit, so top-1 can vary across them."""
    picked, labels = [], set()
    for batch_images, batch_labels in loader:
        for image, label in zip(batch_images, batch_labels.tolist()):
            if label not in labels and len(picked) < count:
                picked.append(image)
                labels.add(label)
    return torch.stack(picked)


@pytest.fixture(scope="module")
def images(w8a8):
    return distinct_digits(w8a8.val_loader, NUM_IMAGES)


@pytest.fixture(scope="module")
def report(bias_corrected, images):
    """Every check but FINN's on a real export whose Convs have biases, with the Brevitas model."""
    return ce.check_export(bias_corrected.output, images, brevitas_model=bias_corrected.model,
                           finn=False)


@pytest.fixture(scope="module")
def full_depth_report(full_depth):
    """The structural checks on the full 7-stage export."""
    return ce.check_export(full_depth.output, finn=False)


@pytest.fixture(scope="module")
def finn_images(bias_corrected):
    return distinct_digits(bias_corrected.val_loader, ce.FINN_IMAGES)


@pytest.fixture(scope="module")
def finn_graphs(bias_corrected, finn_build_run):
    """(cleaned QONNX, converted, streamlined, seconds): FINN's frontend on the bias-corrected
    export (its Convs carry quantized biases: FINN's harder case), as finn_build.py ran it."""
    result, out_dir = finn_build_run  # skips without FINN, except in CI
    converted, streamlined = (ModelWrapper(str(out_dir / "intermediate" / name))
                              for name in ("1_frontend.onnx", "2_streamline.onnx"))
    seconds = {"convert": result.seconds["frontend"], "streamline": result.seconds["streamline"]}
    return cleanup_model(ModelWrapper(str(bias_corrected.output))), converted, streamlined, seconds


def check_finn_on(finn_graphs, images, streamlined=None):
    """check_finn on the module's FINN graphs, the streamlined one replaced if given."""
    cleaned, converted, real_streamlined, seconds = finn_graphs
    with frontend_returning(converted, streamlined or real_streamlined, seconds):
        return ce.check_finn(cleaned, images)


@contextmanager
def frontend_returning(*graphs):
    """ce.finn_frontend replaced by one that returns `graphs`: FINN's frontend runs once only."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ce, "finn_frontend", lambda model: graphs)
        yield


@pytest.fixture(scope="module")
def finn_report(finn_graphs, finn_images, bias_corrected):
    """check_export with FINN, its frontend's graphs taken from finn_graphs."""
    with frontend_returning(*finn_graphs[1:]):
        return ce.check_export(bias_corrected.output, finn_images,
                               brevitas_model=bias_corrected.model, finn=True)


@pytest.fixture
def model(w8a8):
    """A fresh, editable copy of the real export."""
    return ModelWrapper(str(w8a8.output))


def save(model, tmp_path, name="broken.onnx"):
    path = tmp_path / name
    model.save(str(path))
    return path


def residual_add(model):
    return model.get_nodes_by_op_type("Add")[0]


def give_new_scale(model, quant, factor):
    """Point `quant` at a scale of its own, `factor` times the old one (the old may be shared)."""
    name = f"{quant.name}_new_scale"
    model.set_initializer(name, (model.get_initializer(quant.input[1]) * factor).astype(np.float32))
    quant.input[1] = name


def conv_fed_by_relu_quant(model):
    """A Conv whose input Quant (after a ReLU) feeds only that Conv, so removing it breaks only it."""
    for conv in model.get_nodes_by_op_type("Conv"):
        quant = model.find_producer(conv.input[0])
        source = model.find_producer(quant.input[0])  # None for the graph input's Quant
        if (quant.op_type == "Quant" and len(model.find_consumers(quant.output[0])) == 1
                and source is not None and source.op_type == "Relu"):
            return conv, quant
    raise AssertionError("the export has no Conv fed by a ReLU's Quant")


# ------------------------------------------------------------------------------------ the real export
def test_real_export_passes_every_check(report):
    print(report)
    assert report.ok, str(report)
    for name in ("weight_quant", "input_quant", "add_scales", "batchnorm", "equivalence"):
        assert report[name].passed, str(report[name])


def test_full_export_quantizes_every_layer_and_joins_ten_residual_adds(full_depth_report):
    assert full_depth_report.ok, str(full_depth_report)
    assert full_depth_report["weight_quant"].summary.startswith("all 53 ")
    assert full_depth_report["input_quant"].summary.startswith("all 53 ")
    assert full_depth_report["add_scales"].summary.startswith("all 10 ")


def test_full_export_keeps_one_batchnorm_per_source_batchnorm_layer(full_depth_report, full_depth):
    assert full_depth_report["batchnorm"].figures["batchnorm_nodes"] == 52
    assert ce.batchnorm_layers(full_depth.model) == 52


def test_short_export_quantizes_every_layer_and_joins_three_residual_adds(report, w8a8):
    assert report["weight_quant"].summary.startswith("all 20 ")
    assert report["add_scales"].summary.startswith("all 3 ")
    assert report["batchnorm"].figures["batchnorm_nodes"] == ce.batchnorm_layers(w8a8.model) == 19


def test_qonnx_execution_matches_brevitas_on_real_images(report, bias_corrected, images):
    figures = report["equivalence"].figures
    brevitas = ce.brevitas_logits(bias_corrected.model, images)
    assert np.ptp(brevitas, axis=1).min() > 1.0, "degenerate logits prove nothing"
    assert len(set(brevitas.argmax(axis=1))) > 1, "top-1 should vary across different digits"
    assert figures["top1_agree"] == figures["images"] == NUM_IMAGES
    assert figures["diff_in_output_steps"] <= ce.EQUIVALENCE_MAX_STEPS
    print(report["equivalence"])


def test_metadata_of_the_run_is_read_from_the_file(report):
    assert report.metadata["weight_bit_width"] == "8"
    assert report.metadata["data_dir"] == ""
    assert "quant_top1" in report.metadata


# ------------------------------------------------------------------------------------ FINN
def test_finn_frontend_runs_and_its_graphs_match_qonnx(finn_report):
    print(finn_report)
    assert finn_report.ok, str(finn_report)
    finn = finn_report["finn"]
    for graph in ("converted", "streamlined"):
        figures = finn.figures[graph]
        assert figures["top1_agree"] + figures["near_tie_flips"] == figures["images"] == ce.FINN_IMAGES
        assert figures["exact_images"] >= ce.FINN_MIN_EXACT * ce.FINN_IMAGES
        assert figures["relative_diff"] <= ce.FINN_TOLERANCE
    remaining = finn.figures["streamlined_node_types"]
    assert "Quant" not in remaining and "BatchNormalization" not in remaining
    assert remaining.get("MultiThreshold", 0) > 0
    assert remaining["Add"] == 3, "the 3-stage model's three residual Adds"


def test_finn_graph_with_one_threshold_row_shifted_fails_the_finn_check(finn_graphs, finn_images):
    # The fault FINN's threshold computation could make: one channel's thresholds one level too
    # high, in a layer halfway through, for the channel most active on the first image. It moves
    # the logits by a step or two, well within FINN_TOLERANCE; most images stop being exact.
    streamlined = ModelWrapper(finn_graphs[2].model.SerializeToString())
    thresholds = streamlined.get_nodes_by_op_type("MultiThreshold")
    node = thresholds[len(thresholds) // 2]
    grid_images = ce.on_input_grid(finn_graphs[0], finn_images[:1])[0].numpy()
    output = execute_onnx(streamlined, {streamlined.graph.input[0].name: grid_images},
                          return_full_exec_context=True)[node.output[0]]
    channel = int(np.argmax((output > 0).sum(axis=(0, 2, 3))))
    rows = streamlined.get_initializer(node.input[1]).copy()
    assert rows.shape[0] > 1, "expected per-channel thresholds after Streamline"
    rows[channel] += rows[channel, 1] - rows[channel, 0]
    streamlined.set_initializer(node.input[1], rows)
    result = check_finn_on(finn_graphs, finn_images, streamlined)
    print(result)
    assert result.failed, str(result)
    untouched, broken = result.figures["converted"], result.figures["streamlined"]
    assert untouched["exact_images"] >= ce.FINN_MIN_EXACT * ce.FINN_IMAGES
    assert broken["exact_images"] < ce.FINN_MIN_EXACT * ce.FINN_IMAGES


def test_a_top1_change_across_a_near_tie_is_reported_not_failed():
    reference = np.array([[5.0, 4.9, 0.0], [0.0, 1.0, 9.0]], dtype=np.float32)
    candidate = np.array([[4.9, 5.0, 0.0], [0.0, 1.0, 9.0]], dtype=np.float32)  # 0.1 each way
    result = ce.compare_logits("finn", candidate, reference, 0.10, near_ties=True)
    assert result.passed and result.figures["near_tie_flips"] == 1, str(result)
    assert "near-tie flip" in result.summary
    strict = ce.compare_logits("finn", candidate, reference, 0.10)
    assert strict.failed, "without near_ties every top-1 change fails"


def test_a_top1_change_across_a_wider_margin_than_the_deviation_fails():
    # Margin 0.5, largest single deviation 0.3: both logits moved against each other by more than
    # half the margin, which rounding noise of a step does not do.
    reference = np.array([[5.0, 4.5, 0.0], [0.0, 1.0, 9.0]], dtype=np.float32)
    candidate = np.array([[4.7, 4.8, 0.0], [0.0, 1.0, 9.0]], dtype=np.float32)
    result = ce.compare_logits("finn", candidate, reference, 0.10, near_ties=True)
    assert result.failed and result.offenders[0].startswith("image 0: top-1 1 vs 0"), str(result)


def test_fewer_exact_images_than_required_fail_within_the_tolerance():
    reference = np.array([[5.0, 1.0], [1.0, 5.0], [5.0, 2.0], [2.0, 5.0]], dtype=np.float32)
    candidate = reference + np.array([[0.1, 0.0], [0.0, 0.1], [0.1, 0.0], [0.0, 0.0]], np.float32)
    assert ce.compare_logits("finn", candidate, reference, 0.10, min_exact=0.25).passed
    result = ce.compare_logits("finn", candidate, reference, 0.10, min_exact=0.5)
    assert result.failed and "only 1 of 4 images exact" in result.summary, str(result)


def test_images_on_the_input_grid_are_left_as_they_are_and_raw_digits_sit_on_ties(w8a8, images):
    model = ModelWrapper(str(w8a8.output))
    rounded, tie_fraction = ce.on_input_grid(model, images)
    assert tie_fraction > 0.0, "digits: 17 grey levels upsampled onto the input's 2**-7 grid"
    assert not torch.equal(rounded, images)
    again, no_ties = ce.on_input_grid(model, rounded)
    assert torch.equal(again, rounded) and no_ties == 0.0


def test_finn_graphs_that_disagree_with_qonnx_fail_the_finn_check(w8a8, images, monkeypatch):
    # FINN's frontend is stood in for by the QONNX graph itself and the reference logits get their
    # classes reversed: the disagreement the check must catch, without a second FINN run.
    cleaned = cleanup_model(ModelWrapper(str(w8a8.output)))
    images = images[:2]
    reversed_logits = ce.run_graph(cleaned, images)[:, ::-1].copy()
    monkeypatch.setattr(ce, "finn_import_problem", lambda: None)
    monkeypatch.setattr(ce, "finn_frontend", lambda model: (cleaned, cleaned, {
        "convert": 0.0, "streamline": 0.0}))
    result = ce.check_finn(cleaned, images, reversed_logits)
    assert result.failed and result.offenders, str(result)
    assert "near-tie" not in result.summary, "a deviation beyond the tolerance excuses no flip"


def test_without_finn_the_finn_check_is_skipped_with_the_install_command(w8a8, monkeypatch):
    monkeypatch.setattr(ce, "finn_installed", lambda: False)
    result = ce.check_finn(ModelWrapper(str(w8a8.output)), images=None)
    assert result.status == "skipped"
    assert result.summary.startswith("skipped: install the FINN frontend")
    assert "pip install --no-deps finn-plus==1.6.1" in result.summary
    assert "pip install -r requirements-finn.txt" in result.summary


def test_a_broken_finn_install_fails_the_finn_check_naming_the_module(monkeypatch):
    monkeypatch.setattr(ce, "finn_installed", lambda: True)
    monkeypatch.setitem(sys.modules, "finn_demo.finn_steps", None)  # its import now fails
    result = ce.check_finn(None, images=None)
    assert result.failed, str(result)
    assert "finn_demo.finn_steps does not import" in result.summary
    assert "ModuleNotFoundError" in result.summary


def test_a_report_whose_numbers_were_all_skipped_does_not_say_ok():
    checks = [ce.CheckResult("weight_quant", "pass", "all"),
              ce.CheckResult("equivalence", "skipped", "skipped: needs the Brevitas model"),
              ce.CheckResult("finn", "skipped", "skipped: turned off")]
    report = ce.Report("m.onnx", {check.name: check for check in checks}, {})
    assert report.ok
    assert str(report).endswith("result: structure OK; numbers not checked (equivalence and "
                                "finn skipped)"), str(report)


def test_run_images_lists_only_the_validation_split(tmp_path):
    from imagenet_folder import make_imagenet_folder
    root = make_imagenet_folder(tmp_path / "imagenet", [], ["n01440764", "n01443537"])
    assert not (root / "train").exists()  # listing train/ (1.28M files in ImageNet) takes minutes
    images = ce.run_images({"data_dir": str(root), "weights": "IMAGENET1K_V1", "val_size": "4"}, 3)
    assert images.shape == (3, 3, 224, 224)


# ------------------------------------------------------------------------------------ broken graphs
def test_add_inputs_with_different_scales_fail_the_alignment_check(model):
    assert ce.check_add_scales(model).passed
    add = residual_add(model)
    give_new_scale(model, ce.quant_source(model, add.input[1]), 1.5)
    result = ce.check_add_scales(model)
    assert result.failed and len(result.offenders) == 1
    assert result.offenders[0].startswith(add.name)


def test_a_graph_without_batchnorm_fails_the_batchnorm_check(model):
    # BN turned into Mul + Add, as FINN's streamlining does; it needs the tensor shapes.
    model = model.transform(InferShapes()).transform(BatchNormToAffine())
    assert not model.get_nodes_by_op_type("BatchNormalization")
    result = ce.check_batchnorm(model)
    assert result.failed and result.figures["batchnorm_nodes"] == 0
    assert ce.check_add_scales(model).passed, "the affine Adds have constant operands: not joins"


def test_a_missing_batchnorm_fails_against_the_source_model_and_names_its_conv(model, w8a8):
    bn = model.get_nodes_by_op_type("BatchNormalization")[5]
    conv = model.find_producer(bn.input[0])
    remove_node_and_rewire(model, bn)
    assert ce.check_batchnorm(model).passed  # 51 remain: fine without knowing the source
    result = ce.check_batchnorm(model, ce.batchnorm_layers(w8a8.model))
    assert result.failed and result.offenders == [f"{conv.name} (Conv): not followed by BatchNormalization"]


def test_a_conv_without_its_input_quant_fails_the_input_check(model):
    assert ce.check_input_quant(model).passed
    conv, quant = conv_fed_by_relu_quant(model)
    remove_node_and_rewire(model, quant)
    result = ce.check_input_quant(model)
    assert result.failed and result.offenders == [
        f"{conv.name} (Conv): input comes from Relu, not a Quant"]


def test_a_quant_before_global_average_pool_does_not_count_for_the_classifier(model):
    gemm = model.get_nodes_by_op_type("Gemm")[0]
    remove_node_and_rewire(model, model.find_producer(gemm.input[0]))  # its Quant after Flatten
    result = ce.check_input_quant(model)
    assert result.failed and result.offenders == [
        f"{gemm.name} (Gemm): input comes from Flatten, not a Quant"]


def test_a_conv_with_float_weights_fails_the_weight_check(model):
    assert ce.check_weight_quant(model).passed
    conv = model.get_nodes_by_op_type("Conv")[3]
    remove_node_and_rewire(model, model.find_producer(conv.input[1]))
    result = ce.check_weight_quant(model)
    assert result.failed and len(result.offenders) == 1
    assert result.offenders[0].startswith(f"{conv.name} (Conv): weight ")
    assert ce.check_input_quant(model).passed and ce.check_add_scales(model).passed


def test_a_wrong_activation_scale_fails_the_equivalence_check(model, tmp_path, w8a8, images):
    conv, quant = conv_fed_by_relu_quant(model)
    give_new_scale(model, quant, 3.0)
    report = ce.check_export(save(model, tmp_path), images, brevitas_model=w8a8.model, finn=False)
    assert report["weight_quant"].passed and report["input_quant"].passed  # structure is intact
    equivalence = report["equivalence"]
    print(equivalence)
    assert equivalence.failed, str(equivalence)
    # Measured: 2 to 3 steps on every image, none exact; noise moves an odd image a step or two.
    assert equivalence.figures["diff_in_output_steps"] > ce.EQUIVALENCE_MAX_STEPS
    assert not report.ok


STEP = 0.1  # an output Quant's scale: logits are whole multiples of it


def on_grid(levels):
    return (np.array(levels, dtype=np.float32) * np.float32(STEP)).astype(np.float32)


def test_one_or_two_output_steps_on_a_minority_of_images_pass_the_equivalence_rule():
    # What onnxruntime's and PyTorch's summation orders do on an odd image: one or two steps.
    reference = on_grid([[80, 20, 0], [0, 70, 10], [5, 0, 60], [30, 85, 0]])
    noisy = reference + on_grid([[0, 2, 0], [0, 0, 0], [1, 0, 0], [0, 0, 0]])
    result = ce.judge_equivalence(noisy, reference, STEP)
    assert result.passed, str(result)
    assert result.figures["relative_diff"] > 0.02, "2 steps of 8.5: what a 2% tolerance failed"
    assert result.figures["steps_per_image"] == [2.0, 0.0, 1.0, 0.0]
    # One step on every image passes too (snippet 1 without PTQ, measured: both images 1 step off).
    everywhere = reference + on_grid([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 1, 0]])
    assert ce.judge_equivalence(everywhere, reference, STEP).passed


def test_more_output_steps_fail_the_equivalence_rule():
    reference = on_grid([[80, 20, 0], [0, 70, 10], [5, 0, 60], [30, 85, 0]])
    too_far = reference + on_grid([[0, ce.EQUIVALENCE_MAX_STEPS + 1, 0], [0] * 3, [0] * 3, [0] * 3])
    result = ce.judge_equivalence(too_far, reference, STEP)
    assert result.failed and result.figures["exact_images"] == 3, str(result)


def test_a_top1_change_within_a_tie_of_the_reference_passes_and_across_one_step_fails():
    # 4-bit logits (PW3A4, measured): classes 0 and 3 tie at the top; QONNX puts class 0 a step
    # lower. argmax said 0 for one and 3 for the other, but neither has a single top-1.
    reference = on_grid([[1, 0, -1, 1], [0, 3, 1, 0]])
    lowered = on_grid([[0, 0, -1, 1], [0, 3, 1, 0]])
    result = ce.judge_equivalence(lowered, reference, STEP)
    assert result.passed and result.figures["tied_top1"] == 1, str(result)
    # A margin of one step is not a tie: the equivalence check forgives no near tie.
    reference = on_grid([[2, 0, -1, 1], [0, 3, 1, 0]])
    swapped = on_grid([[1, 0, -1, 2], [0, 3, 1, 0]])
    result = ce.judge_equivalence(swapped, reference, STEP)
    assert result.failed and result.offenders[0].startswith("image 0: top-1 3 vs 0"), str(result)


def test_without_an_output_quant_equivalence_is_judged_relative_to_the_largest_logit():
    reference = np.array([[8.0, 2.0, 0.0], [0.0, 7.0, 1.0]], dtype=np.float32)
    rounding = reference + np.float32(1e-5)  # float logits: no image exact, none need be
    assert ce.judge_equivalence(rounding, reference, None).passed
    result = ce.judge_equivalence(reference * np.float32(1.03), reference, None)
    assert result.failed and "(tolerance 2%)" in result.summary, str(result)


def test_equivalence_on_all_equal_logits_fails_as_proving_nothing():
    zeros = np.zeros((3, 10), dtype=np.float32)
    result = ce.compare_logits("equivalence", zeros, zeros, ce.EQUIVALENCE_TOLERANCE)
    assert result.failed and "prove" in result.summary


def test_without_the_brevitas_model_equivalence_is_skipped_and_says_why(w8a8):
    report = ce.check_export(w8a8.output, finn=False)
    assert report.ok
    assert report["equivalence"].status == "skipped"
    assert "Brevitas model" in report["equivalence"].summary


# ------------------------------------------------------------------------------------ command line
def run_cli(path):
    return subprocess.run([sys.executable, str(ROOT / "check_export.py"), str(path), "--no-finn"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_command_line_passes_a_good_file_and_prints_its_metadata(w8a8):
    result = run_cli(w8a8.output)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weight_bit_width = 8" in result.stdout
    # No Brevitas model and no FINN: every numerical check skipped, so not a plain "OK".
    assert "result: structure OK; numbers not checked" in result.stdout


def test_command_line_exits_non_zero_on_a_broken_file(model, tmp_path):
    add = residual_add(model)
    give_new_scale(model, ce.quant_source(model, add.input[0]), 2.0)
    result = run_cli(save(model, tmp_path))
    assert result.returncode != 0
    assert "FAIL add_scales" in result.stdout and add.name in result.stdout


def test_demo_checks_its_export_and_prints_report_and_metadata(cache_dir, tmp_path, capsys):
    import finn_mobilenetv2 as demo
    from conftest import SMALL
    status = demo.cli([f"--cache_dir={cache_dir}", *SMALL, f"--output={tmp_path / 'm.onnx'}",
                       "--check_export=True", "--check_finn=False", "--eval_backend=auto"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "weight_bit_width = 8" in printed and "torch_version = " in printed
    assert "equivalence" in printed and "result: OK" in printed
    # The quantized top-1 says what measured it, on screen and in the file (the default backend:
    # onnxruntime on a CPU, with its agreement with the Brevitas model).
    backend = {"onnxruntime": "onnxruntime (QCDQ export)", "brevitas": "Brevitas (PyTorch)"}[
        demo.resolve_backend(demo.make_args([]))]
    assert f"validation images, measured by {backend}" in printed
    assert f"quant_top1_measured_by = {backend}" in printed
    if "onnxruntime" in backend:
        assert "its top-1 agrees with the Brevitas model's on " in printed
