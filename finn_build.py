"""Compile an exported QONNX MobileNetV2 with FINN's builder, folded to fit an FPGA board.

    python finn_build.py --model=quant_mobilenet_v2.onnx --board=ZCU104 --out_dir=finn_build

FINN's `build_dataflow_cfg` runs one DataflowBuildConfig whose steps read top to bottom:
the project's MobileNetV2 steps (finn_demo/finn_steps.py): (1) FINN's frontend, (2) streamlining
through the inverted residuals, (3) lowering convs to MatMuls, (4) conversion to FINN's hardware
layers, then their check, executed by FINN in Python: exact against the streamlined graph of
step 2, within a tolerance against the QONNX graph; FINN's own partition, specialization and
bit-width minimization; the project's fit to the board (finn_demo/fit.py: the highest frame
rate whose estimate fits the board's budget, choosing each layer's PE/SIMD, memories and, for
HLS units, LUT or DSP multipliers), handed to FINN as a folding config that FINN's own
step_apply_folding_config applies; FINN's estimate reports; and the project's summary.
out_dir then holds FINN's report/ (its estimate reports), intermediate_models/ and
build_dataflow.log, and the project's folding_config.json (hand it unchanged to your own FINN
build), estimates.json, hw_layers.onnx and intermediate/ (steps 1-4, for --reuse).
By default only estimates are made (no Xilinx tools needed); --outputs asks FINN for more where
Vivado and Vitis HLS are installed. Exit status 1 when a self-check fails, 2 on bad flags,
3 when no design fits the board.
"""
import hashlib
import json
import os
import sys
import time
import warnings
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

from finn_demo.configurator import ConfigError, apply_overrides, flags_of

# ---------------------------------------------------------------------------------------- flags
model = "quant_mobilenet_v2.onnx"  # the QONNX file finn_mobilenetv2.py exported
out_dir = "finn_build"  # FINN's report/ and intermediate_models/, folding_config.json, estimates.json
board = "ZCU104"  # a board FINN knows (part and resources): ZCU104, ZCU102, Ultra96, U250, ... ("" = none)
fpga_part = ""  # "" = the board's part; with --board="", any part (then --target_fps is required)
clock_ns = 5.0  # target clock period in ns (200 MHz): turns frame rates into cycles per frame
target_fps = 0  # 0 searches the highest frame rate that fits the board; N folds for N frames/s
res_limits = ""  # share of the board a design may use, e.g. "LUT=0.6,URAM=1"; "" = FINN's own limits
outputs = "estimates"  # FINN's outputs, comma-separated: estimates; with Vivado: stitched_ip, rtlsim, bitfile, driver, deployment; verilator: each RTL layer in Verilator
verify_images = 8  # validation images the hardware graph runs on in Python (0 skips the check)
reuse = False  # load steps 1-4 from out_dir/intermediate/ when made from the same --model and flags
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
from qonnx.core.datatype import DataType  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from check_export import (  # noqa: E402
    FINN_INSTALL_HINT, FINN_TOLERANCE, CheckResult, compare_logits, finn_installed, metadata_of,
    on_input_grid, run_graph, run_images)
from finn_demo.files import atomic_path  # noqa: E402

try:  # FINN (finn-plus) is installed apart from requirements.txt: see requirements-finn.txt
    from finn.core.onnx_exec import execute_onnx
    from finn.util.basic import getHWCustomOp

    from finn.util.config import extract_model_config_to_json

    from finn_demo import boards, builder, fit, finn_steps as fs, verilator
except ImportError as error:
    FINN_IMPORT_ERROR = error
else:
    FINN_IMPORT_ERROR = None

HW_DOMAIN = "finn.custom_op.fpgadataflow"
SOURCE_KEY = "finn_build_source"  # metadata of each intermediate model: what it was made from


def make_args(argv=()):
    """The flags above with `--name=value` overrides from `argv` applied."""
    return SimpleNamespace(**apply_overrides(FLAGS, argv))


