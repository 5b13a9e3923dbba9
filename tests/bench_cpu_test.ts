/**
 * The PostgreSQL CPU the trading bench charges itself with (bench/_cpu.ts
 * `backendSeconds`). Review 50: it summed every process named "postgres" on
 * the machine, so other databases' queries (other test runs share the server)
 * were charged to the bench. Each test burns ≈1 s of CPU in one backend with
 * `generate_series` and reads the scratch database's backends around it.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { backendSeconds, backendSecondsBetween } from "../bench/_cpu.ts";
import { ADMIN_URL, migratedDatabase } from "./_postgres.ts";

const BURN = "select count(*) from generate_series(1, 20000000)";

Deno.test("backendSeconds does not count another database's backend", async () => {
  await using db = await migratedDatabase(2);
  const other = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await other`select 1`;
    const start = await backendSeconds(db.sql);
    await other.unsafe(BURN);
    const used = backendSecondsBetween(start, await backendSeconds(db.sql));
    assert.ok(used.seconds < 0.2, `charged ${used.seconds.toFixed(2)} s of another database's`);
  } finally {
    await other.end({ timeout: 5 });
  }
});

Deno.test("backendSeconds counts its own database's backends", async () => {
  await using db = await migratedDatabase(2);
  const start = await backendSeconds(db.sql);
  assert.ok(start.size >= 1, "no backend of the scratch database found");
  const t0 = performance.now();
  await db.sql.unsafe(BURN);
  const wall = (performance.now() - t0) / 1000;
  const used = backendSecondsBetween(start, await backendSeconds(db.sql));
  // The query used a core for most of its wall time (less when the machine is busy).
  assert.ok(
    used.seconds > wall * 0.3,
    `counted ${used.seconds.toFixed(2)} s for a ${wall.toFixed(2)} s query`,
  );
  assert.equal(used.ended, 0);
});

Deno.test("backendSecondsBetween counts a new backend whole and an ended one apart", () => {
  const start = new Map([[1, 2], [2, 5]]);
  const end = new Map([[1, 3.5], [3, 0.25]]);
  assert.deepEqual(backendSecondsBetween(start, end), { seconds: 1.75, ended: 1 });
});
