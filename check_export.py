"""Check an exported QONNX file before handing it to FINN: structure, equivalence, FINN's frontend.

    python check_export.py quant_mobilenet_v2.onnx [--images N] [--no-finn]

or from Python (the demo does this behind a flag):

    report = check_export(path, images, brevitas_model=model)
    print(report); assert report.ok

Structure: FINN needs a Quant node on every weight and every activation input of Conv/Gemm/MatMul
(it turns them into integer weights and thresholds), identical scales on the inputs of each Add
or Concat (it adds integers, with no rescaling), and BatchNorm kept as its own node (it folds it
into thresholds itself). Numbers, layer by layer at every quantizer (finn_demo/layerwise.py): the
QONNX graph, executed node by node, computes the Brevitas model's integer levels, and FINN's own
conversion and streamlining compute the QONNX graph's; each layer is fed the reference's input, and
may differ by one level only where float rounding decides (docs/checks.md).
A check that cannot run here says why and counts as skipped, not failed; a FINN that is
installed but does not import is a failure, and a report with no numerical check is not "OK".
"""
import argparse
import importlib
import importlib.util
import itertools
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from finn_demo import layerwise

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")  # the layers FINN maps to integer MACs
JOIN_OPS = ("Add", "Concat")  # where two quantized streams meet and FINN adds/stacks integers
QUANT_OPS = ("Quant", "IntQuant", "BipolarQuant")  # qonnx's quantizers; input 1 is the scale
NUMERICAL_CHECKS = ("equivalence", "finn")  # the checks that run the graph on images
# Nodes that move values without computing new ones: a Quant before them still describes their
# output exactly. Averaging (GlobalAveragePool, AveragePool) is not among them: a mean of
# integers leaves the grid, so a layer after it needs a Quant of its own.
VALUE_PRESERVING_OPS = ("Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity",
                        "MaxPool")
# The FINN check runs on at least this many images: a fault inside FINN's graph shows on most
# images, and the layer-by-layer rule judges every element of every image.
FINN_IMAGES = 8  # the command line's default
FINN_INSTALL_HINT = ("install the FINN frontend with `pip install --no-deps finn-plus==1.6.1 && "
                     "pip install -r requirements-finn.txt` (why: see requirements-finn.txt)")


@dataclass
class CheckResult:
    """One check's outcome: status is "pass", "fail" or "skipped"; offenders name the breaking nodes."""
    name: str
    status: str
    summary: str
    offenders: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)

    @property
    def passed(self):
        return self.status == "pass"

    @property
    def failed(self):
        return self.status == "fail"

    def __str__(self):
        lines = [f"  {self.status[:4].upper():4} {self.name:12} {self.summary}"]
        lines += [f"{'':20}{offender}" for offender in self.offenders[:5]]
        if len(self.offenders) > 5:
            lines.append(f"{'':20}... and {len(self.offenders) - 5} more")
        return "\n".join(lines)


@dataclass
class Report:
    """All checks of one file, by name; `ok` unless a check failed (skipped ones do not count,
    but a report whose numerical checks were all skipped says so instead of "OK")."""
    path: str
    checks: dict
    metadata: dict

    @property
    def ok(self):
        return not any(check.failed for check in self.checks.values())

    def __getitem__(self, name):
        return self.checks[name]

    def __str__(self):
        failed = [name for name, check in self.checks.items() if check.failed]
        numbers_checked = any(self.checks[name].passed for name in NUMERICAL_CHECKS
                              if name in self.checks)
        verdict = ("OK" if numbers_checked else "structure OK; numbers not checked (equivalence "
                   "and finn skipped)") if self.ok else f"FAILED ({', '.join(failed)})"
        return "\n".join([f"check_export {self.path}", *map(str, self.checks.values()),
                          f"  result: {verdict}"])


def _check(name, offenders, total, nodes, prop):
    """Pass when all `total` nodes have the property, else fail naming the offenders."""
    if offenders:
        return CheckResult(name, "fail", f"{len(offenders)} of {total} {nodes} lack {prop}",
                           offenders)
    return CheckResult(name, "pass", f"all {total} {nodes} have {prop}")


# ------------------------------------------------------------------------------------ structure
def quant_source(model, tensor):
    """The Quant node whose output reaches `tensor` with its values unchanged, or None."""
    producer = model.find_producer(tensor)
    while producer is not None and producer.op_type in VALUE_PRESERVING_OPS:
        producer = model.find_producer(producer.input[0])
    return producer if producer is not None and producer.op_type in QUANT_OPS else None


