"""Command-line overrides for the flags at the top of a script, in the manner of nanoGPT.

`python finn_mobilenetv2.py --weight_bit_width=4 --gpfq=True` sets those two module-level flags.
Values are read as Python literals; a flag keeps the type of its default (an int flag accepts
only an int, a float flag an int or a float), and a flag whose default is None accepts any literal
and is checked later by the script. Unknown flags and wrong types are refused with ConfigError.
"""
import ast


class ConfigError(ValueError):
    """Bad user input: the message is one line that names the flag or path and the fix."""


def parse_value(key, text, default):
    """Turn `text` into a value of the type of `default`, or raise ConfigError."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text  # a bare word such as cpu or /data/imagenet is a string
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ConfigError(f"--{key} expects True or False, got {text!r}")
        return value
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, str):
        return text  # keep strings verbatim: --data_dir=123 is the folder "123"
    if type(value) is not type(default):
        raise ConfigError(
            f"--{key} expects a {type(default).__name__} (default {default!r}), got {text!r}")
    return value


def apply_overrides(flags, argv):
    """Return a copy of the dict `flags` with each `--key=value` of `argv` applied."""
    config = dict(flags)
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"argument {arg!r} is not of the form --name=value")
        key, text = arg[2:].split("=", 1)
        if key not in flags:
            raise ConfigError(f"unknown flag --{key}; the flags are: {', '.join(flags)}")
        config[key] = parse_value(key, text, flags[key])
    return config


def flags_of(namespace):
    """The flags of a script: its module-level variables of plain types, in order of definition."""
    plain = (bool, int, float, str, type(None))
    return {
        key: value for key, value in namespace.items()
        if not key.startswith("_") and isinstance(value, plain)}
