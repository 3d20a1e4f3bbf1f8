"""The FINN build finn_build.py runs: the project's builder steps and FINN's, in one config.

FINN's build_dataflow_cfg runs one DataflowBuildConfig whose steps are the project's (steps.py,
checked by hw_checks.py, fitted by fit.py) and FINN's own named steps; see finn_build.py's
docstring for the story of a build."""
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from finn.builder.build_dataflow_config import LargeFIFOMemStyle
from finn.util.basic import getHWCustomOp
from finn.util.config import extract_model_config_to_json
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from finn_demo.hw import steps as fs
from finn_demo.checks import check_inputs
from finn_demo.common.configurator import ConfigError
from finn_demo.common.files import atomic_path
from finn_demo.data.datasets import images_to_check
from finn_demo.hw import alternatives, boards, finn_builder, fit, requant, verilator
from finn_demo.hw.hw_checks import check_hw_graph, check_partition, nodes_between_hw_layers
from finn_demo.hw.cache import StepCache

class BuildStopped(Exception):
    """A check found what makes the later steps meaningless (the failures are recorded)."""


class Build:
    """The project's builder steps, run by FINN's build_dataflow_cfg in `steps()` order, and
    what they find: check failures, the fitted design, the summary."""

    def __init__(self, args, qonnx_model, target, inputs):
        self.args, self.qonnx_model, self.target = args, qonnx_model, target
        self.inputs = inputs  # what the hardware check and Verilator run on (check_inputs_of)
        self.hw_check = None  # the hardware graph's CheckResult, where it ran
        self.cache = StepCache(args.out_dir, args.reuse, args.model)
        self.failures, self.design, self.tried, self.estimates = [], None, [], None
        self.streamlined = None  # step 2's graph, the hardware graph's exact reference
        self.simulated = None  # verilator.json, with --outputs=verilator
        self.requant_kept = {}  # {threshold layer kept as Thresholding: why}, with --requant
        self.staircases = {}  # {Requant output: (thresholds, ActVal)} it is proven against

    def steps(self):
        return [self.step_frontend, self.step_streamline, self.step_lower_convs,
                self.step_convert_to_hw, self.step_check_hw_graph,
                "step_create_dataflow_partition", self.step_check_partition,
                "step_specialize_layers", "step_minimize_bit_width",
                *([self.step_requant] if self.args.requant else []), self.step_fit_to_board,
                "step_apply_folding_config", "step_generate_estimate_reports",
                *([self.step_verilator] if verilator.OUTPUT in output_names(self.args) else []),
                self.step_summary]

    def step_frontend(self, model, cfg):
        try:
            return self.cache("frontend", fs.frontend, model)
        except fs.ScaleAfterReluError as error:  # a graph FINN's thresholds cannot compute
            self.stop(f"frontend: {error}")

    def step_streamline(self, model, cfg):
        self.streamlined = self.cache("streamline", fs.streamline, model)
        return self.streamlined

    def step_lower_convs(self, model, cfg):
        return self.cache("lower_convs", fs.lower_convs, model)

    def step_convert_to_hw(self, model, cfg):
        return self.cache("convert_to_hw", fs.convert_to_hw, model, self.qonnx_model)

    def step_check_hw_graph(self, model, cfg):
        """The hardware graph on the check's inputs, exact against the streamlined graph and
        layer by layer against QONNX; one unbroken run of them."""
        if self.args.verify_images:
            start = time.perf_counter()
            result = check_hw_graph(model, self.streamlined, self.qonnx_model,
                                    self.inputs[:self.args.verify_images])
            print(f"    check: {result.summary} ({time.perf_counter() - start:.1f} s)")
            self.hw_check = result
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

    def step_requant(self, model, cfg):
        """Each Thresholding_rtl layer that a Requant_rtl computes exactly, proven on every input
        (requant.py), becomes one; the line says how many went each way and why."""
        model, self.requant_kept, self.staircases = requant.convert(model)
        print("    " + requant.summary(model, self.requant_kept))
        return model

    def step_fit_to_board(self, model, cfg):
        """The fit's folding and memories, written as FINN's folding config for the next step."""
        self.design, self.tried = fit.search(model, cfg._resolve_fpga_part(), self.args.clock_ns,
                                             self.target.budget, self.args.target_fps or None)
        path = Path(self.args.out_dir, "folding_config.json")
        extract_model_config_to_json(self.design.model, path, fit.FOLDING_ATTRIBUTES)
        cfg.folding_config_file = path
        # the large FIFOs' memory the fit costed, for FINN's own FIFO step (with --outputs)
        cfg.large_fifo_mem_style = LargeFIFOMemStyle(self.design.memories[fit.LARGE_FIFOS])
        return model

    def step_summary(self, model, cfg):
        """estimates.json and hw_layers.onnx; FINN's estimates must be the fit's."""
        reported = json.loads((cfg.get_report_directory() / "estimate_layer_resources.json")
                              .read_text())
        self.failures += reproduction_failures(self.design, reported)
        self.failures += requant.proof_failures(model, self.staircases)
        self.estimates = summarize_design(self.design, self.tried, self.target, self.args)
        self.estimates["failures"] = self.failures
        self.estimates["seconds"] = self.cache.seconds  # steps 1-4, run or loaded
        self.estimates["accumulator_bits"] = accumulator_widths(model)
        self.estimates["requant"] = {"flag": self.args.requant, **requant.layer_counts(model),
                                     "kept": self.requant_kept}
        write_outputs(self.args.out_dir, model, self.estimates)
        return model

    def step_verilator(self, model, cfg):
        """Each RTL layer in Verilator, bit for bit against FINN's Python execution on the
        hardware check's first input (verilator.py): out_dir/verilator.json."""
        parent = ModelWrapper(str(cfg.get_intermediate_models_directory() / "dataflow_parent.onnx"))
        names = verilator.slowest_layers(model) if self.args.verilator_layers == "slowest" else None
        self.simulated = verilator.simulate(model, parent, self.inputs[:1].numpy(),
                                            self.args.out_dir, cfg._resolve_fpga_part(),
                                            self.args.clock_ns, names)
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


