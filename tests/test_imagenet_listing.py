"""ImageNetFolder lists its files faster than torchvision's make_dataset, and lists the same."""
import os

import pytest
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from finn_demo.configurator import ConfigError
from finn_demo.data import WNID_INDEX, ImageNetFolder, imagenet_split

FLAT = {  # names that sort, case and extension checks could get wrong
    "n01440764": ["b.JPEG", "a.jpg", "10.JPEG", "9.JPEG", "B.jpeg", "UPPER.JpEg", "c.png",
                  ".hidden.JPEG", ".jpg", ".DS_Store", "notes.txt", "x.jpeg.bak", "JPEG", "é.JPEG",
                  "n01440764_10026.JPEG", "tiff.TIFF", "w.webp"],
    "n01443537": ["n01443537_2.JPEG", "n01443537_10.JPEG", "n01443537_1.JPEG", "readme"],
}


def make_files(root, layout):
    for wnid, names in layout.items():
        (root / wnid).mkdir(parents=True, exist_ok=True)
        for name in names:
            (root / wnid / name).parent.mkdir(parents=True, exist_ok=True)
            (root / wnid / name).touch()
    return root


def torchvision_samples(root):
    classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
    return make_dataset(root, {name: WNID_INDEX[name] for name in classes}, IMG_EXTENSIONS)


def test_flat_class_folders_list_torchvisions_samples_without_walking(tmp_path, monkeypatch):
    root = make_files(tmp_path / "train", FLAT)
    expected = torchvision_samples(root)
    monkeypatch.setattr(os, "walk", lambda *args, **kwargs: pytest.fail("walked"))
    for directory in (root, str(root), str(root) + os.sep):
        assert ImageNetFolder(directory).samples == expected
    assert len(expected) == 16


def test_subfolders_and_linked_folders_list_torchvisions_samples(tmp_path):
    root = make_files(tmp_path / "train", {**FLAT, "n01484850": [
        "z.JPEG", "sub/a.JPEG", "sub-a/b.JPEG", "sub/deeper/c.JPEG", "sub/.hidden/d.jpg"]})
    (root / "n01484850" / "link").symlink_to(root / "n01443537", target_is_directory=True)
    expected = torchvision_samples(root)
    assert ImageNetFolder(root).samples == expected
    assert sum(label == WNID_INDEX["n01484850"] for _, label in expected) == 8


def test_a_class_without_images_gives_torchvisions_error(tmp_path):
    root = make_files(tmp_path / "train", {**FLAT, "n01484850": ["notes.txt"]})
    with pytest.raises(FileNotFoundError) as expected:
        torchvision_samples(root)
    with pytest.raises(FileNotFoundError) as error:
        ImageNetFolder(root)
    assert str(error.value) == str(expected.value)
    assert "n01484850" in str(error.value)


def test_a_split_without_class_folders_is_refused_naming_data_dir(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "n01440764_1.JPEG").touch()
    with pytest.raises(ConfigError, match="data_dir: .* has no class folders"):
        imagenet_split(tmp_path, "train", transform=None)
