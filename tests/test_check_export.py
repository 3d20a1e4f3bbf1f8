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

from finn_demo import checks as ce
from finn_demo import finn_install, run
from finn_demo.checks import numbers
from finn_demo.testing.suite import calibrated_model, small_digits
from finn_demo.testing.faults import FAULTS
from finn_demo.checks import layerwise

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
    return ce.check_file(bias_corrected.output, images, brevitas_model=bias_corrected.model,
                           finn=False)


@pytest.fixture(scope="module")
def full_depth_report(full_depth):
    """The structural checks on the full 7-stage export."""
    return ce.check_file(full_depth.output, finn=False)


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
        patch.setattr(numbers, "finn_frontend", lambda model: graphs)
        yield


@pytest.fixture(scope="module")
def finn_report(finn_graphs, finn_images, bias_corrected):
    """check_export with FINN, its frontend's graphs taken from finn_graphs."""
    with frontend_returning(*finn_graphs[1:]):
        return ce.check_file(bias_corrected.output, finn_images,
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


def test_qonnx_matches_brevitas_at_every_quantizer_on_real_images(report, bias_corrected, images):
    figures = report["equivalence"].figures
    _, reference = layerwise.record_quantizers(bias_corrected.model, images)
    assert np.ptp(reference, axis=1).min() > 1.0, "degenerate logits prove nothing"
    assert len(set(reference.argmax(axis=1))) > 1, "top-1 should vary across different digits"
    quants = ModelWrapper(str(bias_corrected.output)).get_nodes_by_op_type("Quant")
    assert figures["layers"] == len(quants) and figures["failing_layers"] == []
    assert figures["top1_agree"] <= figures["images"] == NUM_IMAGES  # reported, not judged
    print(report["equivalence"])


def test_metadata_of_the_run_is_read_from_the_file(report):
    assert report.metadata["weight_bit_width"] == "8"
    assert report.metadata["data_dir"] == ""
    assert "quant_top1" in report.metadata


# ------------------------------------------------------------------------------------ FINN
def test_finn_frontend_runs_and_its_graphs_match_qonnx_layer_by_layer(finn_report):
    print(finn_report)
    assert finn_report.ok, str(finn_report)
    finn = finn_report["finn"]
    remaining = finn.figures["streamlined_node_types"]
    for graph in ("converted", "streamlined"):
        figures = finn.figures[graph]
        assert figures["failing_layers"] == []
        assert figures["layers"] == remaining["MultiThreshold"] > 0
    assert "Quant" not in remaining and "BatchNormalization" not in remaining
    assert remaining["Add"] == 3, "the 3-stage model's three residual Adds"


def test_finn_graph_with_one_threshold_row_shifted_fails_the_finn_check_naming_it(finn_graphs,
                                                                                  finn_images):
    # The fault FINN's threshold computation could make: one channel's thresholds one level too
    # high, in a layer halfway through, for the channel most active on the first image.
    streamlined = ModelWrapper(finn_graphs[2].model.SerializeToString())
    thresholds = streamlined.get_nodes_by_op_type("MultiThreshold")
    node = thresholds[len(thresholds) // 2]
    output = execute_onnx(streamlined, {streamlined.graph.input[0].name: finn_images[:1].numpy()},
                          return_full_exec_context=True)[node.output[0]]
    channel = int(np.argmax((output > 0).sum(axis=(0, 2, 3))))
    rows = streamlined.get_initializer(node.input[1]).copy()
    assert rows.shape[0] > 1, "expected per-channel thresholds after Streamline"
    rows[channel] += rows[channel, 1] - rows[channel, 0]
    streamlined.set_initializer(node.input[1], rows)
    result = check_finn_on(finn_graphs, finn_images, streamlined)
    print(result)
    assert result.failed, str(result)
    assert result.figures["converted"]["failing_layers"] == []
    assert result.figures["streamlined"]["failing_layers"] == [node.name]
    assert node.name in result.offenders[0]


def test_finn_graphs_whose_thresholds_do_not_pair_with_the_quants_fail(w8a8, images, monkeypatch):
    # FINN's frontend is stood in for by the QONNX graph with one activation Quant removed: its
    # quantizers no longer pair one for one, so nothing can be compared, a failure, not a pass.
    cleaned = cleanup_model(ModelWrapper(str(w8a8.output)))
    lost = cleanup_model(ModelWrapper(str(w8a8.output)))
    remove_node_and_rewire(lost, conv_fed_by_relu_quant(lost)[1])
    monkeypatch.setattr(numbers, "finn_import_problem", lambda: None)
    monkeypatch.setattr(numbers, "finn_frontend", lambda model: (lost, lost, {
        "convert": 0.0, "streamline": 0.0}))
    result = ce.check_finn(cleaned, images[:2])
    assert result.failed and "do not pair" in result.summary, str(result)


def test_images_on_the_input_grid_are_left_as_they_are(w8a8, images):
    model = ModelWrapper(str(w8a8.output))
    rounded = layerwise.on_input_grid(model, images)
    assert not torch.equal(rounded, images), "digits: 17 grey levels, many on the input's ties"
    assert torch.equal(layerwise.on_input_grid(model, rounded), rounded)


def without_metadata(w8a8):
    """The export as a file from elsewhere comes: its metadata names no data set."""
    model = ModelWrapper(str(w8a8.output))
    del model.model.metadata_props[:]
    return model


def test_a_file_naming_no_data_set_is_checked_on_seeded_inputs_on_its_input_grid(w8a8):
    model = without_metadata(w8a8)
    inputs, what = ce.check_inputs(model, 4)
    assert inputs.shape == (4, 3, 32, 32)
    assert "seeded random inputs on the input quantizer's grid" in what, what
    assert torch.equal(layerwise.on_input_grid(model, inputs), inputs)  # the Quant's own values
    assert torch.equal(ce.check_inputs(model, 4)[0], inputs)  # the same every time
    quant = layerwise.input_quant(model)
    scale = float(model.get_initializer(quant.input[1]))
    levels = torch.unique(torch.round(inputs / scale))
    assert len(levels) > 2 ** (int(model.get_initializer(quant.input[3])) - 1)  # across its grid


def test_a_data_set_not_on_this_machine_falls_back_to_the_input_grid_saying_why(w8a8, tmp_path):
    from onnx.helper import set_model_props
    model = without_metadata(w8a8)
    set_model_props(model.model, {"data_dir": str(tmp_path / "elsewhere")})  # where the demo writes
    _, what = ce.check_inputs(model, 2)
    assert "grid" in what and "not here" in what and str(tmp_path / "elsewhere") in what, what
    assert "validation images" in ce.check_inputs(ModelWrapper(str(w8a8.output)), 2)[1]


@pytest.mark.parametrize("layout", ["flat", "ImageNet"])
def test_a_folder_of_images_is_preprocessed_to_the_models_input_as_imagenet_weights_are(
        layout, w8a8, tmp_path):
    from PIL import Image
    from finn_demo.testing.imagenet_folder import make_imagenet_folder
    from finn_demo.data.models import imagenet_transform
    if layout == "flat":
        folder = tmp_path / "flat"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for index, size in enumerate([(40, 60), (80, 50), (33, 33)]):
            pixels = rng.integers(0, 256, (*size, 3), np.uint8)
            Image.fromarray(pixels).save(folder / f"photo_{index}.png")
        Image.fromarray(pixels[..., 0]).save(folder / "grey.png")  # made RGB on loading
        files = sorted(folder.iterdir())
    else:
        folder = make_imagenet_folder(tmp_path / "imagenet", ["n01440764"], ["n01443537"])
        files = sorted((folder / "val").rglob("*.JPEG"))  # train/ is not read
    inputs, what = ce.check_inputs(without_metadata(w8a8), 3, str(folder))
    assert inputs.shape == (min(3, len(files)), 3, 32, 32) and str(folder) in what
    transform = imagenet_transform("", crop_size=32)
    expected = [transform(Image.open(path).convert("RGB")) for path in files]
    assert all(any(torch.equal(image, one) for one in expected) for image in inputs)


def test_without_finn_the_finn_check_is_skipped_with_the_install_command(w8a8, monkeypatch):
    monkeypatch.setattr(finn_install, "finn_installed", lambda: False)
    result = ce.check_finn(ModelWrapper(str(w8a8.output)), images=None)
    assert result.status == "skipped"
    assert result.summary.startswith("skipped: install the FINN frontend")
    assert "pip install --no-deps finn-plus==1.6.1" in result.summary
    assert "pip install -r requirements-finn.txt" in result.summary


def test_a_broken_finn_install_fails_the_finn_check_naming_the_module(monkeypatch):
    monkeypatch.setattr(finn_install, "finn_installed", lambda: True)
    monkeypatch.setitem(sys.modules, "finn_demo.hw.steps", None)  # its import now fails
    result = ce.check_finn(None, images=None)
    assert result.failed, str(result)
    assert "finn_demo.hw.steps does not import" in result.summary
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
    from finn_demo.testing.imagenet_folder import make_imagenet_folder
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


@pytest.mark.parametrize("fault", FAULTS, ids=lambda fault: fault.__name__)
def test_each_fault_fails_the_equivalence_check_naming_its_layer(fault, tmp_path, w8a8, images):
    model = ModelWrapper(str(w8a8.output))
    faulty = fault(model)
    report = ce.check_file(save(model, tmp_path), images, brevitas_model=w8a8.model, finn=False)
    equivalence = report["equivalence"]
    print(equivalence)
    assert equivalence.failed, str(equivalence)
    assert equivalence.figures["failing_layers"][0] == faulty, equivalence.figures["failing_layers"]
    assert equivalence.offenders[0].startswith(f"{faulty} (")


def test_a_file_of_another_model_does_not_pair_with_it(w8a8, bias_corrected, images):
    # bias correction gives every Conv a bias and its Quant: not the quantizers of w8a8's model
    result = ce.check_equivalence(ModelWrapper(str(bias_corrected.output)), images, w8a8.model)
    assert result.failed and "not this model's export" in result.summary, str(result)


def check_of(levels, reference, before, delta):
    return layerwise.judge(layerwise.LayerCheck("n", "r"), np.array(levels, float),
                           np.array(reference, float), np.array(before, float), delta)


def test_one_level_off_on_a_tie_passes_and_elsewhere_fails():
    # The reference rounded 2.4999 to 2; a sum in another order may land on 2.5001 and give 3.
    assert check_of([3.0, 5.0], [2.0, 5.0], [2.4999, 5.1], 1e-3).ok
    off_tie = check_of([3.0, 5.0], [2.0, 5.0], [2.3, 5.1], 1e-3)
    assert not off_tie.ok and off_tie.not_ties == 1 and off_tie.over_one == 0
    assert check_of([3.0, 5.0], [2.0, 5.0], [2.3, 5.1], 0.25).ok, "a wider delta forgives it"


def test_two_levels_off_fail_even_on_a_tie():
    check = check_of([4.0], [2.0], [2.5], 1.0)
    assert not check.ok and check.over_one == 1
    assert "more than one level off" in str(check)


def test_the_reference_records_what_each_quantizer_rounds_behind_act_eq_mul_nodes(cache_dir):
    # Rule (c) asks whether the reference's value before rounding lay on a tie. After activation
    # equalization with add_mul_node a quantized ReLU6 rounds relu(x) * s, not its input x: each
    # recorded value must round to the recorded level, except where it lies on a tie itself.
    import quant_utils as qu
    float_model, calib_loader, held_out = small_digits(cache_dir, held_out=4)
    model = qu.quantize_and_recover(float_model, calib_loader, held_out[:1], qu.bit_width_maps(
        act_bit_width=4, input_bit_width=8), act_eq=True, act_eq_add_mul_node=True)
    behind_mul = {name for name, module in model.named_modules()
                  if isinstance(getattr(getattr(module, "fused_activation_quant_proxy", None),
                                        "activation_impl", None), torch.nn.Sequential)}
    assert behind_mul, "act_eq put no Mul inside a quantized activation: nothing under test"
    firings, _ = layerwise.record_quantizers(model, held_out)
    assert behind_mul <= {firing.name for firing in firings}
    for firing in firings:
        if firing.kind != "activation":
            continue
        levels = np.round(firing.value / firing.scale + firing.zero_point)
        before = firing.before / firing.scale + firing.zero_point
        rounded = np.clip(np.round(before), levels.min(), levels.max())
        on_tie = np.abs(before - np.floor(before) - 0.5) < 1e-3
        wrong = (rounded != levels) & ~on_tie
        assert not wrong.any(), f"{firing.name}: {wrong.sum()} of {wrong.size} values round elsewhere"


def test_equivalence_with_no_quantizer_compared_fails(w8a8, images, monkeypatch):
    logits = np.arange(len(images) * 10.0).reshape(len(images), 10)
    monkeypatch.setattr(layerwise, "compare_with_brevitas", lambda *args: layerwise.Comparison(
        [], logits, logits))
    result = ce.check_equivalence(ModelWrapper(str(w8a8.output)), images, w8a8.model)
    assert result.failed and "no quantizer to compare" in result.summary, str(result)


@pytest.fixture(scope="module")
def collapsed(cache_dir, tmp_path_factory):
    """(a calibrated model that gives every class the same logit, its correct export, images): the
    last BatchNorm and the classifier's bias zeroed, as a PTQ run that collapses ends up."""
    import quant_utils as qu
    from finn_demo.export import export_finn_onnx
    float_model, calib_loader, held_out = small_digits(cache_dir, held_out=NUM_IMAGES)
    model = calibrated_model(float_model, calib_loader, held_out[:1], qu.bit_width_maps())
    last_batchnorm = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d)][-1]
    with torch.no_grad():
        classifier = [module for module in model.modules() if isinstance(module, torch.nn.Linear)][-1]
        for tensor in (last_batchnorm.weight, last_batchnorm.bias, classifier.bias):
            tensor.zero_()
    path = export_finn_onnx(model, held_out[:1], tmp_path_factory.mktemp("collapsed") / "c.onnx", {})
    return model, path, held_out


