"use strict";
// Socket.IO v4 reference chat server: the typical Node.js chat architecture,
// single process, in-memory only. See bench/README.md for the wire contract.
const http = require("http");
const { Server } = require("socket.io");

const argi = process.argv.indexOf("--port");
const port = Number(argi > 0 ? process.argv[argi + 1] : process.env.PORT || 3000);

const httpServer = http.createServer();
const io = new Server(httpServer, {
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 1e6,
});

const seqs = new Map(); // room -> last seq

// Reject a handshake without a string user: the client gets `44{"message":"invalid auth"}`.
io.use((socket, next) => {
  const auth = socket.handshake.auth;
  next(auth && typeof auth.user === "string" ? undefined : new Error("invalid auth"));
});

io.on("connection", (socket) => {
  const { user, rooms } = socket.handshake.auth;
  socket.join("user:" + user);
  for (const r of Array.isArray(rooms) ? rooms : []) socket.join("room:" + r);

  socket.on("sendMessage", (p, ack) => {
    const reply = typeof ack === "function" ? ack : () => {};
    const { room, client_id, body, t } = p || {};
    if (!socket.rooms.has("room:" + room)) return reply({ error: "not_member" });
    const seq = (seqs.get(room) || 0) + 1;
    seqs.set(room, seq);
    const id = room + ":" + seq;
    const ts = Date.now();
    socket.to("room:" + room).emit("messageReceived", { room, seq, id, sender: user, client_id, body, t, ts });
    reply({ seq, id, ts });
  });
});

// The same accept backlog as Rookery's default (`--listen-backlog 4096`; Node's default is 511).
httpServer.listen({ port, backlog: 4096 }, () => console.log("listening on " + httpServer.address().port));

function shutdown() {
  io.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on("SIGTERM", shutdown);
process.on("SIGINT", shutdown);
