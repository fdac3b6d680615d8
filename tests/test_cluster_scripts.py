"""The cluster's Lua scripts and codec, against a real redis-server: what each
script promises on its own (numbering, idempotency, trimming, refusing a lost
counter, all-or-nothing commits, names, leases)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from chatd import records
from chatd.cluster import codec, scripts
from chatd.records import AccountRecord, RoomRecord
from tests.cluster_support import RedisError, RedisServer, redis_server


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("scripts")) as server:
        yield server


def _cmd(redis: RedisServer, *args: str) -> Any:
    """A command's reply, as whatever shape Redis sent."""
    return redis.command(*args)


def _eval(redis: RedisServer, name: str, keys: list[str], *args: Any) -> Any:
    return _cmd(redis, "EVAL", scripts.SCRIPTS[name], str(len(keys)), *keys,
                         *(str(a) for a in args))


def _say(redis: RedisServer, room: str, sender: str, text: str, ident: str = "", *,
         retain: int = 1000, seen: int = 0, every: int = 1) -> Any:
    """One message through the script: its own answer."""
    return _eval(redis, "say", [*scripts.room_keys(room), scripts.gone_key(room)], retain, seen,
                 every,
                 sender, ident, sender, text)[0]


def _new_room(redis: RedisServer, room: str) -> None:
    _cmd(redis, "SET", scripts.room_keys(room)[0], "0", "NX")


def test_say_numbers_from_the_counter_and_answers_a_used_id_with_the_original(
        redis: RedisServer) -> None:
    _new_room(redis, "a")
    first = _say(redis, "a", "ann", "one", "id1")
    second = _say(redis, "a", "bob", "two", "id1")  # same id, other sender: a new message
    again = _say(redis, "a", "ann", "changed text", "id1")
    assert first[:2] == [1, 1] and second[:2] == [1, 2]
    assert again[0] == 0 and again[1] == 1
    entry = again[2][0]
    assert entry[0] == b"1-0" and b"one" in entry[1]
    assert _cmd(redis, "XLEN", scripts.room_keys("a")[1]) == 2


def test_say_takes_a_turns_messages_in_one_call_in_order(redis: RedisServer) -> None:
    _new_room(redis, "batch")
    answers = _eval(redis, "say", [*scripts.room_keys("batch"), scripts.gone_key("batch")],
                    1000, 0, 1,
                    "ann", "x", "ann", "one", "bob", "", "bob", "two", "ann", "x", "ann", "again")
    assert [a[:2] for a in answers] == [[1, 1], [1, 2], [0, 1]]
    assert answers[0][2] == answers[1][2]  # one ts for the call


def test_say_refuses_a_missing_or_rewound_counter(redis: RedisServer) -> None:
    with pytest.raises(RedisError, match="UNAVAILABLE"):
        _say(redis, "never-made", "ann", "hi")
    assert _cmd(redis, "EXISTS", scripts.room_keys("never-made")[0]) == 0
    _new_room(redis, "b")
    _say(redis, "b", "ann", "hi")
    with pytest.raises(RedisError, match="UNAVAILABLE"):  # a node saw seq 5: Redis lost data
        _say(redis, "b", "ann", "hi", seen=5)
    assert _cmd(redis, "GET", scripts.room_keys("b")[0]) == b"1"


def test_say_trims_to_the_retention_and_forgets_trimmed_ids(redis: RedisServer) -> None:
    _new_room(redis, "c")
    for n in range(1, 6):
        _say(redis, "c", "ann", f"m{n}", f"id{n}", retain=3)
    _, log_key, ids_key = scripts.room_keys("c")
    ids = [entry[0] for entry in _cmd(redis, "XRANGE", log_key, "-", "+")]
    assert ids == [b"3-0", b"4-0", b"5-0"]
    assert sorted(_cmd(redis, "HKEYS", ids_key)) == [b"ann\nid3", b"ann\nid4", b"ann\nid5"]
    assert _say(redis, "c", "ann", "m1 again", "id1", retain=3)[:2] == [1, 6]


