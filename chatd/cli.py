"""The ``chatd`` command line: run the server, start and stop it, and operate it.

Exit codes: 0 success; 1 an operational failure (no server running, a server
already running, the port taken, the server refused a request such as adding
an account that exists, a stop that timed out); 2 bad usage, a bad setting
value or no password to read; 130 on Ctrl-C, 141 when the reader of the output
went away (``chatd watch | head``). Every failure is one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from chatd import __version__, daemon, views
from chatd.control_client import ControlClient, ControlError
from chatd.errors import StartupError
from chatd.notify import from_environment
from chatd.password_prompt import PasswordInputError, read_password
from chatd.settings import (
    SETTINGS,
    SettingError,
    Settings,
    flag_of,
    positive_seconds,
    resolve,
    text_of,
)
from protocol import Message

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

START_TIMEOUT = 30.0  # seconds `start` waits for the daemon to listen (a big history loads)
STOP_MARGIN = 10.0  # seconds `stop` waits beyond the server's grace period

EPILOG = """\
exit status: 0 success; 1 operational failure (no server running, a server
already running, port in use, the server refused the request, stop timed out);
2 bad usage, a bad setting value or no password. Settings come from flags, then
CHATD_<SETTING> environment variables, then the TOML config file (--config or
CHATD_CONFIG), then defaults.
"""

#: Settings a command that only talks to a running server needs to find it.
_LOCATE = ("data_dir", "control")

_PASSWORD_INPUT = (
    "The password is never an argument: on a terminal it is asked twice without "
    "echo; otherwise it is the first line of standard input."
)


def _seconds(text: str) -> float:
    """An argparse type: a wait in seconds, by the rule of the duration settings."""
    try:
        return positive_seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad number of seconds {text!r}: {exc}") from None


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line (and exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _setting_flags(names: Sequence[str] | None = None) -> OneLineParser:
    """A parent parser with --config and one flag per setting (or the named ones)."""
    parent = OneLineParser(add_help=False)
    parent.add_argument("--config", type=Path, metavar="FILE",
                        help="TOML config file (default: $CHATD_CONFIG)")
    defaults = Settings()
    for setting in SETTINGS:
        if names is None or setting.name in names:
            default = getattr(defaults, setting.name)
            shown = "" if default is None else f" (default: {text_of(default)})"
            help_text = (setting.help + shown).replace("%", "%%")
            if setting.switch:  # a bare flag: the setting's "true"
                parent.add_argument(flag_of(setting.name), dest=setting.name,
                                    action="store_const", const="true", help=help_text)
                continue
            parent.add_argument(
                flag_of(setting.name),
                dest=setting.name,
                metavar=setting.metavar or None,
                help=help_text,
            )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="chatd", description="The chat server, and the commands to operate it.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"chatd {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    server = _setting_flags()
    locate = _setting_flags(_LOCATE)

    commands.add_parser("run", parents=[server], epilog=EPILOG,
                        help="run in the foreground, logging to stderr")
    start = commands.add_parser(
        "start", parents=[server], epilog=EPILOG,
        help="start as a daemon (log and pid file in the data directory)",
    )
    start.add_argument("--timeout", type=_seconds, default=START_TIMEOUT, metavar="S",
                       help=f"seconds to wait until it accepts (default {START_TIMEOUT:g})")
    stop = commands.add_parser("stop", parents=[locate], epilog=EPILOG,
                               help="shut the server down gracefully and wait until it is gone")
    stop.add_argument("--timeout", type=_seconds, metavar="S",
                      help=f"seconds to wait (default: grace + {STOP_MARGIN:g})")
    status = commands.add_parser("status", parents=[locate], epilog=EPILOG,
                                 help="show users online and counters")
    status.add_argument("--json", action="store_true",
                        help="print the control socket's status reply as JSON")
    kick = commands.add_parser("kick", parents=[locate], epilog=EPILOG,
                               help="disconnect a user")
    kick.add_argument("name", help="the user's name (any case)")
    kick.add_argument("--reason", metavar="TEXT", help="shown to the kicked user")
    announce = commands.add_parser("announce", parents=[locate], epilog=EPILOG,
                                   help="send a message from 'server' to a room")
    announce.add_argument("text", nargs="+", help="the message (words are joined by spaces)")
    announce.add_argument("--room", metavar="ROOM", help="the room (default: lobby)")
    commands.add_parser("watch", parents=[locate], epilog=EPILOG,
                        help="print who is online, then every message, join and leave")
    _account_parsers(commands, locate)
    _room_parsers(commands, locate)
    commands.add_parser("bench", add_help=False,
                        help="load benchmark (see 'chatd bench --help')")
    return parser


def _account_parsers(
    commands: argparse._SubParsersAction[OneLineParser], locate: OneLineParser
) -> None:
    account = commands.add_parser(
        "account", epilog=EPILOG, help="add, remove and list accounts, set passwords",
        description=_PASSWORD_INPUT,
    )
    actions = account.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, text in (("add", "create an account (asks for its password)"),
                         ("remove", "delete an account; its session ends"),
                         ("passwd", "set an account's password (asks for it)")):
        parser = actions.add_parser(action, parents=[locate], epilog=EPILOG, help=text,
                                    description=text + ". " + _PASSWORD_INPUT)
        parser.add_argument("name", help="the account's name (any case)")
    actions.add_parser("list", parents=[locate], epilog=EPILOG, help="list every account")


def _room_parsers(
    commands: argparse._SubParsersAction[OneLineParser], locate: OneLineParser
) -> None:
    room = commands.add_parser("room", epilog=EPILOG, help="add, remove and list rooms")
    actions = room.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", parents=[locate], epilog=EPILOG,
                             help="create a room with no owner")
    add.add_argument("name", help="the room's name")
    add.add_argument("--private", action="store_true",
                     help="only members and invited accounts may join")
    remove = actions.add_parser("remove", parents=[locate], epilog=EPILOG,
                                help="delete a room and its history (not lobby)")
    remove.add_argument("name", help="the room's name (any case)")
    actions.add_parser("list", parents=[locate], epilog=EPILOG,
                       help="list every room, direct conversations included")


def _settings(args: argparse.Namespace) -> Settings:
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS}
    return resolve(flags, config_file=args.config)


def _request(settings: Settings, request: Message) -> Message:
    """One control request on a connection of its own; its reply."""
    with ControlClient(settings.control_path) as client:
        return client.request(request)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    daemon.configure_logging(settings.log_level)
    return daemon.serve_here(settings, from_environment(os.environ))


def _start(args: argparse.Namespace, settings: Settings) -> int:
    pid, status = daemon.start(settings, args.timeout)
    print(f"chatd started (pid {pid}){', ' + status if status else ''}; "
          f"log {settings.log_path}")
    return EXIT_OK


def _stop(args: argparse.Namespace, settings: Settings) -> int:
    timeout = args.timeout if args.timeout is not None else settings.grace + STOP_MARGIN
    pid = daemon.stop(settings, timeout)
    print("chatd stopped" + (f" (pid {pid})" if pid else ""))
    return EXIT_OK


def _status(args: argparse.Namespace, settings: Settings) -> int:
    status = _request(settings, {"type": "status"})
    if args.json:
        print(json.dumps(status, ensure_ascii=False, indent=2))
    else:
        print("\n".join(views.status_table(status)))
    return EXIT_OK


def _kick(args: argparse.Namespace, settings: Settings) -> int:
    request = {"type": "kick", "name": args.name}
    if args.reason is not None:
        request["reason"] = args.reason
    _request(settings, request)
    print(f"kicked {args.name}")
    return EXIT_OK


def _announce(args: argparse.Namespace, settings: Settings) -> int:
    request = {"type": "announce", "text": " ".join(args.text)}
    if args.room is not None:
        request["room"] = args.room
    _request(settings, request)
    print("announced" if args.room is None else f"announced in {args.room}")
    return EXIT_OK


def _with_password(settings: Settings, request: Message, prompt: str) -> None:
    """Send ``request`` with a password read as :func:`read_password` says.

    The connection is made first, so nobody types a password twice only to
    learn that no server is running.
    """
    with ControlClient(settings.control_path) as client:
        client.request({**request, "password": read_password(sys.stdin, prompt)})


def _account_add(args: argparse.Namespace, settings: Settings) -> int:
    _with_password(settings, {"type": "account_add", "name": args.name},
                   f"password for {args.name}: ")
    print(f"account {args.name} added")
    return EXIT_OK


def _account_remove(args: argparse.Namespace, settings: Settings) -> int:
    _request(settings, {"type": "account_remove", "name": args.name})
    print(f"account {args.name} removed")
    return EXIT_OK


def _account_passwd(args: argparse.Namespace, settings: Settings) -> int:
    _with_password(settings, {"type": "account_password", "name": args.name},
                   f"new password for {args.name}: ")
    print(f"password of {args.name} changed")
    return EXIT_OK


def _account_list(args: argparse.Namespace, settings: Settings) -> int:
    print("\n".join(views.account_lines(_request(settings, {"type": "accounts"}))))
    return EXIT_OK


def _room_add(args: argparse.Namespace, settings: Settings) -> int:
    request: Message = {"type": "room_add", "room": args.name}
    if args.private:
        request["private"] = True
    _request(settings, request)
    print(f"room {args.name} added" + (" (private)" if args.private else ""))
    return EXIT_OK


def _room_remove(args: argparse.Namespace, settings: Settings) -> int:
    _request(settings, {"type": "room_remove", "room": args.name})
    print(f"room {args.name} removed")
    return EXIT_OK


def _room_list(args: argparse.Namespace, settings: Settings) -> int:
    print("\n".join(views.room_table(_request(settings, {"type": "rooms"}))))
    return EXIT_OK


def _watch(args: argparse.Namespace, settings: Settings) -> int:
    """Print who is online, then each event, until Ctrl-C or the server goes away.

    ``status`` and ``watch`` go out together on one connection: the server
    handles them in order, so no event falls between the list and the stream.
    The list is printed once the watch is acknowledged, so a script that sees
    it knows every later event will be shown.
    """
    try:
        with ControlClient(settings.control_path) as client:
            status_ref = client.send({"type": "status"})
            watch_ref = client.send({"type": "watch"})
            status = client.reply(status_ref)
            client.reply(watch_ref)
            print(views.online_line(status), flush=True)
            for event in client.events():
                line = views.event_line(event)
                if line is not None:
                    print(line, flush=True)
    except KeyboardInterrupt:  # Ctrl-C is how a watch normally ends
        return EXIT_OK
    print(f"{views.clock()}  the server closed the connection", flush=True)
    return EXIT_OK


_COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], int]] = {
    "run": _run,
    "start": _start,
    "stop": _stop,
    "status": _status,
    "kick": _kick,
    "announce": _announce,
    "watch": _watch,
    "account add": _account_add,
    "account remove": _account_remove,
    "account passwd": _account_passwd,
    "account list": _account_list,
    "room add": _room_add,
    "room remove": _room_remove,
    "room list": _room_list,
}


def _bench(argv: Sequence[str]) -> int:
    """``chatd bench ARGS``: the load generator owns all of its own flags."""
    from chatd.bench import main as bench_main  # heavy imports only for this command

    return bench_main(list(argv))


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
    except SettingError as exc:
        print(f"chatd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    command = " ".join(filter(None, (args.command, getattr(args, "action", None))))
    try:
        code = _COMMANDS[command](args, settings)
        sys.stdout.flush()  # here, so that a failed write is reported below
        return code
    except PasswordInputError as exc:
        print(f"chatd {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StartupError, ControlError, daemon.StopError) as exc:
        print(f"chatd {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 128 + signal.SIGINT
    except BrokenPipeError:
        # The reader went away (`chatd watch | head`): end quietly, as filters do.
        _discard_stdout()
        return 128 + signal.SIGPIPE
    except OSError as exc:  # output to a full disk, a failed fork, and the like
        _discard_stdout()
        print(f"chatd {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):  # not a real file (tests capture it)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
