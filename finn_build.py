"""Compile an exported QONNX MobileNetV2 with FINN's builder, folded to fit an FPGA board.

    python finn_build.py --model=quant_mobilenet_v2.onnx --board=ZCU104 --out_dir=finn_output

FINN's `build_dataflow_cfg` runs one DataflowBuildConfig whose steps read top to bottom:
the project's MobileNetV2 steps (finn_demo/hw/steps.py; the build: finn_demo/hw/): (1) FINN's frontend, (2) streamlining
through the inverted residuals, (3) lowering convs to MatMuls, (4) conversion to FINN's hardware
layers, then their check, executed by FINN in Python: exact against the streamlined graph of
step 2, and layer by layer against the QONNX graph; FINN's own partition, specialization and
bit-width minimization; the project's fit to the board (finn_demo/hw/fit.py: the highest frame
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
import csv
import sys
from pathlib import Path
from types import SimpleNamespace

from finn_demo import finn_install
from finn_demo.common.configurator import ConfigError, apply_overrides, flags_of

# ---------------------------------------------------------------------------------------- flags
model = "quant_mobilenet_v2.onnx"  # the QONNX file finn_mobilenetv2.py exported
out_dir = "finn_output"  # FINN's report/ and intermediate_models/, folding_config.json, estimates.json
board = "ZCU104"  # a board FINN knows (part and resources): ZCU104, ZCU102, Ultra96, U250, ... ("" = none)
fpga_part = ""  # "" = the board's part; with --board="", any part (then --target_fps is required)
clock_ns = 5.0  # target clock period in ns (200 MHz): turns frame rates into cycles per frame
target_fps = 0  # 0 searches the highest frame rate that fits the board; N folds for N frames/s
res_limits = ""  # share of the board a design may use, e.g. "LUT=0.6,URAM=1"; "" = FINN's own limits
outputs = "estimates"  # FINN's outputs, comma-separated: estimates; with Vivado: stitched_ip, rtlsim, bitfile, driver, deployment; verilator: each RTL layer in Verilator
verilator_layers = "all"  # with verilator in --outputs: "all" RTL layers, or "slowest": each RTL type's slowest layer by FINN's estimate and the first sliding window
requant = True  # a Requant_rtl (multiply-add, FINN's layer on the project's core) in place of each Thresholding layer it computes exactly, proven on every input; the others stay Thresholding
verify_images = 8  # inputs the hardware graph runs on in Python (0 skips the check)
verify_data = ""  # images to check on: a folder (flat, or ImageNet's layout: its val/), preprocessed as torchvision's ImageNet weights at the model's input size; "" = the file's data set, else seeded inputs on its input grid
reuse = False  # load steps 1-4 from out_dir/intermediate/ when made from the same --model and flags
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

# The benchmark's FINN rows: a design that misses its board is told which settings fit it.
FINN_ROWS = Path(__file__).resolve().parent / "results" / "finn.csv"


def make_args(argv=()):
    """The flags above with `--name=value` overrides from `argv` applied."""
    return SimpleNamespace(**apply_overrides(FLAGS, argv))


def main(args):
    """Build, check, fit and estimate (finn_demo.hw.build.run_build); FINN must import first."""
    error = finn_install.finn_import_error("finn_demo.hw.build")
    if error is not None:
        raise ConfigError(f"{finn_install.describe_import_error(error)}: "
                          f"{finn_install.FINN_INSTALL_HINT}, or run `make finn_build`, which does both")
    from finn_demo.hw.build import run_build  # imports FINN
    return run_build(args)


def read_finn_rows(path):
    """The rows of a results/finn.csv as dicts; none without the file."""
    if not Path(path).is_file():
        return []
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


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
    from finn_demo.hw.build import print_build_failures
    print_build_failures(result, args.board or args.fpga_part, read_finn_rows(FINN_ROWS))
    misfit = result.design is not None and not result.fits
    if result.failures or misfit:
        return 1 if result.failures else 3
    print(f"every check passed; {args.out_dir}/ holds folding_config.json, estimates.json, "
          "hw_layers.onnx and FINN's report/")
    return 0


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
