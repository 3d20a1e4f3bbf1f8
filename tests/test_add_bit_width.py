"""--add_bit_width: the residual stream at its own width (the adds at 8 bits, the rest at 4),
on the suite's small trained model, in the export FINN gets."""
import pytest
from qonnx.core.modelwrapper import ModelWrapper

ADD_BITS, ACT_BITS = 8, 4


def quant_bits(model, node):
    return int(model.get_initializer(node.input[3]))


@pytest.fixture(scope="module")
def mixed(run_demo, tmp_path_factory):
    """The demo's export with 4-bit activations and an 8-bit residual stream, checked."""
    output = tmp_path_factory.mktemp("add_bit_width") / "mixed.onnx"
    result = run_demo(output, f"--act_bit_width={ACT_BITS}", "--input_bit_width=8",
                      f"--add_bit_width={ADD_BITS}", "--check_export=True")
    return result, ModelWrapper(str(output))


def test_mixed_export_passes_the_demos_checks(mixed):
    result, _ = mixed
    assert result.report.ok, result.report


def test_quant_nodes_around_each_add_have_the_add_bit_width(mixed):
    _, model = mixed
    adds = model.get_nodes_by_op_type("Add")
    assert len(adds) == 3  # the suite's 3-stage model
    for add in adds:
        producers = [model.find_producer(name) for name in add.input]
        consumers = model.find_consumers(add.output[0])
        assert [node.op_type for node in producers + consumers] == ["Quant"] * 3, add.name
        assert [quant_bits(model, node) for node in producers + consumers] == [ADD_BITS] * 3


def test_the_activations_after_each_relu_keep_act_bit_width(mixed):
    _, model = mixed
    after_relu = [node for node in model.get_nodes_by_op_type("Quant")
                  if (producer := model.find_producer(node.input[0])) is not None
                  and producer.op_type == "Relu"]
    assert len(after_relu) == 13  # every ReLU6 of the suite's model
    assert {quant_bits(model, node) for node in after_relu} == {ACT_BITS}
