"""Learned rounding (AdaRound): each weight goes down or up by a trained choice, not to nearest.

Brevitas' own pieces, in a loop small enough for a CPU: `insert_learned_round_quantizers` puts a
hard-sigmoid rounding parameter into every weight quantizer (brevitas_examples' learned-round
method); then each part of the network in turn learns its parameters on the calibration images
by block reconstruction (reconstruction.py): from the quantized model's input to that part it
reproduces the float model's output of that part, Brevitas' MSE loss plus AdaRound's regulariser
(`RoundRegularisationLoss`, one per layer), which drives every choice to 0 or 1. A part is one
Conv or Linear (`layerwise`, AdaRound) or one of MobileNetV2's blocks (`blockwise`, as BRECQ;
there QDrop may drop the block's activation quantization while it trains). Brevitas'
`merge_quant_weights` then writes the chosen integer weights into the layers and turns their
quantizers back to round-to-nearest with the scales frozen, so the export carries exactly the
learned weights.

Brevitas' example trainer is not used: it needs the `accelerate` package, forces float16 autocast
(wrong on a CPU), and finds blocks by module hooks, which never fire on the traced graph that
quantize_finn returns.

    apply_learned_round(calib_loader, model, "blockwise", iters=200)
"""
import torch
from brevitas.core.function_wrapper.learned_round import LearnedRoundSte
from brevitas.inject.enum import LearnedRoundImplType
from brevitas.nn.utils import merge_quant_weights
from brevitas_examples.common.learned_round.learned_round_method import (
    RoundRegularisationLoss, insert_learned_round_quantizers)
from tqdm import tqdm

from finn_demo.quant.reconstruction import part_data, parts, reconstruct, trainable

MODES = ("none", "layerwise", "blockwise")


def apply_learned_round(loader, model, mode="layerwise", iters=200, batch_size=32, lr=1e-3,
                        qdrop=0.0, seed=0):
    """AdaRound on every Conv and Linear of the quantized `model` (a traced graph), part by part
    in the order they run (`mode`: layerwise or blockwise), on `loader`'s images; then the
    learned integer weights merged into the layers. `qdrop`: QDrop's probability of keeping an
    activation element float while a part trains (0 = off; a layerwise part runs no activation
    quantizer); `seed` seeds which images each step trains on and QDrop's masks."""
    device = next(model.parameters()).device
    model.eval()
    insert_learned_round_quantizers(model, LearnedRoundImplType.HARD_SIGMOID)
    for parameter in model.parameters():  # each part's rounding is switched on as it trains
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    for part in tqdm(parts(model, mode), desc=f"learned rounding ({mode})", unit="part"):
        train_part(model, part, part_data(model, part, loader, device), iters, batch_size, lr,
                   generator, qdrop)
    example = next(iter(loader))[0][:1].to(device)
    with torch.no_grad():
        merge_quant_weights(model, example)


def train_part(model, part, data, iters, batch_size, lr, generator, qdrop=0.0):
    """Adam on the part's rounding parameters only, AdaRound's regulariser per layer beside the
    reconstruction loss."""
    rounding = [module for layer in part.layers for module in layer.modules()
                if isinstance(module, LearnedRoundSte)]
    parameters = [module.value for module in rounding]
    regularisers = [RoundRegularisationLoss(layer, max_count=iters) for layer in part.layers]
    for module in rounding:
        module.train()
    with trainable(parameters):
        optimizer = torch.optim.Adam(parameters, lr=lr)
        reconstruct(model, part, data, optimizer, iters, batch_size, generator, regularisers, qdrop)
    for module in rounding:
        module.eval()
