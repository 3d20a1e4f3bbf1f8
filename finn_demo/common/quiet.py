"""Silence the notices torch and Brevitas print on import, and only those.

Each notice is matched by its message and where it comes from, so the project's own warnings (an
undecodable image, say) and any other warning of these libraries still show. The entry points call
quiet_third_party() before they import Brevitas, which prints them while it loads.
"""
import logging
import warnings

# (category, message regex, module regex) of warnings that say nothing about the user's run
THIRD_PARTY_WARNINGS = [
    # an optional kernel package for Hadamard rotations, which the demo never uses
    (UserWarning, r"fast_hadamard_transform package not found", r"brevitas\."),
    # torch 2.14 deprecates an attribute Brevitas' tracer backport reads (pytree)
    (FutureWarning, r"`treespec\.children_specs` is deprecated", r"brevitas\."),
    # Brevitas deprecates its own brevitas.fx, which Brevitas' graph module imports
    (DeprecationWarning, r"brevitas\.fx is deprecated", r"brevitas\."),
]
# torch logs this when Brevitas imports torch.utils.cpp_extension on a machine with a CUDA
# toolkit folder but no GPU: nothing here compiles a CUDA extension.
CUDA_HOME_LOGGER, CUDA_HOME_MESSAGE = "torch.utils.cpp_extension", "No CUDA runtime is found"


class _DropMessage(logging.Filter):
    """Drops a logger's records whose message starts with `prefix`, keeps the others."""

    def __init__(self, prefix):
        super().__init__()
        self.prefix = prefix

    def filter(self, record):
        return not record.getMessage().startswith(self.prefix)


def quiet_third_party():
    """Install the filters; harmless to call again. Needs no torch: call it before importing it."""
    for category, message, module in THIRD_PARTY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    logger = logging.getLogger(CUDA_HOME_LOGGER)
    if not any(isinstance(existing, _DropMessage) for existing in logger.filters):
        logger.addFilter(_DropMessage(CUDA_HOME_MESSAGE))