class Steps:
    """Runs each step on a model, prints one line with its seconds, saves the result.

    With reuse on, a step whose model is already in out_dir/intermediate/ is loaded instead, if
    it was made from the same source file (sha256) with the same step flags, which each saved
    model records in its metadata; from the first step that is run again, every later step runs.
    """

    def __init__(self, out_dir, reuse, source):
        self.folder = os.path.join(out_dir, "intermediate")
        os.makedirs(self.folder, exist_ok=True)
        self.reuse, self.seconds = reuse, {}
        self.source_sha256 = hashlib.sha256(Path(source).read_bytes()).hexdigest()

    def __call__(self, name, function, model, *args):
        path = os.path.join(self.folder, f"{len(self.seconds) + 1}_{name}.onnx")
        key = json.dumps({"source_sha256": self.source_sha256, "step": name, "flags": [
            arg for arg in args if isinstance(arg, (str, int, float))]})
        start = time.perf_counter()
        if self.reuse and os.path.exists(path):
            saved = ModelWrapper(path)
            if saved.get_metadata_prop(SOURCE_KEY) == key:
                return self.record(name, start, saved, "loaded")
            print(f"    {path} was made from another --model or other flags: running {name} again")
        self.reuse = False  # the steps after a step that runs again depend on its new result
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FINN warns once per node it leaves alone
            model = function(model, *args)
        model.set_metadata_prop(SOURCE_KEY, key)
        with atomic_path(path) as tmp:  # an interrupted save leaves no half file to reuse
            model.save(str(tmp))
        return self.record(name, start, model)

    def record(self, name, start, model, how="done"):
        """Keep and print the seconds since `start` of the step `name` that gave `model`."""
        self.seconds[name] = time.perf_counter() - start
        types = Counter(node.op_type for node in model.graph.node)
        print(f"[{len(self.seconds)}] {name:15} {how} in {self.seconds[name]:6.1f} s: "
              + ", ".join(f"{count} {op}" for op, count in types.most_common()), flush=True)
        return model


# ------------------------------------------------------------------------------------ checks
def check_partition(parent, accelerator, qonnx_model):
    """Every Conv/Gemm, residual Add and pooling is a hardware layer in the partition, no
    hardware layer reads or writes floats, and only input scaling / output stay outside.
    Returns (failures, op types left outside)."""
    failures = []
    source = Counter(node.op_type for node in qonnx_model.graph.node)
    inside = Counter(node.op_type for node in accelerator.graph.node)
    expected = {("MVAU", "VVAU"): source["Conv"] + source["Gemm"] + source["MatMul"],
                ("ElementwiseAdd",): source["Add"],
                ("GlobalAccPool", "Pool"): source["GlobalAveragePool"] + source["AveragePool"]}
    for ops, count in expected.items():
        found = sum(inside[op] for op in ops)
        if found != count:
            failures.append(f"{'/'.join(ops)} inside: {found}, the QONNX graph has {count} layers")
    not_hw = [f"{node.name} ({node.op_type})" for node in accelerator.graph.node
              if not is_hw_layer(node)]
    if not_hw:
        failures.append(f"not hardware layers inside: {', '.join(not_hw)}")
    floats = []
    for node in accelerator.graph.node:
        if is_hw_layer(node):
            layer = getHWCustomOp(node)
            dtypes = [layer.get_input_datatype(0), layer.get_output_datatype(0)]
            if any(not dtype.is_integer() for dtype in dtypes):
                floats.append(f"{node.name} ({dtypes[0]} -> {dtypes[1]})")
    if floats:
        failures.append(f"float data inside: {', '.join(floats)}")
    outside = [node.op_type for node in parent.graph.node
               if node.op_type != "StreamingDataflowPartition"]
    allowed = {"Div", "Quant", "MultiThreshold", "Transpose", "Mul", "TopK"}  # input/output scaling
    if set(outside) - allowed:
        failures.append(f"left outside the partition: {', '.join(outside)}")
    return failures, outside


def is_hw_layer(node):
    return node.domain.startswith(HW_DOMAIN)


def nodes_between_hw_layers(model):
    """The nodes that are not hardware layers but have one before and one after them. FINN cannot
    make one dataflow partition around them (qonnx stops with "partition depends on itself")."""
    def reachable(step):
        seen, todo = set(), [node for node in model.graph.node if is_hw_layer(node)]
        while todo:
            for neighbour in step(todo.pop()):
                if neighbour is not None and neighbour.name not in seen:
                    seen.add(neighbour.name)
                    todo.append(neighbour)
        return seen
    after = reachable(lambda node: [consumer for name in node.output
                                    for consumer in model.find_consumers(name)])
    before = reachable(lambda node: [model.find_producer(name) for name in node.input])
    return [f"{node.name} ({node.op_type})" for node in model.graph.node
            if not is_hw_layer(node) and node.name in after and node.name in before]


