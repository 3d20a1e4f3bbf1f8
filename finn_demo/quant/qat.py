"""Quantization-aware training (QAT), after PTQ: the quantized model, trained end to end to
reproduce the float model's logits (knowledge distillation), so labels are never needed.

What trains is what Brevitas already makes trainable, through its own straight-through
estimators: every weight and bias, BatchNorm's affine weight and bias, every per-channel weight
scale and every static activation range (the quantizers' `scaling_impl.value` parameters, which
Brevitas initialises from statistics; LSQ's gradient of the step size). No quantizer is written
here.

BatchNorm's statistics stay frozen (the model trains in eval mode): FINN folds BatchNorm's
running statistics into its thresholds, so the statistics the student trains against are the
ones the export carries; batch statistics would train a different function from the one that is
exported, and re-estimating them afterwards would move every threshold the training fitted.
bn_corr (a PTQ pass) re-estimates them on the quantized activations before training starts.
Eval mode also keeps Dropout off, so a run is deterministic and a resumed one equals an
uninterrupted one.

One checkpoint, rewritten after every epoch (model, optimizer, schedule, the epoch, the
held-out figures and the run's flags), lets `resume=True` continue an interrupted run, or
export a finished one without training again.

    history = apply_qat(model, float_model, train_set, val_loader, epochs=15, lr=1e-3,
                        checkpoint="model.qat.pt")
"""
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from tqdm import tqdm

from finn_demo.common.configurator import ConfigError
from finn_demo.common.files import atomic_path
from finn_demo.data.datasets import batches, make_loader
from finn_demo.quant.act_ranges import clamp_ranges, range_parameters

# An activation range takes Adam steps relative to its own size (a range of 6 and one of 0.5
# move alike): lr times this factor times the range.
RANGE_LR_FACTOR = 10.0
TEMPERATURE = 1.0  # distillation's softmax temperature (1: the float model's own probabilities)


