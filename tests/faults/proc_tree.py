"""Processes as Linux's ``/proc`` shows them, for tests that look for orphans (no psutil).

A process is identified by its pid *and* its start time (clock ticks after
boot), so a pid the kernel reused for another program is never mistaken for
the one the test saw.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Proc:
    """One live process: its id, parent, start time (ticks after boot) and state letter."""

    pid: int
    ppid: int
    start_ticks: int
    state: str

    @property
    def key(self) -> tuple[int, int]:
        """``(pid, start_ticks)``: unique for the life of the machine."""
        return (self.pid, self.start_ticks)

    def started_since(self, ticks: int) -> bool:
        """Whether the process started at or after ``ticks`` (see :func:`now_ticks`).

        A tick is 10 ms: a process started in the same tick counts.
        """
        return self.start_ticks >= ticks


def read(pid: int) -> Proc | None:
    """The process ``pid``, or None if it is gone (or a zombie waiting to be reaped)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces.
    fields = text[text.rindex(")") + 2 :].split()
    proc = Proc(pid, int(fields[1]), int(fields[19]), fields[0])
    return None if proc.state in ("Z", "X") else proc


def alive(key: tuple[int, int]) -> bool:
    """Whether the process ``key`` (pid, start ticks) still runs."""
    proc = read(key[0])
    return proc is not None and proc.start_ticks == key[1]


def in_folder(folder: Path) -> list[Proc]:
    """Every live process whose working directory is ``folder``."""
    wanted = folder.resolve()
    found: list[Proc] = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:
            continue
        if cwd == wanted:
            proc = read(int(entry.name))
            if proc is not None:
                found.append(proc)
    return found


def now_ticks() -> int:
    """The time since boot in clock ticks, on the scale of :attr:`Proc.start_ticks`."""
    seconds = float((PROC / "uptime").read_text().split()[0])
    return int(seconds * os.sysconf("SC_CLK_TCK"))
