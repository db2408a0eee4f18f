"""The stack CLI: `python -m stack up|status|down|backup` (what `make up` etc. run)."""
