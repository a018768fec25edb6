"""Subcommands of `srlm`, one module each (see srlm_fast/cli.py)."""