def summarize_design(design, tried, target, args):
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
        "large_fifo_mem_style": design.memories[fit.LARGE_FIFOS],
        "skip_fifo_depths": design.skip_depths,
        "sources": {"finn": "every layer's LUT, BRAM_18K, URAM, DSP (finn_totals) and the stream "
                            "buffers' costs, by FINN's estimators",
                    "project": "standin_LUT of RTL matrix units (FINN's HLS LUT formula) and of "
                               "Requant_rtl (the project's core: clip, control and LUTRAM "
                               "parameters); standin_DSP of MVAU_rtl (finn-rtllib mvu.sv's PEs "
                               "per DSP48 instead of FINN's 4) and of Requant_rtl (its product's "
                               "DSPs per PE lane); "
                               "standin_BRAM_18K and standin_URAM of Requant_rtl's parameters "
                               "(their memory the fit's choice); totals count FINN's figure plus the stand-in; the skip "
                               "FIFOs' depths (analytic), the memory choices and folding search "
                               "(FINN's SetFolding, mvau_wwidth_max widened where needed, Requant "
                               "PE by fit.fold_requant)"},
        "tried": [{"requested_fps": item.requested_fps, "fps": item.fps, "fits": item.fits,
                   "over": item.over} for item in tried],
        "fits_per_board": alternatives.fastest_per_board(tried, target.limits),
        "model": args.model}


def print_design_table(estimates):
    """Resources and cycles per layer type, the stream buffers, then the totals against the board.
    LUT shows FINN's figure and the project's stand-in apart; BRAM_18K, URAM and DSP their sum."""
    rows = {}
    for layer in estimates["layers"]:
        row = rows.setdefault(layer["op_type"], Counter())
        row.update({key: layer[key] for key in ("LUT", "standin_LUT")} | {"count": 1}
                   | {key: layer[key] + layer.get("standin_" + key, 0)
                      for key in ("BRAM_18K", "URAM", "DSP")})
        row["max_cycles"] = max(row["max_cycles"], layer["cycles"])
    for op_type, row in estimates["stream_buffers"].items():
        rows[op_type + " (inserted)"] = Counter(row)
    print(f"{'layer type':36} {'count':>5} {'LUT':>9} {'+stand-in':>9} {'BRAM_18K':>9} {'URAM':>5} "
          f"{'DSP':>5} {'max cycles':>10}  (BRAM_18K, URAM, DSP with stand-ins)")
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

def validate_build_args(args):
    """Raise ConfigError on the first flag that cannot work (FINN imports: finn_build.py checked)."""
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
    if args.verify_data:
        try:
            images_to_check(args.verify_data, None)  # lists them, as the check will
        except ConfigError as error:
            raise ConfigError(f"--verify_data={args.verify_data}: {error}; give a folder of "
                              "images, or --verify_data= for the file's own data set or inputs "
                              "on its input grid") from None
    try:
        boards.parse_limits(args.res_limits)
    except ValueError as error:
        raise ConfigError(f"--res_limits={args.res_limits}: {error}") from None
    unknown = set(output_names(args)) - set(finn_builder.OUTPUTS) - {verilator.OUTPUT}
    if unknown:
        raise ConfigError(f"--outputs={args.outputs}: unknown {', '.join(sorted(unknown))}; use "
                          f"{', '.join(finn_builder.OUTPUTS)}, {verilator.OUTPUT}")
    if args.verilator_layers not in verilator.LAYER_CHOICES:
        raise ConfigError(f"--verilator_layers={args.verilator_layers}: use "
                          f"{' or '.join(verilator.LAYER_CHOICES)}")
    if verilator.OUTPUT in output_names(args) and verilator.missing():
        raise ConfigError(f"--outputs={args.outputs}: {verilator.missing()}")


