"""Learned rounding (AdaRound): each weight goes down or up by a trained choice, not to nearest.

Brevitas' own pieces, in a loop small enough for a CPU: `insert_learned_round_quantizers` puts a
hard-sigmoid rounding parameter into every weight quantizer (brevitas_examples' learned-round
method); then each part of the network in turn learns its parameters on the calibration images,
so that from the quantized model's input to that part it reproduces the float model's output of
that part: Brevitas' MSE loss plus AdaRound's regulariser (`RoundRegularisationLoss`, one per
layer), which drives every choice to 0 or 1. A part is one Conv or Linear (`layerwise`, AdaRound)
or one of MobileNetV2's blocks, `features.N` or the classifier, with its BatchNorms, activation
quantizers and residual Add (`blockwise`, as BRECQ). Brevitas' `merge_quant_weights` then writes
the chosen integer weights into the layers and turns their quantizers back to round-to-nearest
with the scales frozen, so the export carries exactly the learned weights.

Brevitas' example trainer is not used: it needs the `accelerate` package, forces float16 autocast
(wrong on a CPU), and finds blocks by module hooks, which never fire on the traced graph that
quantize_finn returns (its blocks are name prefixes, not modules that run). Here a part is a run of
the graph's own nodes, executed node by node (`run_nodes`).

    apply_learned_round(calib_loader, model, "blockwise", iters=200)
"""
import re
from types import SimpleNamespace

import torch
from brevitas.core.function_wrapper.learned_round import LearnedRoundSte
from brevitas.graph.calibrate import quantization_status_manager
from brevitas.inject.enum import LearnedRoundImplType
from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer
from brevitas.nn.utils import merge_quant_weights
from brevitas_examples.common.learned_round.learned_round_method import (
    MSELoss, RoundRegularisationLoss, insert_learned_round_quantizers)
from tqdm import tqdm

from finn_demo.data.datasets import batches

MODES = ("none", "layerwise", "blockwise")
QUANTIZERS_OFF = dict(disable_act_quant=True, disable_weight_quant=True, disable_bias_quant=True)


def apply_learned_round(loader, model, mode="layerwise", iters=200, batch_size=32, lr=1e-3):
    """AdaRound on every Conv and Linear of the quantized `model` (a traced graph), part by part
    in the order they run (`mode`: layerwise or blockwise), on `loader`'s images; then the
    learned integer weights merged into the layers."""
    device = next(model.parameters()).device
    model.eval()
    insert_learned_round_quantizers(model, LearnedRoundImplType.HARD_SIGMOID)
    for parameter in model.parameters():  # each part's rounding is switched on as it trains
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(0)  # which images each step trains on
    for part in tqdm(parts(model, mode), desc=f"learned rounding ({mode})", unit="part"):
        inputs, quant_input = node_values(model, part.input, loader, device, quantized=True)
        targets, _ = node_values(model, part.output, loader, device, quantized=False)
        train_part(model, part, inputs, quant_input, targets, iters, batch_size, lr, generator)
    example = next(iter(loader))[0][:1].to(device)
    with torch.no_grad():
        merge_quant_weights(model, example)


def parts(model, mode):
    """The graph's parts that hold weights, each a namespace: nodes (a run of the graph's nodes),
    input (the one node outside that feeds them), output (the last, the only one used after)
    and layers (their Conv/Linear modules). Layerwise: each Conv/Linear node alone. Blockwise:
    nodes go with the last `features.N` (or `classifier`) module seen, so a block keeps the
    quantizers of its output and its residual Add."""
    def layer(node):
        module = model.get_submodule(node.target) if node.op == "call_module" else None
        return module if isinstance(module, QuantWeightBiasInputOutputLayer) else None

    nodes = [node for node in model.graph.nodes if node.op not in ("placeholder", "output")]
    if mode == "layerwise":
        groups = [[node] for node in nodes if layer(node) is not None]
    else:
        groups, block = {}, "input"
        for node in nodes:
            name = str(node.target) if node.op == "call_module" else ""
            match = re.match(r"(features\.\d+|classifier)\.", name)
            block = match.group(1) if match else block
            groups.setdefault(block, []).append(node)
        groups = list(groups.values())
    return [_part(group, [layer(node) for node in group if layer(node) is not None])
            for group in groups if any(layer(node) is not None for node in group)]