def check_hw_graph(hw_model, streamlined, qonnx_model, count):
    """Run the hardware graph (before specialization) with FINN's Python execution on `count`
    validation images, rounded onto the input quantizer's grid (check_export.on_input_grid):
    - its logits must equal, exactly, those of FINN's streamlined graph (step 2), whose
      thresholds compare the same integers: lowering and conversion to hardware layers change
      no value;
    - and be the QONNX graph's within check_export's FINN tolerance, a top-1 change allowed only
      across a near tie. Not exactly: the streamlined graph's thresholds and the QONNX Quant
      round a value that lands exactly halfway between two levels in float32 differently, and a
      224x224 layer of 8-bit activations has a few such values (README, "W8A8");
    - LabelSelect must pick the largest logit."""
    images = run_images(metadata_of(qonnx_model), count)
    if images is None:
        return CheckResult("hw_graph", "fail", "no images: the file's metadata names no data "
                           "set (a file from finn_mobilenetv2.py does); --verify_images=0 skips")
    images, _ = on_input_grid(qonnx_model, images)
    (label_select,) = hw_model.get_nodes_by_op_type("LabelSelect")
    scale = float(hw_model.get_metadata_prop(fs.OUTPUT_SCALE) or 1.0)
    logits, labels = [], []
    for image in images.numpy():
        context = execute_onnx(hw_model, {hw_model.graph.input[0].name: image[None]},
                               return_full_exec_context=True)
        logits.append(context[label_select.input[0]].reshape(1, -1) * scale)
        labels.append(int(context[hw_model.graph.output[0].name].ravel()[0]))
    logits = np.concatenate(logits)
    exact = compare_logits("hw_graph", logits, run_graph(streamlined, images), 0.0, scale,
                           "hardware graph vs FINN's streamlined graph", min_exact=1.0)
    close = compare_logits("hw_graph", logits, run_graph(qonnx_model, images), FINN_TOLERANCE,
                           scale, "hardware graph vs QONNX", near_ties=True)
    result = CheckResult("hw_graph", "fail" if exact.failed or close.failed else "pass",
                         f"{exact.summary}; {close.summary}", exact.offenders + close.offenders)
    wrong = [index for index, label in enumerate(labels)
             if logits[index, label] != logits[index].max()]
    if wrong:
        result.status = "fail"
        result.offenders += [f"image {index}: LabelSelect chose {labels[index]}, not the largest "
                             "logit" for index in wrong]
    return result


# ------------------------------------------------------------------------------------ the run
class BuildStopped(Exception):
    """A check found what makes the later steps meaningless (the failures are recorded)."""


