"""The benchmark's ImageNet time table: a row holds every stage of a 224x224 run of the demo, each
stage is fitted against what it grows with, and the seed's run is estimated from those fits."""
import pytest

from bench.imagenet_times import (
    AGREEMENT, CALIB_STAGES, FIXED_STAGES, VAL_STAGES, fit, generated_imagenet, seed_run_minutes,
    stage_fits, stage_row, time_table)


def test_fit_is_the_line_through_the_median_seconds_at_the_smallest_and_largest_size():
    fixed, per_image = fit([(16, 10.0), (16, 12.0), (16, 30.0), (64, 20.0)])  # median at 16: 12
    assert per_image == pytest.approx(8.0 / 48)
    assert fixed == pytest.approx(12.0 - 16 * 8.0 / 48)


def _row(calib_size, val_size, **seconds):
    return {"calib_size": str(calib_size), "val_size": str(val_size),
            "agreement_images": str(min(val_size, 500)),
            **{f"s_{name.replace('_', ' ') if name != 'bias_corr' else name}": str(value)
               for name, value in seconds.items()}}


def test_each_stage_grows_with_its_own_size_and_the_seed_run_adds_them_up():
    rows = [_row(16, 64, export=5.0, calibration=2.0, float_scoring=3.0, bias_corr=4.0),
            _row(64, 64, export=7.0, calibration=8.0, float_scoring=3.0, bias_corr=10.0),
            _row(16, 512, export=6.0, calibration=2.0, float_scoring=17.0)]
    rows[0][f"s_{AGREEMENT}"], rows[2][f"s_{AGREEMENT}"] = "6.4", "50.0"
    fits = stage_fits(rows)
    assert fits["export"][4] == 6.0  # no size: the median of its runs
    assert fits["calibration"][3] == pytest.approx(6.0 / 48)  # 2 s more per 48 images... times 3
    assert fits["calibration"][4] == pytest.approx(2.0 + 6.0 / 48 * (1000 - 16))
    assert fits["float scoring"][4] == pytest.approx(3.0 + 14.0 / 448 * (50000 - 64))
    assert fits[AGREEMENT][4] == pytest.approx(50.0)  # 500 images: the sample's size
    minutes, passes = seed_run_minutes(rows)
    base = sum(fits[name][4] for name in ("export", "calibration", "float scoring", AGREEMENT))
    assert minutes == pytest.approx(base / 60)
    assert list(passes) == ["bias_corr"] and passes["bias_corr"] == pytest.approx(fits["bias_corr"][4] / 60)


def test_a_time_row_holds_every_stage_of_a_224x224_run(imagenet_run):
    key = {"run": "none", "calib_size": "4", "val_size": "8"}  # the run's sizes
    row = {**key, **stage_row(imagenet_run[0])}
    stages = [*FIXED_STAGES, "calibration", "bias_corr", *VAL_STAGES, AGREEMENT]
    assert all(float(row[f"s_{stage}"]) > 0 for stage in stages), row
    assert float(row["s_bias_corr"]) > 0  # the run's one PTQ pass
    assert not any(f"s_{stage}" in row for stage in CALIB_STAGES if stage not in ("calibration", "bias_corr"))
    assert row["agreement_images"] == "2" and row["check_images"] == "1" and row["workers"] == "0"
    # The parts of the float and the quantized evaluation add up to those stages.
    for whole, parts in (("float evaluation", ("float export", "float scoring")),
                         ("quantized evaluation", ("QCDQ export", "quantized scoring", AGREEMENT))):
        assert sum(float(row[f"s_{part}"]) for part in parts) == pytest.approx(
            float(row[f"s_{whole}"]), abs=0.025), whole  # each rounded to 0.01 s in the row
    header, cells = time_table([row])
    assert [cell[0] for cell in cells] == stages


def test_the_generated_folder_holds_photo_sized_jpegs_and_a_weights_file(tmp_path):
    from PIL import Image
    data_dir, weights = generated_imagenet(tmp_path, 12, 3)
    train, val = sorted((data_dir / "train").rglob("*.JPEG")), sorted((data_dir / "val").rglob("*.JPEG"))
    assert len(train) >= 12 and len(val) >= 3
    assert Image.open(train[0]).size == (500, 375)
    assert 50_000 < train[0].stat().st_size < 250_000  # about ImageNet's average (~110 KB)
    assert weights.is_file()