def test_say_trims_in_batches_when_asked(redis: RedisServer) -> None:
    _new_room(redis, "d")
    log_key = scripts.room_keys("d")[1]
    for n in range(1, 7):
        _say(redis, "d", "ann", f"m{n}", retain=2, every=4)
        assert _cmd(redis, "XLEN", log_key) == (2 if n == 6 else n)


def _commit(redis: RedisServer, cluster_id: str, ops: list[records.Op]) -> Any:
    cmds = codec.commands(ops)
    return _cmd(redis, "EVAL", scripts.SCRIPTS["meta"], str(len(cmds.keys)), *cmds.keys,
                         cluster_id, "node1", "{}", *(str(a) for a in cmds.args))


def test_meta_commit_round_trips_the_state(
        redis: RedisServer) -> None:
    _cmd(redis, "SET", scripts.CLUSTER, "c1")
    ops: list[records.Op] = [
        records.PutAccount(AccountRecord("zoe", "Zoë", "scrypt$x")),
        records.PutRoom(RoomRecord("dev", "Dev", records.PRIVATE, "t", "zoe")),
        records.PutMember("dev", "zoe", records.OWNER),
        records.PutBan("dev", "mallory"),
        records.PutInvite("dev", "bob"),
        records.PutMarker("dev", "zoe", 7),
    ]
    assert _commit(redis, "c1", ops) == 1
    assert _cmd(redis, "GET", scripts.room_keys("dev")[0]) == b"0"  # its counter exists
    raw = _cmd(redis, "HGETALL", scripts.STATE)
    fields = {k.decode(): v.decode() for k, v in zip(raw[::2], raw[1::2], strict=True)}
    snap = codec.snapshot(fields)
    assert snap.accounts == [AccountRecord("zoe", "Zoë", "scrypt$x")]
    assert snap.rooms == [RoomRecord("dev", "Dev", records.PRIVATE, "t", "zoe")]
    assert snap.members == [("dev", "zoe", records.OWNER)]
    assert snap.bans == [("dev", "mallory")] and snap.invites == [("dev", "bob")]
    assert snap.markers == [("dev", "zoe", 7)]
    # Removing the room drops its members, bans, invitations and markers, and
    # a message still on its way to it is refused; made again, it goes on.
    _say(redis, "dev", "zoe", "before")
    _commit(redis, "c1", [records.RemoveRoom("dev")])
    left = [k for k in _cmd(redis, "HKEYS", scripts.STATE) if b"dev" in k]
    assert left == []
    with pytest.raises(RedisError, match="GONE"):
        _say(redis, "dev", "zoe", "late")
    _commit(redis, "c1", [records.PutRoom(RoomRecord("dev", "Dev", records.PUBLIC))])
    assert _say(redis, "dev", "zoe", "again")[:2] == [1, 2]


def test_a_new_room_or_account_is_reserved_by_the_first_node_only(
        redis: RedisServer) -> None:
    _cmd(redis, "SET", scripts.CLUSTER, "c1")
    first = RoomRecord("new", "New", records.PRIVATE, "", "ann")
    second = RoomRecord("new", "NEW", records.PUBLIC, "", "bob")
    keys = [scripts.CLUSTER, scripts.STATE, scripts.room_keys("new")[0], scripts.gone_key("new")]
    assert _eval(redis, "reserve", keys, "c1", *codec.room_field(first)) is None
    assert _cmd(redis, "GET", scripts.room_keys("new")[0]) == b"0"  # its counter
    taken = _eval(redis, "reserve", keys, "c1", *codec.room_field(second))
    assert codec.room_record("new", taken.decode()) == first
    account = [scripts.CLUSTER, scripts.STATE]
    assert _eval(redis, "reserve", account, "c1",
                 *codec.account_field(AccountRecord("zed", "Zed", "h1"))) is None
    assert _eval(redis, "reserve", account, "c1",
                 *codec.account_field(AccountRecord("zed", "ZED", "h2"))) is not None
    with pytest.raises(RedisError, match="UNAVAILABLE"):  # an emptied Redis: nothing new
        _eval(redis, "reserve", account, "lost",
              *codec.account_field(AccountRecord("amy", "Amy", "h3")))