class Build:
    """The project's builder steps, run by FINN's build_dataflow_cfg in `steps()` order, and
    what they find: check failures, the fitted design, the summary."""

    def __init__(self, args, qonnx_model, target):
        self.args, self.qonnx_model, self.target = args, qonnx_model, target
        self.cache = Steps(args.out_dir, args.reuse, args.model)
        self.failures, self.design, self.tried, self.estimates = [], None, [], None
        self.streamlined = None  # step 2's graph, the hardware graph's exact reference
        self.simulated = None  # verilator.json, with --outputs=verilator

    def steps(self):
        return [self.step_frontend, self.step_streamline, self.step_lower_convs,
                self.step_convert_to_hw, self.step_check_hw_graph,
                "step_create_dataflow_partition", self.step_check_partition,
                "step_specialize_layers", "step_minimize_bit_width", self.step_fit_to_board,
                "step_apply_folding_config", "step_generate_estimate_reports",
                *([self.step_verilator] if verilator.OUTPUT in output_names(self.args) else []),
                self.step_summary]

    def step_frontend(self, model, cfg):
        return self.cache("frontend", fs.frontend, model)

    def step_streamline(self, model, cfg):
        self.streamlined = self.cache("streamline", fs.streamline, model)
        return self.streamlined

    def step_lower_convs(self, model, cfg):
        return self.cache("lower_convs", fs.lower_convs, model)

    def step_convert_to_hw(self, model, cfg):
        return self.cache("convert_to_hw", fs.convert_to_hw, model, self.qonnx_model)

    def step_check_hw_graph(self, model, cfg):
        """The hardware graph on validation images, exact against the streamlined graph and within
        a tolerance against QONNX; one unbroken run of them."""
        if self.args.verify_images:
            start = time.perf_counter()
            result = check_hw_graph(model, self.streamlined, self.qonnx_model,
                                    self.args.verify_images)
            print(f"    check: {result.summary} ({time.perf_counter() - start:.1f} s)")
            if result.failed:
                self.failures += [f"hw_graph: {line}" for line in [result.summary, *result.offenders]]
        between = nodes_between_hw_layers(model)
        if between:
            self.stop(f"not hardware layers between hardware layers: {', '.join(between)}; FINN's "
                      "dataflow partition needs one unbroken run of hardware layers")
        return model

    def step_check_partition(self, model, cfg):
        parent = ModelWrapper(str(cfg.get_intermediate_models_directory() / "dataflow_parent.onnx"))
        failures, outside = check_partition(parent, model, self.qonnx_model)
        print(f"    {len(model.graph.node)} hardware layers inside; outside: "
              f"{', '.join(outside) or 'nothing'}")
        if failures:
            self.stop(*failures)
        return model

    def step_fit_to_board(self, model, cfg):
        """The fit's folding and memories, written as FINN's folding config for the next step."""
        self.design, self.tried = fit.search(model, cfg._resolve_fpga_part(), self.args.clock_ns,
                                             self.target.budget, self.args.target_fps or None)
        path = Path(self.args.out_dir, "folding_config.json")
        extract_model_config_to_json(self.design.model, path, fit.FOLDING_ATTRIBUTES)
        cfg.folding_config_file = path
        return model

    def step_summary(self, model, cfg):
        """estimates.json and hw_layers.onnx; FINN's estimates must be the fit's."""
        reported = json.loads((cfg.get_report_directory() / "estimate_layer_resources.json")
                              .read_text())
        self.failures += reproduction_failures(self.design, reported)
        self.estimates = summarize(self.design, self.tried, self.target, self.args)
        self.estimates["failures"] = self.failures
        self.estimates["seconds"] = self.cache.seconds  # steps 1-4, run or loaded
        self.estimates["accumulator_bits"] = accumulator_widths(model)
        write_outputs(self.args.out_dir, model, self.estimates)
        return model

    def step_verilator(self, model, cfg):
        """Each RTL layer in Verilator, bit for bit against FINN's Python execution on a
        validation image (finn_demo/verilator.py): out_dir/verilator.json."""
        image = run_images(metadata_of(self.qonnx_model), 1)
        parent = ModelWrapper(str(cfg.get_intermediate_models_directory() / "dataflow_parent.onnx"))
        self.simulated = verilator.simulate(model, parent, None if image is None else image.numpy(),
                                            self.args.out_dir, cfg._resolve_fpga_part(),
                                            self.args.clock_ns)
        verilator.write(self.simulated, self.args.out_dir)
        self.failures += verilator.failures(self.simulated)
        return model

    def stop(self, *failures):
        self.failures += failures
        raise BuildStopped("; ".join(failures))


def accumulator_widths(model):
    """{layer: accumulator bits} of every matrix and depthwise unit, as FINN's bit-width
    minimization left them (its accDataType), in graph order."""
    return {node.name: DataType[getHWCustomOp(node).get_nodeattr("accDataType")].bitwidth()
            for node in model.graph.node if node.op_type.startswith(("MVAU", "VVAU"))}


def reproduction_failures(design, reported):
    """FINN's estimate report, made after FINN applied folding_config.json, against the fit's
    FINN figures per layer: they differ only if the folding config does not carry the design."""
    failures = []
    for layer in design.layers:
        finn = reported.get(layer["name"], {})
        if any(abs(finn.get(key, 0) - layer[key]) > 1e-6 for key in boards.RESOURCES):
            failures.append(f"folding_config: FINN's estimate of {layer['name']} after applying it "
                            f"is {finn}, the fit's was {layer}")
    return failures


