"""The ``chatd`` command line: run the server, and (later) operate it."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from chatd import __version__
from chatd.errors import StartupError
from chatd.settings import SETTINGS, SettingError, Settings, resolve


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config file")
    for setting in SETTINGS:
        parser.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=setting.name,
            metavar=setting.metavar or None,
            help=setting.help,
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chatd", description="The chat server.")
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="run in the foreground, logging to stderr")
    _add_setting_flags(run)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return resolve(flags, config_file=args.config)


def _run(settings: Settings) -> int:
    from chatd.loop import serve

    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return serve(settings)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = _settings(args)
    except SettingError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 2
    try:
        if args.command == "run":
            return _run(settings)
    except StartupError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return 1
    parser.error(f"unknown command {args.command}")
    return 2
