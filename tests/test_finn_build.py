"""finn_build.py: the whole build on the suite's model (3-stage MobileNetV2, 20 layers, 3
residual Adds), and its checks seen failing on a float node in the partition and on one wrong
threshold row. The 53-layer digits model takes about 10 minutes (README); the graph passes cost
grows with the square of the node count, not with the width."""
import json

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model
from qonnx.util.cleanup import cleanup_model

from conftest import import_finn_steps

fs = import_finn_steps()  # skips without FINN, except in CI
import finn_build  # noqa: E402
from check_export import metadata_of, run_images  # noqa: E402
from finn.core.onnx_exec import execute_onnx  # noqa: E402


@pytest.fixture(scope="module")
def built(finn_build_run):
    result, out_dir = finn_build_run
    return result, out_dir, json.loads((out_dir / "estimates.json").read_text())


def hw_graph(out_dir):
    """A fresh copy of the build's hardware-layer graph before partitioning."""
    return ModelWrapper(str(out_dir / "intermediate" / "4_convert_to_hw.onnx"))


def test_build_passes_its_checks_and_every_layer_is_a_hardware_layer(built, bias_corrected):
    result, out_dir, _ = built
    assert result.failures == []
    accelerator = ModelWrapper(str(out_dir / "hw_layers.onnx"))
    assert all(node.domain.startswith(finn_build.HW_DOMAIN) for node in accelerator.graph.node)
    source = ModelWrapper(str(bias_corrected.output))
    counts = {op: len(accelerator.get_nodes_by_op_type(op))
              for op in ("MVAU_rtl", "MVAU_hls", "VVAU_rtl", "VVAU_hls", "ElementwiseAdd_hls")}
    convs = len(source.get_nodes_by_op_type("Conv")) + len(source.get_nodes_by_op_type("Gemm"))
    depthwise = sum(1 for node in source.get_nodes_by_op_type("Conv")
                    if helper.get_attribute_value(next(a for a in node.attribute if a.name == "group")) > 1)
    assert counts["VVAU_rtl"] + counts["VVAU_hls"] == depthwise > 0
    assert counts["MVAU_rtl"] + counts["MVAU_hls"] == convs - depthwise
    assert counts["ElementwiseAdd_hls"] == len(source.get_nodes_by_op_type("Add")) == 3
    assert len(accelerator.get_nodes_by_op_type("LabelSelect_hls")) == 1


def test_estimates_cover_every_layer_with_nonzero_totals(built):
    result, out_dir, estimates = built
    accelerator = ModelWrapper(str(out_dir / "hw_layers.onnx"))
    assert [layer["name"] for layer in estimates["layers"]] == [n.name for n in accelerator.graph.node]
    assert all(estimates["totals"][key] > 0 for key in ("LUT", "BRAM_18K", "DSP"))
    slowest = max(layer["cycles"] for layer in estimates["layers"])
    assert estimates["estimated_fps"] == pytest.approx(1e9 / estimates["clock_ns"] / slowest)
    assert estimates["part"] == finn_build.FLAGS["fpga_part"]
    # SetFolding parallelized the layers for the target frame rate: every layer meets it.
    assert estimates["estimated_fps"] >= estimates["target_fps"]


