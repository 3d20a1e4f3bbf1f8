"""Activation equalization with add_mul_node reaches FINN: Brevitas puts a positive per-channel
Mul between each quantized ReLU6's Relu and its Quant; FINN's frontend step moves it before the
Relu (hw.steps.MoveReluPastPositiveMul), where Streamline folds it into the thresholds. One
build of the suite's small model with `--act_eq=True --act_eq_add_mul_node=True`, and the
refusal of a scale that cannot move, on a tiny graph and through finn_build.py."""
import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.basic import qonnx_make_model
from qonnx.util.cleanup import cleanup_model

from finn_demo.testing.suite import import_finn_steps

fs = import_finn_steps()  # skips without FINN, except in CI
import finn_build  # noqa: E402

ACT_EQ = ["--act_eq=True", "--act_eq_add_mul_node=True"]


def relu_mul_quant(scale):
    """x -> Relu -> Mul(scale per channel) -> 4-bit unsigned Quant, as Brevitas exports a
    quantized ReLU6 after activation equalization with add_mul_node."""
    shape = [1, len(scale), 3, 3]
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"], name="Relu_0"),
         helper.make_node("Mul", ["r", "s"], ["m"], name="Mul_0"),
         helper.make_node("Quant", ["m", "q", "z", "b"], ["y"], domain="qonnx.custom_op.general",
                          signed=0, narrow=0, rounding_mode="ROUND", name="Quant_0")],
        "relu_mul_quant", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    values = {"s": np.reshape(scale, (1, -1, 1, 1)), "q": 0.4, "z": 0.0, "b": 4.0}
    for name, value in values.items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    return cleanup_model(model)


def run(model, x):
    """The graph's full execution context on input x."""
    return execute_onnx(model, {model.graph.input[0].name: x}, return_full_exec_context=True)


def test_a_positive_scale_after_a_relu_moves_before_it_with_the_same_values():
    model = relu_mul_quant([0.3, 1.7, 0.05, 2.0])
    moved = model.transform(fs.MoveReluPastPositiveMul())
    assert [node.op_type for node in moved.graph.node] == ["Mul", "Relu", "Quant"]
    x = np.random.default_rng(0).normal(0, 3, size=(1, 4, 3, 3)).astype(np.float32)
    before, after = run(model, x), run(moved, x)
    quant_input = [graph.get_nodes_by_op_type("Quant")[0].input[0] for graph in (model, moved)]
    assert np.array_equal(before[quant_input[0]], after[quant_input[1]])  # bit for bit
    levels = before[model.graph.output[0].name]
    assert levels.max() > 0 and np.array_equal(after[moved.graph.output[0].name], levels)
    converted = fs.frontend(model)  # the Relu is gone into the unsigned quantizer's thresholds
    assert "Relu" not in [node.op_type for node in converted.graph.node]
    assert np.array_equal(run(converted, x)[converted.graph.output[0].name], levels)


@pytest.mark.parametrize("scale", [[0.3, -1.7, 0.05, 2.0], [0.3, 1.7, 0.0, 2.0]],
                         ids=["negative", "zero"])
def test_a_scale_after_a_relu_that_is_not_positive_is_refused_naming_the_node(scale):
    with pytest.raises(fs.ScaleAfterReluError) as error:
        relu_mul_quant(scale).transform(fs.MoveReluPastPositiveMul())
    message = str(error.value)
    assert "\n" not in message and message.startswith("Mul_0 (Mul after Relu_0)"), message
    assert "<= 0 on 1 of 4 channels" in message, message


@pytest.fixture(scope="module")
def act_eq_export(run_demo, tmp_path_factory):
    """The demo with activation equalization inserting Mul nodes, on the suite's small model."""
    return run_demo(tmp_path_factory.mktemp("act_eq") / "act_eq.onnx", *ACT_EQ)


@pytest.fixture(scope="module")
def act_eq_build(act_eq_export, tmp_path_factory):
    """finn_build.py on that export, once: (exit status, what it printed, out_dir)."""
    import contextlib
    import io
    out_dir = tmp_path_factory.mktemp("act_eq_build")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        status = finn_build.cli([f"--model={act_eq_export.output}", f"--out_dir={out_dir}",
                                 "--verify_images=4"])
    return status, printed.getvalue(), out_dir


def scales_after_relus(model):
    """The Mul nodes that follow a Relu in a QONNX graph."""
    return [node for node in model.get_nodes_by_op_type("Mul")
            if (model.find_producer(node.input[0]) or node).op_type == "Relu"]


def test_an_act_eq_export_with_mul_nodes_builds_with_every_check_passed(act_eq_export,
                                                                        act_eq_build):
    status, printed, out_dir = act_eq_build
    assert scales_after_relus(ModelWrapper(str(act_eq_export.output)))  # what is under test
    assert status == 0 and "every check passed" in printed, printed
    log = (out_dir / "build_dataflow.log").read_text()
    assert "hardware vs QONNX, layer by layer" in log and "0 break the rule" in log
    streamlined = ModelWrapper(str(out_dir / "intermediate" / "2_streamline.onnx"))
    assert "Relu" not in [node.op_type for node in streamlined.graph.node]
    parent = ModelWrapper(str(out_dir / "intermediate_models" / "dataflow_parent.onnx"))
    outside = {node.op_type for node in parent.graph.node} - {"StreamingDataflowPartition"}
    assert not outside & {"Mul", "Relu", "Add"} and outside <= {"Div", "Quant", "Transpose", "TopK"}


def test_finn_build_refuses_a_negative_scale_after_a_relu_in_one_line(act_eq_export, tmp_path,
                                                                      capsys):
    model = ModelWrapper(str(act_eq_export.output))
    mul = scales_after_relus(model)[0]
    scale = model.get_initializer(mul.input[1]).copy()
    scale.flat[0] = -scale.flat[0]
    model.set_initializer(mul.input[1], scale)
    model.save(str(tmp_path / "negative.onnx"))
    status = finn_build.cli([f"--model={tmp_path / 'negative.onnx'}",
                             f"--out_dir={tmp_path / 'build'}"])
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAILED")]
    assert status == 1 and len(failed) == 1, failed
    assert failed[0].startswith("FAILED frontend: ") and "<= 0 on 1 of" in failed[0], failed
