"""Whether FINN imports, and how to install it: the one place every entry point asks.

FINN (finn-plus) is installed apart from requirements.txt, without its dependencies (its pins
conflict with this stack: requirements-finn.txt says why), so it may be missing, or installed
and broken. Missing skips what needs it; broken is a failure that names the module.
"""
import importlib
import importlib.util

FINN_INSTALL_HINT = ("install the FINN frontend with `pip install --no-deps finn-plus==1.6.1 && "
                     "pip install -r requirements-finn.txt` (why: see requirements-finn.txt)")


def finn_installed():
    return importlib.util.find_spec("finn") is not None


def finn_import_error(module="finn_demo.hw.steps"):
    """None when `module` (the project's code on FINN: hw.steps, or the build's modules)
    imports, else the ImportError."""
    try:
        importlib.import_module(module)
    except ImportError as error:
        return error
    return None


def finn_available():
    return finn_installed() and finn_import_error() is None


def describe_import_error(error):
    """One line: FINN not installed, or installed but which module does not import, and why."""
    state = (f"installed but module {error.name or '?'} does not import" if finn_installed()
             else "not installed")
    return f"FINN is {state} ({type(error).__name__}: {error})"
