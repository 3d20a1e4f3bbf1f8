"""What the demo's entry points (finn_mobilenetv2.py, quant_utils.py, check_export.py, finn_build.py,
benchmark.py) are made of, a module per role:

- configurator: the `--name=value` flag overrides; validate: the demo's flags checked before work
- data: the digits set, ImageNet folders, seeded subsets, batches; models: MobileNetV2 weights and
  the digits model trained on first use
- evaluate: top-1 of a PyTorch model; fast_eval: the quantized model as QCDQ in onnxruntime
- fast_gpxq: GPFQ and Qronos in one node-by-node pass (the integer weights of Brevitas' loop)
- export: the QONNX file for FINN; files: whole-or-nothing writes
- finn_steps: FINN's compiler steps that finn_build.py runs
- quiet: the notices torch and Brevitas print on import, silenced (and only those)
"""
