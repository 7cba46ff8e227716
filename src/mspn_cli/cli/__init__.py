"""The `mspn` command. Each subcommand lives in its own module and stays thin."""

from __future__ import annotations

from mspn_cli.cli.app import app, main

__all__ = ["app", "main"]
