"""sysinv: the system inventory database, its HTTP API and the `system` command set."""
