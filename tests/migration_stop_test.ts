/**
 * A stop (the run's abort signal: SIGINT/SIGTERM while the engine starts)
 * that comes while a PostgreSQL migration file runs cancels its statement
 * on the server, rolls the file's transaction back and ends the run with the
 * signal's reason; when PostgreSQL does not answer the cancel, the migration
 * backend is ended (`pg_terminate_backend`). Before, only the lock wait and
 * the gaps between files heeded the signal: the engine waited for the file,
 * the stop ran out of `engine.shutdown_timeout_ms` (exit 1 after 10 s) and the
 * statement went on running on the server, holding the migration lock and its
 * table locks (review 44).
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import { PG_ADMIN_URL, startEngineProcess } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

const ROOT = new URL("..", import.meta.url).pathname;
/** Marks the slow migration's statement in pg_stat_activity. */
const MARK = "tw_slow_migration";

/** A migrations folder holding one PostgreSQL file that creates a table, then sleeps. */
async function slowMigrations(
  seconds: number,
  { withRepository = false } = {},
): Promise<{ dir: string } & AsyncDisposable> {
  const dir = await Deno.makeTempDir({ prefix: "tw-migration-stop-" });
  await Deno.mkdir(`${dir}/postgres`);
  await Deno.mkdir(`${dir}/clickhouse`);
  if (withRepository) {
    for (const engine of ["postgres", "clickhouse"]) {
      for await (const entry of Deno.readDir(`${ROOT}migrations/${engine}`)) {
        if (!entry.isFile) continue;
        await Deno.copyFile(
          `${ROOT}migrations/${engine}/${entry.name}`,
          `${dir}/${engine}/${entry.name}`,
        );
      }
    }
  }
  await Deno.writeTextFile(
    `${dir}/postgres/0099_slow.sql`,
    `create table slow_stop (id int);\nselect pg_sleep(${seconds}) /* ${MARK} */;\n`,
  );
  await Deno.writeTextFile(`${dir}/postgres/0099_slow.down.sql`, "drop table slow_stop;\n");
  return { dir, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** Backends of `database` running the slow migration's statement. */
async function slowBackends(database: string): Promise<number> {
  const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = ${database} and state = 'active' and query like ${`%${MARK}%`}
        and pid <> pg_backend_pid()`;
    return row?.n ?? 0;
  } finally {
    await sql.end();
  }
}

/** What is left of the slow file in `url`: its table, its row, advisory locks held in it. */
async function leftovers(url: string): Promise<{ table: boolean; row: boolean; locks: number }> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    const [row] = await sql<{ table: boolean; row: boolean; locks: number }[]>`
      select to_regclass('slow_stop') is not null as table,
        to_regclass('schema_migrations') is not null
          and exists (select 1 from schema_migrations where version = 99) as row,
        (select count(*)::int from pg_locks where locktype = 'advisory'
          and database = (select oid from pg_database where datname = current_database())) as locks`;
    return row!;
  } finally {
    await sql.end();
  }
}

/**
 * A loopback proxy to PostgreSQL whose `freeze()` stops forwarding on the
 * connections open then, without closing them, and drops the cancel requests
 * that come after (a network gone silent that the cancel does not cross
 * either); other new connections are forwarded.
 */
function startFreezingProxy() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const conns = new Set<Deno.Conn>();
  const frozen = new Set<Deno.Conn>();
  let freezing = false;
  let cancelsDropped = 0;
  const close = (conn: Deno.Conn) => {
    conns.delete(conn);
    try {
      conn.close();
    } catch { /* closed */ }
  };
  const pump = async (from: Deno.Conn, to: Deno.Conn) => {
    const buffer = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buffer);
        if (n === null) break;
        if (frozen.has(from)) continue;
        let offset = 0;
        while (offset < n) offset += await to.write(buffer.subarray(offset, n));
      }
    } catch { /* closed */ }
    close(from);
    close(to);
  };
  const serve = async (client: Deno.Conn) => {
    const first = new Uint8Array(64 * 1024);
    const n = await client.read(first).catch(() => null);
    // A CancelRequest: length 16, code 80877102.
    const view = n === null ? null : new DataView(first.buffer, 0, n);
    if (
      n === null ||
      (freezing && n === 16 && view!.getInt32(0) === 16 && view!.getInt32(4) === 80877102)
    ) {
      if (n !== null) cancelsDropped++;
      close(client);
      return;
    }
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: 5432 });
    conns.add(client).add(upstream);
    await upstream.write(first.subarray(0, n));
    pump(client, upstream);
    pump(upstream, client);
  };
  const accepting = (async () => {
    for await (const client of listener) {
      conns.add(client);
      serve(client).catch(() => close(client));
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get cancelsDropped() {
      return cancelsDropped;
    },
    freeze() {
      freezing = true;
      for (const conn of conns) frozen.add(conn);
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const conn of [...conns]) close(conn);
      await accepting;
    },
  };
}

Deno.test("a migration run aborted while a PostgreSQL file runs cancels it on the server, rolls the file back and rejects with the abort reason", async () => {
  const db = await scratchDatabase();
  const database = new URL(db.url).pathname.slice(1);
  const sql = createPostgres({ url: db.url, pool_size: 2, sslmode: "disable" });
  try {
    await using files = await slowMigrations(60);
    const migrator = new Migrator(sql, { dir: files.dir, clickhouse: null });
    const controller = new AbortController();
    const run = migrator.up(undefined, { only: "postgres", signal: controller.signal });
    run.catch(() => {});
    await waitFor(async () => (await slowBackends(database)) === 1, 10_000, "the file running");

    const reason = new Error("SIGTERM received while starting");
    const sentAt = Date.now();
    controller.abort(reason);
    const error = await deadline(run.then(() => null, (e: unknown) => e), 5_000, "the run");
    const tookMs = Date.now() - sentAt;
    assert.equal(error, reason, `the run ended with ${String(error)}`);
    assert.ok(tookMs < 2_000, `the run took ${tookMs} ms to stop`);
    assert.equal(await slowBackends(database), 0, "the file still runs on the server");
    assert.deepEqual(await leftovers(db.url), { table: false, row: false, locks: 0 });

    // The pool goes on, and a later run applies the file.
    await Deno.writeTextFile(
      `${files.dir}/postgres/0099_slow.sql`,
      "create table slow_stop (id int);\n",
    );
    const again = await migrator.up(undefined, { only: "postgres" });
    assert.deepEqual(again.postgres?.applied.map((m) => m.version), [99]);
  } finally {
    await sql.end({ timeout: 5 });
    await db.drop();
  }
});

Deno.test("a migration run aborted while PostgreSQL answers nothing, not even the cancel, ends the migration backend and rejects with the abort reason", async () => {
  const db = await scratchDatabase();
  const database = new URL(db.url).pathname.slice(1);
  await using proxy = startFreezingProxy();
  const url = new URL(db.url);
  url.port = String(proxy.port);
  const sql = createPostgres({ url: url.toString(), pool_size: 2, sslmode: "disable" });
  try {
    await using files = await slowMigrations(60);
    const answerMs = 500;
    const migrator = new Migrator(sql, {
      dir: files.dir,
      clickhouse: null,
      timeouts: { answerMs },
    });
    const controller = new AbortController();
    const run = migrator.up(undefined, { only: "postgres", signal: controller.signal });
    run.catch(() => {});
    await waitFor(async () => (await slowBackends(database)) === 1, 10_000, "the file running");

    proxy.freeze();
    const reason = new Error("SIGTERM received while starting");
    const sentAt = Date.now();
    controller.abort(reason);
    const error = await deadline(run.then(() => null, (e: unknown) => e), 5_000, "the run");
    const tookMs = Date.now() - sentAt;
    assert.equal(error, reason, `the run ended with ${String(error)}`);
    assert.ok(proxy.cancelsDropped >= 1, "no cancel request was sent");
    // The cancel's wait, then the terminate's (bounded by answerMs as well).
    assert.ok(tookMs < 3 * answerMs + 1_000, `the run took ${tookMs} ms to stop`);
    // pg_terminate_backend signals the backend, which then exits: the file would sleep for 60 s.
    await waitFor(
      async () => (await slowBackends(database)) === 0,
      5_000,
      "the migration backend ended",
    );
    assert.deepEqual(await leftovers(db.url), { table: false, row: false, locks: 0 });
  } finally {
    await sql.end({ timeout: 1 });
    await db.drop();
  }
});

Deno.test("SIGTERM while a PostgreSQL migration runs: the engine exits 0 within the child shutdown time and nothing runs on the server", async () => {
  await using nats = await startNatsServer();
  await using files = await slowMigrations(60, { withRepository: true });
  const db = await scratchDatabase();
  const database = new URL(db.url).pathname.slice(1);
  try {
    await using engine = await startEngineProcess(
      {
        NATS_URL: nats.url,
        TRADEWIRE_MIGRATIONS__DIR: files.dir,
        // The defaults a production user runs with.
        TRADEWIRE_SUPERVISOR__CHILD_SHUTDOWN_MS: "5000",
        TRADEWIRE_ENGINE__SHUTDOWN_TIMEOUT_MS: "10000",
      },
      [],
      { databaseUrl: db.url },
    );
    await waitFor(
      async () => (await slowBackends(database)) === 1,
      60_000,
      "the slow migration running",
    );
    const sentAt = Date.now();
    const code = await deadline(engine.kill("SIGTERM"), 30_000, "the exit after SIGTERM");
    const tookMs = Date.now() - sentAt;
    const still = await slowBackends(database);
    const tail = JSON.stringify(engine.lines.slice(-8).map((l) => `${l.level} ${l.message}`));
    assert.equal(code, 0, `exit ${code} after ${tookMs} ms; still running: ${still}; ${tail}`);
    assert.ok(tookMs < 5_000, `the stop took ${tookMs} ms; ${tail}`);
    assert.equal(still, 0, "the migration still runs on the server after the engine exited");
    const left = await leftovers(db.url);
    assert.equal(left.table, false, "the file's table was left behind");
    assert.equal(left.row, false, "the file was recorded as applied");
  } finally {
    await db.drop();
  }
});
