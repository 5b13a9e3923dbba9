/**
 * A ClickHouse too busy to run a market-data query (here a real one answering
 * `Code: 202 … Too many simultaneous queries`, made to with the query setting
 * `max_concurrent_queries_for_user` while another query of the user runs) is
 * a 503 `unavailable` with `Retry-After`, as for ClickHouse unreachable — not
 * a 500 `internal` logged as an engine error: the same request succeeds once
 * the load passes. Real ClickHouse (`TW_TEST_CLICKHOUSE_URL`), migrated into a
 * fresh `tw_test_*` database (the migrator's lock lives in PostgreSQL).
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { createClient } from "@clickhouse/client";
import {
  CLICKHOUSE_BUSY_CODES,
  createClickHouse,
  isClickHouseBusy,
  quoteIdentifier,
} from "../adapters/clickhouse.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import { marketDataRoutes } from "../api/market_data.ts";
import { DATABASE_RETRY_AFTER_S, errorHandler, notFound } from "../api/errors.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import { RecordingClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import { waitFor } from "./_helpers.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const PG_ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const T0 = 1_700_000_100;

Deno.test("isClickHouseBusy knows the codes of a server short of capacity, not other errors", () => {
  for (const code of CLICKHOUSE_BUSY_CODES) {
    assert.ok(isClickHouseBusy(new Error(`Code: ${code}, e.displayText() = DB::Exception: x`)));
    assert.ok(isClickHouseBusy(new Error(`Code: ${code}. DB::Exception: x. (SOMETHING)`)));
  }
  for (const code of [47, 60, 62, 81, 386]) {
    assert.ok(!isClickHouseBusy(new Error(`Code: ${code}, e.displayText() = DB::Exception: x`)));
  }
  assert.ok(!isClickHouseBusy(new Error("socket hang up")));
  assert.ok(!isClickHouseBusy("Code: 202"));
});

Deno.test("market data: ClickHouse too busy to run the query is a 503 with Retry-After, not a 500", async () => {
  const admin = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  // The API's client: at most one running query of its user, so another one running refuses it.
  const limited = createClient({
    url: CH_URL,
    request_timeout: 20_000,
    clickhouse_settings: { max_concurrent_queries_for_user: "1" },
  });
  const sql = createPostgres({ url: PG_ADMIN_URL, pool_size: 2, sslmode: "disable" });
  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`;
  const holderId = `review59-busy-${crypto.randomUUID()}`;
  let holding: Promise<unknown> = Promise.resolve();
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: { client: admin, database } })
      .up(undefined, { only: "clickhouse" });
    const app = new Hono();
    app.onError(errorHandler(nullLogger));
    app.notFound(notFound);
    app.route(
      "/md",
      marketDataRoutes({
        clickhouse: limited,
        database,
        cache: new LatestCache(),
        status: new MarketStatus(),
        clock: new RecordingClock(T0 * 1000),
        symbols: () => new Map<Exchange, string[]>([["binance", ["BTC-USDT"]]]),
      }),
    );
    for (const path of ["/md/ticks/BTC-USDT", "/md/candles/BTC-USDT?interval=1h"]) {
      // Another query of the same user runs for 3 s (sleep's longest).
      holding = admin.query({
        query: "SELECT sleep(3) AS s",
        format: "JSONEachRow",
        query_id: holderId,
      })
        .then((result) => result.json());
      await waitFor(
        async () => {
          const result = await admin.query({
            query: `SELECT count() AS n FROM system.processes WHERE query_id = '${holderId}'`,
            format: "JSONEachRow",
          });
          const [row] = await result.json<{ n: string | number }>();
          return Number(row?.n) > 0;
        },
        5_000,
        "the holding query runs",
      );
      const res = await app.request(path);
      const body = await res.json();
      assert.equal(res.status, 503, `${path}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, "unavailable");
      assert.match(body.error.message, /too busy/);
      assert.equal(res.headers.get("retry-after"), String(DATABASE_RETRY_AFTER_S), path);
      await holding;
    }
  } finally {
    await holding.catch(() => {});
    await admin.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` });
    await admin.close();
    await limited.close();
    await sql.end({ timeout: 5 });
  }
});
