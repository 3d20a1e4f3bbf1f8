"""Where ImageNet mode calibrates: --calib_dir (class folders or a flat folder of images), else
data_dir's train/, else a seeded part of val/ that validation leaves out."""
import pytest

import finn_mobilenetv2 as demo
from finn_demo.checks.file import run_images
from finn_demo.common.configurator import ConfigError
from finn_demo.data.datasets import first_images, imagenet_calib_and_val
from finn_demo.data.models import imagenet_transform
from finn_demo.validate import validate_args
from finn_demo.testing.imagenet_folder import make_imagenet_folder
from test_errors import assert_refused, output  # noqa: F401 (output is a fixture)

WNIDS = ["n01440764", "n01443537", "n02123045"]


def image_paths(dataset):
    """The files of a Subset of an ImageFolder, in the subset's order."""
    return [dataset.dataset.samples[index][0] for index in dataset.indices]


@pytest.fixture
def val_only(tmp_path):
    """An ImageNet-layout folder with val/ only: 3 classes of 4 images."""
    return make_imagenet_folder(tmp_path / "imagenet", [], WNIDS, per_class=4)


def test_val_only_calibrates_on_a_seeded_part_of_val_that_validation_leaves_out(val_only):
    calib, val = imagenet_calib_and_val(val_only, "", None, calib_size=4, seed=0)
    assert len(calib) == 4 and len(val) == 8
    assert not set(image_paths(calib)) & set(image_paths(val))
    assert sorted(image_paths(calib) + image_paths(val)) == sorted(map(str, val_only.rglob("*.JPEG")))
    again, other = (imagenet_calib_and_val(val_only, "", None, 4, seed)[0] for seed in (0, 1))
    assert image_paths(again) == image_paths(calib) and image_paths(other) != image_paths(calib)


def test_val_only_run_says_in_one_line_how_the_images_are_shared(val_only, imagenet_weights, capsys):
    args = demo.make_args([f"--data_dir={val_only}", f"--weights={imagenet_weights}",
                           "--calib_size=5", "--val_size=3", "--workers=0", "--device=cpu"])
    _, calib_loader, val_loader, name = demo.load_model_and_data(args)
    lines = [line for line in capsys.readouterr().out.splitlines() if "calibrate" in line]
    assert lines == ["no train/ and no --calib_dir: 5 images of val/ calibrate, the other 7 "
                     "remain for validation"]
    assert len(calib_loader.dataset) == 5 and len(val_loader.dataset) == 3  # val_size of the 7
    assert "val/ less its calibration images" in name


def test_the_export_check_takes_the_validation_images_the_val_only_run_scored(val_only, imagenet_weights):
    args = demo.make_args([f"--data_dir={val_only}", f"--weights={imagenet_weights}",
                           "--calib_size=4", "--val_size=6", "--batch_size=2", "--workers=0"])
    val_loader = demo.load_model_and_data(args)[2]
    metadata = {name: str(value) for name, value in vars(args).items()}  # as the export stores them
    assert (run_images(metadata, 3) == first_images(val_loader, 3)).all()


@pytest.mark.parametrize("layout", ["flat", "wnid folders"])
def test_calib_dir_calibrates_from_its_images_and_validation_keeps_all_of_val(tmp_path, layout):
    data = make_imagenet_folder(tmp_path / "imagenet", [], WNIDS[:1])
    calib_dir = make_imagenet_folder(tmp_path / "calib", [], WNIDS, per_class=2) / "val"
    if layout == "flat":
        for path in list(calib_dir.rglob("*.JPEG")):
            path.rename(calib_dir / path.name)
        for folder in WNIDS:
            (calib_dir / folder).rmdir()
    calib, val = imagenet_calib_and_val(data, calib_dir, imagenet_transform(""), 4, seed=0)
    assert len(calib) == 4 and len(val) == 2  # all of val/: nothing was taken from it
    assert all(path.startswith(str(calib_dir.resolve())) for path in image_paths(calib))
    assert calib[0][0].shape == (3, 224, 224)


def test_train_is_still_the_calibration_source_when_it_exists(tmp_path):
    data = make_imagenet_folder(tmp_path / "imagenet", WNIDS, WNIDS[:1])
    calib, val = imagenet_calib_and_val(data, "", None, 100, seed=0)
    assert len(calib) == 6 and len(val) == 2
    assert all("/train/" in path for path in image_paths(calib))


@pytest.mark.parametrize("problem, fragments", [
    ("missing", ["calib_dir", "is not a folder", "--calib_dir=FOLDER"]),
    ("empty", ["calib_dir", "holds no images"]),
])
def test_bad_calibration_folder_is_refused_in_one_line(
        capsys, output, val_only, imagenet_weights, problem, fragments):  # noqa: F811
    calib_dir = val_only.parent / problem
    if problem == "empty":
        calib_dir.mkdir()
    assert_refused(capsys, output, [f"--data_dir={val_only}", f"--weights={imagenet_weights}",
                                    f"--calib_dir={calib_dir}", "--workers=0"], *fragments)


# Checked on the flags or the split directly: with the check broken, these would run the demo.
@pytest.mark.parametrize("flags, fragments", [
    (["--calib_dir=calib"], ["--calib_dir=calib", "add --data_dir"]),  # the digits demo
    (["--data_dir=imagenet", "--calib_dir=imagenet/val/n01440764"],
     ["overlaps the validation images", "drop it"]),
    (["--data_dir=imagenet", "--calib_dir=imagenet"], ["overlaps the validation images"]),
])
def test_calib_dir_without_imagenet_or_on_the_validation_images_is_refused(flags, fragments):
    with pytest.raises(ConfigError) as error:
        validate_args(demo.make_args(flags))
    assert "\n" not in str(error.value)
    for fragment in fragments:
        assert fragment in str(error.value)


def test_calib_size_that_leaves_no_validation_image_is_refused(val_only):
    with pytest.raises(ConfigError, match=r"--calib_size=12: .* none would be left for validation"):
        imagenet_calib_and_val(val_only, "", None, calib_size=12, seed=0)
