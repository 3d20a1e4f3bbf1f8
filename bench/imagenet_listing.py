"""The time of the demo's `load` stage listing ImageNet: train/ holds 1,281,167 files, of which
the demo picks 1000 calibration images.

    python -m bench.imagenet_listing                        # 65, 260 and 1281 files per class
    python -m bench.imagenet_listing --per_class=65,260 --tmp_dir=/data/scratch

It generates, in a temporary folder, train/ and val/ with ImageNet's 1000 wnid class folders,
`per_class` empty files in each train/ folder (named like ImageNet's n01440764_10026.JPEG;
listing opens none of them) and `val_per_class` in each val/ folder, then times the data
loading of `finn_mobilenetv2.load_model_and_data` without the model: `imagenet_datasets` and
`random_subset` of `calib_size` calibration and `val_size` validation images. Two listings
alternate, `repeats` times each: `demo`, data.py as it is (ImageNetFolder's own listing), and
`torchvision`, ImageNetFolder with torchvision's `make_dataset` (os.walk and a Python check per
file, what data.py used before); every run's samples and picked images must be the same.

The sizes are generated smallest first, each adding files to the same folders. The first run of
each listing after its size was generated (demo's, then torchvision's) is shown apart ("first");
the medians are over the runs after it. The OS's directory cache cannot be dropped without root: every timing is
with the folders' entries cached (just written), as on a machine that listed ImageNet recently;
a cold listing on a disk or a network file system adds its reads. A least-squares line through
the medians, seconds = fixed + per file x files (train and val files), gives the time for
ImageNet's 1,281,167 + 50,000 files.
"""
import gc
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import linear_regression, median
from unittest import mock

from torchvision.datasets import DatasetFolder

from finn_demo import data
from finn_demo.configurator import ConfigError, apply_overrides, flags_of

# ---------------------------------------------------------------------------------------- flags
per_class = "65,260,1281"  # train/ files per class folder, comma-separated; ImageNet's mean: 1281
val_per_class = 50  # val/ files per class folder: ImageNet's 50,000 validation images
calib_size = 1000  # calibration images picked from train/, as the demo's default
val_size = 50000  # validation images picked from val/, as the demo's default
seed = 0  # the subsets' seed
repeats = 3  # timed runs of each listing per size, after the first; the table shows medians
tmp_dir = ""  # where the folders are generated ("": the system's temp folder)
FLAGS = flags_of(globals())
# -----------------------------------------------------------------------------------------------

IMAGENET_FILES = 1_281_167 + 50_000  # train/ and val/


class TorchvisionListing(data.ImageNetFolder):
    """ImageNetFolder listing its files with torchvision's own make_dataset."""
    make_dataset = staticmethod(DatasetFolder.make_dataset)


LISTINGS = {"demo": data.ImageNetFolder, "torchvision": TorchvisionListing}


def make_args(argv=()):
    args = apply_overrides(FLAGS, argv)
    try:
        args["per_class"] = sorted({int(count) for count in str(args["per_class"]).split(",")})
    except ValueError:
        raise ConfigError(f"--per_class={args['per_class']}: expected counts like 65,260") from None
    if len(args["per_class"]) < 2 or args["per_class"][0] < 1:
        raise ConfigError("--per_class: the fit needs two or more counts of 1 or more")
    if args["repeats"] < 1:
        raise ConfigError(f"--repeats={args['repeats']}: must be 1 or more")
    return args


def add_files(root, split, count, start=0):
    """Add empty files to `split`/<wnid>/ until each class folder holds `count`; seconds taken."""
    begin = time.perf_counter()
    for class_index, wnid in enumerate(data.IMAGENET_WNIDS):
        folder = root / split / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(start, count):
            number = class_index * count + index + 1  # val/: unique across classes, as ImageNet's
            name = (f"{wnid}_{10000 + index}.JPEG" if split == "train"
                    else f"ILSVRC2012_val_{number:08d}.JPEG")
            open(folder / name, "xb").close()
    return time.perf_counter() - begin


def load(root, listing, args):
    """((wall seconds, CPU seconds), picked (path, label) of both subsets, files listed) of the
    demo's data loading with one listing: imagenet_datasets, then the two seeded subsets."""
    gc.collect()
    start, cpu_start = time.perf_counter(), time.process_time()
    with mock.patch.object(data, "ImageNetFolder", LISTINGS[listing]):
        train, val = data.imagenet_datasets(root, transform=None)
    calib_set = data.random_subset(train, args["calib_size"], args["seed"])
    val_set = data.random_subset(val, args["val_size"], args["seed"])
    seconds = time.perf_counter() - start, time.process_time() - cpu_start
    picked = ([train.samples[index] for index in calib_set.indices],
              [val.samples[index] for index in val_set.indices])
    return seconds, picked, len(train) + len(val)


