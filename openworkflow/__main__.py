"""``python -m openworkflow``: the ``ow`` command line."""

from __future__ import annotations

from openworkflow.cli import main

if __name__ == "__main__":
    main(prog_name="ow")
