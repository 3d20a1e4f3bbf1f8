"""finn_build.py's cheap behaviour: flags and the residual-Add filter.

The build itself takes about 15 minutes on two cores (streamlining alone about 10), so it is run
by hand: `python finn_build.py --model=quant_mobilenet_v2.onnx` exits 1 when a self-check fails.
"""
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

finn_build = pytest.importorskip("finn_build", exc_type=ImportError)


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
    assert finn_build.integer_add(model, residual)
    assert not finn_build.integer_add(model, float_add)
