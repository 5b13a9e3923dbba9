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
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

/**
 * The engine process on a scratch database reached through a cut proxy (each
 * connection closed as it opens), once it has logged `times` times that
 * PostgreSQL is unreachable; `proxy.restore()` lets PostgreSQL through.
 * Disposing it kills the engine and drops the database.
 */
async function engineWaitingForPostgres(times: number) {
  const stack = new AsyncDisposableStack();
  try {
    const nats = stack.use(await startNatsServer());
    const proxy = stack.use(startTcpProxy({ hostname: "127.0.0.1", port: 5432 }));
    const db = await scratchDatabase();
    stack.defer(db.drop);
    proxy.cut();
    const engine = stack.use(
      await startEngineProcess({ NATS_URL: nats.url }, [], {
        databaseUrl: db.url.replace(":5432/", `:${proxy.port}/`),
      }),
    );
    await waitFor(
      () =>
        engine.lines.filter((l) => l.message === "PostgreSQL unreachable, retrying").length >=
          times,
      30_000,
      `${times} PostgreSQL unreachable log lines`,
    );
    const world = stack.move();
    return { engine, proxy, [Symbol.asyncDispose]: () => world.disposeAsync() };
  } catch (error) {
    await stack.disposeAsync();
    throw error;
  }
}

Deno.test("PostgreSQL down at start: the engine waits, logs it, and serves ok once PostgreSQL is back; SIGTERM then exits 0", async () => {
  await using world = await engineWaitingForPostgres(2);
  const { engine, proxy } = world;
  proxy.restore();
  await waitForJson(engine, "/api/health/detailed", (body) => body.status === "ok", 60_000);
  assert.equal(await deadline(engine.kill("SIGTERM"), 20_000, "exit"), 0);
});

Deno.test("SIGTERM while the engine waits for PostgreSQL at start exits 0 promptly", async () => {
  await using world = await engineWaitingForPostgres(1);
  const { engine } = world;
  const sentAt = Date.now();
  const code = await deadline(engine.kill("SIGTERM"), 20_000, "exit");
  const tookMs = Date.now() - sentAt;
  const tail = engine.lines.slice(-8).map((l) => `${l.level} ${l.message}`);
  assert.equal(code, 0, `exit ${code} after ${tookMs} ms; ${JSON.stringify(tail)}`);
  assert.ok(tookMs < 10_000, `took ${tookMs} ms`);
});
