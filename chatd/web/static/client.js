// The chat session over WebSocket (contract sections 10-17, 21): state, no DOM.
//
// One text message per frame. The session survives a lost connection: it
// reconnects with the takeover token, `resume` (room -> last seq seen, so the
// server sends exactly what was missed) and then resends its outbox (each say
// carries an id, and the server's idempotent say turns a resend of an
// accepted message into a copy of the original: nothing is lost or doubled).

const RETRY_MS = [500, 1000, 2000, 4000, 8000];
const TYPING_EVERY_MS = 3000;
const KEEP_PER_ROOM = 1000;

export function roomKey(name) {
  return name.normalize("NFC").toLowerCase();
}

function newId() {
  const bytes = new Uint8Array(12);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Room {
  constructor(summary) {
    this.name = summary.room;
    this.kind = summary.kind;
    this.topic = summary.topic || "";
    this.seq = summary.seq || 0;
    this.oldest = summary.oldest || 0;
    this.read = summary.read || 0;
    this.role = summary.role || "member";
    this.with = summary.with || null;
    this.msgs = new Map(); // seq -> message
    this.members = null; // list of {name, role, online}, once asked
    this.typing = new Map(); // name -> until (ms)
    this.historyAsked = false;
  }

  get unread() {
    return Math.max(0, this.seq - this.read);
  }

  sorted() {
    return Array.from(this.msgs.values()).sort((a, b) => a.seq - b.seq);
  }

  lowestSeq() {
    let low = Infinity;
    for (const seq of this.msgs.keys()) low = Math.min(low, seq);
    return low === Infinity ? this.seq + 1 : low;
  }

  put(msg) {
    this.msgs.set(msg.seq, msg);
    if (msg.seq > this.seq) this.seq = msg.seq;
    if (this.msgs.size > KEEP_PER_ROOM) {
      const drop = this.sorted().slice(0, this.msgs.size - KEEP_PER_ROOM);
      for (const old of drop) this.msgs.delete(old.seq);
    }
  }
}

export class Session extends EventTarget {
  constructor(url, login) {
    super();
    this.url = url;
    this.login = login; // {name, password, mode, code}
    this.name = login.name;
    this.account = false;
    this.token = null;
    this.rooms = new Map(); // key -> Room
    this.outbox = []; // say requests not yet acknowledged, in order
    this.ws = null;
    this.online = false;
    this.stopped = false;
    this.attempt = 0;
    this.lastTyping = 0;
    this.seenWelcome = false;
    this.pending = new Map(); // request id -> what it was for
  }

  emit(type, detail = {}) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  room(name) {
    return this.rooms.get(roomKey(name));
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.send({ type: "bye" });
    else if (this.ws) this.ws.close();
  }

  connect() {
    const ws = new WebSocket(this.url, ["chat.v2"]);
    this.ws = ws;
    this.emit("connection", { state: this.seenWelcome ? "reconnecting" : "connecting" });
    ws.onopen = () => ws.send(JSON.stringify(this.hello()));
    ws.onmessage = (event) => {
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handle(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.online = false;
      this.ws = null;
      if (this.stopped) {
        this.emit("connection", { state: "closed" });
        return;
      }
      const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.emit("connection", { state: "offline", retryMs: delay });
      setTimeout(() => this.connect(), delay);
    };
  }

  hello() {
    const hello = { type: "hello", proto: 2, name: this.name, agent: "chat-web/1" };
    const { password, mode, code } = this.login;
    if (password) hello.password = password;
    if (this.token) hello.token = this.token;
    if (!this.seenWelcome && mode === "register") {
      hello.register = true;
      if (code) hello.code = code;
    }
    if (this.seenWelcome) {
      const resume = {};
      for (const room of this.rooms.values()) resume[room.name] = room.seq;
      hello.resume = resume;
    }
    return hello;
  }

  send(msg) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  request(msg, purpose) {
    const id = newId();
    this.pending.set(id, purpose || msg.type);
    return this.send({ ...msg, id });
  }

  // --- what the page asks for -------------------------------------------

  say(room, text) {
    const item = { type: "say", room, text, id: newId(), from: this.name, ts: Date.now() };
    this.outbox.push(item);
    if (this.online) this.send({ type: "say", room, text, id: item.id });
    this.emit("room", { room });
  }

  edit(room, seq, text) {
    this.request({ type: "edit", room, seq, text });
  }

  remove(room, seq) {
    this.request({ type: "delete", room, seq });
  }

  typing(room) {
    const now = Date.now();
    if (now - this.lastTyping < TYPING_EVERY_MS) return;
    this.lastTyping = now;
    this.send({ type: "typing", room });
  }

  mark(room) {
    const r = this.room(room);
    if (!r || r.read >= r.seq || !this.online) return;
    r.read = r.seq;
    this.send({ type: "mark", room: r.name, seq: r.seq });
    this.emit("rooms");
  }

  join(room) {
    this.request({ type: "join", room }, "join");
  }

  dm(to) {
    this.request({ type: "dm", to }, "join");
  }

  part(room) {
    this.request({ type: "part", room });
  }

  members(room) {
    this.send({ type: "members", room });
  }

  search(query, room) {
    const msg = { type: "search", query };
    if (room) msg.room = room;
    this.send(msg);
  }

  older(room) {
    const r = this.room(room);
    if (!r) return;
    const before = r.lowestSeq();
    if (before <= 1 || (r.oldest && before <= r.oldest)) return;
    r.historyAsked = true;
    this.send({ type: "history", room: r.name, before, limit: 50 });
  }

  // --- what the server says ------------------------------------------------

  handle(msg) {
    const handler = this["on_" + msg.type];
    if (typeof handler === "function") handler.call(this, msg);
  }

  on_welcome(msg) {
    const first = !this.seenWelcome;
    this.seenWelcome = true;
    this.online = true;
    this.attempt = 0;
    this.name = msg.name;
    this.account = msg.account;
    this.token = msg.token;
    const listed = new Set();
    for (const summary of msg.rooms) {
      const key = roomKey(summary.room);
      listed.add(key);
      const known = this.rooms.get(key);
      if (known) {
        known.kind = summary.kind;
        known.topic = summary.topic;
        known.role = summary.role;
        known.read = Math.max(known.read, summary.read);
        known.oldest = summary.oldest;
        if (summary.seq > known.seq && known.msgs.size === 0) known.seq = summary.seq;
      } else {
        this.rooms.set(key, new Room(summary));
      }
    }
    // Rooms the server no longer lists for us (a guest after a restart):
    // join again and ask for what was missed.
    for (const [key, room] of this.rooms) {
      if (!listed.has(key) && room.kind !== "dm") {
        this.send({ type: "join", room: room.name, since: room.seq });
      } else if (!listed.has(key)) {
        this.rooms.delete(key);
      }
    }
    for (const item of this.outbox) {
      this.send({ type: "say", room: item.room, text: item.text, id: item.id });
    }
    this.emit("welcome", { first });
    this.emit("connection", { state: "online" });
    this.emit("rooms");
  }

  on_msg(msg) {
    const room = this.room(msg.room || "lobby");
    if (!room) return;
    const fresh = !room.msgs.has(msg.seq) && msg.seq > room.seq;
    room.put(msg);
    if (msg.id && msg.from === this.name) {
      this.outbox = this.outbox.filter((item) => item.id !== msg.id);
    }
    room.typing.delete(msg.from);
    this.emit("message", { room: room.name, msg, fresh });
    this.emit("rooms");
  }

  on_history(msg) {
    const room = this.room(msg.room || "lobby");
    if (!room) return;
    for (const item of msg.msgs) room.put({ ...item, room: room.name });
    if (msg.msgs.length === 0) room.oldest = room.lowestSeq();
    this.emit("room", { room: room.name });
  }

  on_joined(msg) {
    const key = roomKey(msg.room);
    let room = this.rooms.get(key);
    if (!room) {
      room = new Room(msg);
      this.rooms.set(key, room);
    } else {
      room.topic = msg.topic;
      room.role = msg.role;
      room.read = Math.max(room.read, msg.read);
    }
    room.members = msg.members;
    const asked = msg.ref && this.pending.get(msg.ref) === "join";
    if (msg.ref) this.pending.delete(msg.ref);
    this.emit("rooms");
    this.emit("joined", { room: room.name, asked });
  }

  on_parted(msg) {
    this.rooms.delete(roomKey(msg.room));
    this.emit("rooms");
    this.emit("parted", { room: msg.room });
  }

  on_join(msg) {
    const room = msg.room && this.room(msg.room);
    if (room && room.members && !room.members.some((m) => m.name === msg.name)) {
      room.members.push({ name: msg.name, role: "member", online: true });
      this.emit("members", { room: room.name });
    }
  }

  on_part(msg) {
    const room = msg.room && this.room(msg.room);
    if (!room) return;
    if (roomKey(msg.name) === roomKey(this.name)) {
      this.rooms.delete(roomKey(room.name));
      this.emit("rooms");
      this.emit("notice", { text: `You are no longer in ${room.name} (${msg.reason})` });
      return;
    }
    if (room.members) room.members = room.members.filter((m) => m.name !== msg.name);
    this.emit("members", { room: room.name });
  }

  on_members(msg) {
    const room = this.room(msg.room);
    if (!room) return;
    room.members = msg.members;
    this.emit("members", { room: room.name });
  }

  on_presence(msg) {
    for (const room of this.rooms.values()) {
      const member = room.members && room.members.find((m) => m.name === msg.name);
      if (member) member.online = msg.online;
    }
    this.emit("members", {});
  }

  on_topic(msg) {
    const room = this.room(msg.room);
    if (room) room.topic = msg.topic;
    this.emit("rooms");
  }

  on_edited(msg) {
    const room = this.room(msg.room);
    const old = room && room.msgs.get(msg.seq);
    if (!old) return;
    room.put({ ...old, text: msg.text, edited: msg.ts });
    this.emit("room", { room: room.name });
  }

  on_deleted(msg) {
    const room = this.room(msg.room);
    const old = room && room.msgs.get(msg.seq);
    if (!old) return;
    room.put({ room: old.room, seq: old.seq, ts: old.ts, from: old.from, deleted: true });
    this.emit("room", { room: room.name });
  }

  on_typing(msg) {
    const room = this.room(msg.room);
    if (!room || msg.name === this.name) return;
    room.typing.set(msg.name, Date.now() + 6000);
    this.emit("typing", { room: room.name });
    setTimeout(() => this.emit("typing", { room: room.name }), 6100);
  }

  on_results(msg) {
    this.emit("results", msg);
  }

  on_rooms(msg) {
    this.emit("directory", msg);
  }

  on_ping(msg) {
    this.send({ type: "pong", t: msg.t });
  }

  on_pm(msg) {
    this.emit("notice", { text: `${msg.from} → ${msg.to}: ${msg.text}` });
  }

  on_bye(msg) {
    if (msg.reason === "replaced" || msg.reason === "kicked") {
      this.stopped = true;
      this.emit("notice", { text: `Disconnected: ${msg.reason}${msg.message ? " — " + msg.message : ""}`, fatal: true });
    }
  }

  on_error(msg) {
    if (msg.ref) this.pending.delete(msg.ref);
    if (msg.fatal && !this.seenWelcome) {
      this.stopped = true;
      this.emit("login-failed", msg);
      return;
    }
    if (msg.fatal && ["auth_failed", "not_allowed", "bad_name"].includes(msg.code)) {
      this.stopped = true;
    }
    this.emit("notice", { text: msg.message || msg.code, code: msg.code, fatal: msg.fatal });
  }
}
