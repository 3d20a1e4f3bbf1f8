"""Checks of an exported QONNX file before FINN gets it, and of FINN's graphs against it.

result: CheckResult and Report; structure: what FINN needs of the graph's nodes; numbers: the
graph's integers against the Brevitas model and FINN's frontend, through layerwise (the rule,
layer by layer at every quantizer); file: all of them on one file (check_file) and the inputs
checks run on (check_inputs: the run's validation images its metadata names, a folder's images,
or inputs on the input quantizer's grid).
"""
from finn_demo.checks.file import (  # noqa: F401
    FINN_IMAGES, check_file, check_inputs, check_run_export, folder_images, format_metadata,
    metadata_of, run_images)
from finn_demo.checks.numbers import (  # noqa: F401
    check_equivalence, check_finn, finn_frontend, finn_graph_result, layerwise_result)
from finn_demo.checks.result import CheckResult, Report  # noqa: F401
from finn_demo.checks.structure import (  # noqa: F401
    batchnorm_layers, check_add_scales, check_batchnorm, check_input_quant, check_weight_quant,
    quant_source)
