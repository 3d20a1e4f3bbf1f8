"""The evaluation's backends: onnxruntime on the exports (the CPU default for ImageNet) measures
what PyTorch measures, the float model and the Brevitas model, scored in one pass."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from finn_demo.data.datasets import first_images
from finn_demo.evaluate import fidelity, predict_all
from finn_demo.fast_eval import evaluate_float_and_quantized, fast_evaluate
import finn_mobilenetv2 as demo
from finn_demo import run


def test_onnxruntime_measures_what_pytorch_measures(w8a8):
    # The session's runs use the brevitas backend: both top-1 there are PyTorch's.
    float_model = demo.load_model_and_data(w8a8.args)[0]
    example = first_images(w8a8.val_loader, 1)
    float_eval, quant, data_seconds = evaluate_float_and_quantized(
        float_model, w8a8.model, w8a8.val_loader, example, "onnxruntime", sample=1000)
    scored = len(w8a8.val_loader.dataset)
    assert float_eval.scored == quant.scored == w8a8.quant_eval.scored == scored
    for result, eager_top1 in ((float_eval, w8a8.float_eval.top1), (quant, w8a8.quant_eval.top1)):
        assert result.agreement_images == scored
        assert result.agreement >= 99.5
        # Each image that disagrees moves top-1 by at most one image's share.
        assert abs(result.top1 - eager_top1) <= 100.0 - result.agreement + 1e-9
        assert result.export_seconds > 0 and result.forward_seconds > 0
    assert (float_eval.backend, quant.backend) == ("onnxruntime (ONNX export)", "onnxruntime (QCDQ export)")
    assert quant.agreement_seconds > 0 and data_seconds >= 0
    # The exports' fidelity to each other is the PyTorch models' (float sums differ, not much).
    eager = w8a8.quant_eval.float_fidelity
    assert quant.float_fidelity.agreement == pytest.approx(eager.agreement, abs=1.0)
    assert quant.float_fidelity.sqnr_db == pytest.approx(eager.sqnr_db, abs=1.0)


def test_pytorch_scores_both_models_in_the_demos_run(w8a8):
    assert (w8a8.float_eval.backend, w8a8.quant_eval.backend) == ("PyTorch (eager)", "Brevitas (PyTorch)")
    assert w8a8.float_eval.scored == w8a8.quant_eval.scored == len(w8a8.val_loader.dataset)
    assert w8a8.float_eval.agreement is None and w8a8.quant_eval.agreement is None
    assert w8a8.float_eval.images_per_s > 0 and w8a8.quant_eval.images_per_s > 0
    assert set(w8a8.seconds) >= {"float evaluation", "quantized evaluation", "validation data"}


def test_the_agreement_sample_is_the_first_images_only(w8a8):
    fast = fast_evaluate(w8a8.model, w8a8.val_loader, sample=70)
    assert fast.agreement_images == 70 and fast.scored == len(w8a8.val_loader.dataset)


def test_auto_picks_onnxruntime_for_imagenet_on_cpu_and_brevitas_otherwise():
    def backend(flag, device, data_dir):
        return run.resolve_backend(SimpleNamespace(eval_backend=flag, device=device, data_dir=data_dir))
    assert backend("auto", "cpu", "/data/imagenet") == "onnxruntime"
    assert backend("auto", "cuda:0", "/data/imagenet") == "brevitas"
    assert backend("auto", "cpu", "") == "brevitas"  # the digits
    assert backend("onnxruntime", "cpu", "") == "onnxruntime"
    assert backend("brevitas", "cpu", "/data/imagenet") == "brevitas"


def test_fidelity_is_the_top1_agreement_and_logit_sqnr_against_the_reference():
    torch.manual_seed(0)
    images = torch.randn(40, 5)
    loader = DataLoader(TensorDataset(images, torch.zeros(40, dtype=torch.long)), batch_size=16)
    weight, scramble = torch.randn(5, 10), torch.randn(5, 10)
    def noise(x):  # a fixed function of each image, so its sum over the batches is known
        return 0.3 * torch.sin(7 * x @ scramble)
    forwards = {"float": lambda x: x @ weight, "same": lambda x: x @ weight,
                "noisy": lambda x: x @ weight + noise(x)}
    run = predict_all(forwards, loader, "cpu", "test", reference="float")
    reference, added = images @ weight, noise(images)
    expected_db = 10 * math.log10(reference.double().square().sum() / added.double().square().sum())
    noisy = fidelity(run, "noisy", "float")
    assert noisy.sqnr_db == pytest.approx(expected_db, abs=1e-6)
    same_class = ((reference + added).argmax(1) == reference.argmax(1)).double().mean().item()
    assert noisy.agreement == pytest.approx(100.0 * same_class)
    assert 0.0 < noisy.agreement < 100.0  # the noise flips some classes, not all
    assert fidelity(run, "same", "float").sqnr_db == math.inf
    assert fidelity(run, "same", "float").agreement == 100.0


def test_the_demo_reports_its_fidelity_to_the_float_model(w8a8):
    fidelity_ = w8a8.quant_eval.float_fidelity
    assert 95.0 <= fidelity_.agreement <= 100.0
    assert 10.0 < fidelity_.sqnr_db < math.inf
