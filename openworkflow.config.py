"""This repository's own OpenWorkflow configuration: the example workflows on SQLite.

The database lives in `.openworkflow/` because `openworkflow/` here is the
package itself.
"""

config = {
    "backend": "sqlite:///.openworkflow/backend.db",
    "dirs": ["./workflows"],
    "worker": {"concurrency": 4},
}
