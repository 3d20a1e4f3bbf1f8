"""Top-1 accuracy and throughput of classifiers over a loader, and the one loop that feeds them."""
import math
import time
from types import SimpleNamespace

import torch

from finn_demo.data.datasets import batches


@torch.no_grad()
def predict_all(forwards, loader, device, desc, limit=None, reference=None):
    """Every forward in `forwards` ({name: images -> logits}) over `loader`, on the same batches.

    The one inference loop of the project: PyTorch models and onnxruntime sessions both go through
    it, and several at once share one pass, so each batch is loaded (decoded) once for all of them.
    With `limit`, it stops once it has the first `limit` images. Images the loader could not decode
    are not scored (data.make_loader drops them). With `reference` (a name in `forwards`), every
    other forward's logits are also compared with that one's (`LogitNoise`). Returns a namespace:
    predictions ({name: predicted classes}), labels, forward_seconds ({name: seconds in its
    calls}), seconds (the whole loop), data_seconds (the loop's seconds outside every forward:
    loading the data) and noise ({name: its LogitNoise}, empty without `reference`).
    """
    predictions, labels, count = {name: [] for name in forwards}, [], 0
    forward_seconds = dict.fromkeys(forwards, 0.0)
    noise = {name: LogitNoise() for name in forwards if reference is not None and name != reference}
    start = time.perf_counter()
    for images, targets in batches(loader, device, desc):
        if limit is not None:  # the last batch only up to the limit
            images, targets = images[:limit - count], targets[:limit - count]
        logits = {}
        for name, forward in forwards.items():
            forward_start = time.perf_counter()
            # .cpu() waits for a GPU's kernels: they count in the forward's seconds
            logits[name] = torch.as_tensor(forward(images)).cpu()
            forward_seconds[name] += time.perf_counter() - forward_start
            predictions[name].append(logits[name].argmax(dim=1))
        for name, meter in noise.items():
            meter.add(logits[name], logits[reference])
        labels.append(targets.cpu())
        count += len(targets)
        if limit is not None and count >= limit:
            break
    seconds = time.perf_counter() - start
    return SimpleNamespace(
        predictions={name: _joined(chunks) for name, chunks in predictions.items()},
        labels=_joined(labels), forward_seconds=forward_seconds, seconds=seconds,
        data_seconds=seconds - sum(forward_seconds.values()), noise=noise)


class LogitNoise:
    """How far a model's logits are from a reference model's over many batches: the signal-to-
    quantization-noise ratio, 10 log10(sum of reference logits squared / sum of squared
    differences), in dB (inf where they are equal). Summed in float64 over every logit."""

    def __init__(self):
        self.signal = self.noise = 0.0

    def add(self, logits, reference_logits):
        reference_logits = reference_logits.double()
        self.signal += reference_logits.square().sum().item()
        self.noise += (logits.double() - reference_logits).square().sum().item()

    @property
    def sqnr_db(self):
        if self.noise == 0.0:
            return math.inf
        return 10.0 * math.log10(self.signal / self.noise) if self.signal > 0.0 else -math.inf


def _joined(chunks):
    return torch.cat(chunks) if chunks else torch.zeros(0, dtype=torch.long)


def top1(predictions, labels):
    """Top-1 accuracy in percent, computed exactly from integer counts."""
    return 100.0 * (predictions == labels).sum().item() / max(len(labels), 1)


def scores(run, name):
    """Top-1 (%), images/s, images scored and forward seconds of forward `name` in a `predict_all`
    run. Its images/s counts its own forward calls and the run's data loading: what it would take
    alone, decoding included."""
    return SimpleNamespace(
        top1=top1(run.predictions[name], run.labels), scored=len(run.labels),
        images_per_s=len(run.labels) / (run.forward_seconds[name] + run.data_seconds),
        forward_seconds=run.forward_seconds[name])


def fidelity(run, name, reference):
    """How closely forward `name` follows forward `reference` in a `predict_all` run made with
    that reference: top-1 agreement (% of images whose predicted class is the same) and the
    logits' SQNR (dB). Where top-1 accuracy ties, these still tell two quantized models apart."""
    return SimpleNamespace(agreement=top1(run.predictions[name], run.predictions[reference]),
                           sqnr_db=run.noise[name].sqnr_db)


def evaluate(model, loader, desc="evaluation"):
    """Return (top-1 accuracy in percent, images per second, images scored) of `model` on `loader`."""
    model.eval()
    result = scores(predict_all({desc: model}, loader, next(model.parameters()).device, desc), desc)
    return result.top1, result.images_per_s, result.scored
