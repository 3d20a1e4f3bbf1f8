"""The project's hardware costs where FINN's estimates fall short (finn_demo/hw/resources.py), and
how the fit folds and places the Requant layer, on small FINN layers built in memory: a matrix
unit and a Requant layer, as convert_to_hw and SpecializeLayers make them."""
import json
import math

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.general import GiveUniqueNodeNames
from qonnx.util.basic import qonnx_make_model

from finn_demo.testing.suite import import_finn_steps

import_finn_steps()  # skips without FINN, except in CI
from finn.analysis.fpgadataflow.exp_cycles_per_layer import exp_cycles_per_layer  # noqa: E402
from finn.transformation.fpgadataflow.specialize_layers import SpecializeLayers  # noqa: E402
from finn.util.basic import getHWCustomOp  # noqa: E402
from finn.util.config import extract_model_config_to_json  # noqa: E402

from finn_demo.hw import boards, fit, requant_rtl, resources  # noqa: E402

PART = boards.PARTS["ZCU104"]  # DSP48E2
VERSAL_PART = "xcvc1902-vsva2197-2MP-e-S"  # DSP58
CLOCK_NS = 5


def matrix_and_requant(channels_in=64, channels=96, pixels=(1, 8, 8), weight_bits=8,
                       activation_bits=8, weights=None, seed=0):
    """MVAU -> Requant (FINN's layers, PE and SIMD 1) specialized for the ZCU104: MVAU_rtl and
    Requant_rtl, with seeded weights (or `weights`) and per-channel scales and biases."""
    rng = np.random.default_rng(seed)
    acc = DataType["INT20"]
    mvau = helper.make_node(
        "MVAU", ["x", "w"], ["acc"], domain="finn.custom_op.fpgadataflow", backend="fpgadataflow",
        MW=channels_in, MH=channels, SIMD=1, PE=1, inputDataType=f"UINT{activation_bits}",
        weightDataType=f"INT{weight_bits}", outputDataType=acc.name, accDataType=acc.name,
        noActivation=1, binaryXnorMode=0, numInputVectors=list(pixels), preferred_impl_style="rtl")
    requant = helper.make_node(
        "Requant", ["acc", "scale", "bias"], ["y"], domain="finn.custom_op.fpgadataflow",
        backend="fpgadataflow", NumChannels=channels, PE=1, inputDataType=acc.name,
        outputDataType=f"UINT{activation_bits}", numInputVectors=list(pixels), narrow=0)
    graph = helper.make_graph(
        [mvau, requant], "matrix_and_requant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [*pixels, channels_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [*pixels, channels])],
        value_info=[helper.make_tensor_value_info("acc", TensorProto.FLOAT, [*pixels, channels])])
    model = ModelWrapper(qonnx_make_model(graph))
    weight_type = DataType[f"INT{weight_bits}"]
    if weights is None:
        weights = rng.integers(weight_type.min(), weight_type.max() + 1, (channels_in, channels))
    model.set_initializer("w", np.asarray(weights, dtype=np.float32))
    model.set_tensor_datatype("w", weight_type)
    model.set_initializer("scale", (2.0 ** -rng.uniform(8, 11, channels)).astype(np.float32))
    model.set_initializer("bias", rng.uniform(-4, 4, channels).astype(np.float32))
    model.set_tensor_datatype("x", DataType[f"UINT{activation_bits}"])
    model.set_tensor_datatype("acc", acc)
    model = model.transform(SpecializeLayers(PART)).transform(GiveUniqueNodeNames())
    assert [node.op_type for node in model.graph.node] == ["MVAU_rtl", "Requant_rtl"]
    return model


def layer(model, op_type, **attrs):
    node = next(node for node in model.graph.node if node.op_type == op_type)
    for name, value in attrs.items():
        getHWCustomOp(node).set_nodeattr(name, value)
    return node


def project(cost, name):
    return resources.counted(cost, name)


