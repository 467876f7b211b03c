"""The `sami-gateway` command: parse arguments, build the config, run."""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Sequence

from ..config import SETTINGS, Config, ConfigError, load_config


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file (as SAMI_CONFIG)")
    for setting in SETTINGS:
        parser.add_argument("--" + setting.name.replace("_", "-"), dest=setting.name,
                            help=f"{setting.help} (env {setting.env})")


COMMANDS_GROUP = "sami_gateway.commands"  # entry points through which namespaces add commands


def _plugin_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Each plugin's `register(subparsers)` adds its commands, with `func` set to their handler."""
    for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP):
        entry.load()(commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sami-gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    _plugin_commands(commands)
    from .jobs import register as register_jobs  # only argparse here: the SDK loads when a jobs action runs

    register_jobs(commands)
    serve = commands.add_parser("serve", help="run the gateway")
    add_setting_flags(serve)
    worker = commands.add_parser("worker", help="run work from the shared queue (scale-out: SAMI_QUEUE_URL, "
                                 "SAMI_STORAGE_URL)")
    add_setting_flags(worker)
    token = commands.add_parser("token", help="print a token for an appkey (last line)")
    token.add_argument("--appkey", required=True)
    token.add_argument("--ttl", type=int, help="lifetime in seconds (default SAMI_TOKEN_TTL)")
    add_setting_flags(token)
    return parser


def _set_heap(config: Config) -> None:
    """The heap's choice (SAMI_RETAIN_FREED_MEMORY), made while this is the process's only thread."""
    if config.retain_freed_memory:
        from ..runtime import heap

        heap.retain_freed_memory()


def _serve(flags: dict[str, object]) -> int:
    from ..app import create_app
    from ..roles.reload import on_sighup
    from ..runtime.namespace import NamespaceStartError
    from ..web.server import run

    config = load_config(flags)
    _set_heap(config)
    logging.basicConfig(level=config.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(config)
    app.on_startup.append(on_sighup(flags))
    try:
        run(app, config)
    except NamespaceStartError as exc:
        print(f"sami-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def _worker(flags: dict[str, object]) -> int:
    import asyncio

    import uvloop

    from ..roles.worker import serve_worker
    from ..runtime.namespace import NamespaceStartError

    config = load_config(flags)
    _set_heap(config)
    logging.basicConfig(level=config.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        uvloop.run(serve_worker(config, flags))
    except NamespaceStartError as exc:
        print(f"sami-gateway: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    return 0


def _token(flags: dict[str, object]) -> int:
    from ..auth.authenticator import TokenService

    appkey = str(flags.pop("appkey"))
    ttl = flags.pop("ttl")
    config = load_config(flags)
    if config.appkeys and appkey not in config.appkeys:
        print(f"warning: {appkey} is not in SAMI_APPKEYS here", file=sys.stderr)
    try:
        lifetime = config.token_ttl if ttl is None else int(ttl)  # type: ignore[call-overload]
        token = TokenService.from_config(config).issue(appkey, lifetime)
    except ValueError as exc:
        print(f"sami-gateway: --ttl: {exc}", file=sys.stderr)
        return 2
    print(token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    plugin_handler = args.pop("func", None)
    try:
        if plugin_handler is not None:
            return int(plugin_handler(args))
        return {"serve": _serve, "worker": _worker}.get(command, _token)(args)
    except ConfigError as exc:
        print(f"sami-gateway: {exc}", file=sys.stderr)
        return 2
