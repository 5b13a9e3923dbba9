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
 * connect timeout, as postgres.js reconnects its own sockets. A connection
 * lost for good during the type fetch still leaves that rejection unhandled:
 * `main.ts` recognises it (`isPostgresTypeFetchError`) and logs it instead of
 * stopping the engine — the connection's statements failed as lost, and the
 * next connection fetches the types again.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createPostgres, databaseErrorKind } from "../adapters/postgres.ts";
import { isPostgresTypeFetchError } from "../lib/socket_errors.ts";
import { collectUncaught, notPeerGone, waitFor } from "./_helpers.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";

/** Whether `query` is postgres.js's fetch of the array types. */
const isTypeFetch = (query: string) => query.includes("b.typarray");

/**
 * A one-connection pool through two proxies: the client → a proxy that hangs
 * up while cut (counting connections) → a proxy that can drop the type fetch
 * → PostgreSQL.
 */
function typeFetchRig(connectTimeoutS: number) {
  const faults = startPgFaultProxy();
  const gate = startTcpProxy({ hostname: "127.0.0.1", port: faults.port });
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:${gate.port}/postgres`,
    sslmode: "disable",
    pool_size: 1,
    connect_timeout_s: connectTimeoutS,
    answer_deadline_ms: 30_000,
  });
  return {
    faults,
    gate,
    sql,
    async [Symbol.asyncDispose]() {
      gate.restore();
      await sql.end({ timeout: 0 });
      await gate[Symbol.asyncDispose]();
      await faults[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a connection lost during postgres.js's type fetch, its reconnection hung up on until PostgreSQL is back: the statement is answered, nothing goes unhandled", async () => {
  using uncaught = collectUncaught();
  await using rig = typeFetchRig(5);
  const { faults, gate, sql } = rig;
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

Deno.test("the type fetch of a connection lost for good rejects unhandled, and is recognised as postgres.js's own: the engine would log it, not stop", async () => {
  using uncaught = collectUncaught();
  await using rig = typeFetchRig(1);
  const { faults, gate, sql } = rig;
  const fired = faults.arm({ match: isTypeFetch, mode: "before" }).then(() => gate.cut());
  const error = await sql`select 1 as one`.then(() => null, (error: unknown) => error);
  await fired;
  assert.equal(databaseErrorKind(error), "connection", String(error));
  await waitFor(() => uncaught.length > 0, 10_000, "the type fetch's unhandled rejection");
  for (const lost of uncaught) {
    assert.equal(isPostgresTypeFetchError(lost), true, `not recognised: ${lost}`);
  }
  assert.deepEqual(notPeerGone(uncaught), []);
  // The pool's next connection fetches the types and works.
  gate.restore();
  const [row] = await sql`select array[1, 2]::int[] as pair`;
  assert.deepEqual(row?.pair, [1, 2]);
});

Deno.test("isPostgresTypeFetchError knows postgres.js's type query by its text, and nothing else", () => {
  const typeFetch = Object.assign(new Error("write CONNECT_TIMEOUT 127.0.0.1:5432"), {
    query: "\n      select b.oid, b.typarray\n      from pg_catalog.pg_type a\n",
  });
  assert.equal(isPostgresTypeFetchError(typeFetch), true);
  for (
    const other of [
      new Error("write CONNECT_TIMEOUT 127.0.0.1:5432"),
      Object.assign(new Error("write CONNECT_TIMEOUT"), { query: "select 1" }),
      Object.assign(new Error("x"), { query: "select b.oid from t -- select b.oid, b.typarray " }),
      { query: "select b.oid, b.typarray from pg_type" },
      "select b.oid, b.typarray ",
      null,
    ]
  ) {
    assert.equal(isPostgresTypeFetchError(other), false, JSON.stringify(other));
  }
});
