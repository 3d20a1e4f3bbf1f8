"""The sections of benchmark.py, one module each: grid (the accuracy grid), finn_estimates (FINN's
estimates per bit-width setting), gpxq_speed (GPFQ and Qronos, Brevitas' implementation against
fast_gpxq's), speed (float vs Brevitas vs onnxruntime), imagenet_times (every stage of an ImageNet
run at 224x224); rows (the resumable CSVs, keyed by flags, model and code hash) and report
(RESULTS.md)."""
