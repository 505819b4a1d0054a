// The web client's UI, built only on the public protocol through rookery-client.js.
// Every piece of user content is inserted with textContent, never as HTML.
import { RookeryClient } from "/rookery-client.js";

const client = new RookeryClient();
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = String(text); return e; };

const state = { convs: new Map(), users: new Map(), online: new Set(), current: null, typing: new Map(), receipts: new Map(), oldest: new Map() };

// ---- auth -------------------------------------------------------------------------------
let signingUp = false;
$("signup-btn").addEventListener("click", () => {
  if (!signingUp) { signingUp = true; $("auth-name-row").hidden = false; $("login-btn").textContent = "Create account"; return; }
  $("auth-form").requestSubmit();
});
$("auth-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("auth-error").textContent = "";
  try {
    const u = $("auth-user").value.trim(), p = $("auth-pass").value;
    if (signingUp) await client.signup(u, p, $("auth-name").value.trim() || undefined); else await client.login(u, p);
    start();
  } catch (e) { $("auth-error").textContent = e.message; }
});
$("logout").addEventListener("click", async () => { await client.logout(); location.reload(); });
// Account deletion asks for the password again (the server checks it) and cannot be undone.
$("delete-account").addEventListener("click", () => { $("delete-form").hidden = !$("delete-form").hidden; $("delete-pass").focus(); });
$("delete-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  $("delete-error").textContent = "";
  try { await client.deleteAccount($("delete-pass").value); location.reload(); }
  catch (e) { $("delete-error").textContent = e.message; }
});

// ---- helpers ----------------------------------------------------------------------------
async function user(id) {
  if (!state.users.has(id)) state.users.set(id, client.api("GET", "/api/users/" + id).catch(() => ({ id, username: id, display_name: id })));
  return state.users.get(id);
}
async function convName(c) {
  if (c.kind === "group") return c.title;
  const other = c.members.find((m) => m.user_id !== client.user.id);
  return other ? (await user(other.user_id)).display_name : "(just you)";
}
function otherMember(c) { const o = c.members.find((m) => m.user_id !== client.user.id); return o && o.user_id; }

// ---- conversation list ------------------------------------------------------------------
async function loadConvs() {
  const data = await client.api("GET", "/api/conversations");
  for (const c of data.conversations) state.convs.set(c.id, c);
  const others = [...state.convs.values()].map(otherMember).filter(Boolean);
  if (others.length) client.presence([...new Set(others)]);
  renderConvs();
}
async function renderConvs() {
  const list = $("convs");
  const items = [...state.convs.values()].sort((a, b) => ((b.last_message && b.last_message.ts) || b.created_at) - ((a.last_message && a.last_message.ts) || a.created_at));
  const frag = document.createDocumentFragment();
  for (const c of items) {
    const li = el("li"); li.tabIndex = 0; li.dataset.conv = c.id;
    li.setAttribute("aria-current", String(state.current === c.id));
    const title = el("div", "title");
    if (c.kind === "direct") { const d = el("span", "dot" + (state.online.has(otherMember(c)) ? " online" : "")); d.setAttribute("aria-label", state.online.has(otherMember(c)) ? "online" : "offline"); title.appendChild(d); }
    title.appendChild(el("span", null, await convName(c)));
    if (c.unread) title.appendChild(el("span", "badge", c.unread));
    li.append(title, el("div", "last", c.last_message ? (c.last_message.deleted ? "(deleted)" : c.last_message.body || "(attachment)") : ""));
    li.addEventListener("click", () => open(c.id));
    li.addEventListener("keydown", (e) => { if (e.key === "Enter") open(c.id); });
    frag.appendChild(li);
  }
  list.replaceChildren(frag);
}

