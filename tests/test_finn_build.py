"""finn_build.py: the whole build through FINN's builder on the suite's model (3-stage
MobileNetV2, 20 layers, 3 residual Adds) fitted to the ZCU104, and its checks seen failing on a
float node in the partition and on one wrong threshold row. The 53-layer digits model takes
about 10 minutes (README); the graph passes cost grows with the square of the node count."""
import json
import os
import re

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import qonnx_make_model
from qonnx.util.cleanup import cleanup_model

from finn_demo.testing.suite import import_finn_steps

fs = import_finn_steps()  # skips without FINN, except in CI
import finn_build  # noqa: E402
from finn_demo import finn_install  # noqa: E402
from finn_demo.hw import (alternatives, boards, build, cache, finn_builder, fit, hw_checks,  # noqa: E402
                         resources)
from finn_demo.quant.accumulators import widest_hidden  # noqa: E402
from finn_demo.checks import check_inputs, layerwise, metadata_of  # noqa: E402
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
    assert all(node.domain.startswith(hw_checks.HW_DOMAIN) for node in accelerator.graph.node)
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


def test_an_export_without_the_demos_metadata_is_checked_on_inputs_on_its_input_grid(built):
    # The suite's build is of an export whose metadata names no data set (conftest): its
    # hardware check ran, on the seeded grid inputs drawn from the cleaned source, and passed.
    result, out_dir, _ = built
    source = ModelWrapper(str(out_dir / "intermediate" / "0_cleanup.onnx"))
    assert metadata_of(source) == {}
    assert np.array_equal(result.inputs.numpy(), layerwise.grid_inputs(source, 4).numpy())
    assert result.hw_check.status == "pass", str(result.hw_check)
    assert f"0 of {4 * 10} logits differ" in result.hw_check.summary, result.hw_check.summary


def test_estimates_cover_every_layer_and_fit_the_board(built):
    result, out_dir, estimates = built
    accelerator = ModelWrapper(str(out_dir / "hw_layers.onnx"))
    assert [layer["name"] for layer in estimates["layers"]] == [n.name for n in accelerator.graph.node]
    assert all(estimates["totals"][key] > 0 for key in ("LUT", "DSP"))
    assert estimates["large_fifo_mem_style"] in ("auto", "block", "ultra", "distributed")
    slowest = max(layer["cycles"] for layer in estimates["layers"])
    assert estimates["estimated_fps"] == pytest.approx(1e9 / estimates["clock_ns"] / slowest)
    assert estimates["part"] == boards.PARTS["ZCU104"] and estimates["board"] == "ZCU104"
    assert result.fits and estimates["fits"] and estimates["over"] == {}
    budget = boards.budget("ZCU104", boards.DEFAULT_LIMITS)
    assert all(estimates["totals"][key] <= budget[key] for key in boards.RESOURCES)
    # The search went faster until a design no longer fit or SetFolding had no more parallelism.
    fastest_tried = max(estimates["tried"], key=lambda item: item["fps"])
    assert estimates["estimated_fps"] == max(item["fps"] for item in estimates["tried"] if item["fits"])
    assert not fastest_tried["fits"] or fastest_tried["fps"] == estimates["estimated_fps"]


def test_folding_widens_the_weight_stream_limit_only_where_finns_default_misses_the_rate(built):
    # FINN's SetFolding keeps SIMD x weight bits <= 36 (mvau_wwidth_max) by default: the 8-bit
    # first conv (27 inputs) stops at SIMD 3, and with it the whole design's frame rate.
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer
    _, out_dir, estimates = built
    model = ModelWrapper(str(out_dir / "intermediate_models" / "step_requant.onnx"))
    for requant in fit.requant_layers(model):  # SetFolding leaves them; fit.fold does the same
        requant.set_nodeattr("PE", requant.get_nodeattr("NumChannels"))
    most_parallel = model.transform(SetFolding(1))  # FINN's default limit, the fastest it gets
    default_fps = 1e9 / estimates["clock_ns"] / max(most_parallel.analysis(exp_cycles_per_layer).values())
    folded, width = fit.fold(model, 2 * default_fps, estimates["clock_ns"])
    cycles = folded.analysis(exp_cycles_per_layer)
    assert width > 36 and 1e9 / estimates["clock_ns"] / max(cycles.values()) > 1.5 * default_fps
    units = [fit.getHWCustomOp(node) for node in folded.graph.node if node.op_type.startswith("MVAU")]
    wide = [unit for unit in units if unit.get_nodeattr("SIMD") *
            DataType[unit.get_nodeattr("weightDataType")].bitwidth() > 36]
    assert wide  # some matrix unit's weight stream per PE is now wider than FINN's default
    assert fit.fold(model, default_fps / 2, estimates["clock_ns"])[1] == 36