def distillation_loss(logits, teacher_logits, temperature=TEMPERATURE):
    """KL divergence of the student's softmax from the float model's, per image (mean), scaled
    by temperature**2 so its gradient's size does not depend on the temperature."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True,
                    reduction="batchmean") * temperature ** 2


def whole_graph(model):
    """The whole traced graph as one part, in the form reconstruction.parts gives."""
    return SimpleNamespace(nodes=list(model.graph.nodes))


def parameter_groups(model, lr):
    """Adam's groups: each activation range at a step relative to its size, every other
    trainable tensor (weights, weight scales, biases, BatchNorm's affine) at `lr`; and the ranges
    with their caps."""
    ranges = range_parameters(model, whole_graph(model))
    range_ids = {id(value) for value, _ in ranges}
    others = [parameter for parameter in model.parameters() if id(parameter) not in range_ids]
    groups = [{"params": others, "lr": lr}]
    groups += [{"params": [value], "lr": lr * RANGE_LR_FACTOR * float(value.detach().abs().max())}
               for value, _ in ranges]
    return groups, ranges


@torch.no_grad()
def held_out(model, float_model, loader, device):
    """The quantized model's distillation loss against the float model and its top-1 (%) on
    `loader`, the float model's top-1 beside it."""
    loss = correct = float_correct = count = 0.0
    for images, labels in batches(loader, device, desc="QAT held-out"):
        logits, teacher = model(images), float_model(images)
        loss += float(distillation_loss(logits, teacher)) * len(images)
        correct += float((logits.argmax(1) == labels).sum())
        float_correct += float((teacher.argmax(1) == labels).sum())
        count += len(images)
    return {"loss": loss / count, "top1": 100 * correct / count,
            "float_top1": 100 * float_correct / count}


def train_epoch(model, float_model, loader, optimizer, scheduler, ranges, desc):
    """One pass over `loader`: a distillation step per batch, with a progress bar showing the
    running loss and images/s. Returns the epoch's mean training loss."""
    device = next(model.parameters()).device
    total = count = 0.0
    start = time.perf_counter()
    bar = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for batch in bar:
        if batch is None:  # a batch of undecodable images only
            continue
        images = batch[0].to(device)
        with torch.no_grad():
            teacher = float_model(images)
        loss = distillation_loss(model(images), teacher)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        clamp_ranges(ranges)
        total, count = total + float(loss.detach()) * len(images), count + len(images)
        bar.set_postfix(loss=f"{total / count:.4f}",
                        img_s=f"{count / (time.perf_counter() - start):.0f}")
    return total / max(count, 1)


def _load_checkpoint(path, fingerprint):
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise ConfigError(f"--resume=True: no QAT checkpoint {path}; run without --resume, or "
                          "pass --qat_checkpoint=FILE of the run to continue") from None
    changed = sorted(name for name in set(fingerprint) | set(state["flags"])
                     if fingerprint.get(name) != state["flags"].get(name))
    if changed:
        was = ", ".join(f"--{name}={state['flags'].get(name)!r}" for name in changed)
        raise ConfigError(f"--resume=True: {path} was trained with other flags ({was}); pass "
                          "those flags, or start again without --resume")
    return state


def apply_qat(model, float_model, train_set, val_loader, epochs, lr=1e-3, batch_size=32,
              workers=0, seed=0, checkpoint=None, resume=False, fingerprint=None):
    """Train the quantized `model` (in place) for `epochs` passes over `train_set` to follow
    `float_model`'s logits: Adam, a cosine schedule over every step, each epoch's order seeded
    by `seed` and the epoch. Evaluates on `val_loader` before training and after each epoch,
    and writes `checkpoint` after each epoch; `resume` continues from it (its `fingerprint`,
    the run's flags, must match). Returns the history: one dict per epoch, epoch 0 the start,
    each with its held-out figures and, from epoch 1, its training loss and seconds."""
    device = next(model.parameters()).device
    float_model.eval()
    model.eval()  # BatchNorm statistics frozen, Dropout off (module docstring)
    fingerprint = fingerprint or {}
    optimizer, scheduler, ranges, history = _start(model, float_model, train_set, val_loader, epochs,
                                                    lr, batch_size, checkpoint, resume, fingerprint)
    for epoch in range(len(history), epochs + 1):
        epoch_seed = seed * 100003 + epoch  # each epoch's order and augmentation, resumable
        torch.manual_seed(epoch_seed)
        loader = make_loader(train_set, batch_size, workers, shuffle=True, seed=epoch_seed)
        start = time.perf_counter()
        train_loss = train_epoch(model, float_model, loader, optimizer, scheduler, ranges,
                                 desc=f"QAT epoch {epoch}/{epochs}")
        history.append({"epoch": epoch, "train_loss": train_loss,
                        "seconds": time.perf_counter() - start,
                        **held_out(model, float_model, val_loader, device)})
        _print_epoch(history[-1], epochs)
        if checkpoint:
            _save_checkpoint(checkpoint, model, optimizer, scheduler, history, fingerprint)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return history


def _start(model, float_model, train_set, val_loader, epochs, lr, batch_size, checkpoint, resume,
           fingerprint):
    """(optimizer, scheduler, ranges, history) at the start of training: new, or as the
    checkpoint left them with `resume` (the model's state loaded from it too)."""
    state = _load_checkpoint(checkpoint, fingerprint) if resume else None
    if state is not None:
        # before the optimizer is made: Brevitas replaces a loaded range's Parameter object, so
        # an optimizer made earlier would step the replaced one, which the model no longer uses
        model.load_state_dict(state["model"])
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    groups, ranges = parameter_groups(model, lr)
    optimizer = torch.optim.Adam(groups)
    steps = epochs * len(make_loader(train_set, batch_size))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
    if state is None:
        history = [{"epoch": 0, **held_out(model, float_model, val_loader,
                                           next(model.parameters()).device)}]
        _print_epoch(history[-1], epochs)
        return optimizer, scheduler, ranges, history
    # the saved learning rates replace those made from the loaded ranges
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    print(f"QAT: resumed from {checkpoint} after epoch {len(state['history']) - 1} of {epochs}")
    return optimizer, scheduler, ranges, state["history"]


def _save_checkpoint(path, model, optimizer, scheduler, history, fingerprint):
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "history": history,
                    "flags": fingerprint}, tmp)


def _print_epoch(figures, epochs):
    trained = (f"train loss {figures['train_loss']:.4f} in {figures['seconds']:.0f} s, "
               if "train_loss" in figures else "")
    print(f"QAT epoch {figures['epoch']}/{epochs}: {trained}held-out distillation loss "
          f"{figures['loss']:.4f}, top-1 {figures['top1']:.2f}% (float {figures['float_top1']:.2f}%)")
