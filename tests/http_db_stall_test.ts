/**
 * The trading API while PostgreSQL stops answering without refusing (a
 * network partition: packets dropped, the TCP connection still open).
 *
 * @module
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { errorHandler, notFound } from "../api/errors.ts";
import { DB_DEADLINE_MARGIN_MS, dbDeadlineMs, tradingRoutes } from "../api/trading.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { nullLogger } from "../lib/log.ts";
import { migratedDatabase } from "./_postgres.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";

Deno.test("GET /orders while PostgreSQL silently stops answering is a 503 within bounded time, not a request hanging for ever", async () => {
  await using db = await migratedDatabase(1);
  const url = new URL(db.url);
  await using proxy = startTcpProxy({ hostname: "127.0.0.1", port: Number(url.port || 5432) });
  url.port = String(proxy.port);
  // A short server-side statement timeout: the only query timeout the pool has.
  const sql = createPostgres({
    url: url.toString(),
    pool_size: 2,
    statement_timeout_ms: 1000,
    connect_timeout_s: 2,
  });
  try {
    const app = new Hono();
    app.onError(errorHandler(nullLogger));
    app.notFound(notFound);
    app.route(
      "/api/v1/trading",
      tradingRoutes({
        sql,
        engine: {} as never,
        state: {} as never,
        cache: new LatestCache(),
        maxPriceAgeMs: 60_000,
        apiKeyHashes: [],
      }),
    );
    // The client-side deadline: statement_timeout + connect timeout + margin.
    assert.equal(dbDeadlineMs(sql), 1000 + 2000 + DB_DEADLINE_MARGIN_MS);
    const warm = await app.request("/api/v1/trading/orders");
    assert.equal(warm.status, 200, await warm.text());

    proxy.stall();
    const boundMs = 15_000; // statement_timeout 1 s, connect_timeout 2 s: 15 s is generous
    const started = Date.now();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      Promise.resolve(app.request("/api/v1/trading/orders")).then(async (r: Response) => ({
        status: r.status,
        code: (await r.json())?.error?.code,
        retry_after: r.headers.get("retry-after"),
      })),
      new Promise<{ status: string; code: string; retry_after: null }>((resolve) =>
        timer = setTimeout(
          () => resolve({ status: "no answer", code: `after ${boundMs} ms`, retry_after: null }),
          boundMs,
        )
      ),
    ]);
    clearTimeout(timer);
    assert.deepEqual(
      outcome,
      { status: 503, code: "unavailable", retry_after: "1" },
      `answered ${JSON.stringify(outcome)} after ${Date.now() - started} ms ` +
        "(README: PostgreSQL that cannot be reached or times out is a 503 with Retry-After)",
    );
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});
