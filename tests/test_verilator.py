"""finn_demo/hw/verilator.py on the suite's fitted design (finn_build_run): a layer of each RTL
type in Verilator (the ones `--verilator_layers=slowest` picks, and the first matrix unit), bit
for bit against FINN's Python execution, its cycles against FINN's estimates, and a changed
weight in a generated memory file caught. Standalone layers the same way, on every input value:
a Requant_rtl with its parameters streamed (internal_decoupled; signed and unsigned inputs) and a
Thresholding_rtl (the suite's design converts all of its threshold layers), a changed
parameter word or threshold caught.
Compiled layers are cached by the hash of their sources (a stale entry cannot be used), so a
second run only simulates."""
import json
import os
import re
from copy import deepcopy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model

from finn_demo.testing.suite import import_finn_steps

import_finn_steps()  # skips without FINN, except in CI
import finn_build  # noqa: E402
from finn_demo.hw import build as hw_build  # noqa: E402
from finn_demo.hw import finn_builder, verilator  # noqa: E402
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers  # noqa: E402
from finn.util.basic import pynq_part_map  # noqa: E402
from finn.util.fpgadataflow import is_rtl_node  # noqa: E402

# FINN's get_exp_cycles against the simulated cycles per frame. The matrix, threshold, requant
# and padding units' formulas count stream beats and agree exactly; a 2D sliding window's is a
# closed form (one buffer fill plus, per output row, the longer of reading and writing it) that
# its RTL controller's schedule beats or misses by a few per cent (docs/finn_build.md).
CYCLE_MARGIN = {"ConvolutionInputGenerator_rtl": 0.05}


def assert_cycles_are_finns_estimate(layer):
    margin = CYCLE_MARGIN.get(layer["op_type"], 0)
    assert layer["cycles"] == pytest.approx(layer["estimated_cycles"], rel=margin), layer
    assert layer["latency_cycles"] >= layer["cycles"] // 2  # one frame streams through


def require_verilator():
    """Skip without Verilator, except in CI (the CI variable set): there it is an error."""
    why = verilator.missing()
    if why and os.environ.get("CI"):
        pytest.fail(why)
    if why:
        pytest.skip(why)


def layer_of_each_type(model):
    """{RTL op type: one layer}: the layer `slowest_layers` picks for it (the end-to-end test's
    command simulates those, so its compiles come from the cache), but the first matrix unit,
    which reads the image itself: a changed weight shows in its output whatever the image."""
    slowest = verilator.slowest_layers(model)
    chosen = {}
    for node in model.graph.node:
        if is_rtl_node(node) and (node.name in slowest or node.op_type == "MVAU_rtl"):
            chosen.setdefault(node.op_type, node)
    return chosen


def simulated_names(model, chosen):
    """The layers the fixture simulates: `slowest_layers`' and the chosen ones, in graph order."""
    names = verilator.slowest_layers(model) | {node.name for node in chosen.values()}
    return [node.name for node in model.graph.node if node.name in names]


@pytest.fixture(scope="module")
def design(finn_build_run):
    """(the fitted model, its parent graph, FINN's Python tensors on one image, part, clock,
    out_dir, the layers chosen)."""
    require_verilator()
    result, out_dir = finn_build_run
    finn_builder.prepare(out_dir)  # FINN's settings: where finn-rtllib is
    estimates = json.loads((out_dir / "estimates.json").read_text())
    model = ModelWrapper(str(out_dir / "hw_layers.onnx"))
    parent = ModelWrapper(str(out_dir / "intermediate_models" / "dataflow_parent.onnx"))
    image = result.inputs[:1].numpy()  # the build's own check input
    context = verilator.reference(model, parent, image)
    return (model, parent, image, context, estimates["part"], estimates["clock_ns"], out_dir,
            layer_of_each_type(model))


@pytest.fixture(scope="module")
def simulated(design):
    model, parent, image, _, part, clock_ns, out_dir, chosen = design
    hls = [node.name for node in model.graph.node if not is_rtl_node(node)]
    return verilator.simulate(model, parent, image, out_dir, part, clock_ns,
                              names=simulated_names(model, chosen) + hls)


