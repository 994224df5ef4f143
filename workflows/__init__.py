"""Example workflows, loaded by the repository's openworkflow.config.py."""