def _compute_nodes(model):
    return [node for node in model.graph.node if node.op_type in COMPUTE_OPS]


def check_weight_quant(model):
    """Every Conv/Gemm/MatMul's weights (input 1) come from a Quant: FINN folds it into integers."""
    nodes = _compute_nodes(model)
    offenders = [f"{node.name} ({node.op_type}): weight {node.input[1]} is not quantized"
                 for node in nodes if quant_source(model, node.input[1]) is None]
    return _check("weight_quant", offenders, len(nodes), "Conv/Gemm/MatMul nodes",
                  "a Quant on their weights")


def check_input_quant(model):
    """Every Conv/Gemm/MatMul's activation input (input 0) comes from a Quant: FINN needs integers in."""
    nodes = _compute_nodes(model)
    offenders = []
    for node in nodes:
        if quant_source(model, node.input[0]) is None:
            producer = model.find_producer(node.input[0])
            source = producer.op_type if producer is not None else "the graph input"
            offenders.append(f"{node.name} ({node.op_type}): input comes from {source}, not a Quant")
    return _check("input_quant", offenders, len(nodes), "Conv/Gemm/MatMul nodes",
                  "a Quant on their input")


def _join_offence(model, node):
    """Why the quantized streams joined by `node` do not share one scale, or None if they do."""
    dynamic = [name for name in node.input if model.get_initializer(name) is None]
    scales = []
    for name in dynamic:
        quant = quant_source(model, name)
        if quant is None:
            return f"{node.name} ({node.op_type}): input {name} does not come from a Quant"
        scale = model.get_initializer(quant.input[1])
        if scale is None:
            return f"{node.name} ({node.op_type}): the scale of {quant.name} is not a constant"
        scales.append((quant.name, np.asarray(scale)))
    first_name, first = scales[0]
    for quant_name, scale in scales[1:]:
        # Exact: Brevitas aligns by sharing one quantizer, so aligned scales are bit-identical.
        if first.shape != scale.shape or not np.array_equal(first, scale):
            return (f"{node.name} ({node.op_type}): scale {np.ravel(first)[:3]} of {first_name} "
                    f"!= {np.ravel(scale)[:3]} of {quant_name}")
    return None


def check_add_scales(model):
    """The Quants feeding each Add/Concat of two or more streams have identical scales.

    An Add with a constant operand (a bias) joins nothing and is left out.
    """
    joins = [node for node in model.graph.node if node.op_type in JOIN_OPS
             and sum(model.get_initializer(name) is None for name in node.input) >= 2]
    offenders = [offence for offence in (_join_offence(model, node) for node in joins) if offence]
    return _check("add_scales", offenders, len(joins), "Add/Concat joins",
                  "one scale on all their inputs")


def _convs_without_batchnorm(model):
    return [node.name for node in model.get_nodes_by_op_type("Conv")
            if not any(consumer.op_type == "BatchNormalization"
                       for consumer in model.find_consumers(node.output[0]))]


def check_batchnorm(model, expected=None):
    """BatchNormalization is still in the graph, as many as `expected` (the source's BN layers).

    FINN folds BatchNorm into its thresholds itself; a graph whose BN was merged into the
    weights before quantization is a different, usually less accurate, model.
    """
    count = len(model.get_nodes_by_op_type("BatchNormalization"))
    wanted = f"{expected} expected" if expected is not None else "at least 1 expected"
    figures = {"batchnorm_nodes": count, "expected": expected}
    if count == 0 or (expected is not None and count != expected):
        offenders = [f"{name} (Conv): not followed by BatchNormalization"
                     for name in _convs_without_batchnorm(model)]
        return CheckResult("batchnorm", "fail", f"{count} BatchNormalization nodes, {wanted}",
                           offenders, figures)
    return CheckResult("batchnorm", "pass", f"{count} BatchNormalization nodes ({wanted})",
                       figures=figures)


def batchnorm_layers(module):
    """How many BatchNorm layers a (Brevitas) PyTorch model holds: the count its export should keep."""
    return sum(isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) for layer in module.modules())


