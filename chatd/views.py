"""What operators read: control-socket replies and events rendered as text.

Pure functions (message in, lines out), so the command line stays a thin layer
and the formats are tested without a server. Times are shown in local time.
"""

from __future__ import annotations

import datetime
from typing import Any

from protocol import Message

#: Status members in the order the table shows them, with their labels.
_COUNTERS = (
    ("server", "server"),
    ("uptime_s", "uptime"),
    ("clients", "connections"),
    ("seq", "last seq"),
    ("msgs_in", "messages in"),
    ("frames_out", "frames out"),
    ("bytes_in", "bytes in"),
    ("bytes_out", "bytes out"),
    ("rooms", "rooms"),
    ("accounts", "accounts"),
    ("tls_fingerprint", "TLS fingerprint"),
)
_GROUPED = {"clients", "seq", "msgs_in", "frames_out", "bytes_in", "bytes_out", "rooms",
            "accounts"}


def duration(seconds: float) -> str:
    """``3725`` -> ``1h 02m 05s``: what an uptime looks like to a person."""
    total = int(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def _value(key: str, value: Any) -> str:
    if key == "uptime_s" and isinstance(value, (int, float)):
        return duration(value)
    if key in _GROUPED and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def status_table(status: Message) -> list[str]:
    """A ``status`` reply as a two-column table of counters, then the users online.

    Members the contract does not list (a server may add some) are shown
    after the known ones, so nothing the server reports is hidden.
    """
    known = {key for key, _ in _COUNTERS} | {"type", "ref", "users"}
    rows = [(label, _value(key, status[key])) for key, label in _COUNTERS if key in status]
    rows += [
        (key.replace("_", " "), _value(key, value))
        for key, value in status.items()
        if key not in known and not isinstance(value, (list, dict))
    ]
    cluster = status.get("cluster")
    if isinstance(cluster, dict):  # cluster mode: this node and its Redis
        up = "" if cluster.get("redis_up", True) else " (unreachable)"
        rows.append(("cluster node", f"{cluster.get('node')} of {cluster.get('nodes')}"))
        rows.append(("redis", f"{cluster.get('redis')}{up}"))
    width = max((len(label) for label, _ in rows), default=0)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    users = [str(name) for name in status.get("users", [])]
    lines.append("")
    lines.append(f"users online: {len(users)}")
    lines.extend(f"  {name}" for name in sorted(users, key=str.casefold))
    return lines


def clock(ts_ms: object = None) -> str:
    """Server time (ms since the epoch) as local ``HH:MM:SS``; now if there is none."""
    if not isinstance(ts_ms, (int, float)) or isinstance(ts_ms, bool):
        return datetime.datetime.now().strftime("%H:%M:%S")
    return datetime.datetime.fromtimestamp(ts_ms / 1000).strftime("%H:%M:%S")


def _indented(text: str) -> str:
    """Continuation lines of a multi-line text, indented under its first line."""
    return text.replace("\n", "\n" + " " * 11)


def event_line(event: Message) -> str | None:
    """One line (or block) for a watched event; None for frames not worth showing."""
    kind = event.get("type")
    when = clock(event.get("ts"))
    if kind == "msg":  # version 2 messages name their room (watchers see every room)
        room = f"{event['room']} " if "room" in event else ""
        return (f"{when}  {room}#{event.get('seq')} <{event.get('from')}> "
                f"{_indented(str(event.get('text', '')))}")
    if kind == "join":
        return f"{when}  --> {event.get('name')} joined"
    if kind == "leave":
        return f"{when}  <-- {event.get('name')} left ({event.get('reason')})"
    if kind == "bye":
        return f"{clock()}  server closed the watch ({event.get('reason')})"
    if kind == "error":
        return f"{clock()}  error {event.get('code')}: {event.get('message')}"
    return None


def online_line(status: Message) -> str:
    """The watch header: who is online when watching begins."""
    users = sorted((str(u) for u in status.get("users", [])), key=str.casefold)
    return f"online ({len(users)}): {', '.join(users) if users else '(nobody)'}"


def account_lines(reply: Message) -> list[str]:
    """An ``accounts`` reply: the count, then the names in the server's order."""
    names = [str(name) for name in reply.get("accounts", [])]
    return [f"accounts: {len(names)}", *(f"  {name}" for name in names)]


def _one_line(text: str) -> str:
    """A topic on one table row: its runs of white space (new lines too) as one space."""
    return " ".join(text.split())


def room_table(reply: Message) -> list[str]:
    """A control ``rooms`` reply as a table: name, kind, member count, topic.

    Rows keep the server's order (sorted by casefolded name). A room without a
    topic ends at its member count, so no line has trailing spaces.
    """
    header = ("ROOM", "KIND", "MEMBERS", "TOPIC")
    rows = [
        (str(room.get("room", "")), str(room.get("kind", "")), str(room.get("members", "")),
         _one_line(str(room.get("topic", ""))))
        for room in reply.get("rooms", [])
        if isinstance(room, dict)
    ]
    name_width = max(len(row[0]) for row in [header, *rows])
    kind_width = max(len(row[1]) for row in [header, *rows])
    count_width = max(len(row[2]) for row in [header, *rows])
    lines = [
        f"{name:<{name_width}}  {kind:<{kind_width}}  {count:>{count_width}}  {topic}".rstrip()
        for name, kind, count, topic in [header, *rows]
    ]
    lines.append(f"rooms: {len(rows)}")
    return lines
