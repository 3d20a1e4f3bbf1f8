"""Every check of one exported file (check_file), and the run's data its metadata names."""
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.cleanup import cleanup_model

from finn_demo import finn_install
from finn_demo.checks import layerwise
from finn_demo.checks.numbers import check_equivalence, check_finn
from finn_demo.checks.result import CheckResult, Report
from finn_demo.checks.structure import (
    batchnorm_layers, check_add_scales, check_batchnorm, check_input_quant, check_weight_quant)
from finn_demo.common.configurator import ConfigError
from finn_demo.data.datasets import (
    calibrates_on_val, digits_datasets, first_images, images_to_check, imagenet_split, make_loader,
    random_subset, split_off_calibration)
from finn_demo.data.models import imagenet_transform

# The FINN check runs on at least this many images: a fault inside FINN's graph shows on most
# images, and the layer-by-layer rule judges every element of every image.
FINN_IMAGES = 8  # the command line's default


def format_metadata(metadata):
    """The file's metadata_props as printable lines."""
    return "\n".join(["metadata:", *(f"  {key} = {value}" for key, value in metadata.items())])


def metadata_of(model):
    """The file's metadata_props (the demo writes the run's flags and accuracies there)."""
    return {prop.key: prop.value for prop in model.model.metadata_props}


def run_images(metadata, count):
    """The first `count` validation images of the run that wrote the file, or None if unrecorded.

    The demo's metadata names its data: data_dir "" is the embedded digits set, else an ImageNet
    folder; seed and val_size pick the same validation subset the run evaluated (after leaving
    out its calibration images, where the run calibrated on val/).
    """
    if "data_dir" not in metadata:
        return None
    seed = int(metadata.get("seed", 0))
    if metadata["data_dir"]:  # val/ only: listing train/ (1.28M files) takes minutes
        val_set = imagenet_split(metadata["data_dir"], "val",
                                 imagenet_transform(metadata.get("weights", "")))
        # An export without calib_dir predates it, when ImageNet mode calibrated on train/ only.
        if "calib_dir" in metadata and calibrates_on_val(metadata["data_dir"], metadata["calib_dir"]):
            val_set = split_off_calibration(val_set, int(metadata["calib_size"]), seed)[1]
    else:
        _, val_set = digits_datasets()
    val_set = random_subset(val_set, int(metadata.get("val_size", len(val_set))), seed)
    return first_images(make_loader(val_set, count), count)  # the loader drops undecodable ones


def folder_images(folder, count, shape):
    """`count` images from every image under `folder` (data.datasets.images_to_check: flat, class
    folders, or an ImageNet layout's val/), a seeded choice across them, for a model input of
    `shape` (N, 3, S, S): torchvision's preprocessing of MobileNetV2's ImageNet weights with an
    S x S crop (resize in their proportion, center crop, ImageNet mean and std)."""
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise ConfigError(f"images come as 3 x S x S, the model takes {shape[1:]}; a folder of "
                          "images cannot feed it")
    images = images_to_check(folder, imagenet_transform("", crop_size=shape[2]))
    return first_images(make_loader(random_subset(images, count, seed=0), count), count)


def check_inputs(model, count, folder=""):
    """(`count` inputs the checks of `model` (a ModelWrapper) run on, a line saying what they
    are), for checks that need no labels: images from `folder` if given, else the validation
    images of the run the metadata names, else seeded inputs on the input quantizer's grid
    (layerwise.grid_inputs), a file exported elsewhere or by another tool. ConfigError when
    none of them can be had."""
    shape = model.get_tensor_shape(model.graph.input[0].name)
    if folder:
        images = folder_images(folder, count, shape)
        return images, f"{len(images)} images from {folder}"
    try:
        images, why = run_images(metadata_of(model), count), "its metadata names no data set"
    except ConfigError as error:  # the run's data set is on another machine
        images, why = None, f"its metadata's data set is not here ({error})"
    if images is not None:
        return images, f"{len(images)} validation images of the run that exported it"
    images = layerwise.grid_inputs(model, count)
    if images is None:
        raise ConfigError("the graph input feeds no Quant: no input grid to draw inputs from; "
                          "give a folder of images")
    return images, f"{count} seeded random inputs on the input quantizer's grid: {why}"


def check_file(onnx_path, images=None, brevitas_model=None, finn=True, num_images=FINN_IMAGES):
    """Run every check on the QONNX file at `onnx_path` and return a Report.

    images: a (N, C, H, W) tensor of real inputs, preprocessed like the model's; None takes the
    first `num_images` validation images of the run recorded in the file's metadata.
    brevitas_model: the model that was exported; without it the equivalence check is skipped.
    finn: False skips FINN's frontend (about two minutes on MobileNetV2).
    """
    model = ModelWrapper(str(onnx_path))
    metadata = metadata_of(model)
    expected_batchnorms = batchnorm_layers(brevitas_model) if brevitas_model is not None else None
    checks = [check_weight_quant(model), check_input_quant(model), check_add_scales(model),
              check_batchnorm(model, expected_batchnorms)]
    needs_images = brevitas_model is not None or (finn and finn_install.finn_available())
    if images is None and needs_images:
        images = run_images(metadata, num_images)
    checks.append(check_equivalence(model, images, brevitas_model))
    checks.append(check_finn(cleanup_model(model), images) if finn else
                  CheckResult("finn", "skipped", "skipped: turned off; `python check_export.py "
                              f"{onnx_path}` runs it (about 2 minutes)"))
    return Report(str(onnx_path), {check.name: check for check in checks}, metadata)


def check_run_export(path, model, val_loader, check_images, check_finn, stage):
    """The demo's export checks: check_file on its first validation images, printed."""
    with stage("export checks"):
        count = max(check_images, FINN_IMAGES) if check_finn else check_images
        images = first_images(val_loader, count)  # across batches: count may exceed batch_size
        report = check_file(path, images, brevitas_model=model, finn=check_finn)
    print(format_metadata(report.metadata))
    print(report)
    return report
