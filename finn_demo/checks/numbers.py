"""The export's numbers checked layer by layer at every quantizer, Brevitas to QONNX to FINN.

Layer by layer is finn_demo/checks/layerwise.py's rule: the QONNX graph, executed node by node,
computes the Brevitas model's integer levels, and FINN's own conversion and streamlining compute
the QONNX graph's; each layer is fed the reference's input, and may differ by one level only
where float rounding decides (docs/checks.md)."""
import time
import warnings
from collections import Counter

import numpy as np

from finn_demo import finn_install
from finn_demo.checks import layerwise
from finn_demo.checks.result import CheckResult


def layerwise_result(name, what, layers, problem, figures):
    """A CheckResult from layer checks (finn_demo.checks.layerwise): fail if any layer breaks the rule,
    if the layers could not be compared at all (`problem`), or if there were none."""
    if problem:
        return CheckResult(name, "fail", f"{what}: {problem}", figures=figures)
    if not layers:  # nothing was compared: a pass would prove nothing
        return CheckResult(name, "fail", f"{what}: no quantizer to compare", figures=figures)
    summary, failures = layerwise.summarize_layers(layers, what)
    figures.update(layers=len(layers), failing_layers=[layer.node for layer in failures],
                   differing_elements=sum(layer.differing for layer in layers),
                   near_tie_elements=sum(layer.near_ties for layer in layers),
                   elements=sum(layer.elements for layer in layers))
    return CheckResult(name, "fail" if failures else "pass", summary,
                       [str(layer) for layer in failures], figures)


def check_equivalence(model, images, brevitas_model):
    """The QONNX graph, executed node by node, against the Brevitas model, layer by layer at every
    quantizer (finn_demo.checks.layerwise): same scales, and at most one level off, only on ties.
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
    result = layerwise_result("equivalence", "QONNX vs Brevitas", comparison.layers,
                              comparison.problem, figures)
    if comparison.logits is not None:
        agree, sqnr = layerwise.end_to_end(comparison.logits, comparison.reference_logits)
        figures.update(top1_agree=agree, logit_sqnr_db=sqnr)
        result.summary += (f"; end to end (not judged): top-1 agrees on {agree}/{len(images)} "
                           f"images, logit SQNR {sqnr:.1f} dB")
    # A model that collapsed in quantization gives every class the same logit. That says nothing
    # about its export, which the layers above judged, each on its own reference input: reported.
    figures["reference_logits_all_equal"] = bool(np.ptp(comparison.reference_logits, axis=1).max() == 0)
    if figures["reference_logits_all_equal"]:
        result.summary += "; the Brevitas model's logits are all equal (a collapsed model)"
    return result


# ------------------------------------------------------------------------------------ FINN
def finn_frontend(model):
    """(converted, streamlined, seconds of each) from FINN's frontend on a cleaned QONNX model,
    the same two steps finn_build.py starts with (hw.steps.frontend and .streamline)."""
    from finn_demo.hw import steps
    with warnings.catch_warnings():
        # FINN's passes warn once per node they leave alone; the report says what is left.
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        converted = steps.frontend(model)
        convert_seconds = time.perf_counter() - start
        start = time.perf_counter()
        streamlined = steps.streamline(converted)
    return converted, streamlined, {"convert": convert_seconds,
                                    "streamline": time.perf_counter() - start}


def finn_import_problem():
    """None when FINN's frontend imports. Otherwise the finn check's result: skipped when the
    `finn` package is not installed, failed naming the module when it is installed but it (or
    finn_demo.hw.steps) does not import: a broken install is not a missing one."""
    if not finn_install.finn_installed():
        return CheckResult("finn", "skipped", f"skipped: {finn_install.FINN_INSTALL_HINT}")
    error = finn_install.finn_import_error()
    if error is not None:
        return CheckResult("finn", "fail", f"{finn_install.describe_import_error(error)}; "
                           f"reinstall: {finn_install.FINN_INSTALL_HINT}")
    return None


def check_finn(model, images):
    """FINN's ConvertQONNXtoFINN and streamlining (hw.steps.streamline: through the residuals, then
    Streamline) run, and their graphs compute the QONNX graph's integers: each MultiThreshold,
    fed the QONNX graph's levels before it, gives the levels of the QONNX activation Quant it
    replaces, at most one level off and only on ties (finn_demo.checks.layerwise). `model`: cleaned.
    The graphs run with qonnx's execution: nothing in them needs more than qonnx's ops.
    """
    problem = finn_import_problem()
    if problem is not None:
        return problem
    if images is None:
        return CheckResult("finn", "skipped", "skipped: no images (pass images=...)")
    from finn_demo.hw.steps import ScaleAfterReluError
    try:
        converted, streamlined, seconds = finn_frontend(model)
    except ScaleAfterReluError as error:  # a graph FINN's thresholds cannot compute
        return CheckResult("finn", "fail", str(error))
    reference = layerwise.qonnx_reference(model, images)
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
