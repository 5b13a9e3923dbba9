/**
 * A position without a fresh price has no mark (README, Marks): the snapshot
 * published on `portfolio.snapshot` and stored in
 * `portfolio_snapshots.positions` shows its `mark_price` as null, as
 * `GET /positions` does. Review 41: the snapshot showed its average entry
 * price, a price no venue quoted, with nothing on the position saying it was
 * not a mark.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { Hono } from "hono";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { tradingRoutes } from "../api/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { latestSnapshot } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

function top(cache: LatestCache, bid: string, ask: string) {
  const us = Date.now() * 1000;
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: us,
    ts_local: us,
    bid_price: bid,
    bid_qty: "1000",
    ask_price: ask,
    ask_qty: "1000",
  }]);
}

Deno.test("a snapshot shows no mark for a position without a fresh price, as GET /positions does", async () => {
  const nats = await startNatsServer();
  const db = await migratedDatabase();
  const config = await loadConfig({
    args: [],
    env: {
      TRADEWIRE_EXECUTION__MAX_PRICE_AGE_MS: "1000",
      TRADEWIRE_PORTFOLIO__SNAPSHOT_INTERVAL_MS: "100",
    },
  });
  const nc = await connect({ servers: nats.url });
  const snapshots: Array<{ unmarked: string[]; positions: Array<Record<string, unknown>> }> = [];
  nc.subscribe("portfolio.snapshot", {
    callback: (_error, msg) => {
      snapshots.push(msg.json());
    },
  });
  const cache = new LatestCache();
  const trading = tradingSupervisor({ config, nats: nc, sql: db.sql, cache, log: nullLogger });
  const root = await startRoot({ name: "root" }, [trading]);
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.notFound(notFound);
  app.route(
    "/t",
    tradingRoutes({
      sql: db.sql,
      engine: trading.engine,
      state: trading.state,
      cache,
      maxPriceAgeMs: config.execution.max_price_age_ms,
      apiKeyHashes: [],
    }),
  );
  const get = async (path: string) => await (await app.request(`/t${path}`)).json();
  try {
    await waitFor(() => trading.state.loaded, 10_000, "portfolio loaded");
    top(cache, "100", "101");
    const res = await app.request("/t/signal", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "a", symbol: "BTC-USDT", side: "buy", qty: "1" }),
    });
    assert.equal(res.status, 201);
    await waitFor(
      () =>
        trading.state.position("BTC-USDT").qty.eq(1) && trading.state.unappliedFillCount() === 0,
      10_000,
      "bought 1 @ 101",
    );
    // The quote ages past execution.max_price_age_ms (1 s): no mark any more.
    const n = snapshots.length;
    await waitFor(
      () => snapshots.slice(n).some((s) => s.unmarked.includes("BTC-USDT")),
      10_000,
      "a snapshot with the position unmarked",
    );
    const [served] = (await get("/positions")).positions;
    assert.equal(served.mark_price, null, "GET /positions: no mark");
    const published = snapshots.slice(n).find((s) => s.unmarked.includes("BTC-USDT"))!;
    const stored = await latestSnapshot(db.sql);
    const storedPosition = (stored!.positions as Array<Record<string, unknown>>)[0]!;
    assert.deepEqual(
      {
        published: published.positions[0]!.mark_price ?? null,
        stored: storedPosition.mark_price ?? null,
      },
      { published: null, stored: null },
      "the snapshot gives the unmarked position a mark_price: its entry price 101, quoted by no venue",
    );
  } finally {
    await root.stop();
    await nc.close();
    await db[Symbol.asyncDispose]();
    await nats.stop();
  }
});
