// rookery-client.js — the protocol layer of Rookery's web client, reusable by any web app.
//
//   import { RookeryClient } from "/rookery-client.js";
//   const client = new RookeryClient();              // same origin as the page
//   await client.login("alice", "password123");      // or signup(username, password, displayName)
//   client.addEventListener("msg", (e) => show(e.detail));
//   client.connect();                                 // WebSocket; reconnects with backoff, then sync
//   const ack = await client.send(convId, "hello");   // resolves with the ack once durable
//
// Events (CustomEvent, payload in `detail`): `msg`, `edited`, `deleted`, `receipt`, `typing`,
// `presence`, `conv`, `call.*`, `error` (server error frames), `state` ({state: "connecting" |
// "online" | "offline"}), `synced`, `session` (signed in, refreshed or signed out).
//
// Guarantees it adds on top of the protocol: sends keep their `client_id` across reconnects and
// are sent again until acked (the server deduplicates), messages are delivered to listeners once
// per id, and after every reconnect `sync` asks for everything after the last `seq` seen in each
// conversation (kept in storage, so a reload resumes where it was).

const STORE_KEY = "rookery.session";
const POS_KEY = "rookery.positions";

export class RookeryClient extends EventTarget {
  constructor({ baseUrl = location.origin, storage = localStorage } = {}) {
    super();
    this.baseUrl = baseUrl.replace(/\/$/, "");
    this.storage = storage;
    this.session = JSON.parse(storage.getItem(STORE_KEY) || "null");
    this.positions = JSON.parse(storage.getItem(POS_KEY) || "{}");
    this.pending = new Map(); // client_id -> {frame, resolve, reject}
    this.seen = new Set(); // message ids already emitted
    this.ws = null;
    this.state = "offline";
    this.backoff = 500;
    this.wanted = false;
    this.refreshTimer = null;
    if (this.session) this.scheduleRefresh();
  }

  get user() { return this.session && this.session.user; }

  emit(type, detail) { this.dispatchEvent(new CustomEvent(type, { detail })); }

  setSession(s) {
    this.session = s;
    if (s) this.storage.setItem(STORE_KEY, JSON.stringify(s)); else this.storage.removeItem(STORE_KEY);
    this.scheduleRefresh();
    this.emit("session", s);
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    if (!this.session) return;
    // Refresh a minute before the access token expires (or halfway for short lifetimes).
    const lifetime = this.session.expires_in * 1000;
    const issued = this.session.issued_at || Date.now();
    const due = issued + Math.max(lifetime / 2, lifetime - 60000) - Date.now();
    this.refreshTimer = setTimeout(() => this.refresh().catch(() => {}), Math.max(1000, due));
  }

