"""Small ImageNet-layout folders of generated JPEGs, for the tests and the benchmark's time table
(no ImageNet can be downloaded where this project is tested)."""
from pathlib import Path

import numpy as np


def make_imagenet_folder(root, train_wnids, val_wnids, per_class=2, size=(48, 48), seed=0):
    """An ImageNet-layout folder of generated JPEGs: train/<wnid>/*.JPEG and val/<wnid>/*.JPEG.

    The images are smooth random colour fields with noise, so that they compress like photos.
    size is (width, height).
    """
    from PIL import Image
    rng = np.random.default_rng(seed)
    width, height = size
    for split, wnids in (("train", train_wnids), ("val", val_wnids)):
        for wnid in wnids:
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True)
            for index in range(per_class):
                coarse = rng.integers(0, 256, (max(1, height // 4), max(1, width // 4), 3), np.uint8)
                pixels = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))
                pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{wnid}_{index}.JPEG", quality=90)
    return Path(root)


def make_photo_folder(root, wnids, per_class=4, size=(256, 256), seed=0):
    """An ImageNet-layout folder of real photos: crops of scikit-learn's two sample photos
    (china.jpg, flower.jpg) at seeded positions and zooms, mirrored at random, saved as JPEGs.

    Numbers that depend on natural image statistics (activation ranges, near-ties between
    logits) need photos: noise gives a network's activations another shape.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_images
    photos = [Image.fromarray(photo) for photo in load_sample_images().images]
    rng = np.random.default_rng(seed)
    width, height = size
    for split in ("train", "val"):
        for wnid in wnids:
            folder = Path(root) / split / wnid
            folder.mkdir(parents=True)
            for index in range(per_class):
                photo = photos[rng.integers(len(photos))]
                side = int(rng.integers(160, min(photo.size) + 1))
                left = int(rng.integers(0, photo.size[0] - side + 1))
                top = int(rng.integers(0, photo.size[1] - side + 1))
                crop = photo.crop((left, top, left + side, top + side)).resize(size, Image.BICUBIC)
                if rng.random() < 0.5:
                    crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
                crop.save(folder / f"{wnid}_{index}.JPEG", quality=95)
    return Path(root)
