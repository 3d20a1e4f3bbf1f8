"""Quantization for FINN: maps (the quantization nodes), ptq (the PTQ passes and their order),
fast_gpxq, learned_round, accumulators. quant_utils.py at the root is their public API."""
