"""Top-1 accuracy and throughput of a classifier over a loader, and the one loop that feeds it."""
import time

import torch

from finn_demo.data import batches


@torch.no_grad()
def predict(forward, loader, device, desc, limit=None):
    """(predicted classes, labels, seconds) of `forward` (images -> logits) over `loader`.

    The one inference loop of the project: PyTorch models and onnxruntime sessions both go through
    it. With `limit`, it stops after the first `limit` images. The seconds cover the loop, data
    loading included. Images the loader could not decode are not scored (data.make_loader drops them).
    """
    predictions, labels, count = [], [], 0
    start = time.perf_counter()
    for images, targets in batches(loader, device, desc):
        if limit is not None and count >= limit:
            break
        predictions.append(torch.as_tensor(forward(images)).argmax(dim=1).cpu())
        labels.append(targets.cpu())
        count += len(targets)
    seconds = time.perf_counter() - start
    if not predictions:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), seconds
    return torch.cat(predictions)[:limit], torch.cat(labels)[:limit], seconds


def top1(predictions, labels):
    """Top-1 accuracy in percent, computed exactly from integer counts."""
    return 100.0 * (predictions == labels).sum().item() / max(len(labels), 1)


def evaluate(model, loader, desc="evaluation"):
    """Return (top-1 accuracy in percent, images per second, images scored) of `model` on `loader`."""
    model.eval()
    predictions, labels, seconds = predict(model, loader, next(model.parameters()).device, desc)
    return top1(predictions, labels), len(labels) / seconds, len(labels)
