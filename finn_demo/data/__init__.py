"""Data and models: datasets (digits, ImageNet folders, seeded subsets, batches) and models
(MobileNetV2 weights, the digits model trained and cached on first use)."""
