"""Check an exported QONNX file before handing it to FINN: structure, equivalence, FINN's frontend.

    python check_export.py quant_mobilenet_v2.onnx [--images N] [--no-finn]

or from Python (the demo does this behind a flag):

    report = check_export(path, images, brevitas_model=model)
    print(report); assert report.ok

Structure: FINN needs a Quant node on every weight and every activation input of Conv/Gemm/MatMul
(it turns them into integer weights and thresholds), identical scales on the inputs of each Add
or Concat (it adds integers, with no rescaling), and BatchNorm kept as its own node (it folds it
into thresholds itself). Numbers, layer by layer at every quantizer (finn_demo/checks/layerwise.py):
the QONNX graph, executed node by node, computes the Brevitas model's integer levels, and FINN's
own conversion and streamlining compute the QONNX graph's; each layer is fed the reference's
input, and may differ by one level only where float rounding decides (docs/checks.md).
A check that cannot run here says why and counts as skipped, not failed; a FINN that is
installed but does not import is a failure, and a report with no numerical check is not "OK".
The checks live in finn_demo/checks/; this is their command line.
"""
import argparse
import sys

from finn_demo.checks import FINN_IMAGES, check_file, format_metadata


def check_export(onnx_path, images=None, brevitas_model=None, finn=True, num_images=FINN_IMAGES):
    """Run every check on the QONNX file at `onnx_path` and return a Report
    (finn_demo.checks.check_file, which documents the arguments)."""
    return check_file(onnx_path, images, brevitas_model, finn, num_images)


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
