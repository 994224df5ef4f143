"""This repository's own OpenWorkflow configuration: the example workflows on SQLite.

The database lives in `.openworkflow/` because `openworkflow/` here is the
package itself; `ow worker start` and `ow dev` run the workflows in `workflows/`.
"""

from openworkflow import define_config

config = define_config(
    backend="sqlite:///.openworkflow/backend.db",
    dirs=["./workflows"],
    ignore_patterns=["**/run_examples.py"],
    worker={"concurrency": 4},
)