def test_every_rtl_type_of_the_design_is_simulated_bit_exact(design, simulated):
    chosen = design[-1]
    assert {"MVAU_rtl", "Requant_rtl", "ConvolutionInputGenerator_rtl",
            "FMPadding_rtl"} <= set(chosen)
    assert [layer["name"] for layer in simulated["layers"]] == simulated_names(design[0], chosen)
    assert all(layer["bit_exact"] and layer["wrong_values"] == 0
               for layer in simulated["layers"]), simulated["layers"]
    assert verilator.failures(simulated) == []
    assert simulated["simulator"].startswith("Verilator")


def test_simulated_cycles_per_frame_are_finns_estimates_within_the_margin(simulated):
    for layer in simulated["layers"]:
        assert_cycles_are_finns_estimate(layer)


def test_slowest_picks_each_rtl_types_slowest_layer_and_the_first_window(design):
    model = design[0]
    cycles = {node.name: (node.op_type, verilator.getHWCustomOp(node).get_exp_cycles())
              for node in model.graph.node if is_rtl_node(node)}
    chosen = verilator.slowest_layers(model)
    types = {op_type for op_type, _ in cycles.values()}
    for op_type in types:  # one per type, none of its type slower
        picked = [name for name in chosen if cycles[name][0] == op_type]
        assert picked and max(c for t, c in cycles.values() if t == op_type) == cycles[picked[0]][1]
    windows = [name for name, (op_type, _) in cycles.items()
               if op_type.startswith("ConvolutionInputGenerator")]
    assert windows[0] in chosen and len(chosen) <= len(types) + 1


def test_the_frame_rate_is_restated_from_a_simulated_layer_slower_than_its_estimate():
    estimates = {"clock_ns": 5.0, "max_cycles": 1000, "estimated_fps": 200000.0,
                 "layers": [{"name": "MVAU_rtl_0", "cycles": 1000},
                            {"name": "ConvolutionInputGenerator_rtl_0", "cycles": 900}]}
    slower = {"layers": [{"name": "ConvolutionInputGenerator_rtl_0", "cycles": 1250}]}
    assert verilator.simulated_rate(slower, estimates) == (160000.0,
                                                           "ConvolutionInputGenerator_rtl_0", 1250)
    faster = {"layers": [{"name": "MVAU_rtl_0", "cycles": 800}]}
    assert verilator.simulated_rate(faster, estimates) == (1e9 / 5 / 900,
                                                           "ConvolutionInputGenerator_rtl_0", 900)


def test_hls_layers_are_listed_as_not_simulated_with_the_reason(design, simulated):
    hls = {node.name for node in design[0].graph.node if not is_rtl_node(node)}
    assert hls and {row["name"] for row in simulated["not_simulated"]} == hls
    assert all("Vitis HLS" in row["why"] for row in simulated["not_simulated"])


# ------------------------------------------------------------------ Requant_rtl, standalone
PART, CLOCK_NS = pynq_part_map["ZCU104"], 5.0
REQUANT_CHANNELS, REQUANT_PE = 8, 2
REQUANT_INPUT = DataType["INT12"]
# Every 12-bit value once per channel: a 64x64 image with each channel a permutation of them.
REQUANT_PIXELS = [1, 64, 64]


def requant_parameters():
    """Per-channel (scale, bias) on which FINN's float32 model and the RTL's integers agree:
    scales m/64 with a small odd m (exact mantissas, large enough that INT12 reaches both clip
    ends of an 8-bit output, two exponents so the streamed shift varies, one scale negative),
    biases odd multiples of 1/128 (x*scale + bias is never a tie at .5); every sum is exact in
    float32."""
    mantissas = np.array([9, 11, 13, -15, 17, 19, 21, 23])
    biases = (2 * np.arange(REQUANT_CHANNELS) - 7) * 3
    return (mantissas / 64).astype(np.float32), (biases / 128).astype(np.float32)


