"""The accumulator width each quantized layer needs: the signed integer that holds every dot
product of its integer weights with any input on its input quantizer's integer grid.

This is the width FINN gives each matrix and depthwise unit (MinimizeAccumulatorWidth: the sums
of a channel's positive and negative weights times the input's extremes), so it can be read off
the Brevitas model before any FINN build; AXE (`--accumulator_bit_width`) bounds it.
"""
import math

import torch
from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer
from brevitas.quant_tensor import QuantTensor


def _input_grids(model, example):
    """{layer name: (bit width, signed)} of each quantized layer's input, from one forward pass."""
    grids, hooks = {}, []

    def record(name, layer, args):
        inp = layer.input_quant(args[0])
        if isinstance(inp, QuantTensor):
            grids[name] = (int(inp.bit_width.item()), bool(inp.signed))

    for name, layer in model.named_modules():
        if isinstance(layer, QuantWeightBiasInputOutputLayer):
            hooks.append(layer.register_forward_pre_hook(
                lambda layer, args, name=name: record(name, layer, args)))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return grids


def _input_range(bits, signed):
    return (-2 ** (bits - 1), 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)


def may_overflow(model, example, accumulator_bit_width):
    """The quantized layers, but the network's first and last, that some integer weights of their
    bit width could drive past a signed accumulator of `accumulator_bit_width` bits: the ones AXE
    bounds. In every other layer between them any weights fit (every weight at its largest
    magnitude times every input at its own). The first conv and the classifier keep 8-bit weights
    (and the conv an 8-bit input) in FINN designs: bounding them to a hidden layer's accumulator
    would flatten them (the first conv has few weights per channel; docs/ptq.md)."""
    limit = 2 ** (accumulator_bit_width - 1) - 1
    layers = []
    for name, (bits, signed) in hidden(_input_grids(model, example)).items():
        layer = model.get_submodule(name)
        weight_bits = int(layer.quant_weight().bit_width.item())
        largest_input = max(abs(value) for value in _input_range(bits, signed))
        if layer.weight[0].numel() * 2 ** (weight_bits - 1) * largest_input > limit:
            layers.append(layer)
    return layers


def signed_bits(low, high):
    """The fewest bits of a signed integer that holds every value from `low` to `high`."""
    magnitude = max(-low, high + 1, 1)
    return math.ceil(math.log2(magnitude)) + 1


def accumulator_bits(model, example):
    """{layer name: accumulator bits} of every quantized Conv/Linear whose input is quantized,
    in the model's order. `example` is one input batch."""
    widths = {}
    for name, (bits, signed) in _input_grids(model, example).items():
        layer = model.get_submodule(name)
        low, high = _input_range(bits, signed)
        weights = layer.quant_weight().int().flatten(1).double()  # one dot product per row
        positive, negative = weights.clamp(min=0).sum(1), weights.clamp(max=0).sum(1)
        widths[name] = signed_bits(float((positive * low + negative * high).min()),
                                   float((positive * high + negative * low).max()))
    return widths


def hidden(layers):
    """The entries of the dict `layers` (in the model's order) but the first and the last: the
    hidden layers, between the first conv and the classifier."""
    return dict(list(layers.items())[1:-1])


def widest_hidden(widths):
    """(name, bits) of the widest accumulator between the first and the last layer (what AXE
    bounds); of all the layers when there are only two."""
    between = hidden(widths) or widths
    name = max(between, key=between.get)
    return name, between[name]