def test_meta_commit_refuses_a_redis_that_lost_the_cluster_id(redis: RedisServer) -> None:
    _cmd(redis, "SET", scripts.CLUSTER, "c1")
    with pytest.raises(RedisError, match="UNAVAILABLE"):
        _commit(redis, "another", [records.PutMarker("x", "y", 1)])
    assert _cmd(redis, "HGET", scripts.STATE, "k\tx\ty") is None


def test_ops_survive_the_feed_encoding() -> None:
    ops: list[records.Op] = [
        records.PutRoom(RoomRecord("r", "R", records.PUBLIC, "topic", None)),
        records.PutAccount(AccountRecord("a", "A", "h")),
        records.EditMessage("r", 3, "new text", 123),
        records.DeleteMessage("r", 4),
        records.RemoveMember("r", "a"),
        records.RemoveAccount("a"),
    ]
    assert [codec.op_from_json(codec.op_to_json(op)) for op in ops] == ops


def test_a_name_is_claimed_once_and_moves_only_with_its_token(redis: RedisServer) -> None:
    _cmd(redis, "SET", scripts.CLUSTER, "c1")
    keys = [scripts.ONLINE, scripts.META, scripts.CLUSTER]
    assert _eval(redis, "claim", keys, "ann", "n1", "tok1", "", "Ann", "c1") == [1, b""]
    assert _eval(redis, "claim", keys, "ann", "n2", "tok2", "", "Ann", "c1") == [0, b"n1"]
    assert _eval(redis, "claim", keys, "ann", "n2", "tok2", "wrong", "Ann", "c1") == [0, b"n1"]
    assert _eval(redis, "claim", keys, "ann", "n2", "tok2", "tok1", "Ann", "c1") == [1, b"n1"]
    with pytest.raises(RedisError, match="UNAVAILABLE"):  # an emptied Redis: no logins
        _eval(redis, "claim", keys, "bea", "n2", "tok3", "", "Bea", "lost")
    kick = _cmd(redis, "XREVRANGE", scripts.META, "+", "-", "COUNT", "1")[0][1]
    assert kick[kick.index(b"kick") + 1] == b"ann" and kick[kick.index(b"node") + 1] == b"n1"
    _eval(redis, "release", [scripts.ONLINE], "ann", "n1", "tok1")  # the old session: no-op
    assert _cmd(redis, "HGET", scripts.ONLINE, "ann") == b"n2\ttok2\tAnn"
    _eval(redis, "release", [scripts.ONLINE], "ann", "n2", "tok2")
    assert _cmd(redis, "HGET", scripts.ONLINE, "ann") is None


def test_reap_takes_the_users_of_a_node_whose_lease_stays_lapsed_once(
        redis: RedisServer) -> None:
    keys = [scripts.NODES, scripts.ONLINE, scripts.SUSPECTS]
    _cmd(redis, "SADD", scripts.NODES, "live", "dead", "paused")
    _cmd(redis, "SET", scripts.lease_key("live"), "1", "PX", "60000")
    _cmd(redis, "HSET", scripts.ONLINE, "bo", "dead\tt1\tBo", "cy", "live\tt2\tCy",
         "di", "paused\tt3\tDi")
    # First seen missing: only suspects (a Redis that paused lets every lease lapse).
    assert _eval(redis, "reap", keys, "me", 0) == []
    renew = [scripts.lease_key("paused"), scripts.NODES, scripts.SUSPECTS]
    assert _eval(redis, "renew", renew, "paused", 60000) == 0  # listed: not reaped
    assert sorted(_eval(redis, "reap", keys, "me", 0)) == [b"Bo", b"bo"]
    assert _eval(redis, "reap", keys, "other", 0) == []  # announced by one node only
    assert sorted(_cmd(redis, "HKEYS", scripts.ONLINE)) == [b"cy", b"di"]
    assert _cmd(redis, "SISMEMBER", scripts.NODES, "dead") == 0

