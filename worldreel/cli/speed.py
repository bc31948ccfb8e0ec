"""CLI commands: speed (placeholder until its issue lands)."""
from __future__ import annotations


def register(groups) -> None:
    """Add this module's commands to the CLI groups ("" is the top level)."""
