"""Find the workflows of a project: ``*.py`` files under the configured folders.

Each folder in ``dirs`` is put on ``sys.path`` (after the installed packages, so
a project file can never shadow the standard library or this package), and
each file is imported under the name a Python user would write for it: a file
``openworkflow/shipping.py`` is the module ``shipping``, ``openworkflow/billing/
invoice.py`` is ``billing.invoice``, and a folder with an ``__init__.py`` is a
regular package. So workflow files import each other and their helper modules
as siblings (``from shipping import label``), and every file is executed once.
A file whose name is taken by an installed module (``json.py``,
``openworkflow.py``) is loaded by path under a private name instead and a
warning says how to rename it. A file that fails to import is reported with its
file and line and does not hide the others; two implementations of one (name,
version) are reported with both places.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import importlib.util
import logging
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import NoReturn

from openworkflow.core.registry import describe
from openworkflow.core.workflow_definition import Workflow, WorkflowSpec

_MODULE_PREFIX = "_openworkflow_user"

logger = logging.getLogger("openworkflow.discovery")

# Modules imported by the last scan, forgotten by the next one (ow dev, dashboard refresh).
_project_modules: set[str] = set()


@dataclass(frozen=True, slots=True)
class ImportProblem:
    """A workflow file that could not be imported."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Two workflows with the same (name, version)."""

    name: str
    version: str | None
    first: str
    second: str

    def __str__(self) -> str:
        return (
            f"workflow {describe(self.name, self.version)} is defined twice: "
            f"{self.first} and {self.second}"
        )


@dataclass(slots=True)
class Discovery:
    """What a scan found."""

    dirs: tuple[Path, ...]
    files: list[Path] = field(default_factory=list)
    workflows: list[Workflow] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    missing_dirs: list[Path] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No import problems and no duplicates."""
        return not self.problems and not self.duplicates


def find_workflow_files(
    dirs: Iterable[Path], ignore_patterns: Sequence[str], base: Path
) -> tuple[list[Path], list[Path]]:
    """Every ``*.py`` below ``dirs`` not matched by an ignore glob; and the missing dirs."""
    files: list[Path] = []
    missing: list[Path] = []
    for directory in dirs:
        if not directory.is_dir():
            missing.append(directory)
            continue
        for path in sorted(directory.rglob("*.py")):
            if path.is_file() and not is_ignored(path, ignore_patterns, base):
                files.append(path)
    return list(dict.fromkeys(files)), missing


def is_ignored(path: Path, patterns: Sequence[str], base: Path) -> bool:
    """Whether a glob matches the path relative to ``base`` or its file name."""
    try:
        relative = path.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        relative = path.as_posix()
    for pattern in patterns:
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])  # "**/" also matches no folder at all
        for candidate in candidates:
            if fnmatch.fnmatchcase(relative, candidate) or fnmatch.fnmatchcase(
                path.name, candidate
            ):
                return True
    return False


def discover(dirs: Sequence[Path], ignore_patterns: Sequence[str], base: Path) -> Discovery:
    """Import every workflow file and collect its module-level workflows.

    ``base`` (the config folder) is put first on ``sys.path`` and every folder of
    ``dirs`` last, so workflow files can import the project's own modules and each
    other. Modules already loaded from ``dirs`` are imported afresh, so a second
    scan in one process sees the files as they are now.
    """
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    roots = [directory.resolve() for directory in dirs if directory.is_dir()]
    for root in roots:
        if str(root) not in sys.path:
            sys.path.append(str(root))
    _forget_project_modules()
    before = set(sys.modules)
    files, missing = find_workflow_files(dirs, ignore_patterns, base)
    result = Discovery(dirs=tuple(dirs), files=files, missing_dirs=missing)
    seen: dict[tuple[str, str | None], Workflow] = {}
    for path in files:
        try:
            found = load_workflow_file(path, roots)
        except ImportProblemError as error:
            result.problems.append(error.problem)
            continue
        for item in found:
            key = (item.name, item.version)
            earlier = seen.get(key)
            if earlier is not None:
                # The same definition reached twice (a file importing another) is one workflow.
                if earlier is not item and earlier.source != item.source:
                    result.duplicates.append(Duplicate(*key, earlier.source, item.source))
                continue
            seen[key] = item
            result.workflows.append(item)
    _remember_project_modules(before, roots)
    return result


def _forget_project_modules() -> None:
    """Drop the modules an earlier scan imported, so they are imported afresh."""
    for name in _project_modules:
        sys.modules.pop(name, None)
    _project_modules.clear()


def _remember_project_modules(before: set[str], roots: Sequence[Path]) -> None:
    """Note the modules a scan imported from the workflow folders (not the packages)."""
    for name in set(sys.modules) - before:
        location = getattr(sys.modules[name], "__file__", None)
        if location and any(_is_within(Path(location), root) for root in roots):
            _project_modules.add(name)


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


class ImportProblemError(Exception):
    """Internal: carries an :class:`ImportProblem`."""

    def __init__(self, problem: ImportProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def module_name_for(path: Path) -> str:
    """A private, stable module name for a workflow file loaded by path."""
    digest = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    stem = "".join(ch if ch.isalnum() else "_" for ch in path.stem)
    return f"{_MODULE_PREFIX}.{stem}_{digest}"


def importable_name(path: Path, roots: Sequence[Path]) -> str | None:
    """The dotted name ``import`` would give ``path``, or None if it has none.

    In a folder with an ``__init__.py`` the name is the package path, as usual;
    otherwise (or when that package name is taken, e.g. a project folder
    ``openworkflow/`` with an ``__init__.py``) it is the path from the workflow
    folder that holds the file (``billing/invoice.py`` is ``billing.invoice``).
    A name counts only if importing it finds this very file, not a module of
    the same name elsewhere on ``sys.path``.
    """
    resolved = path.resolve()
    taken: list[str] = []
    for name in _candidate_names(resolved, roots):
        origin = _origin_of(name)
        if origin == resolved:
            return name
        if origin is not None:
            taken.append(f"{name!r} is already {origin}")
    if taken and path.name != "__init__.py":
        logger.warning(
            "%s is loaded under a private name because %s; rename the file to import it "
            "from other files",
            path,
            " and ".join(taken),
        )
    return None


def _candidate_names(resolved: Path, roots: Sequence[Path]) -> list[str]:
    """The package path (in a package), then the path from the workflow folder."""
    relatives: list[Path] = []
    if (resolved.parent / "__init__.py").is_file():
        top = resolved.parent
        while (top / "__init__.py").is_file():
            top = top.parent
        if str(top) not in sys.path:
            sys.path.append(str(top))
        relatives.append(resolved.relative_to(top))
    root = next((root for root in roots if _is_within(resolved, root)), None)
    if root is not None:
        relatives.append(resolved.relative_to(root))
    names: list[str] = []
    for relative in relatives:
        parts = [*relative.parent.parts, relative.stem]
        if relative.stem == "__init__":
            parts = parts[:-1]
        if parts and all(part.isidentifier() for part in parts):
            names.append(".".join(parts))
    return list(dict.fromkeys(names))


def _origin_of(name: str) -> Path | None:
    """The file ``import name`` would load, or None."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).resolve()


