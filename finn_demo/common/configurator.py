"""Command-line overrides for the flags at the top of a script, in the manner of nanoGPT.

`python finn_mobilenetv2.py --weight_bit_width=4 --gpfq=True` sets those two module-level flags.
Values are read as Python literals; a flag keeps the type of its default (an int flag accepts
only an int, a float flag an int or a float), and a flag whose default is None accepts any literal
and is checked later by the script. Unknown flags and wrong types are refused with ConfigError.
`--help` (or `-h`) prints the script's flag block, read from its own source so that it cannot
drift from it, and exits 0. In the block, a comment line of its own is a group header, except one
indented past its `#` (`#   more words`) right under a flag: that continues the flag's comment.
"""
import ast
import os
import re

HELP_ARGS = ("--help", "-h")
FLAG_BLOCK_START = re.compile(r"#\s*-+\s*flags\b")  # the `# ---- flags` line that opens the block
FLAG_BLOCK_END = "FLAGS = flags_of(globals())"
CONTINUATION = re.compile(r"#\s{2,}\S")  # `#   words` under a flag continues its comment


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


class Flags(dict):
    """A script's flags, {name: default}, and the file that defines them (for --help)."""

    def __init__(self, values, source_file=None, doc=None):
        super().__init__(values)
        self.source_file, self.doc = source_file, doc


def apply_overrides(flags, argv):
    """Return a copy of the dict `flags` with each `--key=value` of `argv` applied.
    With `--help` or `-h` among them, print `help_text(flags)` and exit 0."""
    if any(arg in HELP_ARGS for arg in argv):
        print(help_text(flags))
        raise SystemExit(0)
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
    return Flags({key: value for key, value in namespace.items()
                  if not key.startswith("_") and isinstance(value, plain)},
                 namespace.get("__file__"), namespace.get("__doc__"))


def flag_block(source, names):
    """The lines of `source` that define the flags `names`: from the `# ---- flags` line (or,
    without one, the first flag's line) to `FLAGS = flags_of(globals())`."""
    lines = source.splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith(FLAG_BLOCK_END))
    start = next((i + 1 for i, line in enumerate(lines[:end]) if FLAG_BLOCK_START.match(line)), None)
    if start is None:
        start = next(i for i, line in enumerate(lines[:end]) if _assigned(line) in names)
    return lines[start:end]


def _assigned(line):
    """The name a `name = value` line at module level assigns, else None."""
    match = re.match(r"([A-Za-z_]\w*)\s*=(?!=)", line)
    return match and match.group(1)


def help_text(flags):
    """The script's docstring, then its flag block as written, each flag as `--name=default` (the
    value the script computed) with its comment; the block's own comment lines group them."""
    source_file = getattr(flags, "source_file", None)
    name = os.path.basename(source_file) if source_file else "SCRIPT"
    lines = [f"usage: python {name} [--name=value ...]  (values are Python literals)", ""]
    if getattr(flags, "doc", None):
        lines += [flags.doc.strip(), ""]
    lines += ["flags (default, then what it is):"]
    if not source_file:
        return "\n".join(lines + [f"  --{key}={value!r}" for key, value in flags.items()])
    with open(source_file, encoding="utf-8") as file:
        block = flag_block(file.read(), flags)
    width = min(36, max(len(f"--{key}={value!r}") for key, value in flags.items()))
    shown, under_flag = set(), False
    for line in block:
        key = _assigned(line)
        if key in flags:
            shown.add(key)
            flag = f"--{key}={flags[key]!r}"
            comment = line.split("  # ", 1)[1].strip() if "  # " in line else ""
            lines.append(f"  {flag:<{width}}  # {comment}" if comment else f"  {flag}")
            under_flag = True
        elif under_flag and CONTINUATION.match(line.strip()):
            lines.append(f"  {'':<{width}}  # {line.strip()[1:].strip()}")
        elif line.lstrip().startswith("#"):
            lines.append(line.strip())
            under_flag = False
        else:
            under_flag = False
    lines += [f"  --{key}={value!r}" for key, value in flags.items() if key not in shown]
    return "\n".join(lines)


def run_module(main, flags, argv):
    """`main(flags with argv's overrides)` for a module run alone (`python -m bench.prune`), its
    ConfigError ending the run with one line on stderr and exit status 1."""
    import sys
    try:
        main(apply_overrides(flags, argv))
    except ConfigError as error:
        sys.exit(f"error: {error}")
