/**
 * Exit code of the engine process (`main.ts` run as a subprocess) when its
 * root supervisor fails: 1 — also when a SIGTERM arrives while the failed
 * root is still stopping its children (a stop on request does not turn a
 * failure into a graceful exit). The failure is made by taking the engine's
 * instance lock from it, with `supervisor.intensity` 0.
 *
 * @module
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { waitFor } from "./_helpers.ts";

/** The engine's instance lock key with the default `migrations.lock_key`. */
const INSTANCE_LOCK_KEY = 727374 + 2;

Deno.test("a root failure is reported as exit 1 even when SIGTERM comes while the failed root stops its children", async () => {
  await using engine = await startEngineProcess({
    // The root gives up on its first child failure.
    TRADEWIRE_SUPERVISOR__INTENSITY: "0",
  });
  await waitForJson(engine, "/api/health/detailed", (body) => body.status === "ok", 60_000);
  const sql = postgres(engine.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    // Another engine takes the database: the lock's connection is cut and the lock taken
    // elsewhere, so the instance_lock child fails and the root (intensity 0) gives up.
    const grab = (async () => {
      for (let i = 0; i < 100; i++) {
        await sql`select pg_terminate_backend(pid) from pg_stat_activity
          where datname = current_database() and application_name like '%instance lock'`;
        const [row] = await sql`select pg_try_advisory_lock(${INSTANCE_LOCK_KEY}::bigint) as ok`;
        if (row?.ok) return true;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      return false;
    })();
    assert.ok(await grab, "took the instance lock");
    await waitFor(
      () => engine.lines.some((l) => l.supervisor === "root" && l.message === "giving up"),
      20_000,
      "root gives up",
    );
    // The operator (or systemd, seeing the unit go bad) sends SIGTERM meanwhile.
    const code = await engine.kill("SIGTERM");
    const messages = engine.lines.map((l) =>
      `${l.level} ${l.supervisor ?? l.actor ?? l.component ?? ""} ${l.message}`
    );
    assert.equal(
      code,
      1,
      `the root failed, yet the engine exited ${code}; log tail: ${
        JSON.stringify(messages.slice(-15))
      }`,
    );
  } finally {
    await sql.end();
  }
});