def load_workflow_file(path: Path, roots: Sequence[Path] = ()) -> list[Workflow]:
    """Import one file and return its module-level workflows.

    The file is imported under its importable name (see :func:`importable_name`),
    so sibling files that import it share one module; a file without one is
    loaded by path under a private name.

    Raises:
        ImportProblemError: the file failed to import; carries the file and line.
    """
    name = importable_name(path, roots)
    if name is None:
        return _load_by_path(path)
    try:
        module = importlib.import_module(name)
    except BaseException as error:
        _raise_import_problem(error, path, name)
    return [value for value in vars(module).values() if isinstance(value, Workflow)]


def _load_by_path(path: Path) -> list[Workflow]:
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportProblemError(ImportProblem(path, None, "not a loadable Python file"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        _raise_import_problem(error, path, name)
    return [value for value in vars(module).values() if isinstance(value, Workflow)]


def _raise_import_problem(error: BaseException, path: Path, name: str) -> NoReturn:
    sys.modules.pop(name, None)
    if isinstance(error, KeyboardInterrupt | SystemExit):
        raise error
    raise ImportProblemError(
        ImportProblem(path, _line_in(error, path), f"{type(error).__name__}: {error}")
    ) from error


def _line_in(error: BaseException, path: Path) -> int | None:
    if isinstance(error, SyntaxError) and error.lineno is not None:
        return error.lineno
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line


# -- declared specs -------------------------------------------------------------------------


def declared_specs(found: Discovery) -> list[WorkflowSpec]:
    """The module-level ``declare_workflow(...)`` specs of the files a scan imported.

    A spec names a workflow whose code lives in another service; it counts as
    known to the project (``ow run`` accepts its name) but no worker here runs
    it. Specs that a workflow of the scan implements are left out, and each
    (name, version) is listed once.
    """
    modules: dict[Path, ModuleType] = {}
    for module in list(sys.modules.values()):
        location = getattr(module, "__file__", None)
        if isinstance(location, str):
            modules.setdefault(Path(location).resolve(), module)
    seen = {(item.name, item.version) for item in found.workflows}
    specs: list[WorkflowSpec] = []
    for path in found.files:
        loaded = modules.get(path.resolve())
        if loaded is None:
            continue
        for value in vars(loaded).values():
            if isinstance(value, WorkflowSpec) and (value.name, value.version) not in seen:
                seen.add((value.name, value.version))
                specs.append(value)
    return specs
