"""The project's Requant_rtl: FINN's Requant layer on the project's RTL core (rtl/requant_exact.sv).

FINN's Requant_rtl decomposes each channel's scale and bias from float32 into finn-rtllib's
requant core, whose scale keeps at most 24 mantissa bits and which reads its input as signed.
Some exact staircases need more (8-bit outputs over wide accumulators: 255 steps of thousands
of inputs each), and the input of the layer after global pooling is unsigned. This class keeps
FINN's node (its attributes, Python model, folding, IP integration: the core's parameters
stream from FINN's memstream into s_params_V as before) and replaces the datapath:
- `decompose_params`: the integers y = clip((x * scale + bias) >> shift) computes with, read
  exactly from the layer's float64 scale and bias initializers (one shift for the layer: the
  finest power of two any of them needs, at least 1, the +1/2 of rounding folded into the bias);
- `generate_hdl` / `get_rtl_file_list`: the core with those widths, its wrapper on FINN's
  interface, and the parameter memstream FINN generates.
Registered in FINN's rtl domain through qonnx's registry, so every Requant_rtl node is this one:
its decomposition, generated RTL, costs and proof agree.
"""
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
from qonnx.custom_op.registry import add_op_to_domain
from qonnx.util.basic import roundup_to_integer_multiple

from finn.custom_op.fpgadataflow.rtl import requant_rtl
from finn.util.basic import get_dsp_block

# The core and its FINN wrapper, beside this module (bench/section_code.py hashes them with it).
RUNTIME_FILES = ("rtl/requant_exact.sv", "rtl/requant_exact_wrapper.v")
CORE, WRAPPER = (Path(__file__).resolve().parent / name for name in RUNTIME_FILES)


def twos_complement_bits(values):
    """Bits of a two's complement number that holds every integer in `values`."""
    return max(max(int(v).bit_length() for v in values) + 1, 2)


def fixed_point(scale, bias):
    """(scale integers, bias integers, shift) with x*scale + bias + 1/2 == (x*S + B) / 2**shift
    exactly for every channel: float64 values are dyadic, so the shift is the largest power of
    two in any of their denominators (at least 1, for the 1/2)."""
    fractions = [Fraction(float(v)) for v in (*scale, *bias)]
    shift = max([1] + [f.denominator.bit_length() - 1 for f in fractions])
    scaled = [int(f * 2 ** shift) for f in fractions]
    return scaled[:len(scale)], [b + (1 << (shift - 1)) for b in scaled[len(scale):]], shift


def trailing_zeros(values):
    """The trailing zero bits every nonzero integer in `values` has (0 if all are zero)."""
    nonzero = [int(v) for v in values if int(v)]
    return min(((v & -v).bit_length() - 1 for v in nonzero), default=0)


def multipliers_per_lane(input_bits, scale_bits, part):
    """DSP slices one lane's product takes: a signed `scale_bits` x `input_bits` product on the
    part's multiplier (27x18 on DSP48E2, 27x24 on DSP58), split into as many as each operand
    needs of the wide and the narrow port."""
    narrow = 24 if get_dsp_block(part) == "DSP58" else 18
    wide_operand, narrow_operand = max(input_bits, scale_bits), min(input_bits, scale_bits)
    return math.ceil(wide_operand / 27) * math.ceil(narrow_operand / narrow)


