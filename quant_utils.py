"""Quantize MobileNetV2 for FINN with Brevitas, and recover accuracy with Brevitas' PTQ passes.

The public API users import (`import quant_utils as qu`); the code lives in finn_demo/quant/
(maps.py: the FINN layer maps and the quantization nodes; ptq.py: the passes and their order).
`quantize_and_recover` runs the whole flow (the demo, the benchmark and the tests all call it):
it quantizes, then runs the passes its keyword arguments (PTQ_FLAGS) turn on, in the order of
the table PTQ_PASSES: act_eq on the float graph, calibration, gptq / gpfq / qronos /
learned_round, bn_corr, range_refit, learned_act_range, bias_corr. Where PTQ runs out,
`apply_qat` (finn_demo/quant/qat.py) trains the result end to end against the float model.

    model = quantize_and_recover(float_model, calib_loader, example, bit_width_maps(4),
                                 gpfq=True, bn_corr=True, bias_corr=True)

and each step stays one function that can be used on its own:

    model = preprocess_for_finn_quantize(float_model, example_images)
    model = quantize_finn(model, **default_quantize_maps_finn())
    calibrate(calib_loader, model)
    apply_bias_correction(calib_loader, model)
"""
from finn_demo.quant.maps import (
    bit_width_maps, default_quantize_maps_finn, preprocess_for_finn_quantize, quantize_finn)
from finn_demo.quant.ptq import (
    GPXQ_IMPLS, PTQ_FLAGS, PTQ_PASSES, apply_act_equalization, apply_bias_correction,
    apply_bn_correction, apply_gpfq, apply_gptq, apply_learned_act_range, apply_learned_round,
    apply_qronos, apply_range_refit, calibrate, quantize_and_recover)
from finn_demo.quant.qat import apply_qat

__all__ = ["default_quantize_maps_finn", "bit_width_maps", "preprocess_for_finn_quantize",
           "quantize_finn", "calibrate", "apply_act_equalization", "apply_bias_correction",
           "apply_gptq", "apply_gpfq", "apply_qronos", "apply_learned_round", "apply_bn_correction",
           "apply_range_refit", "apply_learned_act_range",
           "quantize_and_recover", "apply_qat", "PTQ_PASSES", "PTQ_FLAGS", "GPXQ_IMPLS"]
