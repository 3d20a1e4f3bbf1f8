"""MobileNetV2 from torchvision: ImageNet weights by name or file, or the digits model trained here."""
import hashlib
import urllib.error
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, mobilenet_v2
from tqdm import tqdm

from finn_demo.common.configurator import ConfigError
from finn_demo.common.files import atomic_path

# The seed's MobileNet_V2_Weights.DEFAULT. torchvision's published float top-1 and preprocessing
# (its weights' meta["_metrics"] and transforms()): IMAGENET1K_V2 72.154%, resize 232, crop 224;
# IMAGENET1K_V1 71.878%, resize 256, crop 224. imagenet_transform follows the chosen weights.
DEFAULT_IMAGENET_WEIGHTS = "IMAGENET1K_V2"
# torchvision's MobileNetV2 stages (expansion t, channels c, blocks n, stride s), its default
# inverted_residual_setting: the digits model may keep only the first few (flag digits_stages).
MOBILENET_V2_STAGES = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1],
                       [6, 160, 3, 2], [6, 320, 1, 1]]


def _one_line(error, limit=160):
    """An exception as "Type: first line of its message" (cut at `limit` characters), for
    one-line errors that keep the cause."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _load_weights_file(path):
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--weights: file {path} does not exist; pass a torchvision weights name "
                          "(IMAGENET1K_V1) or the path of a MobileNetV2 state_dict")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a file that is not a checkpoint
        raise ConfigError(f"--weights: {path} is not a PyTorch checkpoint ({_one_line(error)}); "
                          "save one with torch.save(model.state_dict(), path)") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    model = mobilenet_v2()
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as error:
        raise ConfigError(f"--weights: {path} does not fit torchvision's MobileNetV2 "
                          f"({_one_line(error)})") from None
    return model


def resolve_weights(weights):
    """A weights flag as (path, None) for a local file or (None, MobileNet_V2_Weights) for a name."""
    weights = weights or DEFAULT_IMAGENET_WEIGHTS
    if weights.endswith((".pt", ".pth")) or "/" in weights or "\\" in weights or Path(weights).exists():
        return Path(weights), None
    name = weights.removeprefix("MobileNet_V2_Weights.")
    if name not in MobileNet_V2_Weights.__members__:
        raise ConfigError(f"--weights={weights!r}: torchvision knows no such MobileNetV2 weights; use "
                          f"{' or '.join(MobileNet_V2_Weights.__members__)}, or a .pth file path")
    return None, MobileNet_V2_Weights[name]


def imagenet_transform(weights, crop_size=None):
    """The preprocessing of the chosen weights, the default weights' (IMAGENET1K_V2: resize 232,
    crop 224) for a local file; no download. `crop_size`: a crop of that side instead, resized
    first in the weights' own proportion (232/224), for a model of another input size."""
    _, named = resolve_weights(weights)
    preset = (named or MobileNet_V2_Weights[DEFAULT_IMAGENET_WEIGHTS]).transforms
    if crop_size is None:
        return preset()
    own = preset()
    return preset(crop_size=crop_size,
                  resize_size=round(crop_size * own.resize_size[0] / own.crop_size[0]))


def imagenet_train_transform(weights):
    """The usual ImageNet training augmentation, at the chosen weights' crop size and
    normalization (imagenet_transform): a random resized crop and a horizontal flip."""
    from torchvision import transforms
    preset = imagenet_transform(weights)
    return transforms.Compose([
        transforms.RandomResizedCrop(preset.crop_size[0]), transforms.RandomHorizontalFlip(),
        transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float),
        transforms.Normalize(preset.mean, preset.std)])


def load_imagenet_model(weights):
    """MobileNetV2 from a torchvision weights name (IMAGENET1K_V2, the default, or IMAGENET1K_V1),
    or from a local file.

    A local file is a MobileNetV2 state_dict, loaded with weights_only=True. A name is downloaded
    once into torch hub's cache.
    """
    path, named = resolve_weights(weights)
    if path is not None:
        return _load_weights_file(path)
    try:
        return mobilenet_v2(weights=named)
    except (urllib.error.URLError, OSError) as error:
        raise ConfigError(
            f"--weights={named.name}: cannot download it ({error}); offline, copy "
            f"{named.url.rsplit('/', 1)[-1]} into {torch.hub.get_dir()}/checkpoints/ "
            "or pass --weights=path/to/mobilenet_v2.pth") from None


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def digits_mobilenet_v2(width_mult=1.0, stages=len(MOBILENET_V2_STAGES)):
    """torchvision's mobilenet_v2(num_classes=10), with only its first `stages` stages if fewer than 7.

    Three stages still hold every structure of the full model (an expansion-1 block, blocks with
    and without a residual Add, two Adds in a row) in 19 convs instead of 52.
    """
    setting = None if stages == len(MOBILENET_V2_STAGES) else MOBILENET_V2_STAGES[:stages]
    return mobilenet_v2(num_classes=10, width_mult=width_mult, inverted_residual_setting=setting)


def train_digits_model(train_set, width_mult, epochs, seed=0, batch_size=64,
                       stages=len(MOBILENET_V2_STAGES)):
    """Train the digits MobileNetV2 from scratch (AdamW + OneCycle)."""
    torch.manual_seed(seed)
    model = digits_mobilenet_v2(width_mult, stages)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, total_steps=epochs * len(loader))
    criterion = nn.CrossEntropyLoss()
    model.train()
    for _ in tqdm(range(epochs), desc="training the digits model (first run only)"):
        for images, labels in loader:
            optimizer.zero_grad()
            criterion(model(images), labels).backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


def load_digits_model(train_set, cache_dir, width_mult=1.0, epochs=15,
                      stages=len(MOBILENET_V2_STAGES), seed=0):
    """The digits MobileNetV2, trained on first use and cached in `cache_dir`.

    The cache is trusted only if its checksum and configuration match; otherwise it is rebuilt.
    """
    config = {"arch": "mobilenet_v2", "num_classes": 10, "width_mult": width_mult,
              "epochs": epochs, "stages": stages, "seed": seed, "train_size": len(train_set)}
    path = Path(cache_dir) / f"digits_mobilenet_v2_w{width_mult}_e{epochs}_s{stages}_seed{seed}.pt"
    checksum = path.with_suffix(".sha256")
    model = digits_mobilenet_v2(width_mult, stages)
    if path.exists():
        try:
            if not checksum.exists() or checksum.read_text().strip() != _sha256(path):
                raise ValueError("checksum mismatch")
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached["config"] != config:
                raise ValueError(f"configuration {cached['config']} differs")
            model.load_state_dict(cached["state_dict"])
            return model.eval()
        except Exception as error:  # any unreadable cache is retrained, but says why
            print(f"cached digits model {path} is unusable ({_one_line(error)}); training it again")
    model = train_digits_model(train_set, width_mult, epochs, seed, stages=stages)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"config": config, "state_dict": model.state_dict()}, tmp)
        with atomic_path(checksum) as tmp_sum:
            tmp_sum.write_text(_sha256(tmp) + "\n")
    return model
