"""What every cache-directory command shares: ``--config`` and ``--cache-dir``, loading the
configuration, and running a coroutine to an exit status."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from proxy.config import CliOverrides, Config, ConfigError, load_config
from proxy.store import IndexUnavailable

# Exit statuses: 1 is "some of the work failed" (an image, an entry), 2 a usage or config error.
FAILED = 1
USAGE = 2


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML configuration file (upstreams, cache_dir); the built-in defaults without it",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="the cache directory to work on (default: the configuration's cache_dir)",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print JSON instead of a table, for scripts"
    )


def load(args: argparse.Namespace) -> Config | None:
    """The configuration, with ``--cache-dir`` applied; None after printing the error."""
    try:
        return load_config(args.config, os.environ, CliOverrides(cache_dir=args.cache_dir))
    except ConfigError as exc:
        fail(str(exc))
        return None


def fail(message: str) -> None:
    print(f"regcache: {message}", file=sys.stderr)


def run(work: Coroutine[Any, Any, int]) -> int:
    """The coroutine's exit status; Ctrl-C is 130, as for any command, not a traceback, and
    an index out of reach is a line saying so."""
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        return 130
    except IndexUnavailable as exc:
        fail(f"the index is out of reach: {exc}")
        return FAILED
