"""Workers: claiming runs, keeping their leases, and executing them by replay."""