# ------------------------------------------------------------------------------------ numbers
def layerwise_result(name, what, layers, problem, figures):
    """A CheckResult from layer checks (finn_demo.layerwise): fail if any layer breaks the rule,
    or if the layers could not be compared at all (`problem`)."""
    if problem:
        return CheckResult(name, "fail", f"{what}: {problem}", figures=figures)
    summary, failures = layerwise.summarize(layers, what)
    figures.update(layers=len(layers), failing_layers=[layer.node for layer in failures],
                   differing_elements=sum(layer.differing for layer in layers),
                   near_tie_elements=sum(layer.near_ties for layer in layers),
                   elements=sum(layer.elements for layer in layers))
    return CheckResult(name, "fail" if failures else "pass", summary,
                       [str(layer) for layer in failures], figures)


def check_equivalence(model, images, brevitas_model):
    """The QONNX graph, executed node by node, against the Brevitas model, layer by layer at every
    quantizer (finn_demo.layerwise): same scales, and at most one level off, only on ties.
    `model`: the file as exported (its node order is the order the quantizers were called in).
    The end-to-end figures (top-1 agreement, logit SQNR) are reported beside, not judged."""
    if brevitas_model is None:
        return CheckResult("equivalence", "skipped",
                           "skipped: needs the Brevitas model (from Python: brevitas_model=...)")
    if images is None:
        return CheckResult("equivalence", "skipped", "skipped: no images (the file's metadata "
                           "does not name the run's data; pass images=...)")
    start = time.perf_counter()
    comparison = layerwise.compare_with_brevitas(model, brevitas_model, images)
    figures = {"images": len(images), "seconds": time.perf_counter() - start}
    if np.ptp(comparison.reference_logits, axis=1).max() == 0:
        return CheckResult("equivalence", "fail", "QONNX vs Brevitas: the reference logits are all "
                           "equal; comparing them proves nothing (untrained model?)", figures=figures)
    result = layerwise_result("equivalence", "QONNX vs Brevitas", comparison.layers,
                              comparison.problem, figures)
    if comparison.logits is not None:
        agree, sqnr = layerwise.end_to_end(comparison.logits, comparison.reference_logits)
        figures.update(top1_agree=agree, logit_sqnr_db=sqnr)
        result.summary += (f"; end to end (not judged): top-1 agrees on {agree}/{len(images)} "
                           f"images, logit SQNR {sqnr:.1f} dB")
    return result


# ------------------------------------------------------------------------------------ FINN
def finn_frontend(model):
    """(converted, streamlined, seconds of each) from FINN's frontend on a cleaned QONNX model,
    the same two steps finn_build.py starts with (finn_steps.frontend and .streamline)."""
    from finn_demo import finn_steps
    with warnings.catch_warnings():
        # FINN's passes warn once per node they leave alone; the report says what is left.
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        converted = finn_steps.frontend(model)
        convert_seconds = time.perf_counter() - start
        start = time.perf_counter()
        streamlined = finn_steps.streamline(converted)
    return converted, streamlined, {"convert": convert_seconds,
                                    "streamline": time.perf_counter() - start}


def finn_installed():
    return importlib.util.find_spec("finn") is not None


def finn_import_problem():
    """None when FINN's frontend imports. Otherwise the finn check's result: skipped when the
    `finn` package is not installed, failed naming the module when it is installed but it (or
    finn_demo.finn_steps) does not import: a broken install is not a missing one."""
    if not finn_installed():
        return CheckResult("finn", "skipped", f"skipped: {FINN_INSTALL_HINT}")
    try:
        importlib.import_module("finn_demo.finn_steps")
    except ImportError as error:
        return CheckResult("finn", "fail", f"FINN is installed but module {error.name or '?'} does "
                           f"not import ({type(error).__name__}: {error}); reinstall: "
                           f"{FINN_INSTALL_HINT}")
    return None


def finn_available():
    return finn_import_problem() is None


def check_finn(model, images):
    """FINN's ConvertQONNXtoFINN and streamlining (finn_steps.streamline: through the residuals, then
    Streamline) run, and their graphs compute the QONNX graph's integers: each MultiThreshold,
    fed the QONNX graph's levels before it, gives the levels of the QONNX activation Quant it
    replaces, at most one level off and only on ties (finn_demo.layerwise). `model`: cleaned.
    The graphs run with qonnx's execution: nothing in them needs more than qonnx's ops.
    """
    problem = finn_import_problem()
    if problem is not None:
        return problem
    if images is None:
        return CheckResult("finn", "skipped", "skipped: no images (pass images=...)")
    reference = layerwise.qonnx_reference(model, images)
    converted, streamlined, seconds = finn_frontend(model)
    results = [finn_graph_result(graph, what, images, reference, model) for graph, what in
               ((converted, "converted vs QONNX"), (streamlined, "streamlined vs QONNX"))]
    remaining = dict(Counter(node.op_type for node in streamlined.graph.node).most_common())
    figures = {"converted": results[0].figures, "streamlined": results[1].figures,
               "seconds": seconds, "streamlined_node_types": remaining}
    summary = "; ".join(result.summary for result in results) + (
        f"; after Streamline: {', '.join(f'{count} {op}' for op, count in remaining.items())}"
        f" (convert {seconds['convert']:.0f} s, streamline {seconds['streamline']:.0f} s)")
    failed = any(result.failed for result in results)
    offenders = [f"{result.summary.split(',')[0]}: {offender}"
                 for result in results for offender in result.offenders]
    return CheckResult("finn", "fail" if failed else "pass", summary, offenders, figures)


