"""Builds the aiohttp application and runs it."""

from __future__ import annotations

from proxy.config import Config


def run_server(config: Config) -> None:
    """Serve until SIGINT/SIGTERM. Blocks."""
    raise NotImplementedError
