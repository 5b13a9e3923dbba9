/**
 * Behaviour of the PostgreSQL data layer that the other repository tests do
 * not pin down: a COMMIT whose answer is lost is not run again by the unit of
 * work; `postgres.statement_timeout_ms` cuts a repository's statement, which
 * surfaces as `DbTimeoutError`; `postgres.pool_size` bounds the connections.
 */

import assert from "node:assert/strict";
import { createPostgres } from "../adapters/postgres.ts";
import {
  DbConnectionError,
  DbTimeoutError,
  getConfig,
  insertOrder,
  mayHaveCommitted,
  setConfig,
  unitOfWork,
  updateOrderStatus,
  upsertSymbols,
} from "../db/mod.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("a unit of work whose COMMIT answer is lost is not run again and may have committed", async () => {
  await using db = await migratedDatabase();
  await using proxy = startPgFaultProxy();
  const sql = createPostgres({
    url: proxy.urlFor(new URL(db.url).pathname.slice(1)),
    sslmode: "disable",
    pool_size: 1,
  });
  try {
    await sql`SELECT 1`;
    const fired = proxy.arm({ match: (q) => /^\s*commit/i.test(q), mode: "after" });
    let runs = 0;
    const error = await unitOfWork(sql, async (tx) => {
      runs++;
      await setConfig(tx, "k", runs);
    }, { retries: 5 }).then(() => null, (e) => e);
    await fired;
    assert.ok(error instanceof DbConnectionError, String(error));
    assert.equal(runs, 1, "non-idempotent work is not rerun after an ambiguous failure");
    assert.equal(mayHaveCommitted(error), true);
    assert.equal((await getConfig(db.sql, "k"))?.value, 1, "the commit did happen");
  } finally {
    await sql.end({ timeout: 0 });
  }
});

Deno.test("postgres.statement_timeout_ms cuts a repository statement and maps it to DbTimeoutError", async () => {
  await using db = await migratedDatabase();
  const sql = createPostgres({
    url: db.url,
    sslmode: "disable",
    pool_size: 1,
    statement_timeout_ms: 300,
  });
  try {
    await upsertSymbols(db.sql, [{ symbol: "AAPL" }]);
    const order = await insertOrder(db.sql, {
      symbol: "AAPL",
      side: "buy",
      qty: "1",
      strategy: "s",
    });
    const locked = Promise.withResolvers<void>();
    const release = Promise.withResolvers<void>();
    const holder = db.sql.begin(async (tx) => {
      await tx`SELECT id FROM orders WHERE id = ${order.id} FOR UPDATE`;
      locked.resolve();
      await release.promise;
    });
    await locked.promise;
    const started = performance.now();
    const error = await updateOrderStatus(sql, order.id, { from: "pending", to: "submitted" })
      .then(() => null, (e) => e);
    const elapsed = performance.now() - started;
    release.resolve();
    await holder;
    assert.ok(error instanceof DbTimeoutError, String(error));
    assert.equal(error.code, "57014");
    assert.ok(elapsed >= 250 && elapsed < 3000, `cut after ${elapsed} ms`);
    const [row] = await sql`SHOW statement_timeout`;
    assert.equal(row?.statement_timeout, "300ms");
  } finally {
    await sql.end({ timeout: 1 });
  }
});

Deno.test("postgres.pool_size bounds the pool's connections", async () => {
  await using db = await migratedDatabase();
  const app = `tw_pool_${crypto.randomUUID().slice(0, 8)}`;
  const sql = createPostgres({
    url: db.url,
    sslmode: "disable",
    pool_size: 3,
    application_name: app,
  });
  try {
    let settled = false;
    const all = Promise.all(Array.from({ length: 10 }, () => sql`SELECT pg_sleep(0.2)`))
      .finally(() => settled = true);
    // Sample the pool's connections until the ten queries are done (3 rounds of 0.2 s, then 1).
    const deadline = performance.now() + 10_000;
    let peak = 0;
    while (!settled) {
      assert.ok(performance.now() < deadline, "the queries finished within 10 s");
      const [row] = await db.sql`
        SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = ${app}`;
      peak = Math.max(peak, row?.n ?? 0);
      await Promise.race([all, new Promise((resolve) => setTimeout(resolve, 20))]);
    }
    await all;
    assert.equal(peak, 3);
  } finally {
    await sql.end({ timeout: 1 });
  }
});