$("find-q").addEventListener("input", async () => {
  const q = $("find-q").value.trim();
  const found = $("found"); found.replaceChildren();
  if (!q) return;
  const data = await client.api("GET", "/api/users?q=" + encodeURIComponent(q) + "&limit=8").catch(() => ({ users: [] }));
  for (const u of data.users.filter((u) => u.id !== client.user.id)) {
    const li = el("li", null, u.display_name + " (@" + u.username + ")"); li.tabIndex = 0;
    const go = async () => { const c = await client.api("POST", "/api/conversations", { kind: "direct", members: [u.id] }); state.convs.set(c.id, Object.assign(state.convs.get(c.id) || {}, c)); found.replaceChildren(); $("find-q").value = ""; renderConvs(); open(c.id); };
    li.addEventListener("click", go); li.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
    found.appendChild(li);
  }
});
$("find").addEventListener("submit", (e) => e.preventDefault());
$("new-group").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const title = $("group-title").value.trim(); if (!title) return;
  const c = await client.api("POST", "/api/conversations", { kind: "group", title, members: [] });
  state.convs.set(c.id, c); $("group-title").value = ""; renderConvs(); open(c.id);
});

// ---- chat view --------------------------------------------------------------------------
function messageItem(m) {
  const li = el("li"); li.dataset.id = m.id || ""; li.dataset.seq = m.seq || ""; if (m.client_id) li.dataset.clientId = m.client_id;
  const own = m.sender === client.user.id; if (own) li.classList.add("own");
  const body = el("div", "body", m.deleted ? "(deleted)" : m.body);
  li.appendChild(body);
  for (const a of (m.deleted ? [] : m.attachments || [])) {
    if (a.kind === "call") continue;
    if (/^image\//.test(a.content_type)) { const img = el("img"); img.alt = a.name; client.attachmentUrl(a.id).then((u) => { img.src = u; }).catch(() => {}); li.appendChild(img); }
    else { const link = el("button", null, "Download " + a.name); link.addEventListener("click", async () => { const u = await client.attachmentUrl(a.id); const x = document.createElement("a"); x.href = u; x.download = a.name; x.click(); }); li.appendChild(link); }
  }
  const meta = el("div", "meta");
  user(m.sender).then((u) => meta.prepend(el("span", null, own ? "you" : u.display_name)));
  if (m.ts) meta.appendChild(el("span", null, new Date(m.ts).toLocaleTimeString()));
  if (m.edited_at) meta.appendChild(el("span", null, "(edited)"));
  if (own && !m.deleted && m.id) {
    const edit = el("button", null, "edit"); edit.setAttribute("aria-label", "Edit message");
    edit.addEventListener("click", () => { const b = prompt("Edit message", m.body); if (b && b.trim()) client.edit(m.conv, m.id, b.trim()); });
    const del = el("button", null, "delete"); del.setAttribute("aria-label", "Delete message");
    del.addEventListener("click", () => { if (confirm("Delete this message?")) client.remove(m.conv, m.id); });
    meta.append(edit, del);
  }
  li.appendChild(meta);
  return li;
}
function addMessage(m, { prepend = false } = {}) {
  const list = $("messages");
  const existing = (m.id && list.querySelector(`li[data-id="${CSS.escape(m.id)}"]`)) || (m.client_id && list.querySelector(`li[data-client-id="${CSS.escape(m.client_id)}"]`));
  const li = messageItem(m);
  if (existing) { existing.replaceWith(li); return; }
  if (prepend) { list.prepend(li); return; }
  const nearBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 80;
  list.appendChild(li);
  if (nearBottom || m.sender === client.user.id) list.scrollTop = list.scrollHeight;
}
async function open(id) {
  state.current = id;
  document.querySelector(".app").classList.add("in-chat");
  const c = state.convs.get(id);
  $("chat-title").textContent = await convName(c);
  $("composer").hidden = false; $("messages").replaceChildren(); $("seen").textContent = ""; $("typing").textContent = "";
  renderMembers(c);
  const page = await client.api("GET", `/api/conversations/${id}/messages?limit=50`);
  for (const m of page.messages) addMessage(m);
  state.oldest.set(id, page.messages.length ? page.messages[0].seq : null);
  const last = page.messages[page.messages.length - 1];
  if (last) { client.read(id, last.seq); c.unread = 0; }
  const full = await client.api("GET", `/api/conversations/${id}`);
  state.receipts.set(id, new Map(full.members.map((m) => [m.user_id, m.read_seq || 0])));
  renderSeen(); renderConvs(); $("text").focus();
}
async function renderMembers(c) {
  $("members").hidden = c.kind !== "group";
  if (c.kind !== "group") return;
  const names = await Promise.all(c.members.map(async (m) => (await user(m.user_id)).display_name + (m.role !== "member" ? " (" + m.role + ")" : "")));
  const span = $("member-list"); span.replaceChildren();
  c.members.forEach((m, i) => {
    const s = el("span", null, names[i]);
    if (m.user_id !== client.user.id) { const rm = el("button", null, "×"); rm.setAttribute("aria-label", "Remove " + names[i]); rm.addEventListener("click", () => client.api("DELETE", `/api/conversations/${c.id}/members/${m.user_id}`).catch((e) => alert(e.message))); s.appendChild(rm); }
    span.append(s, " ");
  });
}
$("add-member").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("add-q").value.trim(); if (!q) return;
  const found = await client.api("GET", "/api/users?q=" + encodeURIComponent(q) + "&limit=1");
  if (!found.users.length) return alert("no such user");
  const c = await client.api("POST", `/api/conversations/${state.current}/members`, { user_ids: [found.users[0].id] });
  state.convs.set(c.id, Object.assign(state.convs.get(c.id), c)); $("add-q").value = ""; renderMembers(c);
});
$("back").addEventListener("click", () => { document.querySelector(".app").classList.remove("in-chat"); state.current = null; renderConvs(); });
$("messages").addEventListener("scroll", async () => {
  const list = $("messages"); const id = state.current; const oldest = state.oldest.get(id);
  if (list.scrollTop > 30 || !oldest || oldest <= 1 || state.loadingOlder) return;
  state.loadingOlder = true;
  const page = await client.api("GET", `/api/conversations/${id}/messages?limit=50&before_seq=${oldest}`);
  const before = list.scrollHeight;
  for (const m of page.messages.slice().reverse()) addMessage(m, { prepend: true });
  list.scrollTop = list.scrollHeight - before;
  state.oldest.set(id, page.messages.length && page.has_more ? page.messages[0].seq : null);
  state.loadingOlder = false;
});
function renderSeen() {
  const id = state.current; const receipts = state.receipts.get(id); if (!receipts) return;
  const own = [...$("messages").querySelectorAll("li.own[data-seq]")].pop(); if (!own) { $("seen").textContent = ""; return; }
  const seq = Number(own.dataset.seq);
  const readers = [...receipts.entries()].filter(([u, s]) => u !== client.user.id && s >= seq).map(([u]) => u);
  Promise.all(readers.map(user)).then((us) => { $("seen").textContent = us.length ? "Seen by " + us.map((u) => u.display_name).join(", ") : ""; });
}

