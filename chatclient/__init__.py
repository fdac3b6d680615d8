"""chatclient: the version 2 client of the chat protocol, for every user interface.

Two layers, h11 style (see /tmp/plan/client_api.md for the long form):

``chatclient.session.ClientSession`` — the sans-I/O state machine. No sockets,
no clock: bytes, intents and the time go in; bytes and events come out.

    ClientSession(name, *, password=None, register=False, code=None,
                  agent="chatclient", rooms=(), rng=None, new_id=None, record=False)
    driver side:  wants_connection(now) -> bool; connection_started(now, address);
                  connection_made(now); receive_data(data, now)  (b"" = EOF);
                  connection_lost(now, reason); tick(now); should_close() -> bool;
                  data_to_send() -> bytes; next_event() / events();
                  next_attempt_at() -> float | None; next_timer() -> float | None
    intents:      say(room, text) / pm(to, text) -> id (outbox: kept until Acked, resent
                  after reconnects); edit(room, seq, text); delete(room, seq);
                  typing(room) -> bool; mark(room, seq=None) -> id | None;
                  join(room, private=False); part(room); dm(name); invite(room, name);
                  kick(room, name, reason=None, ban=False); topic(room, text);
                  op(room, name, op=True); unban(room, name);
                  history(room, before=None, limit=50); search(query, room=None,
                  limit=20, before=None); members(room); list_rooms(); who();
                  change_password(old, new); bye()
                  -> the request id; value errors raise protocol.ProtocolError;
                  asked offline -> Rejected(code="offline")
    state:        status, name, account, rooms {key: RoomState}, room(name), outbox,
                  typers(room, now), has_older(room), max_text, transcript()

``chatclient.events`` — one frozen dataclass per event (``Event`` is their union):
Connecting, Connected, LoggedIn, Reconnecting, Failed, Closed, RoomJoined, RoomLeft,
RoomUpdated, TopicChanged, RoleChanged, MemberJoined, MemberLeft, Typing, Invited,
MessageAdded, MessageEdited, MessageDeleted, PrivateMessage, Acked, Done, Rejected,
Presence, HistoryPage, SearchResults, RoomList, Members, Users; values RoomInfo,
ChatMessage, Member, RoomListEntry.

``chatclient.net.Connection(session, host, port)`` — the thin non-blocking socket
driver: ``poll(now=None) -> list[Event]`` never blocks; ``fileno()``,
``wants_write()`` and ``timeout()`` for select loops; ``close()`` and
``close_and_wait()``.

``chatclient.transcript.replay(transcript)`` — runs a recorded conversation through
a fresh session (test vectors in tests/transcripts/).
"""
