/**
 * `isPeerGoneError` and `connectionLossMessage`, by which `main.ts` tells a write that found its
 * connection closed by the peer (which the connection's client handles)
 * from an uncaught error that stops the engine — checked against the error
 * Deno's `node:net` really gives such a write.
 */

import assert from "node:assert/strict";
import net from "node:net";
import {
  connectionLossMessage,
  isPeerGoneError,
  POSTGRES_NULL_SOCKET_MESSAGE,
} from "../lib/socket_errors.ts";

Deno.test("a write after the peer ended the connection is a peer-gone error; other errors are not", async () => {
  const server = net.createServer((socket) => socket.end());
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  const socket = new net.Socket();
  socket.on("error", () => {});
  try {
    const refused = await new Promise<Error | null | undefined>((resolve) => {
      socket.on("end", () => setImmediate(() => socket.write(Buffer.from("x"), resolve)));
      socket.connect(port, "127.0.0.1");
    });
    assert.ok(refused instanceof Error, "the write is refused");
    assert.equal(isPeerGoneError(refused), true, `${refused}`);
  } finally {
    socket.destroy();
    await new Promise((resolve) => server.close(resolve));
  }
  assert.equal(isPeerGoneError(Object.assign(new Error("write EPIPE"), { code: "EPIPE" })), true);
  for (const other of [new TypeError("x is undefined"), new Error("ECONNREFUSED"), "EPIPE", null]) {
    assert.equal(isPeerGoneError(other), false, String(other));
  }
});

Deno.test("connectionLossMessage names each connection loss main.ts carries on after, and null for the rest", () => {
  const typeFetch = Object.assign(new Error("write CONNECT_TIMEOUT 127.0.0.1:5432"), {
    query: "\n      select b.oid, b.typarray\n      from pg_catalog.pg_type a",
  });
  const closedWrite = new TypeError(POSTGRES_NULL_SOCKET_MESSAGE);
  closedWrite.stack = `TypeError: ${POSTGRES_NULL_SOCKET_MESSAGE}\n    at nextWrite ` +
    "(file:///root/.cache/deno/npm/registry.npmjs.org/postgres/3.4.9/cjs/src/connection.js:261:12)";
  assert.equal(
    connectionLossMessage(typeFetch),
    "a new PostgreSQL connection was lost while postgres.js fetched types",
  );
  assert.equal(
    connectionLossMessage(closedWrite),
    "a PostgreSQL connection was lost during a write; postgres.js reconnects",
  );
  assert.equal(
    connectionLossMessage(Object.assign(new Error("write EPIPE"), { code: "EPIPE" })),
    "a write found its connection closed by the peer; its client reconnects",
  );
  const elsewhere = new TypeError(POSTGRES_NULL_SOCKET_MESSAGE);
  elsewhere.stack =
    `TypeError: ${POSTGRES_NULL_SOCKET_MESSAGE}\n    at run (file:///app/mine.ts:1:1)`;
  for (const other of [elsewhere, new Error("ECONNREFUSED"), "EPIPE", null, undefined]) {
    assert.equal(connectionLossMessage(other), null, String(other));
  }
});
