// The page: login, rooms and dms, messages, composer, search, members.
import { Session, roomKey } from "./client.js";

const $ = (id) => document.getElementById(id);
const GROUP_GAP_MS = 5 * 60 * 1000;
const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const day = new Intl.DateTimeFormat(undefined, { weekday: "long", year: "numeric", month: "long", day: "numeric" });

let session = null;
let current = null; // the shown room's name
let editing = null; // {room, seq} while the composer edits a message

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("data-") || key.startsWith("aria-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

// A stable colour per sender: a hue from a hash of the name.
function hue(name) {
  let hash = 0;
  for (const ch of roomKey(name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

function mentions(text, name) {
  const escaped = name.replace(/[.*+?^${}()|[\]\\-]/g, "\\$&");
  return new RegExp(`(^|[^\\p{L}\\p{N}_])@?${escaped}(?![\\p{L}\\p{N}_])`, "iu").test(text);
}

function roomLabel(room) {
  return room.kind === "dm" ? room.with || room.name : room.name;
}

// --- login -------------------------------------------------------------------

function loginMode() {
  return document.querySelector('input[name="mode"]:checked').value;
}

function showMode() {
  const mode = loginMode();
  $("code-row").hidden = mode !== "register";
  $("login-password-label").textContent =
    mode === "guest" ? "Server password (if it has one)" : "Password";
  $("login-password").autocomplete = mode === "register" ? "new-password" : "current-password";
  $("login-submit").textContent = mode === "register" ? "Create account" : "Sign in";
}

function askNotifications() {
  if ("Notification" in window && Notification.permission === "default") {
    Notification.requestPermission().then(showNotifyButton, () => {});
  }
}

function showNotifyButton() {
  const button = $("notify-button");
  button.hidden = !("Notification" in window) || Notification.permission !== "default";
}

function startSession(event) {
  event.preventDefault();
  askNotifications(); // a user gesture: the browser may ask now
  const name = $("login-name").value.trim();
  if (!name) {
    $("login-error").textContent = "Please enter a name.";
    $("login-name").focus();
    return;
  }
  const login = { name, password: $("login-password").value, mode: loginMode(), code: $("login-code").value };
  if (login.mode === "guest" && !login.password) delete login.password;
  $("login-error").textContent = "";
  $("login-submit").disabled = true;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  session = new Session(`${scheme}//${location.host}/ws`, login);
  wire(session);
  session.start();
}

function wire(s) {
  s.addEventListener("welcome", (e) => {
    if (!e.detail.first) return;
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("login-submit").disabled = false;
    $("me-name").textContent = s.name;
    showNotifyButton();
    const lobby = Array.from(s.rooms.values()).find((r) => r.kind !== "dm");
    if (lobby) openRoom(lobby.name);
    $("composer").focus();
  });
  s.addEventListener("login-failed", (e) => {
    $("login-error").textContent = `${e.detail.message} (${e.detail.code})`;
    $("login-submit").disabled = false;
    session = null;
  });
  s.addEventListener("connection", (e) => showConnection(e.detail));
  s.addEventListener("rooms", renderRooms);
  s.addEventListener("room", (e) => { if (isCurrent(e.detail.room)) renderMessages(); });
  s.addEventListener("message", (e) => onMessage(e.detail));
  s.addEventListener("members", renderMembers);
  s.addEventListener("typing", (e) => { if (isCurrent(e.detail.room)) renderTyping(); });
  s.addEventListener("joined", (e) => { if (e.detail.asked) openRoom(e.detail.room); });
  s.addEventListener("parted", (e) => {
    if (isCurrent(e.detail.room)) {
      const next = Array.from(s.rooms.values())[0];
      if (next) openRoom(next.name);
    }
  });
  s.addEventListener("results", (e) => renderResults(e.detail));
  s.addEventListener("notice", (e) => { $("status").textContent = e.detail.text; });
}

function showConnection({ state, retryMs }) {
  const text = {
    connecting: "Connecting…",
    online: "",
    offline: `Connection lost. Reconnecting in ${Math.round((retryMs || 0) / 1000)} s…`,
    reconnecting: "Reconnecting…",
    closed: "Signed out.",
  }[state];
  $("connection").textContent = text;
  $("connection").dataset.state = state;
  if (state === "closed" && session && session.stopped) {
    $("chat-view").hidden = true;
    $("login-view").hidden = false;
    $("login-submit").disabled = false;
  }
}

function isCurrent(name) {
  return current !== null && roomKey(name) === roomKey(current);
}

// --- rooms -------------------------------------------------------------------

function renderRooms() {
  if (!session) return;
  const rooms = Array.from(session.rooms.values())
    .sort((a, b) => roomLabel(a).localeCompare(roomLabel(b)));
  const lists = { room: $("room-list"), dm: $("dm-list") };
  lists.room.replaceChildren();
  lists.dm.replaceChildren();
  for (const room of rooms) {
    const unread = isCurrent(room.name) ? 0 : room.unread;
    const button = el("button", { type: "button", class: "room-button", "data-room": room.name },
      el("span", { class: "room-name", text: (room.kind === "dm" ? "@" : "#") + roomLabel(room) }),
      unread ? el("span", { class: "unread", text: String(unread), "aria-label": `${unread} unread` }) : null);
    if (isCurrent(room.name)) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => openRoom(room.name));
    lists[room.kind === "dm" ? "dm" : "room"].append(el("li", {}, button));
  }
  const room = current && session.room(current);
  if (room) {
    $("room-title").textContent = (room.kind === "dm" ? "@" : "#") + roomLabel(room);
    $("room-topic").textContent = room.topic;
  }
  const total = rooms.reduce((sum, r) => sum + (isCurrent(r.name) ? 0 : r.unread), 0);
  document.title = total ? `(${total}) chat` : "chat";
}

function openRoom(name) {
  const room = session.room(name);
  if (!room) return;
  current = room.name;
  cancelEdit();
  if (!room.historyAsked && room.msgs.size < 50) session.older(room.name);
  if (!room.members) session.members(room.name);
  closeDrawer();
  renderRooms();
  renderMessages(true);
  renderMembers();
  renderTyping();
  markRead();
}

function markRead() {
  if (current && document.visibilityState === "visible") session.mark(current);
}

// --- messages ----------------------------------------------------------------

function onMessage({ room, msg, fresh }) {
  if (isCurrent(room)) {
    renderMessages();
    if (document.hasFocus()) markRead();
  }
  if (fresh && msg.from !== session.name && msg.text && mentions(msg.text, session.name)) {
    notify(room, msg);
  }
}

function notify(room, msg) {
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if (document.hasFocus() && isCurrent(room)) return;
  const note = new Notification(`${msg.from} in ${room}`, { body: msg.text, tag: `${room}:${msg.seq}` });
  note.onclick = () => { window.focus(); openRoom(room); };
}

function renderMessages(jump = false) {
  const list = $("message-list");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.replaceChildren();
  const room = current && session.room(current);
  if (!room) return;
  const pending = session.outbox.filter((item) => roomKey(item.room) === roomKey(room.name))
    .map((item) => ({ ...item, pending: true }));
  let last = null;
  for (const msg of [...room.sorted(), ...pending]) {
    const date = new Date(msg.ts);
    if (!last || new Date(last.ts).toDateString() !== date.toDateString()) {
      list.append(el("li", { class: "day", role: "separator", text: day.format(date) }));
      last = null;
    }
    const grouped = last && last.from === msg.from && msg.ts - last.ts < GROUP_GAP_MS;
    list.append(messageItem(room, msg, grouped));
    last = msg;
  }
  $("older-button").hidden = room.lowestSeq() <= Math.max(1, room.oldest);
  if (jump || atBottom) list.scrollTop = list.scrollHeight;
}

function messageItem(room, msg, grouped) {
  const own = roomKey(msg.from) === roomKey(session.name);
  const item = el("li", { class: "msg" + (grouped ? " grouped" : "") + (own ? " own" : "") });
  item.dataset.seq = msg.seq ?? "";
  item.dataset.from = msg.from;
  if (msg.pending) item.classList.add("pending");
  if (!grouped) {
    const who = el("span", { class: "from", text: msg.from });
    who.style.setProperty("--hue", hue(msg.from));
    item.append(el("div", { class: "meta" }, who,
      el("time", { dateTime: new Date(msg.ts).toISOString(), text: time.format(new Date(msg.ts)) })));
  }
  const body = el("div", { class: "text" });
  if (msg.deleted) {
    body.classList.add("deleted");
    body.textContent = "message deleted";
  } else {
    body.textContent = msg.text;
    if (!own && mentions(msg.text, session.name)) item.classList.add("mention");
    if (msg.edited) body.append(el("span", { class: "edited", text: " (edited)" }));
  }
  item.append(body);
  const canEdit = own && !msg.deleted && !msg.pending;
  const canDelete = !msg.deleted && !msg.pending && (own || room.role === "owner" || room.role === "op");
  if (canEdit || canDelete) {
    const tools = el("div", { class: "tools" });
    if (canEdit) tools.append(el("button", { type: "button", class: "small", text: "Edit",
      "aria-label": `Edit message ${msg.seq}`, onclick: () => startEdit(room, msg) }));
    if (canDelete) tools.append(el("button", { type: "button", class: "small", text: "Delete",
      "aria-label": `Delete message ${msg.seq}`, onclick: () => session.remove(room.name, msg.seq) }));
    item.append(tools);
  }
  return item;
}

function startEdit(room, msg) {
  editing = { room: room.name, seq: msg.seq };
  const composer = $("composer");
  composer.value = msg.text;
  $("composer-label").textContent = "Edit message";
  $("send").textContent = "Save";
  composer.classList.add("editing");
  composer.focus();
}

function cancelEdit() {
  editing = null;
  $("composer-label").textContent = "Message";
  $("send").textContent = "Send";
  $("composer").classList.remove("editing");
}

function renderTyping() {
  const room = current && session.room(current);
  const now = Date.now();
  const names = room ? Array.from(room.typing).filter(([, until]) => until > now).map(([n]) => n) : [];
  $("typing").textContent = names.length === 0 ? "" :
    names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function submitComposer(event) {
  event.preventDefault();
  const composer = $("composer");
  const text = composer.value.trim();
  if (!text || !current) return;
  if (editing) {
    session.edit(editing.room, editing.seq, text);
    cancelEdit();
  } else {
    session.say(current, text);
  }
  composer.value = "";
  renderMessages(true);
}

function composerKeys(event) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    submitComposer(event);
  } else if (event.key === "Escape" && editing) {
    cancelEdit();
    $("composer").value = "";
  } else if (event.key === "ArrowUp" && !$("composer").value && current) {
    const room = session.room(current);
    const mine = room.sorted().filter((m) => m.from === session.name && !m.deleted);
    if (mine.length) {
      event.preventDefault();
      startEdit(room, mine[mine.length - 1]);
    }
  }
}

// --- members, search ---------------------------------------------------------

function renderMembers() {
  const room = current && session && session.room(current);
  const list = $("member-list");
  list.replaceChildren();
  if (!room || !room.members) return;
  for (const member of room.members) {
    const who = el("span", { class: "from", text: member.name });
    who.style.setProperty("--hue", hue(member.name));
    list.append(el("li", { class: member.online ? "online" : "offline" },
      el("span", { class: "dot", "aria-label": member.online ? "online" : "offline" }), who,
      member.role !== "member" ? el("span", { class: "role", text: member.role }) : null));
  }
}

function togglePanel(id, button) {
  const panel = $(id);
  panel.hidden = !panel.hidden;
  if (button) button.setAttribute("aria-expanded", String(!panel.hidden));
  if (id === "members" && !panel.hidden && current) session.members(current);
}

function renderResults(reply) {
  const list = $("result-list");
  list.replaceChildren();
  if (reply.msgs.length === 0) list.append(el("li", { text: `Nothing found for “${reply.query}”.` }));
  for (const msg of reply.msgs) {
    const button = el("button", { type: "button", class: "result" },
      el("span", { class: "meta", text: `#${msg.room} · ${msg.from} · ${time.format(new Date(msg.ts))}` }),
      el("span", { class: "text", text: msg.text }));
    button.addEventListener("click", () => openRoom(msg.room));
    list.append(el("li", {}, button));
  }
  $("results").hidden = false;
}

// --- phone layout ------------------------------------------------------------

function closeDrawer() {
  document.body.classList.remove("drawer-open");
  $("menu-button").setAttribute("aria-expanded", "false");
}

function toggleDrawer() {
  const open = document.body.classList.toggle("drawer-open");
  $("menu-button").setAttribute("aria-expanded", String(open));
}

// --- start -------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.addEventListener("change", showMode);
  showMode();
  $("login-form").addEventListener("submit", startSession);
  $("composer-form").addEventListener("submit", submitComposer);
  $("composer").addEventListener("keydown", composerKeys);
  $("composer").addEventListener("input", () => { if (current && !editing) session.typing(current); });
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("join-room").value.trim();
    if (name) session.join(name);
    $("join-room").value = "";
  });
  $("dm-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const name = $("dm-name").value.trim();
    if (name) session.dm(name);
    $("dm-name").value = "";
  });
  $("search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const query = $("search").value.trim();
    if (query) session.search(query);
  });
  $("results-close").addEventListener("click", () => { $("results").hidden = true; $("search").focus(); });
  $("members-button").addEventListener("click", (e) => togglePanel("members", e.currentTarget));
  $("older-button").addEventListener("click", () => current && session.older(current));
  $("menu-button").addEventListener("click", toggleDrawer);
  $("notify-button").addEventListener("click", askNotifications);
  $("logout-button").addEventListener("click", () => session && session.stop());
  document.addEventListener("visibilitychange", markRead);
  window.addEventListener("focus", markRead);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && document.body.classList.contains("drawer-open")) closeDrawer();
  });
  $("login-name").focus();
});