def test_totals_count_stand_ins_and_stream_buffers_beside_finns_figures(built):
    _, _, estimates = built
    rtl_units = [layer for layer in estimates["layers"] if layer["op_type"] in ("MVAU_rtl", "VVAU_rtl")]
    assert rtl_units and all(layer["LUT"] == 0 < layer["standin_LUT"] for layer in rtl_units)
    buffers = estimates["stream_buffers"]
    assert buffers["StreamingFIFO_rtl"]["count"] > 0 and buffers["StreamingFIFO_rtl"]["LUT"] > 0
    parts = [layer["LUT"] + layer["standin_LUT"] for layer in estimates["layers"]]
    parts += [row["LUT"] for row in buffers.values()]
    assert estimates["totals"]["LUT"] == pytest.approx(sum(parts), abs=1)
    assert estimates["finn_totals"]["LUT"] < estimates["totals"]["LUT"]
    # One sized FIFO per residual skip, deeper than FINN's default of 2: a row of the block input.
    depths = estimates["skip_fifo_depths"]
    assert len(depths) == 3 and all(depth > 2 for depth in depths.values())


def test_finn_applying_the_folding_config_reproduces_the_fits_estimates(built):
    from finn.analysis.fpgadataflow.res_estimation import res_estimation
    from finn.transformation.general import ApplyConfig
    from qonnx.transformation.general import GiveUniqueNodeNames
    _, out_dir, estimates = built
    before_fit = ModelWrapper(str(out_dir / "intermediate_models" / "step_requant.onnx"))
    applied = before_fit.transform(GiveUniqueNodeNames()).transform(
        ApplyConfig(str(out_dir / "folding_config.json")))
    resources = applied.analysis(lambda model: res_estimation(model, estimates["part"]))
    for layer in estimates["layers"]:
        assert {key: resources[layer["name"]][key] for key in boards.RESOURCES} == {
            key: layer[key] for key in boards.RESOURCES}, layer["name"]
    chosen = [layer for layer in estimates["layers"] if layer["memory"] is not None]
    assert chosen, "the fit chose no memories"


def test_a_folding_config_that_does_not_carry_the_design_is_reported(built):
    _, _, estimates = built
    design = type("Design", (), {"layers": estimates["layers"]})()
    reported = {layer["name"]: {key: layer[key] for key in boards.RESOURCES}
                for layer in estimates["layers"]}
    assert build.reproduction_failures(design, reported) == []
    name, key = next((layer["name"], key) for layer in estimates["layers"]
                     for key in ("BRAM_18K", "URAM", "LUT") if layer[key] > 0)
    reported[name][key] += 1
    (failure,) = build.reproduction_failures(design, reported)
    assert name in failure


def test_a_smaller_budget_gives_a_slower_design_within_it_or_names_what_is_over(built):
    _, out_dir, estimates = built
    model = ModelWrapper(str(out_dir / "intermediate_models" / "step_requant.onnx"))
    budget = {key: int(estimates["totals"][key] * 0.6) + 1 for key in boards.RESOURCES}
    design, _ = fit.search(model, estimates["part"], estimates["clock_ns"], budget,
                           progress=lambda line: None)
    if design.fits:
        assert design.fps < estimates["estimated_fps"]
        assert all(design.totals[key] <= budget[key] for key in boards.RESOURCES)
    tiny = {"LUT": 1000, "BRAM_18K": 0, "URAM": 0, "DSP": 0}
    design, _ = fit.search(model, estimates["part"], estimates["clock_ns"], tiny, target_fps=1,
                           progress=lambda line: None)
    assert not design.fits and "LUT" in design.over


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
    assert hw_checks.nodes_between_hw_layers(model) == ["FloatMul (Mul)"]


