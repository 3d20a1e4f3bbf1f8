"""Learned activation ranges: each static activation range, trained block by block.

Calibration sets every activation range from the float model's statistics, before the weight
rounding and bn_corr change what the activations see. Brevitas keeps each static range as a
trainable parameter, the quantizer's `scaling_impl.value` (the top of its range: scale =
value / (2**bits - 1) unsigned), for calibrated quantizers (ParameterFromRuntimeStatsScaling,
the MSE and percentile ones) and fixed-init ones (ParameterScaling, ReLU6's max_val=6) alike, but
none of its PTQ routines trains it. Here each `features.N` block and the classifier, in the order
they run, train their activation quantizers' ranges (and, optionally, their BatchNorms' affine
parameters) by block reconstruction (reconstruction.py, the loop learned rounding uses), with
gradients through Brevitas' own straight-through quantizers (LSQ's gradient of the step size).

The export is unchanged in kind: one per-tensor scale per quantizer, from which FINN computes its
thresholds. Brevitas aligns the scales of an Add's inputs by giving them one quantizer; its
parameter trains once, in the first block that runs it (its value then feeds every later block's
inputs), so the inputs stay aligned.

    apply_learned_act_range(calib_loader, model, iters=200, qdrop=0.5)
"""
from functools import partial

import torch
from torch import nn
from tqdm import tqdm

from finn_demo.quant.maps import relu6_ceiling
from finn_demo.quant.reconstruction import (
    act_proxies, part_data, parts, reconstruct, trainable)

# Adam's step for a range, relative to the range's calibrated value (a range of 6 and one of 0.5
# move alike); BatchNorm's affine parameters are of order one and take a plain step.
RANGE_LR = 5e-3
NORM_LR = 1e-3
MIN_RANGE = 1e-6  # a range stays positive: its scale divides


def apply_learned_act_range(loader, model, iters=200, bn=False, qdrop=0.0, batch_size=32,
                            seed=0):
    """Train the activation ranges of the quantized `model` (a traced graph), block by block, so
    each block reproduces the float model's output of it on `loader`'s images; with `bn`, its
    BatchNorms' weight and bias too; `qdrop` as in reconstruction.qdrop_mode; `seed` seeds which
    images each step trains on and QDrop's masks."""
    device = next(model.parameters()).device
    model.eval()
    for parameter in model.parameters():  # each block's ranges are switched on as it trains
        parameter.requires_grad_(False)
    generator = torch.Generator().manual_seed(seed)
    trained = set()
    for part in tqdm(parts(model, "blockwise"), desc="learned act. ranges", unit="block"):
        ranges = [(value, cap) for value, cap in range_parameters(model, part)
                  if id(value) not in trained]
        trained.update(id(value) for value, _ in ranges)
        norms = [module for node in part.nodes if node.op == "call_module"
                 for module in [model.get_submodule(node.target)]
                 if bn and isinstance(module, nn.BatchNorm2d)]
        if ranges or norms:
            train_ranges(model, part, part_data(model, part, loader, device), ranges, norms,
                         iters, batch_size, generator, qdrop)


def range_parameters(model, part):
    """[(range parameter, its cap or None)] of the part's activation quantizers, each parameter
    once. The cap is maps.relu6_ceiling (ReLU6's 6, either range): a range above it
    would pass values the float network clips."""
    found = {}
    for proxy in act_proxies(model, part):
        for value in proxy.parameters():
            found.setdefault(id(value), (value, relu6_ceiling(proxy)))
    return list(found.values())


@torch.no_grad()
def clamp_ranges(ranges):
    for value, cap in ranges:
        value.clamp_(min=MIN_RANGE, max=cap)


def train_ranges(model, part, data, ranges, norms, iters, batch_size, generator, qdrop):
    """Adam on the part's ranges (a step relative to each one's size) and BatchNorm affines."""
    groups = [{"params": [value], "lr": RANGE_LR * float(value.detach().abs().max())}
              for value, _ in ranges]
    groups += [{"params": [norm.weight, norm.bias], "lr": NORM_LR} for norm in norms]
    parameters = [parameter for group in groups for parameter in group["params"]]
    with trainable(parameters):
        optimizer = torch.optim.Adam(groups)
        reconstruct(model, part, data, optimizer, iters, batch_size, generator, qdrop=qdrop,
                    after_step=partial(clamp_ranges, ranges))