def summarize(design, tried, target, args):
    """The project's summary of the design: what estimates.json holds."""
    totals = {key: round(value) for key, value in design.totals.items()}
    finn_only = {key: round(sum(layer[key] for layer in design.layers)) for key in boards.RESOURCES}
    return {
        "board": target.board, "part": target.part, "clock_ns": args.clock_ns,
        "target_fps": args.target_fps, "estimated_fps": design.fps, "bottleneck": design.bottleneck,
        "max_cycles": max(layer["cycles"] for layer in design.layers),
        "mvau_wwidth_max": design.mvau_wwidth_max,
        "fits": design.fits, "over": design.over, "available": target.available,
        "limits": target.limits, "budget": target.budget, "totals": totals, "finn_totals": finn_only,
        "use_percent": {key: round(100 * totals[key] / target.available[key], 1)
                        for key in boards.RESOURCES if target.available.get(key)},
        "layers": design.layers, "stream_buffers": design.buffers,
        "skip_fifo_depths": design.skip_depths,
        "sources": {"finn": "every layer's LUT, BRAM_18K, URAM, DSP (finn_totals) and the stream "
                            "buffers' costs, by FINN's estimators",
                    "project": "standin_LUT of RTL matrix units (FINN's HLS LUT formula), the skip "
                               "FIFOs' depths (analytic), the memory choices and folding search "
                               "(FINN's SetFolding, mvau_wwidth_max widened where needed)"},
        "tried": [{"requested_fps": item.requested_fps, "fps": item.fps, "fits": item.fits,
                   "over": item.over} for item in tried],
        "model": args.model}


def print_table(estimates):
    """Resources and cycles per layer type, the stream buffers, then the totals against the board."""
    rows = {}
    for layer in estimates["layers"]:
        row = rows.setdefault(layer["op_type"], Counter())
        row.update({key: layer[key] for key in ("LUT", "standin_LUT", "BRAM_18K", "URAM", "DSP")}
                   | {"count": 1})
        row["max_cycles"] = max(row["max_cycles"], layer["cycles"])
    for op_type, row in estimates["stream_buffers"].items():
        rows[op_type + " (inserted)"] = Counter(row)
    print(f"{'layer type':36} {'count':>5} {'LUT':>9} {'+stand-in':>9} {'BRAM_18K':>9} {'URAM':>5} "
          f"{'DSP':>5} {'max cycles':>10}")
    for op_type, row in sorted(rows.items(), key=lambda item: -item[1]["LUT"]):
        print(f"{op_type:36} {row['count']:5.0f} {row['LUT']:9.0f} {row['standin_LUT']:9.0f} "
              f"{row['BRAM_18K']:9.0f} {row['URAM']:5.0f} {row['DSP']:5.0f} {row['max_cycles']:10.0f}")
    totals, percent = estimates["totals"], estimates["use_percent"]
    print("total (LUT with stand-ins): " + ", ".join(
        f"{key} {totals[key]}" + (f" ({percent[key]}% of {estimates['board']})" if key in percent
                                  else "") for key in boards.RESOURCES))
    print(f"estimated {estimates['estimated_fps']:.0f} frames/s at {1e3 / estimates['clock_ns']:.0f}"
          f" MHz on {estimates['part']} (bottleneck {estimates['bottleneck']}; folded by SetFolding "
          f"with mvau_wwidth_max={estimates['mvau_wwidth_max']})")


OUTPUTS = ("hw_layers.onnx", "estimates.json", "folding_config.json")


def write_outputs(out_dir, accelerator, estimates):
    """hw_layers.onnx and estimates.json, each written whole or not at all."""
    with atomic_path(os.path.join(out_dir, OUTPUTS[0])) as path:
        accelerator.save(str(path))
    with atomic_path(os.path.join(out_dir, OUTPUTS[1])) as path:
        path.write_text(json.dumps(estimates, indent=2))


def resolve_target(args):
    """The board's part, resources and budget (flags already validated)."""
    limits = boards.parse_limits(args.res_limits)
    if not args.board:
        return SimpleNamespace(board="", part=args.fpga_part, limits=limits, available={},
                               budget={key: float("inf") for key in boards.RESOURCES})
    return SimpleNamespace(board=args.board, part=args.fpga_part or boards.PARTS[args.board],
                           limits=limits, available=boards.available(args.board),
                           budget=boards.budget(args.board, limits))