@pytest.mark.parametrize("inputs", ["run images", "grid inputs"])
def test_one_wrong_threshold_row_fails_the_hardware_graph_check(inputs, built, bias_corrected):
    # One channel's thresholds one level too high, in a Thresholding layer halfway through,
    # for the channel most active on the first input: a step or two on the logits. On the
    # validation images the demo's metadata names, and on the grid inputs a file without it gets.
    model = hw_graph(built[1])
    qonnx_model = cleanup_model(ModelWrapper(str(bias_corrected.output)))
    if inputs == "grid inputs":
        del qonnx_model.model.metadata_props[:]
    images, what = check_inputs(qonnx_model, 8)
    assert ("grid" in what) == (inputs == "grid inputs"), what
    layers = model.get_nodes_by_op_type("Thresholding")
    node = layers[len(layers) // 2]
    output = execute_onnx(model, {model.graph.input[0].name: images[:1].numpy()},
                          return_full_exec_context=True)[node.output[0]]
    channel = int(np.argmax((output > 0).reshape(-1, output.shape[-1]).sum(axis=0)))
    rows = model.get_initializer(node.input[1]).copy()
    rows[channel] += rows[channel, 1] - rows[channel, 0]
    model.set_initializer(node.input[1], rows)
    streamlined = ModelWrapper(str(built[1] / "intermediate" / "2_streamline.onnx"))
    result = hw_checks.check_hw_graph(model, streamlined, qonnx_model, images)
    assert result.failed, str(result)
    assert "hardware vs QONNX, layer by layer: 1 of" in result.summary, result.summary
    assert result.offenders[0].startswith(f"{node.name} ("), result.offenders


def test_without_finn_the_build_is_refused_with_the_install_command(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(finn_install, "finn_import_error", lambda module: ImportError("No module named 'finn'"))
    monkeypatch.setattr(finn_install, "finn_installed", lambda: False)
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


@pytest.mark.parametrize("folder,message", [("none", "is not a folder"),
                                            ("empty", "holds no images")])
def test_a_verify_data_folder_without_images_is_refused_in_one_line_before_any_work(
        folder, message, capsys, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not an image")
    out_dir = tmp_path / "build"
    assert finn_build.cli([f"--model={model}", f"--out_dir={out_dir}",
                           f"--verify_data={tmp_path / folder}"]) == 2
    error = capsys.readouterr().err.strip()
    assert f"--verify_data={tmp_path / folder}: " in error and message in error, error
    assert "\n" not in error and not out_dir.exists()


def test_finns_passes_run_in_order_give_finns_graph_byte_for_byte(built):
    """run_in_order skips the tidying passes where no transformation changed the graph since
    they ran. On the first blocks of FINN's Streamline (a transformation that changes nothing
    first, then ones that do) it must give the graph model.transform gives, byte for byte."""
    model = ModelWrapper(str(built[1] / "intermediate" / "1_frontend.onnx"))
    steps, finns, changed = fs.streamline_transformations()[:18], model, []
    for transformation in steps:
        before = finns.model.SerializeToString()
        finns = finns.transform(transformation)
        if not isinstance(transformation, fs.TIDYING):
            changed.append(finns.model.SerializeToString() != before)
    assert changed[0] is False and any(changed)  # both paths taken
    ours = fs.run_in_order(model, steps)
    assert ours.model.SerializeToString() == finns.model.SerializeToString()


def test_composed_gives_the_graph_of_qonnxs_composed_transformation(built, monkeypatch):
    """lower_convs' transformations through qonnx's ComposedTransformation give the graph the
    build made with `composed`."""
    from qonnx.transformation.composed import ComposedTransformation
    intermediate = built[1] / "intermediate"
    monkeypatch.setattr(fs, "composed", lambda model, transformations: model.transform(
        ComposedTransformation(transformations)))
    theirs = fs.lower_convs(ModelWrapper(str(intermediate / "2_streamline.onnx")))
    ours = ModelWrapper(str(intermediate / "3_lower_convs.onnx"))
    key = cache.SOURCE_KEY  # the step name the build saved with the graph
    theirs.set_metadata_prop(key, ours.get_metadata_prop(key))
    assert theirs.model.SerializeToString() == ours.model.SerializeToString()


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


@pytest.mark.parametrize("outcome", ["does not fit"])  # a failed check: finn_build's own test
def test_demo_flag_builds_the_export_beside_it_and_says_how_the_build_ended(
        outcome, cache_dir, tmp_path, capsys, monkeypatch):
    # The build itself is the session's finn_build_run; here, what the demo hands it and does
    # with its verdict: exit status 1 with the failure, or 3 with the one line naming what is over.
    import finn_mobilenetv2 as demo
    from finn_demo.testing.suite import SMALL
    calls = []
    design = type("Design", (), {"over": {"LUT": 100}, "fps": 12.0, "fits": False})()
    estimates = {"budget": {"LUT": 200}, "totals": {"LUT": 300}, "fits_per_board": {"U250": 40}}

    def build(args):
        calls.append(args)
        failures = ["hw_graph: a wrong threshold"] if outcome == "check failed" else []
        return type("Result", (), {"failures": failures, "design": design, "fits": False,
                                   "estimates": estimates})()
    monkeypatch.setattr(finn_build, "main", build)
    output = tmp_path / "m.onnx"
    status = demo.cli([f"--cache_dir={cache_dir}", *SMALL, f"--output={output}", "--finn_build=True"])
    printed = capsys.readouterr().out
    if outcome == "check failed":
        assert status == 1 and "FAILED hw_graph: a wrong threshold" in printed
    else:
        assert status == 3 and "DOES NOT FIT ZCU104: the closest design (12 frames/s) needs LUT 300" \
            " of a budget of 200 (50% over)\n  fits, by this build's estimates: U250 (40 frames/s)" in printed
    (args,) = calls
    assert args.model == str(output) and args.out_dir == str(tmp_path / "finn_output")


def test_the_builder_config_asks_finn_for_the_outputs_named():
    steps = ["step_a"]
    estimates = finn_builder.make_dataflow_config("out", steps, finn_builder.output_types([]), "xczu7ev-ffvc1156-2-e",
                                    "ZCU104", True, 5.0)
    assert estimates.steps == steps and estimates.generate_outputs == ["estimate_reports"]
    bitfile = finn_builder.make_dataflow_config("out", steps, finn_builder.output_types(["bitfile", "driver"]),
                                  boards.PARTS["ZCU104"], "ZCU104", True, 5.0)
    assert bitfile.steps == steps + finn_builder.HARDWARE_STEPS
    assert "step_synthesize_bitfile" in bitfile.steps and "step_make_driver" in bitfile.steps
    assert set(bitfile.generate_outputs) == {"estimate_reports", "stitched_ip", "bitfile",
                                             "pynq_driver"}
    assert bitfile.shell_flow_type == "vivado_zynq" and bitfile.board == "ZCU104"
    alveo = finn_builder.make_dataflow_config("out", steps, finn_builder.output_types(["bitfile"]),
                                boards.PARTS["U250"], "U250", boards.is_zynq("U250"), 4.0)
    assert alveo.shell_flow_type == "vitis_alveo" and alveo.synth_clk_period_ns == 4.0


def test_board_budgets_are_finns_tables_times_its_limits():
    from finn.util.platforms import platforms
    assert {"ZCU104", "ZCU102", "Ultra96", "U250"} <= set(boards.BOARDS)
    lut, _, bram, uram, dsp = platforms["ZCU104"]().compute_resources[0]
    assert boards.budget("ZCU104", boards.DEFAULT_LIMITS) == {
        "LUT": int(lut * 0.7), "BRAM_18K": int(bram * 0.8), "URAM": int(uram * 0.8),
        "DSP": int(dsp * 0.8)}
    assert boards.parse_limits("LUT=0.5")["LUT"] == 0.5
    for text, message in (("LUTS=0.5", "unknown resource"), ("LUT=2", r"\(0, 1\]"), ("DSP=x", "number")):
        with pytest.raises(ValueError, match=message):
            boards.parse_limits(text)


@pytest.mark.parametrize("flag,message", [
    ("--board=ZCU999", "not a board FINN knows"), ("--res_limits=LUT=1.5", "--res_limits"),
    ("--outputs=estimates,bitstream", "unknown bitstream"), ("--board=", "--fpga_part")])
def test_bad_board_flags_are_refused_in_one_line(flag, message, capsys, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    assert finn_build.cli([f"--model={model}", f"--out_dir={tmp_path / 'build'}", flag]) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error, error
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("failures,status", [([], 3), (["hw_graph: 2 of 4 images differ"], 1)],
                         ids=["checks passed", "a check failed"])
def test_a_design_that_fits_nowhere_is_named_with_what_would_fit_and_by_the_exit_status(
        failures, status, capsys, monkeypatch, tmp_path):
    design = type("Design", (), {"over": {"BRAM_18K": 244}, "fps": 610.0, "fits": False})()
    estimates = {"budget": {"BRAM_18K": 488}, "totals": {"BRAM_18K": 732},
                 "fits_per_board": {"U250": 2000, "ZCU102": 900, "U200": 2000}}
    monkeypatch.setattr(finn_build, "main", lambda args: type("Result", (), {
        "failures": failures, "design": design, "fits": False, "estimates": estimates})())
    monkeypatch.setattr(finn_build, "FINN_ROWS", finn_rows(tmp_path))
    assert finn_build.cli(["--board=ZCU104"]) == status  # 1 when a check failed as well
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == [f"FAILED {failure}" for failure in failures] + [
        "DOES NOT FIT ZCU104: the closest design (610 frames/s) needs BRAM_18K 732 of "
        "a budget of 488 (50% over)",
        "  fits, by this build's estimates: U200, U250 (2000 frames/s), ZCU102 (900 frames/s); "
        "confirm with finn_build.py --board=NAME",
        "  settings that fit ZCU104 in the benchmark's FINN rows (results/finn.csv, MobileNetV2 "
        "at 224x224); export with finn_mobilenetv2.py and:",
        "    W4A4 (1701 frames/s): --weight_bit_width=4 --act_bit_width=4",
        "    PW4 (450 frames/s): --weight_bit_width=4 --depthwise_bit_width=8"]


def finn_rows(folder):
    """A results/finn.csv: W4A4 and PW4 fit the ZCU104 (W4A4's later row counts), W8A8 does
    not, and a U250 row."""
    path = folder / "finn.csv"
    path.write_text(
        "bits,board,row_flags,fits,estimated_fps,LUT\n"
        "W4A4,ZCU104,--weight_bit_width=4,no,900,1\n"
        "PW4,ZCU104,--weight_bit_width=4 --depthwise_bit_width=8,yes,450,1\n"
        "W8A8,ZCU104,,no,10,1\n"
        "W8A8,U250,,yes,3916,1\n"
        "W4A4,ZCU104,--weight_bit_width=4 --act_bit_width=4,yes,1701,1\n")
    return path


def test_what_would_fit_says_so_when_no_board_and_no_setting_fits(tmp_path):
    rows = finn_build.read_finn_rows(finn_rows(tmp_path))
    assert alternatives.fitting_settings(rows, "Pynq-Z1") == []
    assert finn_build.read_finn_rows(tmp_path / "none.csv") == []
    assert alternatives.what_would_fit({}, [], "Pynq-Z1") == [
        "fits no board FINN knows, by this build's estimates"]


def test_the_committed_finn_rows_give_flags_the_demo_takes():
    import finn_mobilenetv2 as demo
    committed = finn_build.read_finn_rows(finn_build.FINN_ROWS)
    settings = alternatives.fitting_settings(committed, "ZCU104")
    assert settings, "results/finn.csv has no setting that fits the ZCU104"
    for bits, fps, flags in settings:
        args = demo.make_args(flags.split())
        weights, activations = map(int, re.search(r"W(\d)A(\d)", bits).groups())
        # the flags export the row's bit widths (W8A8: the demo's defaults, no flags)
        assert (args.weight_bit_width, args.act_bit_width) == (weights, activations), (bits, flags)


def test_boards_that_fit_are_the_fits_own_answer_on_its_board(built):
    # The build fits the ZCU104: re-placing its tried designs for the ZCU104's own budget must
    # give the fit's frame rate, and a board with more of every resource at least as much.
    _, _, estimates = built
    per_board = estimates["fits_per_board"]
    assert per_board["ZCU104"] == round(estimates["estimated_fps"])
    assert all(boards.budget("U250", boards.DEFAULT_LIMITS)[key] >= budget
               for key, budget in boards.budget("ZCU104", boards.DEFAULT_LIMITS).items())
    assert per_board["U250"] >= per_board["ZCU104"]
    assert set(per_board) <= set(boards.BOARDS)


def test_the_builder_gives_back_stdout_logging_and_warnings(monkeypatch, tmp_path):
    # FINN's builder redirects stdout and stderr into its logger, replaces the root logger's
    # handlers and routes warnings into logging, and leaves all of it so after returning.
    import io
    import logging
    import os
    import sys
    import warnings
    before = (sys.stdout, sys.stderr, list(logging.getLogger().handlers), warnings.showwarning)
    seen = {}

    def fake_build(model, cfg):
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        logging.basicConfig(filename=str(tmp_path / "log"), force=True)
        logging.captureWarnings(True)
        seen["vivado"] = os.environ.get("XILINX_VIVADO")
        return 0
    monkeypatch.setattr(finn_builder, "build_dataflow_cfg", fake_build)
    cfg = finn_builder.make_dataflow_config(tmp_path, [], finn_builder.output_types([]), "xczu7ev-ffvc1156-2-e", "",
                              False, 5.0)
    assert finn_builder.run(tmp_path / "model.onnx", cfg) == 0
    assert (sys.stdout, sys.stderr, list(logging.getLogger().handlers),
            warnings.showwarning) == before
    if not finn_builder.VIVADO:  # an empty XILINX_VIVADO during the build only
        assert seen["vivado"] == "" and "XILINX_VIVADO" not in os.environ


def test_tests_sharing_the_build_run_in_one_worker(finn_build_run, request):
    # make test's two workers each build once what their tests share; the FINN build (~2 minutes)
    # is shared only if xdist's loadgroup tags this test with its group (pytest 9.2 broke that).
    if not (os.environ.get("PYTEST_XDIST_WORKER") and request.config.getvalue("loadgroup")):
        pytest.skip("only make test's --dist loadgroup groups tests")
    assert request.node.nodeid.endswith("@finn")


# AXE on the small model at FINN's W4A4 (8-bit input, first conv and classifier), one bit under
# what plain GPFQ's hidden layers need on this machine's model (13 bits where this was written).
W4A4 = ["--weight_bit_width=4", "--act_bit_width=4", "--first_conv_bit_width=8",
        "--last_linear_bit_width=8", "--input_bit_width=8", "--gpfq=True"]


@pytest.fixture(scope="module")
def axe_build(run_demo, tmp_path_factory):
    """(plain GPFQ run, AXE run, its width, FINN's accumulator widths of the AXE export's build)."""
    folder = tmp_path_factory.mktemp("axe")
    plain = run_demo(folder / "plain.onnx", *W4A4)
    bits = widest_hidden(plain.accumulators)[1] - 1  # AXE leaves the first conv and classifier
    axe = run_demo(folder / "axe.onnx", *W4A4, f"--accumulator_bit_width={bits}")
    result = finn_build.main(finn_build.make_args(
        [f"--model={axe.output}", f"--out_dir={folder / 'build'}", "--verify_images=2"]))
    assert result.failures == []
    return plain, axe, bits, result.estimates["accumulator_bits"]


def test_axe_keeps_finns_hidden_accumulators_within_the_width(axe_build):
    plain, axe, bits, finn_widths = axe_build
    assert widest_hidden(finn_widths)[1] <= bits < widest_hidden(plain.accumulators)[1]
    # bounded, not flattened: nearer this run's plain GPFQ model than chance (how near depends
    # on the model a machine trains)
    chance = 100.0 / 10
    axe_top1, plain_top1 = axe.quant_eval.top1, plain.quant_eval.top1
    assert axe_top1 > (plain_top1 + chance) / 2, (axe_top1, plain_top1)


# Two tests, not one: the AXE build runs in whichever worker takes it, beside the shared build
# (a test needing both would put a second FINN build in the shared build's worker).
def test_finns_accumulator_widths_are_the_ones_the_demo_reports_with_axe(axe_build):
    _, axe, _, finn_widths = axe_build
    assert list(finn_widths.values()) == list(axe.accumulators.values())


def test_finns_accumulator_widths_are_the_ones_the_demo_reports_at_8_bits(built, bias_corrected):
    _, _, estimates = built
    assert list(estimates["accumulator_bits"].values()) == list(bias_corrected.accumulators.values())


def test_the_fit_chooses_the_large_fifos_memory_and_counts_the_buffers_in_it(built):
    """FINN's large_fifo_mem_style for the FIFOs fifo.sv backs with memory (the skip FIFOs):
    each style costs what FINN estimates for it, and the design counts the chosen one's."""
    _, out_dir, estimates = built
    model = ModelWrapper(str(out_dir / "hw_layers.onnx"))
    styles, depths = resources.stream_buffer_costs(model, estimates["part"],
                                                   resources.LARGE_FIFO_STYLES)
    assert depths == estimates["skip_fifo_depths"] and max(depths.values()) > 257  # memory-backed
    fifos = {style: costs["StreamingFIFO_rtl"] for style, costs in styles.items()}
    assert fifos["block"]["BRAM_18K"] > 0 == fifos["block"]["URAM"]
    assert fifos["ultra"]["URAM"] > 0 == fifos["ultra"]["BRAM_18K"]
    assert fifos["distributed"]["LUT"] > fifos["block"]["LUT"]
    chosen = estimates["large_fifo_mem_style"]
    assert {key: value for key, value in estimates["stream_buffers"]["StreamingFIFO_rtl"].items()
            } == pytest.approx(dict(fifos[chosen]))
