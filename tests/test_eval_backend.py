"""The evaluation's backends: onnxruntime on the exports (the CPU default for ImageNet) measures
what PyTorch measures, the float model and the Brevitas model, scored in one pass."""
from types import SimpleNamespace

from finn_demo.data import first_images
from finn_demo.fast_eval import evaluate_models, fast_evaluate
import finn_mobilenetv2 as demo


def test_onnxruntime_measures_what_pytorch_measures(w8a8):
    # The session's runs use the brevitas backend: both top-1 there are PyTorch's.
    float_model = demo.load_model_and_data(w8a8.args)[0]
    example = first_images(w8a8.val_loader, 1)
    float_eval, quant, data_seconds = evaluate_models(
        float_model, w8a8.model, w8a8.val_loader, example, "onnxruntime", sample=1000)
    scored = len(w8a8.val_loader.dataset)
    assert float_eval.scored == quant.scored == w8a8.quant.scored == scored
    for result, eager_top1 in ((float_eval, w8a8.float_top1), (quant, w8a8.quant_top1)):
        assert result.agreement_images == scored
        assert result.agreement >= 99.5
        # Each image that disagrees moves top-1 by at most one image's share.
        assert abs(result.top1 - eager_top1) <= 100.0 - result.agreement + 1e-9
        assert result.export_seconds > 0 and result.forward_seconds > 0
    assert (float_eval.backend, quant.backend) == ("onnxruntime (ONNX export)", "onnxruntime (QCDQ export)")
    assert quant.agreement_seconds > 0 and data_seconds >= 0


def test_pytorch_scores_both_models_in_the_demos_run(w8a8):
    assert (w8a8.float_eval.backend, w8a8.quant.backend) == ("PyTorch (eager)", "Brevitas (PyTorch)")
    assert w8a8.float_eval.scored == w8a8.quant.scored == len(w8a8.val_loader.dataset)
    assert w8a8.float_agreement is None and w8a8.quant.agreement is None
    assert w8a8.float_images_per_s > 0 and w8a8.quant_images_per_s > 0
    assert set(w8a8.seconds) >= {"float evaluation", "quantized evaluation", "validation data"}


def test_the_agreement_sample_is_the_first_images_only(w8a8):
    fast = fast_evaluate(w8a8.model, w8a8.val_loader, sample=70)
    assert fast.agreement_images == 70 and fast.scored == len(w8a8.val_loader.dataset)


def test_auto_picks_onnxruntime_for_imagenet_on_cpu_and_brevitas_otherwise():
    def backend(flag, device, data_dir):
        return demo.resolve_backend(SimpleNamespace(eval_backend=flag, device=device, data_dir=data_dir))
    assert backend("auto", "cpu", "/data/imagenet") == "onnxruntime"
    assert backend("auto", "cuda:0", "/data/imagenet") == "brevitas"
    assert backend("auto", "cpu", "") == "brevitas"  # the digits
    assert backend("onnxruntime", "cpu", "") == "onnxruntime"
    assert backend("brevitas", "cpu", "/data/imagenet") == "brevitas"
