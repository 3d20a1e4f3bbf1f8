"""Compile an exported QONNX MobileNetV2 with FINN, as far as FINN goes without Xilinx tools.

    python finn_build.py --model=quant_mobilenet_v2.onnx --out_dir=finn_build

The run reads top to bottom, one short function per step (in finn_steps.py):
(1) FINN's frontend, (2) streamlining through the inverted residuals, (3) lowering convs to
MatMuls, (4) conversion to FINN's hardware layers, executed by FINN in Python against the QONNX
graph, (5) the dataflow partition, (6) HLS/RTL specialization for `fpga_part`, (7) folding for
`target_fps`, (8) FINN's resource and cycle estimates. It writes out_dir/hw_layers.onnx (the
specialized, folded accelerator), out_dir/estimates.json, and each step's model under
out_dir/intermediate/. Exit status 1 when a self-check fails, 2 on bad flags.
After (6) the layers only run in cppsim/rtlsim, which need Vitis HLS/Vivado: the Python check
runs on the graph of (4), which holds the same layers before specialization.
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
out_dir = "finn_build"  # where hw_layers.onnx, estimates.json and intermediate/ go
fpga_part = "xczu7ev-ffvc1156-2-e"  # the FPGA part layers are specialized and estimated for (ZCU104)
clock_ns = 5.0  # target clock period in ns (200 MHz): turns target_fps into cycles per frame
target_fps = 1000  # frames per second SetFolding parallelizes the layers for
verify_images = 8  # validation images the hardware graph runs on in Python (0 skips the check)
reuse = False  # load a step's model from out_dir/intermediate/ when made from the same --model and flags
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

import numpy as np  # noqa: E402
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402
from qonnx.util.cleanup import cleanup_model  # noqa: E402

from check_export import (  # noqa: E402
    FINN_INSTALL_HINT, FINN_MIN_EXACT, FINN_TOLERANCE, CheckResult, compare_logits, finn_installed,
    metadata_of, run_graph, run_images)
from finn_demo.files import atomic_path  # noqa: E402

try:  # FINN (finn-plus) is installed apart from requirements.txt: see requirements-finn.txt
    from finn.core.onnx_exec import execute_onnx
    from finn.util.basic import getHWCustomOp

    from finn_demo import finn_steps as fs
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


def check_one_partition(parent):
    """FINN splits the accelerator where a node it cannot build sits between hardware layers."""
    partitions = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    if len(partitions) == 1:
        return []
    between = [f"{node.name} ({node.op_type})" for node in parent.graph.node
               if node.op_type != "StreamingDataflowPartition"]
    return [f"the accelerator is split into {len(partitions)} dataflow partitions; outside them: "
            f"{', '.join(between)}"]


def check_hw_graph(hw_model, qonnx_model, count):
    """Run the hardware graph (before specialization) with FINN's Python execution on `count`
    validation images: its integer logits times the output scale must give the QONNX graph's
    logits under check_export's FINN criterion (tolerance, near ties, FINN_MIN_EXACT), and
    LabelSelect must pick their top-1. The images go in as they are: the input quantizer runs
    in software and rounds ties as the QONNX Quant does (finn_steps.software_input_quantizer)."""
    images = run_images(metadata_of(qonnx_model), count)
    if images is None:
        return CheckResult("hw_graph", "fail", "no images: the file's metadata names no data "
                           "set (a file from finn_mobilenetv2.py does); --verify_images=0 skips")
    reference = run_graph(qonnx_model, images)
    (label_select,) = hw_model.get_nodes_by_op_type("LabelSelect")
    scale = float(hw_model.get_metadata_prop(fs.OUTPUT_SCALE) or 1.0)
    logits, labels = [], []
    for image in images.numpy():
        context = execute_onnx(hw_model, {hw_model.graph.input[0].name: image[None]},
                               return_full_exec_context=True)
        logits.append(context[label_select.input[0]].reshape(1, -1) * scale)
        labels.append(int(context[hw_model.graph.output[0].name].ravel()[0]))
    logits = np.concatenate(logits)
    result = compare_logits("hw_graph", logits, reference, FINN_TOLERANCE, scale,
                            "hardware graph vs QONNX", near_ties=True, min_exact=FINN_MIN_EXACT)
    wrong = [index for index, label in enumerate(labels)
             if logits[index, label] != logits[index].max()]
    if wrong:
        result.status = "fail"
        result.offenders += [f"image {index}: LabelSelect chose {labels[index]}, not the largest "
                             "logit" for index in wrong]
    return result


def print_table(estimates):
    """Resources and cycles per layer type, then the totals."""
    rows = {}
    for layer in estimates["layers"]:
        row = rows.setdefault(layer["op_type"], Counter())
        row.update({key: layer[key] for key in ("LUT", "BRAM_18K", "URAM", "DSP")} | {"layers": 1})
        row["max_cycles"] = max(row["max_cycles"], layer["cycles"])
    print(f"{'layer type':32} {'count':>5} {'LUT':>9} {'BRAM_18K':>9} {'URAM':>5} {'DSP':>5} "
          f"{'max cycles':>10}")
    for op_type, row in sorted(rows.items(), key=lambda item: -item[1]["LUT"]):
        print(f"{op_type:32} {row['layers']:5} {row['LUT']:9.0f} {row['BRAM_18K']:9.0f} "
              f"{row['URAM']:5.0f} {row['DSP']:5.0f} {row['max_cycles']:10}")
    totals = estimates["totals"]
    print(f"{'total':32} {len(estimates['layers']):5} {totals['LUT']:9.0f} "
          f"{totals['BRAM_18K']:9.0f} {totals['URAM']:5.0f} {totals['DSP']:5.0f} "
          f"{estimates['max_cycles']:10}")
    print(f"estimated {estimates['estimated_fps']:.0f} frames/s at {1e3 / estimates['clock_ns']:.0f}"
          f" MHz on {estimates['part']} (bottleneck {estimates['bottleneck']})")


# ------------------------------------------------------------------------------------ the run
def partition_and_check(model, qonnx_model, out_dir):
    """Step 5 and its checks: (failures, the accelerator's graph or None if split, op types outside)."""
    between = nodes_between_hw_layers(model)
    if between:
        return [f"not hardware layers between hardware layers: {', '.join(between)}; FINN's "
                "dataflow partition needs one unbroken run of hardware layers"], None, []
    parent = fs.partition(model, out_dir)
    split = check_one_partition(parent)
    if split:
        return split, None, []
    accelerator = fs.partition_model(parent)
    failures, outside = check_partition(parent, accelerator, qonnx_model)
    return failures, accelerator, outside


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
    for name in ("clock_ns", "target_fps"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name}={getattr(args, name)}: must be positive")
    if args.verify_images < 0:
        raise ConfigError(f"--verify_images={args.verify_images}: must be 0 (skip) or more")


def build_hw_graph(step, qonnx_model):
    """Steps 1-4: from the cleaned QONNX graph to FINN's hardware layers."""
    model = step("frontend", fs.frontend, qonnx_model)
    model = step("streamline", fs.streamline, model)
    model = step("lower_convs", fs.lower_convs, model)
    return step("convert_to_hw", fs.convert_to_hw, model, qonnx_model)


OUTPUTS = ("hw_layers.onnx", "estimates.json")


def write_outputs(out_dir, accelerator, estimates):
    """hw_layers.onnx and estimates.json, each written whole or not at all."""
    with atomic_path(os.path.join(out_dir, OUTPUTS[0])) as path:
        accelerator.save(str(path))
    with atomic_path(os.path.join(out_dir, OUTPUTS[1])) as path:
        path.write_text(json.dumps(estimates, indent=2))


def main(args):
    """Build, check and estimate; returns (failures, estimates or None, seconds per step).

    An earlier build's outputs in out_dir are removed first: a build that stops early never
    leaves them looking like its own."""
    validate_args(args)
    os.makedirs(args.out_dir, exist_ok=True)
    for name in OUTPUTS:
        Path(args.out_dir, name).unlink(missing_ok=True)
    qonnx_model = cleanup_model(ModelWrapper(args.model))
    step = Steps(args.out_dir, args.reuse, args.model)
    model = build_hw_graph(step, qonnx_model)
    failures = []
    if args.verify_images:
        start = time.perf_counter()
        result = check_hw_graph(model, qonnx_model, args.verify_images)
        print(f"    check: {result.summary} ({time.perf_counter() - start:.1f} s)")
        if result.failed:
            failures += [f"hw_graph: {line}" for line in [result.summary, *result.offenders]]
    start = time.perf_counter()
    partition_failures, accelerator, outside = partition_and_check(model, qonnx_model, args.out_dir)
    step.record("partition", start, accelerator or model)
    failures += partition_failures
    if accelerator is None:
        return SimpleNamespace(failures=failures, estimates=None, seconds=step.seconds)
    print(f"    {len(accelerator.graph.node)} hardware layers inside; outside: "
          f"{', '.join(outside) or 'nothing'}")
    accelerator = step("specialize", fs.specialize, accelerator, args.fpga_part)
    accelerator = step("fold", fs.fold, accelerator, args.target_fps, args.clock_ns)
    estimates = fs.estimate(accelerator, args.fpga_part, args.clock_ns)
    estimates.update(target_fps=args.target_fps, seconds=step.seconds, model=args.model,
                     failures=failures)
    write_outputs(args.out_dir, accelerator, estimates)
    print_table(estimates)
    return SimpleNamespace(failures=failures, estimates=estimates, seconds=step.seconds)


def cli(argv):
    """Run from command-line arguments; exit status 0, 1 (a check failed) or 2 (bad flags)."""
    try:
        args = make_args(argv)
        result = main(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for failure in result.failures:
        print(f"FAILED {failure}")
    if not result.failures:
        print(f"every check passed; {args.out_dir}/ holds hw_layers.onnx and estimates.json")
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