def test_a_float_node_between_hardware_layers_fails_the_partition_check(built, bias_corrected,
                                                                          tmp_path):
    model = hw_graph(built[1])
    mvau = model.get_nodes_by_op_type("MVAU")[len(model.get_nodes_by_op_type("MVAU")) // 2]
    scaled, scale = mvau.output[0] + "_scaled", mvau.output[0] + "_scale"
    for consumer in model.find_consumers(mvau.output[0]):
        consumer.input[list(consumer.input).index(mvau.output[0])] = scaled
    model.set_initializer(scale, np.array(0.5, dtype=np.float32))
    model.graph.node.insert(list(model.graph.node).index(mvau) + 1,
                            helper.make_node("Mul", [mvau.output[0], scale], [scaled], name="FloatMul"))
    model.set_tensor_datatype(scaled, DataType["FLOAT32"])
    qonnx_model = cleanup_model(ModelWrapper(str(bias_corrected.output)))
    failures, accelerator, _ = finn_build.partition_and_check(model, qonnx_model, tmp_path)
    assert accelerator is None
    assert any("FloatMul" in failure for failure in failures), failures


def test_one_wrong_threshold_row_fails_the_hardware_graph_check(built, bias_corrected):
    # One channel's thresholds one level too high, in a Thresholding layer halfway through,
    # for the channel most active on the first image: a step or two on the logits.
    model = hw_graph(built[1])
    qonnx_model = cleanup_model(ModelWrapper(str(bias_corrected.output)))
    layers = model.get_nodes_by_op_type("Thresholding")
    node = layers[len(layers) // 2]
    image = run_images(metadata_of(qonnx_model), 1).numpy()
    output = execute_onnx(model, {model.graph.input[0].name: image},
                          return_full_exec_context=True)[node.output[0]]
    channel = int(np.argmax((output > 0).reshape(-1, output.shape[-1]).sum(axis=0)))
    rows = model.get_initializer(node.input[1]).copy()
    rows[channel] += rows[channel, 1] - rows[channel, 0]
    model.set_initializer(node.input[1], rows)
    result = finn_build.check_hw_graph(model, qonnx_model, 8)
    assert result.failed, str(result)


def test_without_finn_the_build_is_refused_with_the_install_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(finn_build, "FINN_IMPORT_ERROR", ImportError("No module named 'finn'"))
    monkeypatch.setattr(finn_build, "finn_installed", lambda: False)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    assert finn_build.cli([f"--model={model}", f"--out_dir={tmp_path / 'build'}"]) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "pip install --no-deps finn-plus" in message, message
    assert not (tmp_path / "build").exists()


def test_unknown_flag_is_refused(capsys):
    assert finn_build.cli(["--fpga=xc7z020"]) == 2
    assert "unknown flag --fpga" in capsys.readouterr().err


def test_missing_model_is_refused_before_any_work(capsys, tmp_path):
    out_dir = tmp_path / "build"
    assert finn_build.cli([f"--model={tmp_path / 'none.onnx'}", f"--out_dir={out_dir}"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert not out_dir.exists()


def test_only_integer_adds_become_hardware():
    tensors = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])
               for name in ("a", "b", "c", "sum", "scaled")]
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Add", ["sum", "c"], ["scaled"])],
        "adds", tensors[:3], tensors[4:], value_info=[tensors[3]])
    model = ModelWrapper(qonnx_make_model(graph))
    for name, dtype in (("a", "INT8"), ("b", "UINT8"), ("sum", "INT32"), ("c", "FLOAT32")):
        model.set_tensor_datatype(name, DataType[dtype])
    residual, float_add = model.graph.node
    assert fs.integer_add(model, residual)
    assert not fs.integer_add(model, float_add)


def test_demo_flag_builds_the_export_beside_it_and_fails_with_the_build(cache_dir, tmp_path,
                                                                         capsys, monkeypatch):
    # The build itself is the session's finn_build_run; here, what the demo hands it and does
    # with its verdict.
    import finn_mobilenetv2 as demo
    from conftest import SMALL
    calls = []

    def failing_build(args):
        calls.append(args)
        return type("Result", (), {"failures": ["hw_graph: a wrong threshold"]})()
    monkeypatch.setattr(finn_build, "main", failing_build)
    output = tmp_path / "m.onnx"
    status = demo.cli([f"--cache_dir={cache_dir}", *SMALL, f"--output={output}", "--finn_build=True"])
    assert status == 1
    assert "FAILED hw_graph: a wrong threshold" in capsys.readouterr().out
    (args,) = calls
    assert args.model == str(output) and args.out_dir == str(tmp_path / "finn_build")
