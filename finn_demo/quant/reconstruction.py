"""Block reconstruction, the training loop that learned rounding (learned_round.py) and learned
activation ranges (act_ranges.py) share: a part of the quantized graph, fed the quantized model's
input to that part, learns to reproduce the float model's output of that part on the calibration
images (Brevitas' MSE loss), as in AdaRound (a layer) and BRECQ (a block).

A part is one Conv or Linear (`layerwise`) or one of MobileNetV2's blocks, `features.N` or the
classifier, with its BatchNorms, activation quantizers and residual Add (`blockwise`). It is a run
of the traced graph's own nodes, executed node by node (`run_nodes`): quantize_finn returns a
traced graph whose blocks are name prefixes, not modules that run, so module hooks (the way
Brevitas' example trainer finds blocks) never fire on them.

QDrop (Wei et al., ICLR 2022) is an option of the loop (`qdrop`): while a part trains, each
element of each of its activation quantizers' outputs keeps its float value with probability p,
through a forward hook on Brevitas' activation quantizer proxies that exists only during training.
"""
import re
from contextlib import contextmanager
from types import SimpleNamespace

import torch
from brevitas.graph.calibrate import QuantizationStatusManager, quantization_status_manager
from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer
from brevitas.proxy.runtime_quant import ActQuantProxyFromInjectorBase
from brevitas_examples.common.learned_round.learned_round_method import MSELoss

from finn_demo.data.datasets import batches
from finn_demo.quant.maps import float_relu6

QUANTIZERS_OFF = dict(disable_act_quant=True, disable_weight_quant=True, disable_bias_quant=True)


def float_activation(proxy, args, output):
    """What the float network computes where `proxy` quantizes: Brevitas' float value of the
    proxy, its activation alone (ReLU6 inside maps.float_relu6, where every PTQ pass runs)."""
    return QuantizationStatusManager.disable_act_quant_hook(proxy, args, output)


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
        raise ValueError(f"block reconstruction: the part {nodes[0].name}..{nodes[-1].name} has "
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
            raise ValueError(f"block reconstruction: cannot run graph node {node.op} {node.name}")
    return values


@torch.no_grad()
def node_values(model, target, loader, device, quantized):
    """The value of graph node `target` on every image of `loader`, in the quantized model or
    (`quantized`=False) with every quantizer off and ReLU6's clips kept, the float model: (the
    values as one tensor, the first batch's QuantTensor or None). Quantizers are calibrated and
    fixed, so that QuantTensor's scale and bit width hold for every batch."""
    nodes = list(model.graph.nodes)
    placeholder, upto = nodes[0], nodes[1:nodes.index(target) + 1]
    saved, first = [], None
    off = {} if quantized else QUANTIZERS_OFF
    with quantization_status_manager(model, **off, is_training=False), float_relu6(model):
        for images, _ in batches(loader, device, desc=None):
            value = run_nodes(model, upto, {placeholder: images})[target]
            first = first if first is not None or not hasattr(value, "scale") else value
            saved.append(getattr(value, "value", value))
    return torch.cat(saved), first


def part_data(model, part, loader, device):
    """What a part trains on: inputs (the quantized model's input to the part, every calibration
    image), quant_input (their first batch's QuantTensor, or None: it carries the inputs' scale,
    which quantized layers need) and targets (the float model's output of the part). Computed
    when the part's turn comes, so its inputs include what the parts before it learned."""
    inputs, quant_input = node_values(model, part.input, loader, device, quantized=True)
    targets, _ = node_values(model, part.output, loader, device, quantized=False)
    return SimpleNamespace(inputs=inputs, quant_input=quant_input, targets=targets)


def act_proxies(model, part):
    """The enabled activation quantizer proxies that the part's nodes run, each once (a
    quantizer that Brevitas shares between an Add's inputs may run twice)."""
    found = {}
    for node in part.nodes:
        if node.op == "call_module":
            for module in model.get_submodule(node.target).modules():
                if (isinstance(module, ActQuantProxyFromInjectorBase) and module.is_quant_enabled
                        and module.fused_activation_quant_proxy is not None):
                    found[id(module)] = module
    return list(found.values())


@contextmanager
def trainable(parameters):
    """`parameters` take gradients inside the block, and none after it."""
    for parameter in parameters:
        parameter.requires_grad_(True)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(False)


def _qdrop_hook(p, generator):
    def hook(proxy, args, output):
        float_value = float_activation(proxy, args, output)  # what the float targets hold
        keep = torch.rand(float_value.shape, generator=generator) < p
        return output.set(value=torch.where(keep.to(float_value.device), float_value, output.value))
    return hook


@contextmanager
def qdrop_mode(proxies, p, generator):
    """QDrop on `proxies` inside the block: each output element is the float value with
    probability `p`, the quantized one otherwise (p=0: no change). The hooks are removed on exit,
    so evaluation and export see plain quantizers."""
    hooks = [proxy.register_forward_hook(_qdrop_hook(p, generator)) for proxy in proxies] if p else []
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()


def reconstruct(model, part, data, optimizer, iters, batch_size, generator, regularisers=(),
                qdrop=0.0, after_step=None):
    """`iters` steps of `optimizer`, each on `batch_size` random calibration images: the part's
    output against the float model's (Brevitas' MSELoss) plus each of `regularisers`, with QDrop
    at probability `qdrop` on the part's activation quantizers; `after_step()` after each step
    (to project what was trained back into its allowed range)."""
    mse = MSELoss(None, reduction="none", dim=1)
    with qdrop_mode(act_proxies(model, part), qdrop, generator):
        for _ in range(iters):
            pick = torch.randint(len(data.inputs), (min(batch_size, len(data.inputs)),),
                                 generator=generator)
            batch = data.inputs[pick.to(data.inputs.device)]
            batch = batch if data.quant_input is None else data.quant_input.set(value=batch)
            output = run_nodes(model, part.nodes, {part.input: batch})[part.output]
            output = getattr(output, "value", output)
            target = data.targets[pick.to(data.targets.device)]
            loss = sum(loss(output, target) for loss in (*regularisers, mse))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if after_step is not None:
                after_step()
