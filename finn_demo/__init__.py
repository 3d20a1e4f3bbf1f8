"""The package the root scripts are made of, in folders that follow a model through the pipeline.

The root scripts: finn_mobilenetv2.py, quant_utils.py, check_export.py, finn_build.py,
benchmark.py. Imports run one way, down this list: a module uses only those above it (but
hw/steps, see hw/; and nothing here imports a root script, but testing/, which is no stage).

- common/ (imports nothing else of finn_demo, so every stage may use it): configurator (the
  `--name=value` flag overrides), files (whole-or-nothing writes), quiet (the notices torch and
  Brevitas print on import, silenced)
- data/: datasets (the digits set, ImageNet folders, seeded subsets, batches), models (MobileNetV2
  weights, the digits model trained and cached on first use)
- quant/: maps (the FINN quantization nodes), ptq (the PTQ passes, their one order and which
  options combine), fast_gpxq, reconstruction (the block-by-block training loop and QDrop),
  learned_round, act_ranges, accumulators, qat (quantization-aware training after PTQ);
  quant_utils.py re-exports them
- top level, the stage between quantization and checks, one module each because each is small:
  evaluate (top-1 of PyTorch models), fast_eval (the exports in onnxruntime), export (the QONNX
  file), run (the parts of one demo run), finn_install (whether FINN imports, and the install
  command: the one place)
- checks/: result (CheckResult, Report), structure, layerwise (the layer-by-layer rule), numbers
  (QONNX vs Brevitas, FINN's frontend), file (every check of one file: check_file)
- hw/ (needs FINN), the FINN build: steps (FINN's transformations per step; it imports nothing
  else of finn_demo, so checks/numbers may run the first two, FINN's frontend), finn_builder
  (the shim around FINN's builder), cache (the steps cache behind --reuse), boards, requant_rtl
  (FINN's Requant_rtl node on the project's core, rtl/requant_exact.sv), resources, fit,
  alternatives (what would fit when nothing does), hw_checks (the build's checks of FINN's
  graphs), requant (a Requant where it computes a threshold layer exactly), verilator (the RTL
  layers in Verilator), build (the build finn_build.py runs)
- validate: the demo's flags checked before any work (it asks data, quant and finn_install)
- testing/ (no stage: nothing above imports it): faults (written into exports), imagenet_folder
  (small generated image folders), used by the tests and the benchmark; suite (what the test
  files share; it drives the demo script, as the tests do)
"""
