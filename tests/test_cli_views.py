"""Operator views: the status table and the watch lines."""

from __future__ import annotations

import datetime

from chatd import views


def _status(**extra: object) -> dict[str, object]:
    return {
        "type": "status", "ref": "c1", "server": "chatd/1.0.0", "uptime_s": 3725,
        "clients": 3, "users": ["bob", "Alice"], "seq": 41, "msgs_in": 12,
        "frames_out": 12345, "bytes_in": 1000, "bytes_out": 2000000, **extra,
    }


def test_duration() -> None:
    assert views.duration(5) == "5s"
    assert views.duration(65) == "1m 05s"
    assert views.duration(3725) == "1h 02m 05s"
    assert views.duration(2 * 86400 + 3600 + 120) == "2d 01h 02m"


def test_status_table_shows_counters_then_users() -> None:
    lines = views.status_table(_status(port=7000))
    text = "\n".join(lines)
    assert lines[0].split() == ["server", "chatd/1.0.0"]
    assert "uptime       1h 02m 05s" in text
    assert "frames out   12,345" in text
    assert "bytes out    2,000,000" in text
    assert "port         7000" in lines  # members beyond the contract are shown too
    assert "ref" not in text and "type" not in text
    users_at = lines.index("users online: 2")
    assert lines[users_at + 1:] == ["  Alice", "  bob"]


def test_status_table_names_the_cluster_node_and_its_redis() -> None:
    cluster = {"node": "a1b2c3", "redis": "redis://10.0.0.5:6379/0", "nodes": 3,
               "redis_up": False}
    lines = views.status_table(_status(cluster=cluster))
    assert "cluster node  a1b2c3 of 3" in lines
    assert "redis         redis://10.0.0.5:6379/0 (unreachable)" in lines


def test_status_table_with_nobody_online() -> None:
    lines = views.status_table(_status(users=[]))
    assert lines[-1] == "users online: 0"


def test_event_lines() -> None:
    ts = 1_700_000_000_123
    hhmmss = datetime.datetime.fromtimestamp(ts / 1000).strftime("%H:%M:%S")
    say = {"type": "msg", "seq": 7, "ts": ts, "from": "Alice", "text": "hi\nthere"}
    assert views.event_line(say) == f"{hhmmss}  #7 <Alice> hi\n{' ' * 11}there"
    in_room = {"type": "msg", "room": "Dev", "seq": 3, "ts": ts, "from": "bob", "text": "ok"}
    assert views.event_line(in_room) == f"{hhmmss}  Dev #3 <bob> ok"
    join = {"type": "join", "name": "bob", "ts": ts}
    assert views.event_line(join) == f"{hhmmss}  --> bob joined"
    leave = {"type": "leave", "name": "bob", "ts": ts, "reason": "kicked"}
    assert views.event_line(leave) == f"{hhmmss}  <-- bob left (kicked)"
    assert views.event_line({"type": "pong", "t": 1}) is None
    assert views.online_line({"users": ["b", "A"]}) == "online (2): A, b"
    assert views.online_line({"users": []}) == "online (0): (nobody)"


def test_status_table_shows_version_2_counts_and_fingerprint() -> None:
    fingerprint = "ab" * 32
    lines = views.status_table(_status(rooms=1234, accounts=7, tls_fingerprint=fingerprint,
                                       port=7000))
    labels = [line.split("  ")[0].strip() for line in lines[:lines.index("")]]
    # The known members in the contract's order, then the ones beyond it.
    assert labels[-4:] == ["rooms", "accounts", "TLS fingerprint", "port"]
    assert "rooms            1,234" in lines
    assert "accounts         7" in lines
    assert f"TLS fingerprint  {fingerprint}" in lines


def test_account_lines() -> None:
    reply = {"type": "accounts", "ref": "c1", "accounts": ["alice", "Bob", "İnci"]}
    assert views.account_lines(reply) == ["accounts: 3", "  alice", "  Bob", "  İnci"]
    assert views.account_lines({"type": "accounts", "accounts": []}) == ["accounts: 0"]


def test_room_table_aligns_columns_and_keeps_the_servers_order() -> None:
    reply = {"type": "rooms", "rooms": [
        {"room": "@alice@bob", "kind": "dm", "topic": "", "members": 2, "member": False,
         "invited": False},
        {"room": "Dev", "kind": "private", "topic": "build\nand  ship", "members": 12,
         "member": False, "invited": False},
        {"room": "lobby", "kind": "public", "topic": "welcome", "members": 3,
         "member": False, "invited": False},
    ]}
    assert views.room_table(reply) == [
        "ROOM        KIND     MEMBERS  TOPIC",
        "@alice@bob  dm             2",
        "Dev         private       12  build and ship",
        "lobby       public         3  welcome",
        "rooms: 3",
    ]


def test_room_table_with_no_rooms() -> None:
    assert views.room_table({"type": "rooms", "rooms": []}) == [
        "ROOM  KIND  MEMBERS  TOPIC", "rooms: 0"]