def validate_args(args):
    if FINN_IMPORT_ERROR is not None:
        state = (f"installed but module {FINN_IMPORT_ERROR.name or '?'} does not import"
                 if finn_installed() else "not installed")
        raise ConfigError(f"FINN is {state} ({type(FINN_IMPORT_ERROR).__name__}: "
                          f"{FINN_IMPORT_ERROR}): {FINN_INSTALL_HINT}, or run `make finn_build`, "
                          "which does both")
    if not os.path.isfile(args.model):
        raise ConfigError(f"--model={args.model}: no such file; export one with "
                          "`python finn_mobilenetv2.py` first")
    if args.board and args.board not in boards.BOARDS:
        raise ConfigError(f"--board={args.board}: not a board FINN knows; use one of "
                          f"{', '.join(boards.BOARDS)}, or --board= with --fpga_part and --target_fps")
    if not args.board and not (args.fpga_part and args.target_fps):
        raise ConfigError("--board=: without a board give --fpga_part=PART and --target_fps=N "
                          "(there is no budget to fit to)")
    if args.clock_ns <= 0 or args.target_fps < 0:
        raise ConfigError(f"--clock_ns={args.clock_ns} must be positive and --target_fps="
                          f"{args.target_fps} 0 (search) or positive")
    if args.verify_images < 0:
        raise ConfigError(f"--verify_images={args.verify_images}: must be 0 (skip) or more")
    try:
        boards.parse_limits(args.res_limits)
    except ValueError as error:
        raise ConfigError(f"--res_limits={args.res_limits}: {error}") from None
    unknown = set(output_names(args)) - set(builder.OUTPUTS) - {verilator.OUTPUT}
    if unknown:
        raise ConfigError(f"--outputs={args.outputs}: unknown {', '.join(sorted(unknown))}; use "
                          f"{', '.join(builder.OUTPUTS)}, {verilator.OUTPUT}")
    if verilator.OUTPUT in output_names(args) and verilator.missing():
        raise ConfigError(f"--outputs={args.outputs}: {verilator.missing()}")


def output_names(args):
    return [name.strip() for name in args.outputs.split(",") if name.strip()]


def make_config(args, build, target):
    products = [name for name in output_names(args) if name in builder.OUTPUTS]  # FINN's own
    return builder.make_config(args.out_dir, build.steps(), builder.output_types(products),
                               target.part, target.board, boards.is_zynq(target.board),
                               args.clock_ns)


def main(args):
    """Build, check, fit and estimate; returns (failures, estimates or None, seconds, fits).

    An earlier build's outputs in out_dir are removed first: a build that stops early never
    leaves them looking like its own."""
    validate_args(args)
    os.makedirs(args.out_dir, exist_ok=True)
    for name in OUTPUTS:
        Path(args.out_dir, name).unlink(missing_ok=True)
    target = resolve_target(args)
    source = os.path.join(args.out_dir, "intermediate", "0_cleanup.onnx")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    qonnx_model = cleanup_model(ModelWrapper(args.model))
    qonnx_model.save(source)
    build = Build(args, qonnx_model, target)
    try:
        status = builder.run(source, make_config(args, build, target))
    except BuildStopped:
        status = -1
    if status != 0 and not build.failures:
        build.failures.append(f"FINN's builder stopped: see {args.out_dir}/build_dataflow.log")
    if build.estimates is not None:
        print_table(build.estimates)
    if build.simulated is not None:
        verilator.print_table(build.simulated, build.estimates)
    fits = build.design is not None and build.design.fits
    return SimpleNamespace(failures=build.failures, estimates=build.estimates,
                           seconds=build.cache.seconds, fits=fits, design=build.design)


def over_line(result, board):
    """One line: which resources the design closest to fitting is over on `board`, by how much."""
    totals, budget = result.estimates["totals"], result.estimates["budget"]
    needs = [f"{key} {totals[key]:.0f} of a budget of {budget[key]} ("
             + (f"{over / budget[key] * 100:.0f}% over)" if budget[key] else "the board has none)")
             for key, over in result.design.over.items()]
    return (f"DOES NOT FIT {board}: the closest design ({result.design.fps:.0f} frames/s) needs "
            + ", ".join(needs))


def cli(argv):
    """Run from command-line arguments; exit status 0, 1 (a check failed), 2 (bad flags) or 3
    (no design fits the board, every check passed). A design that does not fit is named in one
    line whatever the checks say."""
    try:
        args = make_args(argv)
        result = main(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for failure in result.failures:
        print(f"FAILED {failure}")
    misfit = result.design is not None and not result.fits
    if misfit:
        print(over_line(result, args.board or args.fpga_part))
    if result.failures or misfit:
        return 1 if result.failures else 3
    print(f"every check passed; {args.out_dir}/ holds folding_config.json, estimates.json, "
          "hw_layers.onnx and FINN's report/")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
