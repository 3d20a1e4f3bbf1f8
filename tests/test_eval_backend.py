"""The quantized evaluation's backends: onnxruntime on the QCDQ export (the CPU default) measures
what the Brevitas model measures."""
from types import SimpleNamespace

from finn_demo.evaluate import evaluate
from finn_demo.fast_eval import evaluate_quantized
import finn_mobilenetv2 as demo


def test_onnxruntime_measures_the_brevitas_models_top1(w8a8):
    fast = evaluate_quantized(w8a8.model, w8a8.val_loader, "onnxruntime", sample=1000)
    brevitas_top1, _, scored = evaluate(w8a8.model, w8a8.val_loader)
    assert fast.scored == scored == len(w8a8.val_loader.dataset)
    assert fast.agreement_images == scored
    assert fast.agreement >= 99.5
    # Each image that disagrees moves top-1 by at most one image's share.
    assert abs(fast.top1 - brevitas_top1) <= 100.0 - fast.agreement + 1e-9
    assert "onnxruntime" in fast.backend


def test_the_agreement_sample_is_the_first_images_only(w8a8):
    fast = evaluate_quantized(w8a8.model, w8a8.val_loader, "onnxruntime", sample=70)
    assert fast.agreement_images == 70 and fast.scored == len(w8a8.val_loader.dataset)


def test_auto_picks_onnxruntime_for_imagenet_on_cpu_and_brevitas_otherwise():
    def backend(flag, device, data_dir):
        return demo.resolve_backend(SimpleNamespace(eval_backend=flag, device=device, data_dir=data_dir))
    assert backend("auto", "cpu", "/data/imagenet") == "onnxruntime"
    assert backend("auto", "cuda:0", "/data/imagenet") == "brevitas"
    assert backend("auto", "cpu", "") == "brevitas"  # the digits
    assert backend("onnxruntime", "cpu", "") == "onnxruntime"
    assert backend("brevitas", "cpu", "/data/imagenet") == "brevitas"