@pytest.mark.parametrize("weight_bits,activation_bits,lanes", [(8, 8, 2), (4, 8, 3), (4, 4, 4)])
def test_rtl_mvu_dsps_pack_as_many_pes_a_dsp48_as_mvu_sv_does(weight_bits, activation_bits, lanes):
    # FINN counts ceil(PE/4)*SIMD DSP48s whatever the bit widths; mvu.sv packs 1 + (27 - 1 - W) //
    # (W + A - 1) PEs into one. At 4x4 that is FINN's 4, at 8x8 half of it: twice FINN's count.
    model = matrix_and_requant(weight_bits=weight_bits, activation_bits=activation_bits)
    node = layer(model, "MVAU_rtl", PE=8, SIMD=2)
    inst = getHWCustomOp(node)
    assert resources.mvu_lanes(inst, PART, model) == lanes
    cost = resources.layer_cost(node, PART, model)
    assert cost["DSP"] == inst.dsp_estimation(PART) == math.ceil(8 / 4) * 2  # FINN's, kept
    assert project(cost, "DSP") == math.ceil(8 / lanes) * 2
    assert project(cost, "DSP") == {2: 2 * cost["DSP"], 3: 6, 4: cost["DSP"]}[lanes]
    assert resources.total([cost])["DSP"] == project(cost, "DSP")
    # DSP58 parts keep FINN's count (mvu.sv's DSP58 path packs differently).
    versal = resources.layer_cost(node, VERSAL_PART, model)
    assert versal["standin_DSP"] == 0 and versal["DSP"] == inst.dsp_estimation(VERSAL_PART)


def test_narrow_weights_give_the_rtl_mvu_the_lane_its_sign_bit_took():
    # W2A4: lanes of 5 bits in 27 - 2 bits, one more when no weight is -2 (MVAU_rtl's narrow
    # test), as MVAU_rtl.generate_hdl tells mvu.sv.
    full_range = np.resize([-2, -1, 0, 1], (64, 96))
    narrow = np.resize([-1, 0, 1], (64, 96))
    for weights, lanes in ((full_range, 5), (narrow, 6)):
        model = matrix_and_requant(weight_bits=2, activation_bits=4, weights=weights)
        inst = getHWCustomOp(layer(model, "MVAU_rtl"))
        assert resources.mvu_lanes(inst, PART, model) == lanes
        assert resources.mvu_lanes(inst, PART) == 5  # without the weights: the fewer lanes


def test_weights_in_lutram_are_counted_once_as_the_fits_memory_option_says():
    # The LUT stand-in (FINN's HLS formula) counts LUTRAM weights exactly where FINN's BRAM and
    # URAM estimates count none, for every memory the fit can choose and for FINN's default.
    model = matrix_and_requant(channels_in=128, channels=256)
    node = layer(model, "MVAU_rtl", PE=4, SIMD=4)
    inst = getHWCustomOp(node)
    costs = fit.option_costs(node, fit.memory_options(node), PART, model)
    default = resources.layer_cost(node, PART, model)  # mem_mode internal_decoupled, ram_style auto
    assert inst.get_nodeattr("mem_mode") == "internal_decoupled"
    assert inst.get_nodeattr("ram_style") == "auto"
    lutram = 4 * 4 * 8 * math.ceil(inst.calc_wmem() / 64)  # PE * SIMD * weight bits * ceil(WMEM/64)
    assert costs["distributed"]["standin_LUT"] - costs["block"]["standin_LUT"] == lutram > 0
    assert costs["distributed"]["BRAM_18K"] == costs["distributed"]["URAM"] == 0
    assert costs["block"]["BRAM_18K"] > 0 == costs["block"]["URAM"]
    assert costs["ultra"]["URAM"] > 0 == costs["ultra"]["BRAM_18K"]
    assert default["BRAM_18K"] > 0 and default["standin_LUT"] == costs["block"]["standin_LUT"]
    assert costs["ultra"]["standin_LUT"] == costs["block"]["standin_LUT"]
    # With one weight a word, LUTRAM is the smallest share of a ZCU104's budget: the fit starts
    # the layer there, and its stand-in then holds every weight bit (one LUT per 64).
    inst.set_nodeattr("PE", 1)
    inst.set_nodeattr("SIMD", 1)
    costs = fit.option_costs(node, fit.memory_options(node), PART, model)
    budget = boards.budget("ZCU104", boards.DEFAULT_LIMITS)
    assert min(costs, key=lambda option: fit.relative(costs[option], budget)) == "distributed"
    assert costs["distributed"]["standin_LUT"] >= 128 * 256 * 8 / 64


