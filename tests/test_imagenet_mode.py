"""ImageNet mode on small generated folders: canonical labels, seeded subsets, local weights."""
from pathlib import Path

import onnx
import pytest
import torch

from finn_demo.testing.imagenet_folder import make_imagenet_folder
from finn_demo.data.datasets import ImageNetFolder, random_subset
from finn_demo.data.models import imagenet_transform

TENCH, GOLDFISH, TABBY = "n01440764", "n01443537", "n02123045"


def test_val_with_only_some_classes_is_labelled_with_canonical_indices(tmp_path):
    root = make_imagenet_folder(tmp_path, [TENCH, GOLDFISH, TABBY], [GOLDFISH, TABBY])
    val = ImageNetFolder(root / "val")
    assert sorted(set(val.targets)) == [1, 281]
    assert [target for _, target in val.samples] == [1, 1, 281, 281]


def test_subsets_are_seeded_and_sized(tmp_path):
    root = make_imagenet_folder(tmp_path, [TENCH, GOLDFISH, TABBY], [TABBY], per_class=4)
    train = ImageNetFolder(root / "train")
    first, again, other = (random_subset(train, 5, seed) for seed in (0, 0, 1))
    assert len(first) == 5
    assert first.indices == again.indices
    assert first.indices != other.indices
    assert sorted(random_subset(train, 100, 0).indices) == list(range(len(train)))  # all of it


def test_a_subset_of_the_whole_split_is_shuffled_not_in_class_order(tmp_path):
    root = make_imagenet_folder(tmp_path, [], [TENCH, GOLDFISH, TABBY], per_class=4)
    val = ImageNetFolder(root / "val")  # listed class by class
    subset = random_subset(val, len(val), seed=0)
    assert sorted(subset.indices) == list(range(len(val)))
    assert subset.indices == random_subset(val, 50000, seed=0).indices  # seeded
    first_labels = {val.targets[index] for index in subset.indices[:4]}
    assert len(first_labels) > 1, "the first images must not all come from the first class"


def test_imagenet_mode_runs_to_an_export_with_local_weights(imagenet_run):
    result, printed, warned, output, _ = imagenet_run
    assert any("broken.JPEG" in message for message in warned)
    assert "on ImageNet, 4 of 5 validation images, 1 could not be decoded" in printed
    # ImageNet on a CPU: both top-1 are measured on exports in onnxruntime.
    assert "validation images, 1 could not be decoded, measured by onnxruntime (QCDQ export)" in printed
    assert "its top-1 agrees with the Brevitas model's on " in printed and " of 2 images" in printed
    graph = onnx.load(str(output))
    assert [dim.dim_value for dim in graph.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 224, 224]
    assert dict((p.key, p.value) for p in graph.metadata_props)["dataset"].startswith("ImageNet")
    assert 0.0 <= result.quant_eval.top1 <= 100.0
    # The untrained weights' equal BatchNorm statistics reach the exporter as one constant and
    # 182 Identity nodes, which made qonnx's cleanup take minutes: the export folds them.
    assert not [node for node in graph.graph.node if node.op_type == "Identity"]
    # The checks ran on the 224x224 graph. Random weights give near-zero logits (about 1e-9),
    # where one output step is several % of the largest: only the structure must pass here.
    assert all(result.report[name].passed for name in
               ("weight_quant", "input_quant", "add_scales", "batchnorm")), str(result.report)
    assert result.report["equivalence"].figures["seconds"] > 0
    assert len(result.val_loader.dataset) == 5  # val/ has 5 files, fewer than val_size


def test_the_float_export_agrees_with_the_float_model_in_pytorch(imagenet_run):
    result, printed = imagenet_run[:2]
    assert result.float_eval.backend == "onnxruntime (ONNX export)"
    # The same float graph in onnxruntime: it must pick the same class on every checked image.
    assert result.float_eval.agreement == 100.0 and result.float_eval.agreement_images == 2
    float_line = printed.index("float model: top-1")
    assert printed.index("its top-1 agrees with the PyTorch float model's on 100.00% of 2 images",
                         float_line) < printed.index("quantized model: top-1")


def test_each_validation_image_is_decoded_once_for_both_models(imagenet_run):
    result, reads = imagenet_run[0], imagenet_run[4]
    val_reads = sorted(count for path, count in reads.items() if Path(path).parent.parent.name == "val")
    # One pass scores the float and the quantized model: the images after the first batch are
    # read once; the first batch's 2 also by the agreement check and the export checks.
    assert val_reads == [1, 1, 1, 3, 3], reads
    assert result.seconds["validation data"] > 0


def test_weights_transforms_follow_the_chosen_weights():
    assert imagenet_transform("IMAGENET1K_V2").resize_size == [232]
    assert imagenet_transform("IMAGENET1K_V1").resize_size == [256]


def test_undecodable_image_is_skipped_with_a_warning_naming_it(tmp_path):
    root = make_imagenet_folder(tmp_path, [TENCH], [TENCH])
    broken = root / "val" / TENCH / "broken.JPEG"
    broken.write_bytes(b"not a jpeg")
    val = ImageNetFolder(root / "val", transform=imagenet_transform(""))
    with pytest.warns(UserWarning, match="broken.JPEG"):
        samples = [val[index] for index in range(len(val))]
    assert sum(sample is None for sample in samples) == 1
    assert all(isinstance(sample[0], torch.Tensor) for sample in samples if sample is not None)
