"""The ``regcache`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from proxy import __version__
from proxy.commands import export, importbundle, inventory, listing, removal, unpin, warm
from proxy.config import (
    BUILTIN_UPSTREAMS,
    ENV_VARS,
    FLAG_SETTINGS,
    REDACTED,
    CliOverrides,
    Config,
    ConfigError,
    Setting,
    load_config,
    render,
)
from proxy.logs import configure_logging

_ENV_LIST = "\n".join(f"       {var:<27} sets {key}" for var, key in ENV_VARS.items())
_BUILTINS = "\n".join(f"  {name:<17} {url}" for name, url in BUILTIN_UPSTREAMS)

_DESCRIPTION = """\
regcache is a pull-through caching proxy for container registries. Point a container
runtime's registry mirror setting at it: it fetches images from the upstream registries
once, keeps blobs and manifests on local disk, and serves later pulls from that cache."""

_SERVE_DESCRIPTION = f"""\
Run the caching proxy in the foreground until SIGINT or SIGTERM.

Clients choose the upstream with the ?ns=REGISTRY query parameter that containerd and
Docker send to mirrors, or with a path prefix (/v2/REGISTRY/NAME/...); requests that name
no upstream go to the default upstream. Built-in upstreams, used unless the config file
has an `upstreams:` list:
{_BUILTINS}"""

_SERVE_EPILOG = f"""\
configuration precedence (later wins):
  1. built-in defaults
  2. the YAML file given with --config (every key is documented in
     config/regcache.example.yaml; unknown keys are errors)
  3. environment variables (an empty variable counts as unset):
{_ENV_LIST}
  4. command-line options

Upstream credentials, aliases, tag_ttl and tls_verify can only be set in the file.
Invalid configuration is reported as one line naming the source, line and key, and
regcache exits with status 2.

example:
  regcache serve --config /etc/regcache.yaml --listen 127.0.0.1:5000 \\
      --upstream registry.example.com=https://registry.example.com \\
      --log-level debug"""

_TOP_EPILOG = """\
Run `regcache serve --help` for the options, the configuration file, the environment
variables and their precedence.

example:
  regcache serve --listen 0.0.0.0:5000 --cache-dir /var/lib/regcache
  regcache config show --config /etc/regcache.yaml   # what serve would run with"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``regcache`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # argparse exits for --help, --version and usage errors; callers want a status.
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="regcache",
        description=_DESCRIPTION,
        epilog=_TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the caching proxy",
        description=_SERVE_DESCRIPTION,
        epilog=_SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_serve_options(serve)
    serve.set_defaults(handler=_serve)
    _add_config_command(commands)
    warm.add_parser(commands)
    unpin.add_parser(commands)
    for command in (export, inventory, importbundle):
        command.add_parser(commands)
    listing.add_parser(commands)
    removal.add_parsers(commands)
    return parser


def _add_config_command(commands: Any) -> None:
    config = commands.add_parser(
        "config",
        help="show the configuration",
        description="Inspect the configuration regcache would run with.",
    )
    actions = config.add_subparsers(dest="action", title="actions", metavar="ACTION")
    actions.required = True
    show = actions.add_parser(
        "show",
        help="print the effective configuration as YAML, secrets redacted",
        description="Print, as a YAML file `regcache serve --config` accepts, the configuration "
        "that `regcache serve` would run with given the same file, REGCACHE_* variables and "
        f"options. Passwords (whether from password, password_file or password_env) and any "
        f"other secret are shown as {REDACTED}.",
    )
    _add_serve_options(show)
    show.set_defaults(handler=_config_show)


def _add_serve_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="YAML configuration file; without it only the built-in defaults, the "
        "environment and these options apply",
    )
    for setting in FLAG_SETTINGS:
        _add_setting_flag(serve, setting)
    # Not one setting: each use adds an upstream or changes the URL of one.
    serve.add_argument(
        "--upstream",
        dest="upstreams",
        action="append",
        type=_upstream_arg,
        metavar="NAME=URL",
        help="add an upstream registry, or change the URL of the upstream with that name or "
        "alias (keeping its other settings); URL is http(s)://HOST[:PORT]; repeatable",
    )


def _add_setting_flag(serve: argparse.ArgumentParser, setting: Setting[Any]) -> None:
    assert setting.flag is not None
    if setting.is_switch:
        # A switch can only turn its setting on, so its default goes without saying.
        notes = [f"env {setting.env}=true"] if setting.env else []
        options: dict[str, Any] = {"action": "store_true"}
    else:
        shown = setting.default is not None and not setting.secret
        notes = [f"default: {setting.default}"] if shown else []
        notes += [f"env {setting.env}"] if setting.env else []
        options = {"metavar": setting.metavar}
    help_text = f"{setting.help} ({'; '.join(notes)})" if notes else setting.help
    serve.add_argument(setting.flag, dest=setting.name, help=help_text, **options)


def _upstream_arg(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not (sep and name and url):
        # The value itself is not echoed: the URL may carry credentials.
        raise argparse.ArgumentTypeError(
            "expected NAME=URL, e.g. registry.example.com=https://registry.example.com"
        )
    return name, url


def _load(args: argparse.Namespace) -> Config | None:
    """The configuration the options name, or None after printing the one-line error."""
    overrides = CliOverrides(
        upstreams=args.upstreams or (),
        **{setting.name: getattr(args, setting.name) for setting in FLAG_SETTINGS},
    )
    try:
        return load_config(args.config, os.environ, overrides)
    except ConfigError as exc:
        print(f"regcache: {exc}", file=sys.stderr)
        return None


def _config_show(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    sys.stdout.write(render(config))
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 2
    configure_logging(config.log_level, config.log_format)
    # Imported here so that --help and configuration errors do not pay for loading the server.
    from proxy.server.app import run_server
    from proxy.server.workers import Supervisor, raise_open_files_limit, worker_count

    raise_open_files_limit()
    count = worker_count(config)
    try:
        if count != 1:
            return Supervisor(dataclasses.replace(config, workers=count), count).run()
        run_server(config)
    except ConfigError as exc:
        print(f"regcache: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # Ctrl-C before the server installed its signal handlers: a clean exit, not a traceback.
        return 130
    return 0
