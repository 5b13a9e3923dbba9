/**
 * `deno task replay`'s config played once, as fast as possible, through a
 * real engine process (private NATS, scratch PostgreSQL and ClickHouse
 * databases `tw_test_*`): every trade in the shipped sample capture ends up
 * as one row of `market_trades`. About 3 s.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";

const SAMPLE = new URL("../captures/sample.ndjson", import.meta.url).pathname;

/** Trades in the capture, counted from the raw frames by each venue's protocol. */
function tradesInSample(): Map<string, number> {
  const counts = new Map<string, number>();
  const add = (exchange: string, n: number) =>
    counts.set(exchange, (counts.get(exchange) ?? 0) + n);
  for (const line of Deno.readTextFileSync(SAMPLE).split("\n")) {
    if (line.trim() === "") continue;
    const record = JSON.parse(line);
    if (!("x" in record) || "rest" in record) continue;
    const frame = JSON.parse(record.f);
    if (record.x === "binance") {
      const event = frame.data?.e;
      if (event === "trade" || event === "aggTrade") add("binance", 1);
    } else if (record.x === "coinbase" && frame.channel === "market_trades") {
      for (const event of frame.events) add("coinbase", event.trades.length);
    } else if (record.x === "alpaca") {
      for (const message of frame) if (message.T === "t") add("alpaca", 1);
    }
  }
  return counts;
}

async function clickhouse(query: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:8123/?query=${encodeURIComponent(query)}`, {
    method: "POST",
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${res.status}: ${text}`);
  return text.trim();
}

Deno.test("one pass of the sample replay stores exactly the capture's trades in ClickHouse", async () => {
  const expected = tradesInSample();
  await using nats = await startNatsServer();
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "true",
    TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "true",
    TRADEWIRE_EXCHANGES__KRAKEN__ENABLED: "true",
    TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "true",
  }, [
    "--config",
    "config/replay_sample.yaml",
    "--replay.speed=0",
    "--replay.loop=false",
  ]);
  const database = new URL(engine.databaseUrl).pathname.slice(1);
  // The replay is over once every venue's feed is stopped.
  await waitForJson(engine, "/api/v1/market-data/stream_status", (body) => {
    const text = JSON.stringify(body);
    return text.includes("coinbase") && !text.includes('"live"');
  }, 60_000);
  const query = () =>
    clickhouse(
      `SELECT exchange, uniqExact(symbol, trade_id) FROM ${database}.market_trades GROUP BY exchange ORDER BY exchange FORMAT TSV`,
    ).catch((error) => `error: ${error.message}`);
  const want = [...expected].sort(([a], [b]) => a.localeCompare(b))
    .map(([exchange, n]) => `${exchange}\t${n}`).join("\n");
  let got = "";
  const until = Date.now() + 30_000;
  while (Date.now() < until) {
    got = await query();
    if (got === want) break;
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  assert.equal(got, want, `stored trades per exchange vs trades in the capture`);
  assert.equal(await engine.kill("SIGTERM"), 0);
});
