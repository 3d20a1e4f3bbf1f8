"""Data: the embedded digits set, ImageNet folders with canonical labels, calibration folders,
where ImageNet mode calibrates, seeded subsets, batches."""
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import UnidentifiedImageError
from torch.utils.data import DataLoader, Subset, TensorDataset
from torch.utils.data.dataloader import default_collate
from torchvision.datasets import ImageFolder
from tqdm import tqdm

from finn_demo.common.configurator import ConfigError

DIGITS_IMAGE_SIZE = 32  # MobileNetV2 downsamples 32x; 32x32 leaves a 1x1 map before the classifier
DIGITS_TEST_SIZE = 497  # of 1797 images; a fixed split so cached models and figures stay comparable
DIGITS_SPLIT_SEED = 0
IMAGENET_WNIDS = (Path(__file__).parent / "imagenet_wnids.txt").read_text().split()
WNID_INDEX = {wnid: index for index, wnid in enumerate(IMAGENET_WNIDS)}


def digits_datasets():
    """scikit-learn's 1797 handwritten digits as normalized 3x32x32 tensors: (train, test)."""
    from sklearn.datasets import load_digits  # ships its data inside the package: works offline
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=DIGITS_IMAGE_SIZE, mode="bilinear", align_corners=False)
    images = ((images - 0.5) / 0.5).expand(-1, 3, -1, -1).contiguous()
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    test, train = order[:DIGITS_TEST_SIZE], order[DIGITS_TEST_SIZE:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


class SkippingImageFolder(ImageFolder):
    """ImageFolder that skips an image it cannot decode, with a warning naming it (None in its place)."""

    def __getitem__(self, index):
        try:
            return super().__getitem__(index)
        except (OSError, UnidentifiedImageError) as error:
            warnings.warn(f"skipping {self.samples[index][0]}: cannot decode image ({error})")
            return None


class ImageNetFolder(SkippingImageFolder):
    """ImageFolder whose labels are the canonical ImageNet indices of the wnid folders.

    A split holding only some classes is still labelled right; an image that cannot be decoded
    is skipped with a warning naming it.
    """

    def find_classes(self, directory):
        classes = sorted(entry.name for entry in os.scandir(directory) if entry.is_dir())
        if not classes:  # torchvision would go on to a ValueError about class_to_idx
            raise ConfigError(f"data_dir: {directory} has no class folders; expected <wnid>/*.JPEG")
        unknown = [name for name in classes if name not in WNID_INDEX]
        if unknown:
            raise ConfigError(
                f"data_dir: {directory} has class folders that are not ImageNet wnids "
                f"({', '.join(unknown[:3])}); name them like n01440764")
        return classes, {name: WNID_INDEX[name] for name in classes}


class ImageFiles(SkippingImageFolder):
    """Every image file under a folder, at any depth (flat, or in class folders), all labelled 0:
    for calibration and checks, which need no labels, so `<wnid>/*.JPEG` and a flat folder of
    images read alike."""

    def find_classes(self, directory):
        return [""], {"": 0}  # one class, the folder itself: torchvision walks it to any depth


def imagenet_split(data_dir, split, transform):
    """One split ("train" or "val") of an ImageNet-layout folder; lists only that split's files."""
    root = Path(data_dir)
    if not root.is_dir():
        raise ConfigError(f"data_dir: {root} does not exist; pass --data_dir=PATH/TO/IMAGENET")
    if not (root / split).is_dir():
        raise ConfigError(f"data_dir: {root} has no {split}/ folder; expected {split}/<wnid>/*.JPEG")
    try:
        return ImageNetFolder(root / split, transform=transform)
    except FileNotFoundError as error:  # ImageFolder's message for an empty split
        raise ConfigError(f"data_dir: {root / split} holds no images ({error})") from None


def image_files(folder, transform):
    """ImageFiles of `folder`; ConfigError (naming the folder, for the caller to name its flag)
    when it is no folder or holds no image."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    try:
        return ImageFiles(root, transform=transform)
    except FileNotFoundError:  # torchvision's message when no file has an image extension
        raise ConfigError(f"{root} holds no images (.JPEG, .jpg, .png, ...)") from None


def images_to_check(folder, transform):
    """image_files of `folder`, or of its val/ only where it has one (an ImageNet-layout folder:
    listing train/, 1.28M files, takes minutes): what a check that needs no labels runs on."""
    root = Path(folder)
    return image_files(root / "val" if (root / "val").is_dir() else root, transform)


def imagenet_datasets(data_dir, transform):
    """The train/ and val/ splits of an ImageNet-layout folder, as (train, val)."""
    return tuple(imagenet_split(data_dir, split, transform) for split in ("train", "val"))


def calibration_folder(calib_dir, transform):
    """The images of --calib_dir (`<wnid>/*.JPEG` or a flat folder), unlabelled."""
    try:
        return image_files(calib_dir, transform)
    except ConfigError as error:
        raise ConfigError(f"calib_dir: {error}; pass --calib_dir=FOLDER of images or of <wnid>/ "
                          "folders, or drop it to calibrate from data_dir") from None


def calibrates_on_val(data_dir, calib_dir):
    """Whether ImageNet mode calibrates on val/ itself: no --calib_dir and no train/ in data_dir."""
    return not calib_dir and not (Path(data_dir) / "train").is_dir()


def split_off_calibration(val_set, calib_size, seed):
    """(a seeded subset of calib_size images to calibrate on, the rest of val_set to validate on):
    disjoint, so that the accuracy is not measured on images the ranges were fitted to."""
    if calib_size >= len(val_set):
        raise ConfigError(f"--calib_size={calib_size}: val/ holds {len(val_set)} images, so none would "
                          "be left for validation; lower --calib_size, or add train/ or --calib_dir")
    order = torch.randperm(len(val_set), generator=torch.Generator().manual_seed(seed)).tolist()
    return Subset(val_set, order[:calib_size]), Subset(val_set, order[calib_size:])


def imagenet_calib_and_val(data_dir, calib_dir, transform, calib_size, seed):
    """ImageNet mode's (calibration set of at most calib_size images, validation set).

    Calibration comes from calib_dir when given, else from data_dir's train/ when it exists,
    else from a seeded part of val/ that the validation set then leaves out.
    """
    val_set = imagenet_split(data_dir, "val", transform)
    if calibrates_on_val(data_dir, calib_dir):
        return split_off_calibration(val_set, calib_size, seed)
    calib_set = (calibration_folder(calib_dir, transform) if calib_dir
                 else imagenet_split(data_dir, "train", transform))
    return random_subset(calib_set, calib_size, seed), val_set


def random_subset(dataset, size, seed):
    """A seeded random subset of at most `size` items, in shuffled order.

    Shuffled even when it holds the whole set: an ImageFolder lists its images class by class,
    and the first images of a subset (the export checks', the agreement's) must not all come
    from the first classes.
    """
    indices = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    return Subset(dataset, indices.tolist())


def first_images(loader, count):
    """The first `count` images `loader` yields, gathered across batches (fewer if it holds fewer)."""
    gathered, total = [], 0
    for batch in loader:
        if batch is not None:  # a batch of undecodable images only
            gathered.append(batch[0][:count - total])
            total += len(gathered[-1])
        if total >= count:
            break
    return torch.cat(gathered)


def _collate_decodable(samples):
    samples = [sample for sample in samples if sample is not None]
    return default_collate(samples) if samples else None


def make_loader(dataset, batch_size, workers=0, shuffle=False, seed=0):
    """A DataLoader that drops undecodable images (ImageNetFolder gives None for them)."""
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers,
        collate_fn=_collate_decodable, generator=torch.Generator().manual_seed(seed))


def batches(loader, device, desc):
    """Iterate (images, labels) on `device` with a progress bar, skipping batches left empty."""
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        if batch is not None:
            yield batch[0].to(device), batch[1].to(device)
