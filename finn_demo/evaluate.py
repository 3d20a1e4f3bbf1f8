"""Top-1 accuracy and throughput of a classifier over a loader."""
import time

import torch

from finn_demo.data import batches


@torch.no_grad()
def evaluate(model, loader, desc="evaluation"):
    """Return (top-1 accuracy in percent, images per second, images scored) of `model` on `loader`.

    Images the loader could not decode are not scored (data.make_loader drops them).
    """
    device = next(model.parameters()).device
    model.eval()
    correct = total = 0
    start = time.perf_counter()
    for images, labels in batches(loader, device, desc):
        correct += (model(images).argmax(dim=1) == labels).sum().item()
        total += labels.numel()
    seconds = time.perf_counter() - start
    return 100.0 * correct / max(total, 1), total / seconds, total