def requant_model(output_type, input_type=REQUANT_INPUT):
    """One FINN Requant layer (NumChannels 8, PE 2) specialized for the ZCU104's part as
    Requant_rtl, its parameters streamed by a memstream (internal_decoupled)."""
    shape = REQUANT_PIXELS + [REQUANT_CHANNELS]
    node = helper.make_node("Requant", ["x", "scale", "bias"], ["y"], name="Requant_0",
                            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                            NumChannels=REQUANT_CHANNELS, PE=REQUANT_PE,
                            inputDataType=input_type.name, outputDataType=output_type,
                            numInputVectors=REQUANT_PIXELS, narrow=0)
    graph = helper.make_graph([node], "requant",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    scale, bias = requant_parameters()
    model.set_initializer("scale", scale)
    model.set_initializer("bias", bias)
    model.set_tensor_datatype("x", input_type)
    model.set_tensor_datatype("y", DataType[output_type])
    model = model.transform(SpecializeLayers(PART))
    verilator.getHWCustomOp(model.graph.node[0]).set_nodeattr("mem_mode", "internal_decoupled")
    return model


def every_input_value(input_type=REQUANT_INPUT):
    rng = np.random.default_rng(0)
    values = np.arange(input_type.min(), input_type.max() + 1)
    channels = [rng.permutation(values) for _ in range(REQUANT_CHANNELS)]
    return np.stack(channels, axis=-1).reshape([1, -1, 64, REQUANT_CHANNELS]).astype(np.float32)


@pytest.fixture(scope="module")
def finn_settings(tmp_path_factory):
    """FINN's settings for the tests without the fitted design (it sets them for its own)."""
    require_verilator()
    finn_builder.prepare(tmp_path_factory.mktemp("requant"))  # FINN's settings: finn-rtllib


def requant_case(output_type, input_type=REQUANT_INPUT):
    """(the specialized model, FINN's Python tensors on every input value)."""
    model = requant_model(output_type, input_type)
    return model, verilator.python_execution(model, every_input_value(input_type))


def thresholding_model():
    """One FINN Thresholding layer (NumChannels 8, PE 2, 15 thresholds a channel on an INT8
    input, seeded) specialized for the ZCU104's part as Thresholding_rtl: the layer a design
    keeps where no Requant reproduces its thresholds, or with --requant=False."""
    rng = np.random.default_rng(1)
    thresholds = np.sort(rng.integers(-128, 128, (REQUANT_CHANNELS, 15)), axis=1)
    pixels = [1, 4, 64]  # every INT8 value once per channel
    shape = pixels + [REQUANT_CHANNELS]
    node = helper.make_node("Thresholding", ["x", "t"], ["y"], name="Thresholding_0",
                            domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
                            NumChannels=REQUANT_CHANNELS, PE=REQUANT_PE, numSteps=15,
                            inputDataType="INT8", weightDataType="INT8", outputDataType="UINT4",
                            ActVal=0, numInputVectors=pixels, preferred_impl_style="rtl")
    graph = helper.make_graph([node], "thresholding",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)])
    model = ModelWrapper(qonnx_make_model(graph))
    model.set_initializer("t", thresholds.astype(np.float32))
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_tensor_datatype("t", DataType["INT8"])
    model.set_tensor_datatype("y", DataType["UINT4"])
    return model.transform(SpecializeLayers(PART))


@pytest.fixture(scope="module")
def thresholding_layers(finn_settings):
    """The Thresholding layer on every INT8 value as the memory-file test takes it."""
    model = thresholding_model()
    context = verilator.python_execution(model, every_input_value(DataType["INT8"]))
    return model, context, PART, CLOCK_NS, {"Thresholding_rtl": model.graph.node[0]}


@pytest.fixture(scope="module")
def requant_layers(finn_settings):
    """The unsigned Requant layer as the memory-file test takes it (see design_layers)."""
    model, context = requant_case("UINT8")
    return model, context, PART, CLOCK_NS, {"Requant_rtl": model.graph.node[0]}


@pytest.mark.parametrize("output_type,input_type", [("UINT8", "INT12"), ("INT8", "INT12"),
                                                    ("INT8", "UINT12")])
