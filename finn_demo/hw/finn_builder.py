"""FINN's own builder (`build_dataflow_cfg`) made to run where no Xilinx tools are installed.

finn-plus 1.6.1's builder assumes the environment its `run_finn.py` sets up. Without Vivado,
three things stand in its way, and `run` handles each only when Vivado is absent:
- FINN's settings (`finn.util.settings`) must exist before the builder imports: `prepare`
  creates them with FINN's build directory (its temporary files) under out_dir/finn_tmp.
- `build_dataflow_steps` imports `SimEngine` from `finn.xsi` at import time, a lazy name that
  insists on Vivado's simulator: it is set to None first (estimate-only steps never simulate).
- the builder's last bookkeeping (`exit_buildflow`) records `$XILINX_VIVADO`'s folder name as
  the tool version: during the build an empty XILINX_VIVADO is set, so it records "".
The builder also sends stdout, stderr and Python's warnings through its logger and replaces the
root logger's handlers for good; `run` gives them back afterwards.
"""
import contextlib
import logging
import os
import sys
from pathlib import Path

import finn.util.settings as finn_settings
from finn.interface.settings import FINNSettings

VIVADO = os.environ.get("XILINX_VIVADO")
if not VIVADO:
    import finn.xsi
    finn.xsi.SimEngine = None

from finn.builder.build_dataflow import build_dataflow_cfg  # noqa: E402
from finn.builder.build_dataflow_config import (  # noqa: E402
    DataflowBuildConfig, DataflowOutputType, ShellFlowType, default_build_dataflow_steps)

# --outputs names -> FINN's output products. "estimates" runs without Xilinx tools; the others
# need Vivado and Vitis HLS (and Vitis for the Alveo boards), and were not run by this project.
OUTPUTS = {
    "estimates": [DataflowOutputType.ESTIMATE_REPORTS],
    "stitched_ip": [DataflowOutputType.STITCHED_IP],
    "rtlsim": [DataflowOutputType.STITCHED_IP, DataflowOutputType.RTLSIM_PERFORMANCE],
    "bitfile": [DataflowOutputType.STITCHED_IP, DataflowOutputType.BITFILE],
    "driver": [DataflowOutputType.PYNQ_DRIVER],
    "deployment": [DataflowOutputType.STITCHED_IP, DataflowOutputType.BITFILE,
                   DataflowOutputType.PYNQ_DRIVER, DataflowOutputType.DEPLOYMENT_PACKAGE],
}
# FINN's steps after its estimate reports, in its own order: hardware generation to deployment.
HARDWARE_STEPS = default_build_dataflow_steps[
    default_build_dataflow_steps.index("step_generate_estimate_reports") + 1:]


def output_types(names):
    """FINN's output products for the --outputs names, each once, estimates always first."""
    types = list(OUTPUTS["estimates"])
    for name in names:
        types += [kind for kind in OUTPUTS[name] if kind not in types]
    return types


def needs_hardware(types):
    return any(kind != DataflowOutputType.ESTIMATE_REPORTS for kind in types)


def make_dataflow_config(out_dir, steps, types, part, board, zynq, clock_ns, verbose=False):
    """FINN's DataflowBuildConfig: `steps` (functions and FINN's step names), then FINN's own
    hardware steps when an output beyond estimates is asked for. `target_fps` is left unset:
    the folding comes from the fit's folding config, which the fit step hands to FINN."""
    if needs_hardware(types):
        steps = list(steps) + HARDWARE_STEPS
    return DataflowBuildConfig(
        output_dir=str(out_dir), steps=list(steps), generate_outputs=types,
        fpga_part=part, board=board or None, synth_clk_period_ns=clock_ns,
        shell_flow_type=(ShellFlowType.VIVADO_ZYNQ if zynq else ShellFlowType.VITIS_ALVEO)
        if board else None,
        save_intermediate_models=True, verbose=verbose)


def prepare(out_dir):
    """FINN's global settings, its temporary build directory under out_dir/finn_tmp."""
    build_dir = Path(out_dir).resolve() / "finn_tmp"
    build_dir.mkdir(parents=True, exist_ok=True)
    finn_settings._SETTINGS = FINNSettings.init(
        flow_config=build_dir / "dummy.yaml", finn_build_dir=str(build_dir),
        auto_set_environment_vars=False)


@contextlib.contextmanager
def restored_io():
    """Give back stdout, stderr, warnings, the root logger's handlers and XILINX_VIVADO on leaving."""
    streams, root = (sys.stdout, sys.stderr), logging.getLogger()
    handlers, level = list(root.handlers), root.level
    if not VIVADO:
        os.environ["XILINX_VIVADO"] = ""
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
                handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
        logging.captureWarnings(False)
        if not VIVADO:
            os.environ.pop("XILINX_VIVADO", None)


def run(model_path, cfg):
    """build_dataflow_cfg on `model_path`: FINN's exit code (0 = every step ran)."""
    prepare(cfg.output_dir)
    with restored_io():
        return build_dataflow_cfg(str(model_path), cfg)
