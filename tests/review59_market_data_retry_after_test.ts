/**
 * The market-data endpoints' 503 answers carry `Retry-After`, as the README
 * promises ("The market-data endpoints answer 503 `unavailable` likewise" as
 * the PostgreSQL ones, which come with `Retry-After: 1`): a client that
 * retries on the header must retry these too. ClickHouse at a dead port, and a
 * real ClickHouse (`TW_TEST_CLICKHOUSE_URL`) whose database was never migrated.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import type { ClickHouseClient } from "@clickhouse/client";
import { createClickHouse } from "../adapters/clickhouse.ts";
import { marketDataRoutes } from "../api/market_data.ts";
import { DATABASE_RETRY_AFTER_S, errorHandler, notFound } from "../api/errors.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import { RecordingClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const T0 = 1_700_000_100;

function appFor(clickhouse: ClickHouseClient, database: string): Hono {
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.notFound(notFound);
  app.route(
    "/md",
    marketDataRoutes({
      clickhouse,
      database,
      cache: new LatestCache(),
      status: new MarketStatus(),
      clock: new RecordingClock(T0 * 1000),
      symbols: () => new Map<Exchange, string[]>([["binance", ["BTC-USDT"]]]),
    }),
  );
  return app;
}

const PATHS = ["/md/ticks/BTC-USDT", "/md/candles/BTC-USDT?interval=5m"];

Deno.test("market data: ClickHouse unreachable is a 503 with Retry-After, like the PostgreSQL 503s", async () => {
  const dead = createClickHouse({ url: "http://127.0.0.1:1", request_timeout_ms: 2_000 });
  try {
    const app = appFor(dead, "tradewire");
    for (const path of PATHS) {
      const res = await app.request(path);
      const body = await res.json();
      assert.equal(res.status, 503, `${path}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, "unavailable");
      assert.equal(res.headers.get("retry-after"), String(DATABASE_RETRY_AFTER_S), path);
    }
  } finally {
    await dead.close();
  }
});

Deno.test("market data: tables missing (ClickHouse not migrated) is a 503 with Retry-After", async () => {
  const client = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  try {
    // Never created: ClickHouse answers that the database is unknown.
    const app = appFor(client, `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`);
    for (const path of PATHS) {
      const res = await app.request(path);
      const body = await res.json();
      assert.equal(res.status, 503, `${path}: ${JSON.stringify(body)}`);
      assert.match(body.error.message, /migrations not applied/);
      assert.equal(res.headers.get("retry-after"), String(DATABASE_RETRY_AFTER_S), path);
    }
  } finally {
    await client.close();
  }
});
