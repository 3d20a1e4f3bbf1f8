"""Helpers for the tests and the benchmark, not a stage of the pipeline: they make faulty exports
and small image folders, and hold what the test files share.

- faults: faults written by hand into a QONNX file, each of which the export checks must catch
  (the tests on the suite's model, the benchmark's checks section at 224x224)
- imagenet_folder: small ImageNet-layout folders of generated JPEGs or crops of real photos (no
  ImageNet can be downloaded where the project is tested)
- suite: what the test files import (the repository's root, the small digits model's flags, the
  PTQ tests' model and loaders, the FINN tests' skip); pytest's fixtures stay in tests/conftest.py

Nothing in the pipeline imports this subpackage. suite drives the demo as the tests do, so it is
the one module of finn_demo that imports root scripts (inside its functions).
"""
