/**
 * Signals queued on `signals.<strategy>` while the engine was down are not
 * decided at start as soon as the latest-price cache took ANY event: with
 * venues connecting one after the other (Binance, Coinbase, Kraken), the
 * first venue's first event said nothing of the others', and the backlog's
 * market orders on another venue's symbols were refused as
 * `no_market_price` although their price came well within `warmup_ms`
 * (review 18). During the first `warmup_ms` after the start a batch waits
 * for its signals' prices, at most what remains of it; after it nothing
 * waits.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { loadConfig } from "../config/mod.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { nullLogger } from "../lib/log.ts";
import { ensureStreams } from "../adapters/nats.ts";
import type { TopEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { signalsStream } from "../trading/signals_stream.ts";
import { btcUsdtTop } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import { deadline, waitFor } from "./_helpers.ts";

function ethUsdTop(): TopEvent {
  const us = Date.now() * 1000;
  return {
    kind: "top",
    exchange: "coinbase",
    symbol: "ETH-USD",
    venue_symbol: "ETH-USD",
    ts_exchange: us,
    ts_local: us,
    bid_price: "3000",
    bid_qty: "10",
    ask_price: "3001",
    ask_qty: "10",
  };
}

Deno.test("a signal queued while the engine was down waits at start for its symbol's price (within warmup_ms)", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: { TRADEWIRE_RISK__MARKET_HOURS: "always" } });
  const nc = await connect({ servers: server.url });
  const rejects: string[] = [];
  nc.subscribe("signals.rejected", { callback: (_e, m) => void rejects.push(m.string()) });
  // Queued while the engine is down: a market buy of ETH-USD (priced by Coinbase).
  await ensureStreams(nc, [signalsStream()]);
  await jetstream(nc).publish(
    "signals.momentum",
    new TextEncoder().encode('{"id":"eth-1","symbol":"ETH-USD","side":"buy","qty":"0.5"}'),
  );
  // The engine starts with an empty cache; Binance's first event comes 200 ms in, Coinbase's
  // 1.5 s in — both well within the default warmup_ms of 3 s.
  const cache = new LatestCache();
  const timers: Array<ReturnType<typeof setTimeout>> = [];
  const trading = tradingSupervisor({ config, nats: nc, sql: db.sql, cache, log: nullLogger });
  const started = Date.now();
  timers.push(setTimeout(() => {
    timers.push(setInterval(() => cache.update([btcUsdtTop()]), 100));
  }, 200));
  timers.push(setTimeout(() => {
    timers.push(setInterval(() => cache.update([ethUsdTop()]), 100));
  }, 1_500));
  const root = await startRoot({ name: "root" }, [trading]);
  try {
    await waitFor(
      async () => (await db.sql`select 1 from signals where client_signal_id = 'eth-1'`).length > 0,
      10_000,
      "eth-1 decided",
    );
    const [row] = await db.sql<{ status: string; reasons: unknown }[]>`
      select status::text as status, reasons from signals where client_signal_id = 'eth-1'`;
    assert.equal(
      row!.status,
      "accepted",
      `eth-1 was decided ${Date.now() - started} ms after start, before ETH-USD's price ` +
        `(at 1.5 s, within warmup_ms 3000): ${JSON.stringify(row!.reasons)}; reject events: ${
          JSON.stringify(rejects)
        }`,
    );
  } finally {
    for (const t of timers) clearTimeout(t);
    await deadline(root.stop(), 20_000, "trading stop");
    await nc.close();
  }
});

Deno.test("at start a signal whose symbol never gets a price waits at most warmup_ms, then is decided", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: { TRADEWIRE_RISK__MARKET_HOURS: "always" } });
  const nc = await connect({ servers: server.url });
  await ensureStreams(nc, [signalsStream()]);
  const js = jetstream(nc);
  await js.publish(
    "signals.momentum",
    new TextEncoder().encode('{"id":"eth-1","symbol":"ETH-USD","side":"buy","qty":"0.5"}'),
  );
  const cache = new LatestCache();
  const quotes = setInterval(() => cache.update([btcUsdtTop()]), 100);
  const warmupMs = 1_500;
  const trading = tradingSupervisor({
    config,
    nats: nc,
    sql: db.sql,
    cache,
    log: nullLogger,
    execution: { warmup_ms: warmupMs },
  });
  const started = Date.now();
  const root = await startRoot({ name: "root" }, [trading]);
  const statusOf = async (id: string) =>
    (await db.sql<{ status: string; reasons: Array<{ rule?: string }> | null }[]>`
      select status::text as status, reasons from signals where client_signal_id = ${id}`)[0];
  try {
    await waitFor(async () => (await statusOf("eth-1")) !== undefined, 10_000, "eth-1 decided");
    const waited = Date.now() - started;
    const eth = await statusOf("eth-1");
    assert.equal(eth?.status, "rejected");
    assert.deepEqual(eth?.reasons?.map((r) => r.rule), ["no_market_price"]);
    assert.ok(waited >= warmupMs - 100, `decided after ${waited} ms, within warmup_ms`);
    // After warmup_ms nothing waits: a signal without a price is refused at once.
    const before = Date.now();
    await js.publish(
      "signals.momentum",
      new TextEncoder().encode('{"id":"eth-2","symbol":"ETH-USD","side":"buy","qty":"0.5"}'),
    );
    await waitFor(async () => (await statusOf("eth-2")) !== undefined, 10_000, "eth-2 decided");
    assert.equal((await statusOf("eth-2"))?.status, "rejected");
    assert.ok(Date.now() - before < 1_000, `eth-2 decided in ${Date.now() - before} ms`);
  } finally {
    clearInterval(quotes);
    await deadline(root.stop(), 20_000, "trading stop");
    await nc.close();
  }
});