def test_a_requant_lane_takes_as_many_dsps_as_its_product_needs_ports():
    # (signed input bits, scale bits): a DSP48E2 multiplies 27 x 18 bits
    cases = [(9, 25), (18, 27), (19, 26), (25, 27), (25, 30)]
    assert [requant_rtl.multipliers_per_lane(*bits, PART) for bits in cases] == [1, 1, 2, 2, 4]
    # a DSP58 27 x 24
    assert [requant_rtl.multipliers_per_lane(*bits, VERSAL_PART)
            for bits in ((24, 27), (25, 27))] == [1, 2]


def test_requant_costs_its_products_dsps_a_lane_and_keeps_its_parameters_in_lutram_or_bram_by_depth():
    model = matrix_and_requant(channels=96)
    node = layer(model, "Requant_rtl", mem_mode="internal_decoupled")
    inst = getHWCustomOp(node)
    costs = {}
    for pe in (1, 4):
        inst.set_nodeattr("PE", pe)
        costs[pe] = resources.layer_cost(node, PART, model)
        # FINN estimates nothing; the project counts its LUTs and, per PE lane, the DSP48E2s of
        # the scale times this INT20 input (21 bits signed: wider than the DSP's 18-bit port).
        assert all(costs[pe][key] == 0 for key in boards.RESOURCES)
        widths = inst._derive_decoupled_widths(model, PART)
        lane = requant_rtl.multipliers_per_lane(21, widths["s_width"], PART)
        assert lane >= 2 and costs[pe]["standin_DSP"] == lane * pe
        assert resources.total([costs[pe]])["DSP"] == lane * pe
        # 96 / PE words of scale and bias: shallow, so LUTRAM, ceil(words/64) LUTs a bit.
        width = widths["params_stream_width"]
        assert costs[pe]["standin_BRAM_18K"] == 0
        assert costs[pe]["standin_LUT"] > width * math.ceil(96 / pe / 64)
    assert costs[4]["standin_LUT"] > costs[1]["standin_LUT"]  # the datapath grows with the lanes
    deep = matrix_and_requant(channels=1280, pixels=(1, 2, 2))
    cost = resources.layer_cost(layer(deep, "Requant_rtl"), PART, deep)
    width = getHWCustomOp(layer(deep, "Requant_rtl"))._derive_decoupled_widths(deep, PART)[
        "params_stream_width"]
    assert cost["standin_BRAM_18K"] >= math.ceil(1280 * width / (18 * 1024))
    assert cost["standin_LUT"] < costs[1]["standin_LUT"]  # its parameters left LUTRAM for BRAM
    with pytest.raises(ValueError, match="needs the model"):
        resources.layer_cost(node, PART)


