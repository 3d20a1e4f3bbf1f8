"""The code a benchmark section's rows are computed by, found from its imports, and whether it
has changed since a row was measured.

A section's code is its own module and every file of this repository that module imports,
followed transitively (`import` and `from` statements, read with ast; other packages' modules
are not files here and are left out: their versions are in RESULTS.md's first lines). A
function-level import is how this project marks an optional path (the FINN build, Netron, FINN's
checks): the walk follows it from the section's own module and from what that module imports
inside its functions (the tools it calls), and elsewhere follows module-level imports only. So
the FINN section, whose own functions import finn_build, hashes the FINN build's code, and the
grid, which reaches the demo's optional `--finn_build` only through the demo, does not.
A module whose code reads other files of the repository when it runs (the Requant core's RTL,
the Verilator testbench) names them in a module-level `RUNTIME_FILES`, paths relative to its
folder; they are the section's code too.
"""
import ast
import hashlib
from dataclasses import dataclass
from pathlib import Path

from bench import rows


def module_file(name, root):
    """The file of this repository that module `name` is (a.b: a/b.py or a/b/__init__.py), or None."""
    base = Path(root).joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _import_nodes(tree):
    """(import statement, whether it sits inside a function) for each import in `tree`."""
    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, in_function
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from visit(child, inside)
    return visit(tree, False)


def _named_files(node, path, root):
    """The files of the modules an import statement in `path` names: `import a.b`: a.b;
    `from a import b`: a.b where b is a submodule, else a."""
    if isinstance(node, ast.Import):
        return {module_file(alias.name, root) for alias in node.names}
    package = list(path.relative_to(root).parent.parts)
    base = package[:len(package) - node.level + 1] if node.level else []
    module = ".".join([*base, *(node.module.split(".") if node.module else [])])
    return {module_file(f"{module}.{alias.name}".lstrip("."), root) or module_file(module, root)
            for alias in node.names}


def _with_packages(path, root):
    """`path` and the __init__.py of each package above it: Python runs those first."""
    parents = Path(path).relative_to(root).parents
    return {path, *(root / folder / "__init__.py" for folder in parents if folder.parts)}


def imported_files(path, root, packages=True):
    """({files `path` imports at module level}, {files it imports inside functions}), this
    repository's files only; with `packages`, also the packages' __init__.py they load first."""
    top, inner = set(), set()
    for node, in_function in _import_nodes(ast.parse(Path(path).read_text(), str(path))):
        files = _named_files(node, Path(path), root) - {None}
        if packages:
            files = {found for file in files for found in _with_packages(file, root) if found.is_file()}
        (inner if in_function else top).update(files)
    return top, inner


def runtime_files(path):
    """The files the module at `path` names in its module-level RUNTIME_FILES (a literal tuple
    of paths relative to its folder), or none."""
    for node in ast.parse(Path(path).read_text(), str(path)).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "RUNTIME_FILES"
                                                for target in node.targets):
            return {Path(path).parent / name for name in ast.literal_eval(node.value)}
    return set()


def code_files(*modules):
    """The files the section whose own modules are `modules` (dotted names) is computed by,
    their RUNTIME_FILES included, relative to the repository root, sorted."""
    root = rows.ROOT
    reached = {}  # file -> whether its function-level imports are followed
    todo = [(module_file(name, root), True) for name in modules]
    while todo:
        path, follow_inner = todo.pop()
        if path is None or reached.get(path, False) or (path in reached and not follow_inner):
            continue
        reached[path] = follow_inner
        top, inner = imported_files(path, root)
        todo += [(file, False) for file in top] + [(file, True) for file in inner if follow_inner]
    files = set(reached).union(*(runtime_files(path) for path in reached))
    return sorted(path.relative_to(root).as_posix() for path in files)


def code_hash(*modules):
    """The first 12 hex digits of a sha256 over the names and contents of `code_files`."""
    return files_hash(code_files(*modules))


def files_hash(names):
    """The first 12 hex digits of a sha256 over the names and contents of the files `names`
    (relative to the repository root), in that order."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (rows.ROOT / name).read_bytes() + b"\0")
    return digest.hexdigest()[:12]


# ------------------------------------------------------------------ has it changed since?
@dataclass
class Status:
    """Whether a section's newest row was measured at the code it would be measured at now."""
    name: str
    code: str  # the code hash of the section's newest row
    commit: str  # the commit that row was measured at ("" where unknown)
    current: str  # the hash of the same files now
    changed: list  # files changed since `commit` (git), where the code differs

    @property
    def fresh(self):
        return self.code == self.current

    def line(self):
        at = f"code {self.code}" + (f" at commit {self.commit}" if self.commit else "")
        if self.fresh:
            return f"{self.name}: fresh ({at}; its code has not changed since)"
        if self.changed:
            return f"{self.name}: stale ({at}; changed since: {', '.join(self.changed)})"
        why = f"git cannot compare with {self.commit}" if self.commit else "no commit recorded"
        return f"{self.name}: stale ({at}, now {self.current}; which files changed is unknown: {why})"


def changed_files(commit, files):
    """Those of `files` that differ between `commit` and the working tree, or [] if git cannot say."""
    if not commit:
        return []
    diff = rows.git("diff", "--name-only", commit.split("+")[0], "--", *files)
    return diff.stdout.split() if diff.returncode == 0 else []


def section_status(name, section_rows, modules, fallback_commit=""):
    """The Status of one section from its rows (the newest is the last one written)."""
    newest = section_rows[-1]
    commit = newest.get("commit") or fallback_commit
    current = code_hash(*modules)
    changed = [] if newest["code"] == current else changed_files(commit, code_files(*modules))
    return Status(name, newest["code"], commit, current, changed)