// ---- composing --------------------------------------------------------------------------
let typingSent = 0;
$("text").addEventListener("input", () => { if (state.current && Date.now() - typingSent > 3000) { typingSent = Date.now(); client.typing(state.current, true); } });
$("composer").addEventListener("submit", (ev) => { ev.preventDefault(); const t = $("text").value.trim(); if (!t) return; $("text").value = ""; sendMessage(t, []); });
$("file").addEventListener("change", async () => {
  const f = $("file").files[0]; if (!f || !state.current) return;
  try { const a = await client.upload(f); sendMessage("", [a.id], [a]); } catch (e) { alert("upload failed: " + e.message); }
  $("file").value = "";
});
function sendMessage(body, ids, metas) {
  const conv = state.current;
  const p = client.send(conv, body, { attachments: ids });
  // Optimistic: shown at once, reconciled by the ack's client_id (and the msg's id).
  const li = messageItem({ conv, sender: client.user.id, body, client_id: p.clientId, attachments: metas || [] });
  li.classList.add("pending"); $("messages").appendChild(li); $("messages").scrollTop = $("messages").scrollHeight;
  p.then((ack) => { li.classList.remove("pending"); li.dataset.id = ack.id; li.dataset.seq = ack.seq; }).catch((e) => { li.classList.add("failed"); li.querySelector(".meta").appendChild(el("span", "error", e.code === "slow_mode" ? "slow mode" : e.message)); });
}

