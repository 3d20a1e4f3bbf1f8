"""The benchmark's QAT time section: what one epoch of quantization-aware training costs at
ImageNet's 224x224, per device, so that docs/qat.md can say what a full ImageNet run costs.

Each row is one demo run in ImageNet mode on the ImageNet-shaped model and its photo folder
(bench/imagenet_shaped.py: 16 training photos) with `--qat_epochs=` the row's epochs and no PTQ
(PTQ does not change what a training step costs): the median seconds of its epochs after the
first (which warms up), and the training images per second that gives, with the model's float
forward and the quantized model's forward and backward per image. Accuracy is not measured.
bench/sections.py registers `qat_time_section` and `qat_time_text`.
"""
import platform
import tempfile
from functools import partial
from pathlib import Path
from statistics import median

import torch

import finn_mobilenetv2 as demo
from bench.grid import BIT_SETTINGS
from bench.report import code_line, markdown_table
from bench.rows import model_hash, resumable
from bench.section_code import code_hash
from finn_demo.run import qat_train_set

CODE = __spec__.name  # this module, also under -m: its imports make its code (bench/section_code.py)
BITS = "W3A3"  # the bit widths trained (3-bit steps cost what 4- and 8-bit ones do: fake quantization)
IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k's train/


def qat_time_section(context):
    """(rows, failures): one row per device of --qat_time_devices."""
    args = context.args
    if not args["qat_time_devices"]:
        return [], []
    from bench.imagenet_shaped import load_model, make_folder, make_weights
    with tempfile.TemporaryDirectory() as folder:
        data = make_folder(folder)
        weights = make_weights(Path(folder) / "mobilenet_v2.pth", data)
        model = model_hash(load_model(weights))
        keys = [{"device": device, "bits": BITS, "epochs": str(args["qat_time_epochs"]),
                 "batch_size": str(demo.FLAGS["batch_size"]), "model": model}
                for device in args["qat_time_devices"]]
        return resumable(context.path, keys, partial(time_row, data=data, weights=weights),
                         "QAT at 224x224", code_hash(CODE))


def time_row(key, data, weights):
    """One QAT run for `key`: its epochs' median seconds and training images/s, as strings."""
    with tempfile.TemporaryDirectory() as folder:
        result = demo.main(demo.make_args([
            f"--data_dir={data}", f"--weights={weights}", f"--output={Path(folder) / 'model.onnx'}",
            "--calib_size=16", "--val_size=16", f"--batch_size={key['batch_size']}", "--workers=0",
            "--check_export=False", f"--device={key['device']}", "--eval_backend=brevitas",
            *BIT_SETTINGS[key["bits"]], f"--qat_epochs={key['epochs']}",
            f"--qat_checkpoint={Path(folder) / 'model.qat.pt'}"]))
    images = len(qat_train_set(result.args))
    seconds = median(epoch["seconds"] for epoch in result.qat_history[2:])  # epochs >= 2 (bench/cli.py)
    return {"train_images": str(images), "s_epoch": f"{seconds:.2f}",
            "images_per_s": f"{images / seconds:.2f}", "threads": str(torch.get_num_threads()),
            "processor": device_name(key["device"])}


def device_name(device):
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return platform.processor() or platform.machine()


def imagenet_epoch_hours(row):
    """Hours of one epoch over ImageNet's train/ at the row's training images/s."""
    return IMAGENET_TRAIN_IMAGES / float(row["images_per_s"]) / 3600


def qat_time_text(rows):
    cells = [[row["device"], row["processor"], row["threads"], row["bits"], row["batch_size"],
              row["train_images"], row["s_epoch"], row["images_per_s"],
              f"{imagenet_epoch_hours(row):.1f}"] for row in rows]
    return [
        "## QAT at 224x224: time per training image", "",
        "Each row: one demo run on the ImageNet-shaped model (bench/imagenet_shaped.py) and its "
        "photo folder with QAT on and no PTQ, timing each epoch over the folder's training "
        "photos (a forward of the float model, a forward and backward of the fake-quantized "
        "one, per image, with the usual augmentation); *s per epoch*: the median over the "
        "epochs after the first. *ImageNet epoch*: ImageNet's "
        f"{IMAGENET_TRAIN_IMAGES} training images at that rate, the held-out pass aside.", "",
        markdown_table(["device", "processor", "threads", "bits", "batch", "training images",
                        "s per epoch", "training images/s", "ImageNet epoch (hours)"], cells), "",
        *code_line(rows, CODE)]
