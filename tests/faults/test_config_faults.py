"""F13: malformed or hostile config files and environment values, through the real ``ow``.

Each case writes a project whose ``openworkflow.config.py`` (or environment)
is broken in one way: a syntax error, a failed import, an exception or
``sys.exit()`` at import, no ``config`` object, wrong types, unknown keys,
bad environment values, NUL bytes, and URLs carrying a secret password.
Every command must exit 2 with one ``Error:`` line that names the file and
the line (or the environment variable), no traceback (that is what
``--debug`` is for), nothing on stdout, and never the secret.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.cli.helpers import clean_env, ow, write
from tests.faults.figures import Figure, report

SECRET = f"CONFIG-SECRET-{uuid.uuid4().hex[:10]}"
HEADER = "from openworkflow import define_config\n"


@dataclass(frozen=True)
class Case:
    """One broken project: its config text, environment, the command and what to expect."""

    name: str
    config: str | bytes
    command: tuple[str, ...]
    line: int | None  # the line the error must name (None: the file or variable only)
    expect: str  # a fragment the error line must contain
    env: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "syntax error",
        HEADER + "\nconfig = define_config(dirs=['./flows']\n",
        ("worker", "start"),
        3,
        "SyntaxError",
    ),
    Case(
        "indentation error",
        HEADER + "if True:\nconfig = define_config()\n",
        ("doctor",),
        3,
        "IndentationError",
    ),
    Case(
        "import of a missing name",
        "from openworkflow import define_config, no_such_thing\nconfig = define_config()\n",
        ("runs", "list", "--json"),
        1,
        "ImportError",
    ),
    Case(
        "import of a missing module",
        HEADER + "import definitely_missing_module_xyz\nconfig = define_config()\n",
        ("dev", "--no-dashboard"),
        2,
        "ModuleNotFoundError",
    ),
    Case(
        "exception at import quoting a secret URL",
        HEADER + f"raise RuntimeError('cannot reach postgresql://app:{SECRET}@db:5432/app')\n",
        ("migrate",),
        2,
        "RuntimeError: cannot reach postgresql://app:***@db",
    ),
    Case(
        "sys.exit() at import",
        "import sys\n\nsys.exit(3)\n",
        ("run", "some-workflow"),
        3,
        "exit(3)",
    ),
    Case(
        "recursion at import",
        "def again():\n    return again()\n\nagain()\n",
        ("runs", "list"),
        2,
        "RecursionError",
    ),
    Case(
        "no config object",
        HEADER + "settings = define_config()\n",
        ("doctor", "--json"),
        None,
        "does not define `config`",
    ),
    Case(
        "config of the wrong type",
        HEADER + "\nconfig = {'backend': 'sqlite:///x.db'}\n",
        ("worker", "start"),
        3,
        "(it is a dict)",
    ),
    Case(
        "wrong type for a worker option",
        HEADER + "\n\nconfig = define_config(worker={'concurrency': 'many'})\n",
        ("runs", "list"),
        4,
        "worker.concurrency",
    ),
    Case(
        "wrong type for dirs",
        HEADER + "config = define_config(dirs=5)\n",
        ("doctor",),
        2,
        "dirs",
    ),
    Case(
        "unknown keyword",
        HEADER + "config = define_config(bogus=1)\n",
        ("worker", "start"),
        2,
        "unexpected keyword argument 'bogus'",
    ),
    Case(
        "unknown worker option",
        HEADER + "config = define_config(worker={'threads': 4})\n",
        ("runs", "list"),
        2,
        "worker.threads",
    ),
    Case(
        "invalid payload size",
        HEADER + "config = define_config(payload={'max_size': 'huge'})\n",
        ("run", "x"),
        2,
        "payload.max_size",
    ),
    Case(
        "NUL bytes in the file",
        HEADER.encode() + b"config = define_config()\x00\n",
        ("runs", "list"),
        2,
        "null bytes",
    ),
    Case(
        "secret URL with an invalid schema name",
        HEADER + f"config = define_config(backend='postgresql://app:{SECRET}@127.0.0.1:1/db"
        "?schema=bad-name')\n",
        ("runs", "list"),
        None,
        "Invalid schema name",
    ),
    Case(
        "secret URL with an unsupported scheme",
        HEADER + f"config = define_config(backend='mysql://app:{SECRET}@db/app')\n",
        ("runs", "list"),
        None,
        "unsupported database URL scheme",
    ),
    Case(
        "bad concurrency in the environment",
        HEADER + "config = define_config()\n",
        ("worker", "start"),
        None,
        "OPENWORKFLOW_WORKER_CONCURRENCY",
        {"OPENWORKFLOW_WORKER_CONCURRENCY": "lots"},
    ),
    Case(
        "bad lease duration in the environment",
        HEADER + "config = define_config()\n",
        ("runs", "list"),
        None,
        "OPENWORKFLOW_WORKER_LEASE_DURATION",
        {"OPENWORKFLOW_WORKER_LEASE_DURATION": "forever"},
    ),
    Case(
        "bad payload size in the environment",
        HEADER + "config = define_config()\n",
        ("dev", "--no-dashboard"),
        None,
        "OPENWORKFLOW_PAYLOAD_MAX_SIZE",
        {"OPENWORKFLOW_PAYLOAD_MAX_SIZE": "a lot"},
    ),
    Case(
        "oversized namespace in the environment",
        HEADER + "config = define_config()\n",
        ("runs", "list"),
        None,
        "OPENWORKFLOW_NAMESPACE_ID",
        {"OPENWORKFLOW_NAMESPACE_ID": "n" * 600},
    ),
    Case(
        "secret URL in the environment with a bad port",
        HEADER + "config = define_config()\n",
        ("doctor",),
        None,
        "",  # doctor prints its report on stdout; the case checks the exit code and the secret
        {"OPENWORKFLOW_BACKEND_URL": f"postgresql://app:{SECRET}@127.0.0.1:99999/db"},
    ),
]


def _problems(case: Case, config: Path, stdout: str, stderr: str, returncode: int) -> list[str]:
    """What is wrong with how ``ow`` reported ``case`` (empty when all is right)."""
    problems = []
    errors = [line for line in stderr.splitlines() if line.startswith("Error:")]
    first = errors[0] if errors else ""
    prints_report = case.command[0] == "doctor"  # doctor reports on stdout, not as an Error:
    if case.line is not None and f"{config}:{case.line}" not in first:
        problems.append(f"{case.name}: no {config.name}:{case.line} in {first!r}")
    if not prints_report and len(errors) != 1:
        problems.append(f"{case.name}: expected one Error: line, got {stderr!r}")
    if case.expect and case.expect not in stderr:
        problems.append(f"{case.name}: {case.expect!r} not in {stderr!r}")
    if returncode != 2:
        problems.append(f"{case.name}: exit {returncode}: {stdout + stderr!r}")
    if not prints_report and stdout:
        problems.append(f"{case.name}: stdout not empty: {stdout!r}")
    if case.expect.startswith("OPENWORKFLOW_") and not re.search(rf"{case.expect}\b", stderr):
        problems.append(f"{case.name}: the variable is not named")
    return problems


def test_malformed_configs_exit_2_with_one_line_naming_file_and_line(tmp_path: Path) -> None:
    """F13: every broken config: exit 2, one error line with file[:line].

    No traceback, no secret.
    """
    exit_2 = located = tracebacks = secrets = 0
    with_line = sum(case.line is not None for case in CASES)
    problems: list[str] = []
    for index, case in enumerate(CASES):
        folder = tmp_path / f"case{index}"
        config = folder / "openworkflow.config.py"
        folder.mkdir()
        if isinstance(case.config, bytes):
            config.write_bytes(case.config)
        else:
            write(config, case.config)
        result = ow(folder, *case.command, env=clean_env(**case.env), timeout=60)
        output = result.stdout + result.stderr
        exit_2 += result.returncode == 2
        tracebacks += "Traceback" in output
        secrets += SECRET in output
        found = _problems(case, config, result.stdout, result.stderr, result.returncode)
        located += case.line is not None and not any("no openworkflow" in p for p in found)
        problems.extend(found)
    assert not problems, "\n".join(problems)
    assert (exit_2, located, tracebacks, secrets) == (len(CASES), with_line, 0, 0)

    # --debug is the way to the traceback, still without the secret.
    loud = ow(tmp_path / "case4", "--debug", "migrate", env=clean_env(), timeout=60)
    assert loud.returncode == 2
    assert "Traceback" in loud.stderr and SECRET not in loud.stdout + loud.stderr

    report(
        Figure(
            "F13",
            "malformed or hostile config",
            runs=len(CASES),
            faults=len(CASES),
            details=(
                f"{len(CASES)} broken configs/environments through the real ow (worker start, "
                f"dev, doctor, runs list, run, migrate): exit 2 {exit_2}/{len(CASES)}, "
                f"file:line in the error line {located}/{with_line} (the others name the file "
                f"or the variable), tracebacks 0 (only with --debug), secrets printed {secrets}; "
                "lost/duplicated: not applicable (no runs)"
            ),
        )
    )