def time_size(root, args):
    """({listing: [(wall s, CPU s) of each run]}, files) on the folder as it is now; the
    listings alternate, and every run must pick the same images from the same number of files."""
    runs = {listing: [] for listing in LISTINGS}
    reference = None
    for round_index in range(args["repeats"] + 1):
        order = list(LISTINGS) if round_index % 2 == 0 else list(reversed(LISTINGS))
        for listing in order:
            seconds, picked, files = load(root, listing, args)
            if reference is None:
                reference = (picked, files)
            if (picked, files) != reference:
                raise AssertionError(f"{listing} picked other images than {next(iter(LISTINGS))}")
            runs[listing].append(seconds)
    return runs, files


def fit(points):
    """(fixed seconds, seconds per file): least squares through (files, seconds)."""
    per_file, fixed = linear_regression(*zip(*points))
    return fixed, per_file


def medians(runs):
    """(median wall s, median CPU s) of the runs after the first."""
    return tuple(median(values) for values in zip(*runs[1:]))


def listing_text(rows, args, creation):
    lines = [
        "## Listing ImageNet: the demo's `load` stage without the model", "",
        f"{len(data.IMAGENET_WNIDS)} class folders in train/ and val/, {args['val_per_class']} val "
        f"files per class; subsets of {args['calib_size']} and {args['val_size']} images; "
        f"{os.cpu_count()} cores; folders in {args['tmp_dir'] or tempfile.gettempdir()}; entries "
        f"cached (generated just before). Generating them took {creation[0]:.0f} s for "
        f"{creation[1]:,} files ({creation[0] / creation[1] * 1e6:.0f} us per file).", "",
        "*first*: the run right after the size was generated; *median*: of the runs after it; "
        "*CPU*: this process's user + system time, less moved than wall time by other jobs on "
        "the machine.", "",
        "| train files per class | files listed | listing | first s | median s | median CPU s "
        "| runs s (wall) |",
        "|---|---|---|---|---|---|---|"]
    for count, files, listing, runs in rows:
        wall, cpu = medians(runs)
        lines.append(f"| {count} | {files:,} | {listing} | {runs[0][0]:.2f} | {wall:.2f} | "
                     f"{cpu:.2f} | {' '.join(f'{run[0]:.2f}' for run in runs[1:])} |")
    lines.append("")
    for clock, column in (("wall", 0), ("CPU", 1)):
        at_imagenet = {}
        for listing in LISTINGS:
            fixed, per_file = fit([(files, medians(runs)[column]) for _, files, name, runs in rows
                                   if name == listing])
            at_imagenet[listing] = fixed + per_file * IMAGENET_FILES
            lines.append(f"- {listing}, {clock}: seconds = {fixed:.2f} + {per_file * 1e6:.2f} us "
                         f"x files; at ImageNet's {IMAGENET_FILES:,}: {at_imagenet[listing]:.1f} s")
        lines.append(f"- {clock} speed-up at ImageNet's size: "
                     f"{at_imagenet['torchvision'] / at_imagenet['demo']:.1f}x")
    return lines


def main(args):
    rows, creation = [], [0.0, 0]
    with tempfile.TemporaryDirectory(dir=args["tmp_dir"] or None) as folder:
        root, done = Path(folder) / "imagenet", 0
        creation[0] += add_files(root, "val", args["val_per_class"])
        for count in args["per_class"]:
            creation[0] += add_files(root, "train", count, start=done)
            done = count
            creation[1] = (count + args["val_per_class"]) * len(data.IMAGENET_WNIDS)
            timings, files = time_size(root, args)
            for listing, runs in timings.items():
                rows.append((count, files, listing, runs))
                print(f"{count} per class, {listing}: first {runs[0][0]:.2f} s, median "
                      f"{medians(runs)[0]:.2f} s (CPU {medians(runs)[1]:.2f} s)", flush=True)
        print("removing the generated folders ...", flush=True)
    print("\n".join(listing_text(rows, args, creation)))
    return rows


if __name__ == "__main__":
    try:
        main(make_args(sys.argv[1:]))
    except ConfigError as error:
        sys.exit(f"error: {error}")