def test_fold_gives_requant_the_least_pe_that_keeps_pace_and_setfolding_folds_around_it():
    # SetFolding leaves Requant's PE alone: left at 1 (64 x 96 cycles here), its second pass
    # would fold every other layer down to that.
    model = matrix_and_requant()
    cycles = 1000
    folded, _ = fit.fold(model, 1e9 / CLOCK_NS / cycles, CLOCK_NS)
    per_layer = folded.analysis(exp_cycles_per_layer)
    requant = getHWCustomOp(layer(folded, "Requant_rtl"))
    assert max(per_layer.values()) <= cycles  # the rate is met
    target = max(cycles, *(count for name, count in per_layer.items()
                           if name != requant.onnx_node.name))
    pe = requant.get_nodeattr("PE")
    assert 96 % pe == 0 and per_layer[requant.onnx_node.name] <= target
    smaller = [divisor for divisor in range(1, pe) if 96 % divisor == 0]
    assert all(64 * 96 // divisor > target for divisor in smaller) and pe > 1
    # At a slow rate it stays at PE 1.
    slow, _ = fit.fold(model, 1e9 / CLOCK_NS / 10 ** 6, CLOCK_NS)
    assert getHWCustomOp(layer(slow, "Requant_rtl")).get_nodeattr("PE") == 1


def test_the_fit_streams_requant_parameters_and_its_folding_config_says_so(tmp_path):
    model = matrix_and_requant()
    budget = {key: math.inf for key in boards.RESOURCES}
    design = fit.design_at(model, 1e9 / CLOCK_NS / 1000, PART, CLOCK_NS, budget)
    name = layer(design.model, "Requant_rtl").name
    memory = design.memories[name]
    assert memory in fit.REQUANT_MEMORIES
    path = tmp_path / "folding_config.json"
    extract_model_config_to_json(design.model, path, fit.FOLDING_ATTRIBUTES)
    config = json.loads(path.read_text())[name]
    assert config["mem_mode"] == "internal_decoupled" and config["PE"] > 1
    assert config["ram_style"] == memory  # the parameter memory the fit costed
    row = next(row for row in design.layers if row["name"] == name)
    widths = getHWCustomOp(layer(design.model, "Requant_rtl"))._derive_decoupled_widths(
        design.model, PART)
    lane = requant_rtl.multipliers_per_lane(21, widths["s_width"], PART)  # the INT20 input, signed
    assert row["standin_DSP"] == lane * config["PE"] and design.totals["DSP"] == sum(
        project(row, "DSP") for row in design.layers) + sum(
        project(cost, "DSP") for cost in design.buffers.values())


def test_a_wider_fold_packs_weights_into_fewer_urams_in_no_more_cycles():
    # 64 x 96 8-bit weights at PE = SIMD = 1: one 8-bit weight a 72-bit URAM word, 6144 words
    # deep, two URAMs (4096 words each); two weights a word, 3072 deep, fit one.
    model = matrix_and_requant()
    node = layer(model, "MVAU_rtl")
    inst = getHWCustomOp(node)
    options = fit.layer_options(node, PART, model)
    costs = fit.option_costs(node, options, PART, model)
    assert costs["ultra"]["URAM"] == 2
    (packed,) = [option for option in options if option.startswith("ultra@")]
    pe, simd = options[packed]["PE"], options[packed]["SIMD"]
    assert costs[packed]["URAM"] == 1 and pe * simd == 2  # the fewest, then the least parallel
    assert (inst.get_nodeattr("PE"), inst.get_nodeattr("SIMD")) == (1, 1)  # left as it was
    cycles = inst.get_exp_cycles()
    inst.set_nodeattr("PE", pe)
    inst.set_nodeattr("SIMD", simd)
    assert inst.get_exp_cycles() <= cycles


def test_the_fit_places_memories_that_fit_where_moving_the_largest_layer_first_does_not():
    # Three layers, each in LUTRAM or URAM. Each starts on its cheaper share of the budget (URAM,
    # 13 of 5); moving the layer that frees most URAM first (L0 or L2, 5) leaves no move that
    # fits, but L0 and L1 in LUTRAM (7 of 7) with L2 in URAM (5 of 5) fit.
    def cost(lut=0, uram=0):
        return {"LUT": lut, "BRAM_18K": 0, "URAM": uram, "DSP": 0}
    choices = {"L0": {"lut": cost(lut=2), "uram": cost(uram=5)},
               "L1": {"lut": cost(lut=5), "uram": cost(uram=3)},
               "L2": {"lut": cost(lut=7), "uram": cost(uram=5)}}
    budget = cost(lut=7, uram=5)
    start = {name: fit.cheapest(costs, budget) for name, costs in choices.items()}
    greedy = fit.greedy_placement(choices, budget, [], start)
    assert fit.over_budget(fit.placement_totals(choices, greedy, []), budget)
    chosen, totals = fit.place_memories(choices, budget, [])
    assert chosen == {"L0": "lut", "L1": "lut", "L2": "uram"}
    assert totals == cost(lut=7, uram=5)
    # with fixed costs taking one LUT, no placement fits: the greedy's nearest one is returned
    chosen, totals = fit.place_memories(choices, budget, [cost(lut=1)])
    assert fit.over_budget(totals, budget)
