/**
 * The pool's watched sockets (`adapters/_pg_socket.ts`) when PostgreSQL, or a
 * proxy before it, hangs up on a connection while it starts: a fresh
 * connection's first statement is postgres.js's own fetch of the array types
 * (`fetch_types`), whose failure postgres.js 3.4.9 leaves unhandled
 * (porsager/postgres#1192, #1223) — `main.ts` stops the engine for it. Lost
 * with its connection, that statement waits on the reconnection; a socket
 * that failed the reconnection (after the connect timeout, `CONNECT_TIMEOUT`)
 * while PostgreSQL had been back for seconds stopped the engines of
 * chaos_pg_drops_test and chaos_outage_test (PostgreSQL cut under load). A
 * start-up hung up on before PostgreSQL said a word is tried again, until the
 * connect timeout, as postgres.js reconnects its own sockets.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createPostgres, databaseErrorKind } from "../adapters/postgres.ts";
import { collectUncaught, notPeerGone, waitFor } from "./_helpers.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";

/** Whether `query` is postgres.js's fetch of the array types. */
const isTypeFetch = (query: string) => query.includes("b.typarray");

Deno.test("a connection lost during postgres.js's type fetch, its reconnection hung up on until PostgreSQL is back: the statement is answered, nothing goes unhandled", async () => {
  using uncaught = collectUncaught();
  // The client → a proxy that hangs up while cut (counting connections) → a proxy that drops
  // the type fetch → PostgreSQL.
  await using faults = startPgFaultProxy();
  await using gate = startTcpProxy({ hostname: "127.0.0.1", port: faults.port });
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:${gate.port}/postgres`,
    sslmode: "disable",
    pool_size: 1,
    connect_timeout_s: 5,
    answer_deadline_ms: 30_000,
  });
  try {
    let hungUpFrom = Infinity;
    // The type fetch never reaches PostgreSQL: its connection is closed, and the next hung up on.
    const fired = faults.arm({ match: isTypeFetch, mode: "before" }).then(() => {
      hungUpFrom = gate.accepted;
      gate.cut();
    });
    const outcome = sql`select 1 as one`.then((rows) => rows[0]?.one, (error: unknown) => error);
    await fired;
    await waitFor(() => gate.accepted > hungUpFrom, 5_000, "a reconnection hung up on");
    gate.restore();
    assert.equal(await outcome, 1);
    assert.deepEqual(notPeerGone(uncaught), []);
  } finally {
    gate.restore();
    await sql.end({ timeout: 0 });
  }
});

Deno.test("a start-up hung up on until the connect timeout fails as a lost connection, and the pool works once PostgreSQL takes connections", async () => {
  using uncaught = collectUncaught();
  await using gate = startTcpProxy({ hostname: "127.0.0.1", port: 5432 });
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:${gate.port}/postgres`,
    pool_size: 1,
    connect_timeout_s: 1,
    answer_deadline_ms: 30_000,
  });
  try {
    gate.cut();
    const error = await sql`select 1 as one`.then(() => null, (error: unknown) => error);
    assert.equal((error as { code?: unknown } | null)?.code, "CONNECT_TIMEOUT");
    assert.equal(databaseErrorKind(error), "connection");
    assert.ok(gate.accepted > 1, `tried ${gate.accepted} times`);
    gate.restore();
    const [row] = await sql`select 1 as one`;
    assert.equal(row?.one, 1);
    assert.deepEqual(notPeerGone(uncaught), []);
  } finally {
    gate.restore();
    await sql.end({ timeout: 0 });
  }
});
