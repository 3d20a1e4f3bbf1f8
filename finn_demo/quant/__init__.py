"""Quantization for FINN: maps (the quantization nodes), ptq (the PTQ passes and their order),
fast_gpxq, reconstruction (block by block training, QDrop), learned_round, act_ranges,
accumulators, qat (quantization-aware training, after PTQ). quant_utils.py at the root is their public API."""
