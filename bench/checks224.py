"""The benchmark's checks section: the export checks at ImageNet's 224x224, on real photos.

Each bit-width setting's export of the ImageNet-shaped model (bench/imagenet_shaped.py, its
BatchNorm re-estimated on the photos) is made by one demo run at the seed's defaults on an
ImageNet-layout folder of crops of scikit-learn's two sample photos, with the demo's own checks
on `CHECK_IMAGES` validation images. The correct export must pass; each fault of
finn_demo/testing/faults.py, written into a copy of it, must fail the equivalence check naming the
faulty Quant; and FINN's streamlined graph with one threshold row shifted by one level must fail
the FINN check naming its MultiThreshold. bench/sections.py registers `checks_section` and `checks_text`.
"""
import tempfile
import time
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.util.cleanup import cleanup_model

from finn_demo import checks as ce
import finn_mobilenetv2 as demo
from bench.grid import BIT_SETTINGS
from bench.report import code_line, markdown_table
from bench.rows import model_hash, resumable
from bench.section_code import code_hash
from finn_demo.checks import layerwise
from finn_demo.data.datasets import first_images
from finn_demo.finn_install import finn_available

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)
CHECK_IMAGES = 8  # the demo's default
SETTINGS = ("W8A8", "W4A4")  # the seed's defaults; FINN's recommended design (8-bit input)
THRESHOLD_FAULT = "threshold_row_shifted"


def cases():
    from finn_demo.testing.faults import FAULTS
    return ["correct", *(fault.__name__ for fault in FAULTS), THRESHOLD_FAULT]


def checks_section(context):
    """(rows, failures): one row per bit-width setting of --checks_bits and case (the correct
    export, each fault; the threshold fault only where FINN is installed)."""
    settings = context.args["checks_bits"]
    if not settings:
        return [], []
    finn = finn_available()
    from bench.imagenet_shaped import load_model, make_folder, make_weights
    with tempfile.TemporaryDirectory() as folder:
        data = make_folder(folder)
        weights = make_weights(Path(folder) / "mobilenet_v2.pth", data)
        model = model_hash(load_model(weights))
        wanted = [case for case in cases() if finn or case != THRESHOLD_FAULT]
        keys = [{"bits": bits, "case": case, "model": model} for bits in settings for case in wanted]
        runs = {}

        def measure(key):
            if key["bits"] not in runs:
                runs[key["bits"]] = _demo_run(Path(folder), data, weights, key["bits"])
            return _measure(key, runs[key["bits"]])
        return resumable(context.path, keys, measure, "checks at 224x224", code_hash(CODE))


def _demo_run(folder, data, weights, bits):
    """The demo at the seed's defaults on the photos, with its checks (and their seconds)."""
    output = folder / bits / "quant_mobilenet_v2.onnx"
    output.parent.mkdir(parents=True, exist_ok=True)
    result = demo.main(demo.make_args([
        f"--data_dir={data}", f"--weights={weights}", f"--output={output}", "--workers=0",
        "--device=cpu", f"--check_images={CHECK_IMAGES}", *BIT_SETTINGS[bits]]))
    result.images = first_images(result.val_loader, CHECK_IMAGES)
    return result


def _measure(key, run):
    if key["case"] == "correct":
        check = run.report["equivalence"]
        return _row(check, run.report.ok and check.passed, "", check.figures["seconds"])
    if key["case"] == THRESHOLD_FAULT:
        return _threshold_fault(run)
    from finn_demo.testing.faults import FAULTS
    fault = next(fault for fault in FAULTS if fault.__name__ == key["case"])
    model = ModelWrapper(str(run.output))
    faulty = fault(model)
    start = time.perf_counter()
    check = ce.check_equivalence(model, run.images, run.model)
    return _row(check, check.passed, faulty, time.perf_counter() - start)


def _threshold_fault(run):
    """FINN's check on the export, then on its streamlined graph with the thresholds of the most
    active channel of a MultiThreshold halfway through shifted by one level."""
    cleaned = cleanup_model(ModelWrapper(str(run.output)))
    _, streamlined, _ = ce.finn_frontend(cleaned)
    reference = layerwise.qonnx_reference(cleaned, run.images)
    correct = ce.finn_graph_result(streamlined, "streamlined vs QONNX", run.images, reference,
                                   cleaned)
    thresholds = streamlined.get_nodes_by_op_type("MultiThreshold")
    node = thresholds[len(thresholds) // 2]
    output = execute_onnx(streamlined, {streamlined.graph.input[0].name: run.images[:1].numpy()},
                          return_full_exec_context=True)[node.output[0]]
    channel = int(np.argmax((output > 0).sum(axis=(0, 2, 3))))  # the most active channel
    rows = streamlined.get_initializer(node.input[1])
    rows = np.repeat(rows, output.shape[1], axis=0) if rows.shape[0] == 1 else rows.copy()
    rows[channel] += rows[channel, 1] - rows[channel, 0]  # per channel, one level up
    streamlined.set_initializer(node.input[1], rows)
    start = time.perf_counter()
    faulty = ce.finn_graph_result(streamlined, "streamlined vs QONNX", run.images, reference,
                                  cleaned)
    row = _row(faulty, faulty.passed, node.name, time.perf_counter() - start)
    row["correct_streamlined"] = "passed" if correct.passed else "failed"
    return row


def _row(check, passed, faulty, seconds):
    figures = check.figures
    failing = figures.get("failing_layers", [])
    return {"verdict": "passed" if passed else "failed",
            "first_failing_layer": failing[0] if failing else "",
            "faulty_layer": faulty, "names_it": str(bool(faulty) and failing[:1] == [faulty]),
            "layers": figures.get("layers", ""),
            "elements_off": figures.get("differing_elements", ""),
            "near_tie_elements": figures.get("near_tie_elements", ""),
            "elements": figures.get("elements", ""),
            "top1_agree": figures.get("top1_agree", ""), "images": CHECK_IMAGES,
            "logit_sqnr_db": f"{figures['logit_sqnr_db']:.1f}" if "logit_sqnr_db" in figures else "",
            "s_per_image": f"{seconds / CHECK_IMAGES:.2f}"}


def checks_text(rows):
    """The section's lines for RESULTS.md."""
    header = ["bits", "case", "verdict", "first failing layer", "names the faulty layer",
              "elements one level off (of)", "within delta of a tie", "end to end: top-1 agrees",
              "logit SQNR (dB)", "s per image"]
    cells = [[row["bits"], row["case"], row["verdict"], row["first_failing_layer"] or "-",
              row["names_it"] if row["faulty_layer"] else "-",
              f"{row['elements_off']} ({row['elements']})", row["near_tie_elements"],
              f"{row['top1_agree']}/{row['images']}" if row["top1_agree"] != "" else "-",
              row["logit_sqnr_db"] or "-", row["s_per_image"]] for row in rows]
    return ["## Export checks at 224x224 on photos", "",
            "The demo at the seed's defaults (and W4A4 with an 8-bit input, first conv and "
            "classifier) on an ImageNet-layout folder of crops of scikit-learn's two sample photos, "
            "with the ImageNet-shaped MobileNetV2 (BatchNorm re-estimated on the photos); the "
            f"checks on {CHECK_IMAGES} validation images, layer by layer (docs/checks.md). Each "
            "fault (finn_demo/testing/faults.py) is written into a copy of the export; the "
            "threshold fault into FINN's streamlined graph. End-to-end figures are reported, not judged.", "",
            markdown_table(header, cells), "", *code_line(rows, CODE)]