class Requant_rtl(requant_rtl.Requant_rtl):
    """FINN's Requant_rtl (internal_decoupled) on the project's exact core (module docstring).
    Its one attribute more, `ram_style`, is the parameter memstream's memory (FINN's memstream
    RAM_STYLE: auto, distributed, block or ultra), which the fit chooses."""

    def get_nodeattr_types(self):
        return {**super().get_nodeattr_types(),
                "ram_style": ("s", False, "auto", {"auto", "distributed", "block", "ultra"})}

    def decompose_params(self, model, version=None):
        """The integers the core computes with: {"scale", "bias", "shift"} [PE][CF] as FINN
        lays them out, and how they are stored: the trailing zero bits every channel's scale
        (scale_shift) and bias (bias_shift) has are dropped from the memory and put back by the
        core; s_width and bias_width are the stored widths; x_width is the input, unshortened."""
        pe, channels = self.get_nodeattr("PE"), self.get_nodeattr("NumChannels")
        scale = np.broadcast_to(self.get_scale(model), (channels,))
        bias = np.broadcast_to(self.get_bias(model), (channels,))
        scales, biases, shift = fixed_point(scale, bias)
        scale_shift, bias_shift = trailing_zeros(scales), trailing_zeros(biases)

        def layout(values):  # channel c at [c % PE][c // PE]
            return np.array(values, dtype=object).reshape(channels // pe, pe).T
        return {"scale": layout(scales), "bias": layout(biases),
                "shift": layout([shift] * channels), "shift_min": shift, "shift_max": shift,
                "scale_shift": scale_shift, "bias_shift": bias_shift,
                "s_width": twos_complement_bits([v >> scale_shift for v in scales]),
                "bias_width": twos_complement_bits([v >> bias_shift for v in biases]),
                "x_width": self.get_input_datatype(0).bitwidth()}

    def _derive_decoupled_widths(self, model, fpgapart=None):
        """decompose_params and the stream widths: the parameter word is PE lanes of
        {bias, scale}."""
        info = self.decompose_params(model)
        pe = self.get_nodeattr("PE")
        lane = info["s_width"] + info["bias_width"]
        info.update({"params_lane_width": lane,
                     "params_stream_width": roundup_to_integer_multiple(pe * lane, 8),
                     "in_stream_width": self.get_instream_width_padded(0),
                     "out_stream_width": self.get_outstream_width_padded(0)})
        return info

    def _pack_param_words(self, info):
        """One word per channel group: lane p = stored bias << s_width | stored scale, lane 0
        lowest."""
        lane_width, s_width = info["params_lane_width"], info["s_width"]
        words = []
        for scales, biases in zip(info["scale"].T, info["bias"].T):
            word = 0
            for p, (scale, bias) in enumerate(zip(scales, biases)):
                lane = (((int(bias) >> info["bias_shift"]) % (1 << info["bias_width"])) << s_width
                        | (int(scale) >> info["scale_shift"]) % (1 << s_width))
                word |= lane << (p * lane_width)
            words.append(word)
        return words

    def _generate_hdl_decoupled(self, model, fpgapart, clk, code_gen_dir):
        info = self._derive_decoupled_widths(model, fpgapart)
        top = self.get_verilog_top_module_name()
        idt, odt = self.get_input_datatype(0), self.get_output_datatype()
        fields = {"TOP_MODULE_NAME": top, "K": idt.bitwidth(), "SIGNED_IN": int(idt.signed()),
                  "N": odt.bitwidth(), "SIGNED_OUT": int(odt.signed()), "PE": self.get_nodeattr("PE"),
                  "S_WIDTH": info["s_width"], "B_WIDTH": info["bias_width"],
                  "S_SHIFT": info["scale_shift"], "B_SHIFT": info["bias_shift"],
                  "SHIFT": info["shift_max"], "IN_WIDTH": info["in_stream_width"],
                  "PARAMS_WIDTH": info["params_stream_width"],
                  "OUT_WIDTH": info["out_stream_width"]}
        text = WRAPPER.read_text()
        for name, value in fields.items():
            text = text.replace(f"${name}$", str(value))
        Path(code_gen_dir, top + ".v").write_text(text)
        self.set_nodeattr("gen_top_module", top)
        words = self.generate_params(model, code_gen_dir, fpgapart)
        np.save(os.path.join(code_gen_dir, "params_words.npy"), np.array(words, dtype=object))
        self.generate_hdl_memstream(fpgapart, name=self.onnx_node.name + "_params",
                                    depth=self.get_nodeattr("NumChannels") // self.get_nodeattr("PE"),
                                    width=info["params_stream_width"],
                                    init_file=os.path.join(code_gen_dir, "params_memblock.dat"),
                                    ram_style=self.get_nodeattr("ram_style"))

    def get_rtl_file_list(self, abspath=False):
        top = self.get_nodeattr("gen_top_module") or self.get_verilog_top_module_name()
        files = [str(CORE), os.path.join(self.get_nodeattr("code_gen_dir_ipgen"), top + ".v")]
        return files if abspath else [os.path.basename(path) for path in files]


add_op_to_domain("finn.custom_op.fpgadataflow.rtl", Requant_rtl)
