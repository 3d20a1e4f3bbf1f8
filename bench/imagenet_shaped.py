"""An ImageNet-shaped MobileNetV2 (224x224 inputs, 1000 classes) for FINN's estimates, where
neither ImageNet nor torchvision's pretrained weights can be downloaded.

The model is torchvision's `mobilenet_v2()` with its own seeded random initialisation and its
BatchNorm statistics re-estimated on photos, so that every layer's activations have
unit scale: with the initial running statistics (mean 0, variance 1) they shrink layer after
layer until the logits are about 1e-9 and a quantized graph's comparison is degenerate.
FINN's costs follow the layer shapes and bit widths; the accumulator widths FINN minimizes also
follow the weights' values, so a trained model's may differ. With real weights and ImageNet,
run the same commands with `--weights` and `--data_dir` of your own.
"""
from pathlib import Path

import torch
from torchvision.models import mobilenet_v2

from finn_demo.data.datasets import IMAGENET_WNIDS, imagenet_datasets, make_loader
from finn_demo.data.models import imagenet_transform
from finn_demo.testing.imagenet_folder import make_photo_folder

CLASSES, PER_CLASS, SIZE = 4, 4, (256, 256)  # 16 photos per split


def make_folder(root):
    """An ImageNet-layout folder of real photos (crops of scikit-learn's two sample photos;
    4 classes, 4 images each per split): activation ranges and the checks' numbers follow the
    statistics of natural images, which noise does not have."""
    wnids = IMAGENET_WNIDS[:CLASSES]
    return make_photo_folder(Path(root) / "imagenet", wnids, PER_CLASS, SIZE)


def recalibrate_batchnorm(model, loader):
    """Re-estimate every BatchNorm's running mean and variance on `loader`'s images."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over all batches
    model.train()
    with torch.no_grad():
        for images, _ in loader:
            model(images)
    return model.eval()


def make_weights(path, data_dir, seed=0):
    """A state_dict file of the seeded random MobileNetV2 with recalibrated BatchNorm."""
    torch.manual_seed(seed)
    model = mobilenet_v2()
    train, _ = imagenet_datasets(str(data_dir), imagenet_transform(""))
    recalibrate_batchnorm(model, make_loader(train, 8, workers=0))
    torch.save(model.state_dict(), path)
    return Path(path)


def load_model(path):
    """The MobileNetV2 of a make_weights file."""
    model = mobilenet_v2()
    model.load_state_dict(torch.load(path, weights_only=True))
    return model


if __name__ == "__main__":
    # python -m bench.imagenet_shaped FOLDER: the photo folder and the weights file, to run the
    # demo and finn_build.py on by hand (FOLDER/imagenet, FOLDER/mobilenet_v2.pth)
    import sys
    if len(sys.argv) != 2 or Path(sys.argv[1], "imagenet").exists():
        sys.exit("usage: python -m bench.imagenet_shaped FOLDER (FOLDER/imagenet must not exist)")
    folder = make_folder(sys.argv[1])
    print(f"{folder}\n{make_weights(Path(sys.argv[1], 'mobilenet_v2.pth'), folder)}")
