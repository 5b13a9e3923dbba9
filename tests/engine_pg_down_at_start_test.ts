/**
 * The engine process when PostgreSQL is down as it starts (a cut TCP proxy in
 * front of the shared server: each connection closed as it opens), then back;
 * and SIGTERM while it waits. A connection closed while an answer is owed is
 * an error to postgres.js (adapters/_pg_socket.ts): a quiet close left it
 * reconnecting for ever, the engine's start hanging without a word.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { PG_ADMIN_URL, startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import { deadline, waitFor } from "./_helpers.ts";

async function scratchDatabase(): Promise<{ name: string; drop: () => Promise<void> }> {
  const name = `tw_test_pgdown_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin`create database ${admin(name)}`;
  await admin.end();
  return {
    name,
    drop: async () => {
      const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name}`;
      await sql`drop database if exists ${sql(name)}`;
      await sql.end();
      await fetch(
        `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${name}`)}`,
        { method: "POST" },
      ).then((r) => r.body?.cancel()).catch(() => {});
    },
  };
}

Deno.test("PostgreSQL down at start: the engine waits, logs it, and serves ok once PostgreSQL is back; SIGTERM then exits 0", async () => {
  await using nats = await startNatsServer();
  await using proxy = startTcpProxy({ hostname: "127.0.0.1", port: 5432 });
  const db = await scratchDatabase();
  try {
    proxy.cut();
    await using engine = await startEngineProcess(
      {
        NATS_URL: nats.url,
        TRADEWIRE_CLICKHOUSE__DATABASE: db.name,
      },
      [],
      { databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/${db.name}` },
    );
    await waitFor(
      () =>
        engine.lines.filter((l) => l.message === "PostgreSQL unreachable, retrying").length >= 2,
      30_000,
      "PostgreSQL unreachable log lines",
    );
    proxy.restore();
    await waitForJson(engine, "/api/health/detailed", (body) => body.status === "ok", 60_000);
    assert.equal(await deadline(engine.kill("SIGTERM"), 20_000, "exit"), 0);
  } finally {
    await db.drop();
  }
});

Deno.test("SIGTERM while the engine waits for PostgreSQL at start exits 0 promptly", async () => {
  await using nats = await startNatsServer();
  await using proxy = startTcpProxy({ hostname: "127.0.0.1", port: 5432 });
  const db = await scratchDatabase();
  try {
    proxy.cut();
    await using engine = await startEngineProcess(
      {
        NATS_URL: nats.url,
        TRADEWIRE_CLICKHOUSE__DATABASE: db.name,
      },
      [],
      { databaseUrl: `postgres://postgres@127.0.0.1:${proxy.port}/${db.name}` },
    );
    await waitFor(
      () => engine.lines.some((l) => l.message === "PostgreSQL unreachable, retrying"),
      30_000,
      "PostgreSQL unreachable log line",
    );
    const sentAt = Date.now();
    const code = await deadline(engine.kill("SIGTERM"), 20_000, "exit");
    const tookMs = Date.now() - sentAt;
    const tail = engine.lines.slice(-8).map((l) => `${l.level} ${l.message}`);
    assert.equal(code, 0, `exit ${code} after ${tookMs} ms; ${JSON.stringify(tail)}`);
    assert.ok(tookMs < 10_000, `took ${tookMs} ms`);
  } finally {
    await db.drop();
  }
});
