"""Find the workflows of a project: ``*.py`` files under the configured folders.

Files are loaded by path under private module names (``_openworkflow_user.*``),
so a project folder called ``openworkflow/`` never shadows this package. Every
module-level :class:`~openworkflow.Workflow` counts. A file that fails to
import is reported with its file and line and does not hide the others;
two implementations of one (name, version) are reported with both places.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from openworkflow.core.registry import describe
from openworkflow.core.workflow_definition import Workflow

_MODULE_PREFIX = "_openworkflow_user"


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

    ``base`` (the config folder) is put on ``sys.path`` first so workflow files
    can import the project's own modules.
    """
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    files, missing = find_workflow_files(dirs, ignore_patterns, base)
    result = Discovery(dirs=tuple(dirs), files=files, missing_dirs=missing)
    seen: dict[tuple[str, str | None], Workflow] = {}
    for path in files:
        try:
            found = load_workflow_file(path)
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
    return result


class ImportProblemError(Exception):
    """Internal: carries an :class:`ImportProblem`."""

    def __init__(self, problem: ImportProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def module_name_for(path: Path) -> str:
    """A private, stable module name for a workflow file."""
    digest = hashlib.sha1(str(path.resolve()).encode(), usedforsecurity=False).hexdigest()[:12]
    stem = "".join(ch if ch.isalnum() else "_" for ch in path.stem)
    return f"{_MODULE_PREFIX}.{stem}_{digest}"


def load_workflow_file(path: Path) -> list[Workflow]:
    """Import one file by path (fresh each time) and return its module-level workflows.

    Raises:
        ImportProblemError: the file failed to import; carries the file and line.
    """
    name = module_name_for(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportProblemError(ImportProblem(path, None, "not a loadable Python file"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as error:
        sys.modules.pop(name, None)
        if isinstance(error, KeyboardInterrupt | SystemExit):
            raise
        raise ImportProblemError(
            ImportProblem(path, _line_in(error, path), f"{type(error).__name__}: {error}")
        ) from error
    return [value for value in vars(module).values() if isinstance(value, Workflow)]


def _line_in(error: BaseException, path: Path) -> int | None:
    if isinstance(error, SyntaxError) and error.lineno is not None:
        return error.lineno
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            line = frame.lineno
    return line