def test_a_collapsed_models_correct_export_passes_and_says_its_logits_are_all_equal(collapsed):
    model, path, images = collapsed
    result = ce.check_equivalence(ModelWrapper(str(path)), images, model)
    assert result.passed, str(result)
    assert result.figures["reference_logits_all_equal"] and "all equal" in result.summary
    assert result.figures["layers"] == len(ModelWrapper(str(path)).get_nodes_by_op_type("Quant"))


def test_a_fault_in_a_collapsed_models_export_still_fails_naming_its_layer(collapsed, tmp_path):
    model, path, images = collapsed
    broken = ModelWrapper(str(path))
    faulty = FAULTS[0](broken)
    result = ce.check_equivalence(ModelWrapper(str(save(broken, tmp_path))), images, model)
    assert result.failed and result.figures["failing_layers"][0] == faulty, str(result)


def test_without_the_brevitas_model_equivalence_is_skipped_and_says_why(w8a8):
    report = ce.check_file(w8a8.output, finn=False)
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
    from finn_demo.testing.suite import SMALL
    status = demo.cli([f"--cache_dir={cache_dir}", *SMALL, f"--output={tmp_path / 'm.onnx'}",
                       "--check_export=True", "--check_finn=False", "--eval_backend=auto"])
    printed = capsys.readouterr().out
    assert status == 0
    assert "weight_bit_width = 8" in printed and "torch_version = " in printed
    assert "equivalence" in printed and "result: OK" in printed
    # The quantized top-1 says what measured it, on screen and in the file (the default backend:
    # onnxruntime on a CPU, with its agreement with the Brevitas model).
    backend = {"onnxruntime": "onnxruntime (QCDQ export)", "brevitas": "Brevitas (PyTorch)"}[
        run.resolve_backend(demo.make_args([]))]
    assert f"validation images, measured by {backend}" in printed
    assert f"quant_top1_measured_by = {backend}" in printed
    if "onnxruntime" in backend:
        assert "its top-1 agrees with the Brevitas model's on " in printed
