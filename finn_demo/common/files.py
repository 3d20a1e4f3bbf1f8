"""Write files whole or not at all: a temporary file in the same folder, renamed when complete."""
import os
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted or failed write leaves the previous file as it was and no partial file behind.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(path, flag):
    """Raise ConfigError early when `path` could not be written (its folder is missing or read-only)."""
    from finn_demo.common.configurator import ConfigError
    folder = Path(path).resolve().parent
    if not folder.is_dir():
        raise ConfigError(f"{flag}: folder {folder} does not exist; create it or choose another path")
    if not os.access(folder, os.W_OK):
        raise ConfigError(f"{flag}: folder {folder} is not writable; choose another path")