def test_requant_with_streamed_parameters_is_bit_exact_on_every_input_in_finns_cycles(
        finn_settings, output_type, input_type, tmp_path):
    """Signed and unsigned inputs: an unsigned one read as signed would turn its upper half
    negative."""
    model, context = requant_case(output_type, DataType[input_type])
    node = model.graph.node[0]
    assert node.op_type == "Requant_rtl"
    expected, odt = context[node.output[0]], DataType[output_type]
    assert (expected.min(axis=(0, 1, 2)) == odt.min()).any()  # some channel clips below
    assert (expected.max(axis=(0, 1, 2)) == odt.max()).any()  # and some above
    if DataType[input_type].signed():
        assert (expected.min(axis=(0, 1, 2)) == odt.min()).all()  # every channel, both ends
        assert (expected.max(axis=(0, 1, 2)) == odt.max()).all()
    folder = tmp_path / node.name
    inst, binary = verilator.prepare_layer(node, model, folder, PART, CLOCK_NS,
                                           verilator.find_verilator())
    top = verilator.top_module(inst, folder)  # the streamer feeds the port FINN's IPI wires
    assert f"{node.name}_params_memstream_wrapper params" in top
    assert ".s_params_V_TDATA(p_TDATA)" in top
    row = verilator.check_layer(inst, binary, folder, context, model.graph)
    assert row["bit_exact"] and row["wrong_values"] == 0, row
    assert row["estimated_cycles"] == inst.get_exp_cycles() == np.prod(REQUANT_PIXELS) * (
        REQUANT_CHANNELS // REQUANT_PE)
    assert_cycles_are_finns_estimate(row)


def test_a_compiled_requant_layer_is_reused_from_any_folder_and_reads_its_params_there(
        finn_settings, tmp_path):
    model = requant_model("UINT8")
    node = model.graph.node[0]
    found = verilator.find_verilator()
    folders = [tmp_path / where / node.name for where in ("first", "second")]
    (inst, binary), (_, again) = (verilator.prepare_layer(node, model, folder, PART, CLOCK_NS,
                                                          found) for folder in folders)
    assert again == binary  # the same sources: the layer folder's path is not in them
    sources = verilator.simulation_sources(inst, folders[1])
    assert not any(str(tmp_path) in text for text in sources.values())
    wrapper = sources[f"{node.name}_params_memstream_wrapper.v"]
    assert 'INIT_FILE = "./params_memblock.dat"' in wrapper  # read where the binary runs


def tamper_weights(folder, inst, model, part, expected):
    """One weight in the generated weight memory: the lowest bit of its first word flipped."""
    path = folder / "memblock.dat"
    lines = path.read_text().splitlines()
    lines[0] = lines[0][:-1] + format(int(lines[0][-1], 16) ^ 1, "x")
    path.write_text("\n".join(lines) + "\n")


def tamper_thresholds(folder, inst, model, part, expected):
    """One threshold: channel 0's middle one (the root of the search tree, first line of PE 0's
    stage 0) moved past every input, to the side that changes some of channel 0's outputs."""
    name = inst.onnx_node.name
    wrapper = (folder / f"{name}.v").read_text()
    bits, signed, out_bits = (int(re.search(rf"parameter\s+{key} = (\d+)", wrapper).group(1))
                              for key in ("WT", "SIGNED", "O_BITS"))
    if expected[..., 0].max() >= 2 ** (out_bits - 1):  # some outputs in the upper half
        value = 2 ** (bits - signed) - 1  # the largest threshold: none reaches the upper half
    else:
        value = 2 ** (bits - 1) if signed else 0  # the smallest: all of them do
    path = folder / f"{name}_threshs_0_0.dat"
    lines = path.read_text().splitlines()
    lines[0] = format(value, "x")
    path.write_text("\n".join(lines) + "\n")


def tamper_requant_bias(folder, inst, model, part, expected):
    """One channel's bias a quarter output step higher (within the layer's widths: no bias grows
    past the largest): the layer's own generate_params rewrites params_memblock.dat from a copy
    of the model with that bias, which changes exactly one word (channel 0's channel group)."""
    path = folder / "params_memblock.dat"
    before = path.read_text().splitlines()
    changed = ModelWrapper(deepcopy(model.model))
    bias = changed.get_initializer(inst.onnx_node.input[2]).copy()
    bias[0] += 0.25
    changed.set_initializer(inst.onnx_node.input[2], bias)
    verilator.getHWCustomOp(changed.graph.node[0]).generate_params(changed, str(folder), part)
    after = path.read_text().splitlines()
    assert sum(old != new for old, new in zip(before, after)) == 1 and before[1:] == after[1:]


@pytest.fixture(scope="module")
def design_layers(design, simulated):
    """The fitted design as the memory-file test takes it: (model, FINN's tensors, part,
    clock, {op type: layer}); after `simulated`, so its layers' compiles are cached."""
    model, _, _, context, part, clock_ns, _, chosen = design
    return model, context, part, clock_ns, chosen


@pytest.mark.parametrize("layers,op_type,tamper", [
    ("design_layers", "MVAU_rtl", tamper_weights),
    ("thresholding_layers", "Thresholding_rtl", tamper_thresholds),
    ("requant_layers", "Requant_rtl", tamper_requant_bias)])
def test_a_changed_value_in_a_memory_file_fails_and_names_the_layer(request, layers, op_type,
                                                                    tamper, tmp_path):
    model, context, part, clock_ns, chosen = request.getfixturevalue(layers)
    node = chosen[op_type]
    folder = tmp_path / node.name
    inst, binary = verilator.prepare_layer(node, model, folder, part, clock_ns,
                                           verilator.find_verilator())
    assert verilator.check_layer(inst, binary, folder, context, model.graph)["bit_exact"]
    tamper(folder, inst, model, part, context[node.output[0]])
    # The same binary: memory files are read when the simulation starts.
    row = verilator.check_layer(inst, binary, folder, context, model.graph)
    assert not row["bit_exact"] and row["wrong_values"] > 0
    (failure,) = verilator.failures({"layers": [row], "not_simulated": []})
    assert node.name in failure and "differs from FINN" in failure


def test_without_verilator_the_build_is_refused_in_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(verilator, "find_verilator", lambda: None)
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    assert finn_build.cli([f"--model={model}", f"--out_dir={tmp_path / 'build'}",
                           "--outputs=estimates,verilator"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "Verilator is not installed" in error, error
    assert not (tmp_path / "build").exists()


def test_finn_build_with_verilator_simulates_the_slowest_layers_and_writes_the_report(
        finn_build_run, capsys, tmp_path):
    """The command a user runs, end to end: steps 1-4 reused from the suite's build (a copy, of
    the same --model), the rest run again with the Verilator step on the slowest layers."""
    import shutil
    require_verilator()
    result, built = finn_build_run
    shutil.copytree(built / "intermediate", tmp_path / "intermediate")
    assert finn_build.cli([f"--model={result.estimates['model']}", f"--out_dir={tmp_path}",
                           "--verify_images=1", "--reuse=True", "--outputs=estimates,verilator",
                           "--verilator_layers=slowest"]) == 0
    report = json.loads((tmp_path / "verilator.json").read_text())
    chosen = verilator.slowest_layers(ModelWrapper(str(tmp_path / "hw_layers.onnx")))
    assert {layer["name"] for layer in report["layers"]} == chosen
    assert all(layer["bit_exact"] for layer in report["layers"])
    out = capsys.readouterr().out
    assert f"{len(chosen)} RTL layers simulated" in out and "every check passed" in out


def test_an_unknown_verilator_layers_choice_is_refused_in_one_line(capsys, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    assert finn_build.cli([f"--model={model}", "--verilator_layers=first"]) == 2
    assert "--verilator_layers=first: use all or slowest" in capsys.readouterr().err


def test_verilator_asks_finns_builder_for_no_product():
    args = finn_build.make_args(["--outputs=estimates,verilator"])
    build = type("Build", (), {"steps": lambda self: []})()
    cfg = hw_build.make_build_config(args, build, SimpleNamespace(part="xczu7ev-ffvc1156-2-e",
                                                              board="ZCU104"))
    assert cfg.generate_outputs == ["estimate_reports"] and cfg.steps == []


def test_the_add_multi_transform_only_moves_its_constant_function_to_module_scope(design):
    from finn.util.settings import get_settings
    original = (Path(get_settings().finn_rtllib) / "mvu" / "add_multi.sv").read_text()
    patched = verilator.compatible_sources("add_multi.sv", original)

    def statements(text):
        return sorted(line.strip() for line in text.splitlines() if line.strip())
    assert patched != original and statements(patched) == statements(original)
    assert patched.index("function leaf_load_t init_leaf_loads") < patched.index("begin : genTree")
    assert verilator.compatible_sources("mvu.sv", original) == original


def test_the_fifo_transform_only_packs_its_geometry_struct(finn_settings):
    from finn.util.settings import get_settings
    original = (Path(get_settings().finn_rtllib) / "fifo" / "hdl" / "fifo.sv").read_text()
    patched = verilator.compatible_sources("fifo.sv", original)
    assert patched != original and patched.count("struct packed") == 1
    assert patched.replace("struct packed {", "struct {") == original