def _part(nodes, layers):
    inside = set(nodes)
    feeding = {arg for node in nodes for arg in node.all_input_nodes if arg not in inside}
    used_after = {node for node in nodes if any(user not in inside for user in node.users)}
    if len(feeding) != 1 or not used_after <= {nodes[-1]}:
        raise ValueError(f"learned rounding: the part {nodes[0].name}..{nodes[-1].name} has "
                         f"{len(feeding)} inputs and outputs {sorted(n.name for n in used_after)}; "
                         "it needs one of each")
    return SimpleNamespace(nodes=nodes, input=feeding.pop(), output=nodes[-1], layers=layers)


def run_nodes(model, nodes, values):
    """Execute `nodes` of `model`'s graph in order; `values` ({node: value}) holds their inputs
    and receives their outputs."""
    def load(arg):
        if isinstance(arg, (tuple, list)):
            return type(arg)(load(item) for item in arg)
        if isinstance(arg, dict):
            return {key: load(item) for key, item in arg.items()}
        return values[arg] if arg in values else arg

    for node in nodes:
        args, kwargs = load(node.args), load(node.kwargs)
        if node.op == "call_module":
            values[node] = model.get_submodule(node.target)(*args, **kwargs)
        elif node.op == "call_function":
            values[node] = node.target(*args, **kwargs)
        elif node.op == "call_method":
            values[node] = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            raise ValueError(f"learned rounding: cannot run graph node {node.op} {node.name}")
    return values


@torch.no_grad()
def node_values(model, target, loader, device, quantized):
    """The value of graph node `target` on every image of `loader`, in the quantized model or
    (`quantized`=False) with every quantizer off, the float model: (the values as one tensor,
    the first batch's QuantTensor or None). Quantizers are calibrated and fixed, so that
    QuantTensor's scale and bit width hold for every batch."""
    nodes = list(model.graph.nodes)
    placeholder, upto = nodes[0], nodes[1:nodes.index(target) + 1]
    saved, first = [], None
    off = {} if quantized else QUANTIZERS_OFF
    with quantization_status_manager(model, **off, is_training=False):
        for images, _ in batches(loader, device, desc=None):
            value = run_nodes(model, upto, {placeholder: images})[target]
            first = first if first is not None or not hasattr(value, "scale") else value
            saved.append(getattr(value, "value", value))
    return torch.cat(saved), first


def train_part(model, part, inputs, quant_input, targets, iters, batch_size, lr, generator):
    """Adam on the part's rounding parameters only: `iters` steps of `batch_size` random images.
    `quant_input` (a QuantTensor or None) carries the inputs' scale: quantized layers need it."""
    rounding = [module for layer in part.layers for module in layer.modules()
                if isinstance(module, LearnedRoundSte)]
    parameters = [module.value for module in rounding]
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    losses = [*(RoundRegularisationLoss(layer, max_count=iters) for layer in part.layers),
              MSELoss(None, reduction="none", dim=1)]
    for module in rounding:
        module.train()
    for _ in range(iters):
        pick = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        batch = inputs[pick.to(inputs.device)]
        batch = batch if quant_input is None else quant_input.set(value=batch)
        output = run_nodes(model, part.nodes, {part.input: batch})[part.output]
        output = getattr(output, "value", output)
        target = targets[pick.to(targets.device)]
        loss = sum(part_loss(output, target) for part_loss in losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    for module in rounding:
        module.eval()
    for parameter in parameters:
        parameter.requires_grad_(False)