def finn_graph_result(graph, what, images, reference, qonnx_model, batch=None, name="finn"):
    """One of FINN's graphs against the QONNX graph's levels (`reference`: layerwise.qonnx_reference
    of `qonnx_model` on `images`), as a CheckResult; batch as in layerwise.compare_thresholds."""
    layers, problem = layerwise.compare_thresholds(graph, images, reference, qonnx_model, batch)
    return layerwise_result(name, what, layers, problem, {})


# ------------------------------------------------------------------------------------ the run's data
def format_metadata(metadata):
    """The file's metadata_props as printable lines."""
    return "\n".join(["metadata:", *(f"  {key} = {value}" for key, value in metadata.items())])


def metadata_of(model):
    """The file's metadata_props (the demo writes the run's flags and accuracies there)."""
    return {prop.key: prop.value for prop in model.model.metadata_props}


def run_images(metadata, count):
    """The first `count` validation images of the run that wrote the file, or None if unrecorded.

    The demo's metadata names its data: data_dir "" is the embedded digits set, else an ImageNet
    folder; seed and val_size pick the same validation subset the run evaluated.
    """
    if "data_dir" not in metadata:
        return None
    from finn_demo.data import digits_datasets, imagenet_split, random_subset
    from finn_demo.models import imagenet_transform
    if metadata["data_dir"]:  # val/ only: listing train/ (1.28M files) takes minutes
        val_set = imagenet_split(metadata["data_dir"], "val",
                                 imagenet_transform(metadata.get("weights", "")))
    else:
        _, val_set = digits_datasets()
    val_set = random_subset(val_set, int(metadata.get("val_size", len(val_set))),
                            int(metadata.get("seed", 0)))
    samples = (val_set[index] for index in range(len(val_set)))
    decodable = (sample[0] for sample in samples if sample is not None)  # ImageNet may skip some
    return torch.stack(list(itertools.islice(decodable, count)))


# ------------------------------------------------------------------------------------ entry point
def check_export(onnx_path, images=None, brevitas_model=None, finn=True, num_images=FINN_IMAGES):
    """Run every check on the QONNX file at `onnx_path` and return a Report.

    images: a (N, C, H, W) tensor of real inputs, preprocessed like the model's; None takes the
    first `num_images` validation images of the run recorded in the file's metadata.
    brevitas_model: the model that was exported; without it the equivalence check is skipped.
    finn: False skips FINN's frontend (about two minutes on MobileNetV2).
    """
    model = ModelWrapper(str(onnx_path))
    metadata = metadata_of(model)
    expected_batchnorms = batchnorm_layers(brevitas_model) if brevitas_model is not None else None
    checks = [check_weight_quant(model), check_input_quant(model), check_add_scales(model),
              check_batchnorm(model, expected_batchnorms)]
    needs_images = brevitas_model is not None or (finn and finn_available())
    if images is None and needs_images:
        images = run_images(metadata, num_images)
    checks.append(check_equivalence(model, images, brevitas_model))
    checks.append(check_finn(cleanup_model(model), images) if finn else
                  CheckResult("finn", "skipped", "skipped: turned off; `python check_export.py "
                              f"{onnx_path}` runs it (about 2 minutes)"))
    return Report(str(onnx_path), {check.name: check for check in checks}, metadata)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("onnx_path", help="the exported QONNX file")
    parser.add_argument("--images", type=int, default=FINN_IMAGES,
                        help="validation images to execute (about 2 s each per graph at 32x32)")
    parser.add_argument("--no-finn", action="store_true", help="skip FINN's frontend")
    args = parser.parse_args(argv)
    report = check_export(args.onnx_path, finn=not args.no_finn, num_images=args.images)
    print(format_metadata(report.metadata))
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