def output_names(args):
    return [name.strip() for name in args.outputs.split(",") if name.strip()]


def make_build_config(args, build, target):
    products = [name for name in output_names(args) if name in finn_builder.OUTPUTS]  # FINN's own
    return finn_builder.make_dataflow_config(args.out_dir, build.steps(), finn_builder.output_types(products),
                               target.part, target.board, boards.is_zynq(target.board),
                               args.clock_ns)


def check_inputs_of(args, qonnx_model):
    """The inputs the hardware check (--verify_images of them) and Verilator (the first) run on,
    or None when neither runs; prints what they are."""
    count = max(args.verify_images, 1 if verilator.OUTPUT in output_names(args) else 0)
    if not count:
        return None
    try:
        inputs, what = check_inputs(qonnx_model, count, args.verify_data)
    except ConfigError as error:
        raise ConfigError(f"--verify_data={args.verify_data}: {error}") from None
    print(f"checks run on {what}")
    return inputs


@dataclass
class BuildResult:
    """What run_build returns; each finding is None where the step that makes it did not run."""
    failures: list  # one line per failed check, or why the build stopped; empty when all passed
    estimates: dict | None  # estimates.json's content (step_summary)
    seconds: dict  # {step: seconds} of steps 1-4, run or loaded from the cache
    fits: bool  # a design was fitted and it fits the board's budget
    design: fit.Design | None  # the fit's design (step_fit_to_board)
    simulated: dict | None  # verilator.json's content, with --outputs=verilator
    inputs: object  # the tensor the hardware check and Verilator ran on (check_inputs_of), or None
    hw_check: object  # the hardware graph's CheckResult, or None


def run_build(args):
    """Build, check, fit and estimate: a BuildResult.

    Flags and the check's inputs are settled before anything is written. An earlier build's
    outputs in out_dir are removed first: a build that stops early never leaves them looking
    like its own."""
    validate_build_args(args)
    qonnx_model = cleanup_model(ModelWrapper(args.model))
    inputs = check_inputs_of(args, qonnx_model)
    os.makedirs(args.out_dir, exist_ok=True)
    for name in OUTPUTS:
        Path(args.out_dir, name).unlink(missing_ok=True)
    target = resolve_target(args)
    source = os.path.join(args.out_dir, "intermediate", "0_cleanup.onnx")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    qonnx_model.save(source)
    build = Build(args, qonnx_model, target, inputs)
    try:
        status = finn_builder.run(source, make_build_config(args, build, target))
    except BuildStopped:
        status = -1
    if status != 0 and not build.failures:
        build.failures.append(f"FINN's builder stopped: see {args.out_dir}/build_dataflow.log")
    if build.estimates is not None:
        print_design_table(build.estimates)
    if build.simulated is not None:
        verilator.print_table(build.simulated, build.estimates)
    fits = build.design is not None and build.design.fits
    return BuildResult(failures=build.failures, estimates=build.estimates,
                       seconds=build.cache.seconds, fits=fits, design=build.design,
                       simulated=build.simulated, inputs=inputs, hw_check=build.hw_check)


def over_line(result, board):
    """One line: which resources the design closest to fitting is over on `board`, by how much."""
    totals, budget = result.estimates["totals"], result.estimates["budget"]
    needs = [f"{key} {totals[key]:.0f} of a budget of {budget[key]} ("
             + (f"{over / budget[key] * 100:.0f}% over)" if budget[key] else "the board has none)")
             for key, over in result.design.over.items()]
    return (f"DOES NOT FIT {board}: the closest design ({result.design.fps:.0f} frames/s) needs "
            + ", ".join(needs))


def print_build_failures(result, board, finn_rows):
    """A FAILED line per failure, then, for a design that misses `board` (checks or not), the
    over_line and what would fit (alternatives.py; `finn_rows`: the benchmark's FINN rows)."""
    for failure in result.failures:
        print(f"FAILED {failure}")
    if result.design is not None and not result.fits:
        print(over_line(result, board))
        for line in alternatives.what_would_fit(result.estimates["fits_per_board"],
                                                alternatives.fitting_settings(finn_rows, board),
                                                board):
            print("  " + line)
