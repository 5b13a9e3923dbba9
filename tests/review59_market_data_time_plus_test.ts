/**
 * A market-data `from`/`to` with a zone offset sent unencoded
 * (`from=2024-05-01T12:00:00+02:00`, as typed into curl) reaches the API with
 * a space for its `+` (query strings read `+` as a space): the 400 says so,
 * as the trading lists' does, instead of only calling a well-formed time
 * malformed. Checked before any query, so no ClickHouse is needed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import { createClickHouse } from "../adapters/clickhouse.ts";
import { marketDataRoutes } from "../api/market_data.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import { nullLogger } from "../lib/log.ts";

Deno.test("market data: a from/to whose + arrived as a space is a 400 that says to send %2B", async () => {
  // Never reached: every request here is refused before a query is built.
  const clickhouse = createClickHouse({ url: "http://127.0.0.1:1", request_timeout_ms: 1_000 });
  try {
    const app = new Hono();
    app.onError(errorHandler(nullLogger));
    app.notFound(notFound);
    app.route(
      "/md",
      marketDataRoutes({
        clickhouse,
        database: "tradewire",
        cache: new LatestCache(),
        status: new MarketStatus(),
        symbols: () => new Map<Exchange, string[]>([["binance", ["BTC-USDT"]]]),
      }),
    );
    for (const route of ["/ticks/BTC-USDT", "/candles/BTC-USDT"]) {
      for (const name of ["from", "to"]) {
        for (const time of ["2024-05-01T12:00:00+02:00", "2024-05-01T12:00:00.123456+02:00"]) {
          const res = await app.request(`/md${route}?${name}=${time}`);
          const body = await res.json();
          assert.equal(res.status, 400, JSON.stringify(body));
          assert.match(body.error.message, new RegExp(`^${name} must be an ISO-8601`));
          assert.match(body.error.message, /send it as %2B/, body.error.message);
        }
      }
      // Other bad times get no such hint.
      for (const bad of ["2024-05-01T12:00:00 99:00", "2024-05-01 12:00:00Z", "yesterday"]) {
        const res = await app.request(`/md${route}?from=${encodeURIComponent(bad)}`);
        const body = await res.json();
        assert.equal(res.status, 400, JSON.stringify(body));
        assert.doesNotMatch(body.error.message, /%2B/, bad);
      }
    }
  } finally {
    await clickhouse.close();
  }
});
