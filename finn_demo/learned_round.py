"""Learned rounding (AdaRound): each weight goes down or up by a trained choice, not to nearest.

Brevitas' own pieces, in a loop small enough for a CPU: `insert_learned_round_quantizers` puts a
hard-sigmoid rounding parameter into every weight quantizer (brevitas_examples' learned-round
method), and each Conv and Linear in turn learns its parameters on the calibration images, so
that from its quantized input it reproduces the float model's output of that layer: Brevitas'
MSE loss plus AdaRound's regulariser (`RoundRegularisationLoss`), which drives every choice to 0
or 1. Brevitas' `merge_quant_weights` then writes the chosen integer weights into the layers and
turns their quantizers back to round-to-nearest with the scales frozen, so the export carries
exactly the learned weights. Brevitas' example trainer is not used: it needs the `accelerate`
package, forces float16 autocast (wrong on a CPU), and its block-wise mode finds ResNet's blocks
only.

    apply_learned_round(calib_loader, model, iters=200)
"""
import torch
from brevitas.core.function_wrapper.learned_round import LearnedRoundSte
from brevitas.graph.calibrate import quantization_status_manager
from brevitas.inject.enum import LearnedRoundImplType
from brevitas.nn.quant_layer import QuantWeightBiasInputOutputLayer
from brevitas.nn.utils import merge_quant_weights
from brevitas.utils.torch_utils import StopFwdException
from brevitas_examples.common.learned_round.learned_round_method import (
    MSELoss, RoundRegularisationLoss, insert_learned_round_quantizers)
from tqdm import tqdm

from finn_demo.data import batches

MODES = ("none", "layerwise")


def apply_learned_round(loader, model, iters=200, batch_size=32, lr=1e-3):
    """AdaRound on every Conv and Linear of the quantized `model`, layer by layer in the order
    they run, on `loader`'s images; then the learned integer weights merged into the layers."""
    device = next(model.parameters()).device
    model.eval()
    layers = [module for module in model.modules()
              if isinstance(module, QuantWeightBiasInputOutputLayer)]
    insert_learned_round_quantizers(model, LearnedRoundImplType.HARD_SIGMOID)
    generator = torch.Generator().manual_seed(0)  # which images each step trains on
    for layer in tqdm(layers, desc="learned rounding", unit="layer"):
        inputs, quant_input = layer_data(model, layer, loader, device, quantized=True)
        targets, _ = layer_data(model, layer, loader, device, quantized=False)
        train_layer(layer, inputs, quant_input, targets, iters, batch_size, lr, generator)
    example = next(iter(loader))[0][:1].to(device)
    with torch.no_grad():
        merge_quant_weights(model, example)


def layer_data(model, layer, loader, device, quantized):
    """`layer`'s input (quantized model) or output (`quantized`=False: every quantizer off, the
    float model) on every image of `loader`, each forward stopped at the layer: (the values as one
    tensor, the first batch's QuantTensor or None). The layer's input quantizer is calibrated
    and fixed, so that QuantTensor's scale and bit width hold for every batch."""
    saved, first = [], []

    def save(module, args, output):
        value = args[0] if quantized else output
        if not first:
            first.append(value if hasattr(value, "scale") else None)
        saved.append(getattr(value, "value", value).detach())
        raise StopFwdException

    off = dict(disable_act_quant=True, disable_weight_quant=True, disable_bias_quant=True)
    handle = layer.register_forward_hook(save)
    try:
        with torch.no_grad(), quantization_status_manager(
                model, **({} if quantized else off), is_training=False):
            for images, _ in batches(loader, device, desc=None):
                try:
                    model(images)
                except StopFwdException:
                    pass
    finally:
        handle.remove()
    return torch.cat(saved), first[0]


def train_layer(layer, inputs, quant_input, targets, iters, batch_size, lr, generator):
    """Adam on `layer`'s rounding parameters only: `iters` steps of `batch_size` random images.
    `quant_input` (a QuantTensor or None) carries the inputs' scale: a quantized bias needs it."""
    rounding = [module for module in layer.modules() if isinstance(module, LearnedRoundSte)]
    parameters = [module.value for module in rounding]
    for parameter in layer.parameters():
        parameter.requires_grad_(False)
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=lr)
    losses = [RoundRegularisationLoss(layer, max_count=iters),
              MSELoss(layer, reduction="none", dim=1)]
    for module in rounding:
        module.train()
    # The cached inputs are plain tensors: the layer returns one too while it trains.
    returns_quant_tensor, layer.return_quant_tensor = layer.return_quant_tensor, False
    for _ in range(iters):
        pick = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        batch = inputs[pick.to(inputs.device)]
        output = layer(batch if quant_input is None else quant_input.set(value=batch))
        target = targets[pick.to(targets.device)]
        loss = sum(block_loss(output, target) for block_loss in losses)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    layer.return_quant_tensor = returns_quant_tensor
    for module in rounding:
        module.eval()
    for parameter in parameters:
        parameter.requires_grad_(False)
