"""The sections of benchmark.py, one module each: finn_estimates (FINN's estimates per bit-width
setting), imagenet_times (every stage of an ImageNet run at 224x224), gpxq_speed (GPFQ and Qronos,
Brevitas' implementation against fast_gpxq's)."""