// ---- events -----------------------------------------------------------------------------
client.addEventListener("msg", (e) => {
  const m = e.detail; const c = state.convs.get(m.conv);
  if (c) { c.last_message = m; c.last_seq = m.seq; if (state.current !== m.conv && m.sender !== client.user.id) c.unread = (c.unread || 0) + 1; }
  else loadConvs();
  if (state.current === m.conv) { addMessage(m); if (document.visibilityState === "visible") client.read(m.conv, m.seq); renderSeen(); state.typing.delete(m.sender); renderTyping(); }
  renderConvs();
});
client.addEventListener("edited", (e) => { const li = document.querySelector(`#messages li[data-id="${CSS.escape(e.detail.id)}"]`); if (li) { li.querySelector(".body").textContent = e.detail.body; } });
client.addEventListener("deleted", (e) => { const li = document.querySelector(`#messages li[data-id="${CSS.escape(e.detail.id)}"]`); if (li) { li.querySelector(".body").textContent = "(deleted)"; li.querySelectorAll("img, .meta button").forEach((x) => x.remove()); } });
client.addEventListener("receipt", (e) => { const r = state.receipts.get(e.detail.conv); if (r && e.detail.read_seq) { r.set(e.detail.user_id, Math.max(r.get(e.detail.user_id) || 0, e.detail.read_seq)); if (e.detail.conv === state.current) renderSeen(); } });
client.addEventListener("conv", (e) => { const c = e.detail.conversation; const mine = c.members.some((m) => m.user_id === client.user.id); if (mine) state.convs.set(c.id, Object.assign(state.convs.get(c.id) || {}, c)); else state.convs.delete(c.id); renderConvs(); if (state.current === c.id) renderMembers(c); });
client.addEventListener("presence", (e) => { if (e.detail.status === "online") state.online.add(e.detail.user_id); else state.online.delete(e.detail.user_id); renderConvs(); });
// Typing indicators expire 5 s after the last `typing` event (the protocol's receiver-side rule).
client.addEventListener("typing", (e) => { if (e.detail.conv !== state.current) return; if (e.detail.active) state.typing.set(e.detail.user_id, Date.now()); else state.typing.delete(e.detail.user_id); renderTyping(); });
setInterval(() => { for (const [u, t] of state.typing) if (Date.now() - t > 5000) state.typing.delete(u); renderTyping(); }, 1000);
async function renderTyping() { const us = await Promise.all([...state.typing.keys()].map(user)); $("typing").textContent = us.length ? us.map((u) => u.display_name).join(", ") + " typing…" : ""; }
client.addEventListener("state", (e) => { const c = $("conn"); c.textContent = e.detail.state === "online" ? "online" : e.detail.state === "connecting" ? "connecting…" : "offline — reconnecting"; c.className = "conn " + e.detail.state; });
client.addEventListener("error", (e) => { if (e.detail.code === "banned") alert(e.detail.message); });

function start() {
  $("auth").hidden = true; $("app").hidden = false;
  $("me").textContent = client.user.display_name;
  loadConvs().catch(() => {});
  client.connect();
}
if (client.session) start(); else $("auth").hidden = false;
// Handy from the browser console (and for tests): the protocol client of this page.
window.rookery = client;