  async authRequest(path, body) {
    const r = await fetch(this.baseUrl + path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    const data = await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.error && data.error.message) || r.statusText);
    data.issued_at = Date.now();
    this.setSession(data);
    return data.user;
  }

  signup(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    return this.authRequest("/api/auth/signup", body);
  }

  login(username, password) { return this.authRequest("/api/auth/login", { username, password }); }

  async refresh() {
    if (!this.session) throw new Error("signed out");
    return this.authRequest("/api/auth/refresh", { refresh_token: this.session.refresh_token });
  }

  async logout() {
    const s = this.session;
    this.disconnect();
    this.setSession(null);
    this.positions = {};
    this.storage.removeItem(POS_KEY);
    if (s) await fetch(this.baseUrl + "/api/auth/logout", { method: "POST", headers: { authorization: "Bearer " + s.access_token, "content-type": "application/json" }, body: JSON.stringify({ refresh_token: s.refresh_token }) }).catch(() => {});
  }

  // Deletes the signed-in account for good (DELETE /api/users/me; the password is asked again),
  // then forgets the session as logout does. Throws with the server's message when refused.
  async deleteAccount(password) {
    await this.api("DELETE", "/api/users/me", { password });
    this.disconnect();
    this.setSession(null);
    this.positions = {};
    this.storage.removeItem(POS_KEY);
  }

  // An authenticated HTTP call; a 401 triggers one token refresh and a retry.
  async api(method, path, body, retried) {
    const headers = { authorization: "Bearer " + (this.session && this.session.access_token) };
    let payload;
    if (body instanceof Blob) { payload = body; if (body.type) headers["content-type"] = body.type; }
    else if (body !== undefined) { payload = JSON.stringify(body); headers["content-type"] = "application/json"; }
    const r = await fetch(this.baseUrl + path, { method, headers, body: payload });
    if (r.status === 401 && !retried && this.session) { await this.refresh(); return this.api(method, path, body, true); }
    if (r.status === 204) return null;
    const data = await r.json().catch(() => null);
    if (!r.ok) { const e = new Error((data && data.error && data.error.message) || r.statusText); e.status = r.status; throw e; }
    return data;
  }

  upload(file) { return this.api("POST", "/api/attachments?name=" + encodeURIComponent(file.name || "file"), file); }

  // The bytes of an attachment as an object URL (an <img> cannot send the bearer token).
  async attachmentUrl(id) {
    const r = await fetch(this.baseUrl + "/api/attachments/" + encodeURIComponent(id), { headers: { authorization: "Bearer " + this.session.access_token } });
    if (!r.ok) throw new Error("attachment " + r.status);
    return URL.createObjectURL(await r.blob());
  }

  setState(s) { if (this.state !== s) { this.state = s; this.emit("state", { state: s }); } }

  connect() {
    this.wanted = true;
    if (this.ws || !this.session) return;
    this.setState("connecting");
    const url = this.baseUrl.replace(/^http/, "ws") + "/ws?token=" + encodeURIComponent(this.session.access_token);
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onmessage = (ev) => this.onFrame(JSON.parse(ev.data));
    ws.onclose = (ev) => {
      this.ws = null;
      this.setState("offline");
      if (ev.code === 4001 && this.session) { this.refresh().then(() => this.reconnectLater(0), () => {}); return; }
      if (ev.code === 4003) { this.wanted = false; this.emit("error", { code: "banned", message: "disconnected by a moderator" }); return; }
      this.reconnectLater(this.backoff);
      this.backoff = Math.min(this.backoff * 2, 15000);
    };
  }

  reconnectLater(ms) { if (this.wanted) setTimeout(() => this.connect(), ms); }

  disconnect() { this.wanted = false; if (this.ws) this.ws.close(1000); }

  raw(frame) { if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(JSON.stringify(frame)); return true; } return false; }

  onFrame(f) {
    switch (f.op) {
      case "hello":
        this.backoff = 500;
        this.setState("online");
        this.raw({ op: "sync", since: this.positions });
        for (const p of this.pending.values()) this.raw(p.frame); // resend unacked, same client_id
        break;
      case "ack": {
        const p = this.pending.get(f.client_id);
        if (p) { this.pending.delete(f.client_id); p.resolve(f); }
        this.emit("ack", f);
        break;
      }
      case "msg": {
        const known = this.positions[f.conv] || 0;
        // A jump in seq is a write that failed, or (in a cluster) a message whose node died
        // between storing and delivering it: ask the store which.
        if (known > 0 && f.seq > known + 1) this.raw({ op: "sync", since: { [f.conv]: known } });
        if (f.seq > known) { this.positions[f.conv] = f.seq; this.storage.setItem(POS_KEY, JSON.stringify(this.positions)); }
        if (this.seen.has(f.id)) return; // a sync replay of something already shown
        this.seen.add(f.id);
        this.emit("msg", f);
        break;
      }
      case "error":
        if (f.client_id && this.pending.has(f.client_id) && f.code !== "unavailable") {
          const p = this.pending.get(f.client_id); this.pending.delete(f.client_id);
          const e = new Error(f.message); e.code = f.code; e.retryAfterMs = f.retry_after_ms; p.reject(e);
        }
        this.emit("error", f);
        break;
      default:
        this.emit(f.op, f);
    }
  }

  // Sends a message; resolves with the ack. Unacked sends are resent after a reconnect.
  send(conv, body, { attachments = [] } = {}) {
    const client_id = (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random()).replace(/-/g, "");
    const frame = { op: "send", conv, client_id, body, attachments };
    const promise = new Promise((resolve, reject) => this.pending.set(client_id, { frame, resolve, reject }));
    promise.clientId = client_id;
    this.raw(frame);
    return promise;
  }

  read(conv, seq) { this.raw({ op: "read", conv, seq }); }
  typing(conv, active) { this.raw({ op: "typing", conv, active }); }
  edit(conv, id, body) { this.raw({ op: "edit", conv, id, body }); }
  remove(conv, id) { this.raw({ op: "delete", conv, id }); }
  presence(users) { this.raw({ op: "presence", users }); }
}
