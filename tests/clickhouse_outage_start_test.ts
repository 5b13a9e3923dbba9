/**
 * The engine started while ClickHouse is unreachable, ClickHouse then coming
 * back (an engine process, a private nats-server, scratch databases, a TCP
 * proxy in front of ClickHouse): health stays `degraded`, naming ClickHouse's
 * migrations, until they are applied — not `ok` while the market-data tables
 * are missing (nothing written, market-data endpoints answering 503) — and
 * the market data buffered meanwhile is written once they are.
 *
 * @module
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import { waitFor } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

async function ch(query: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:8123/?query=${encodeURIComponent(query)}`, {
    method: "POST",
  });
  const text = await res.text();
  if (!res.ok) throw new Error(text);
  return text.trim();
}

function trade(i: number, base: number) {
  const ts = base + i * 1000;
  return [{
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: ts,
    ts_local: ts,
    trade_id: String(1_000_000 + i),
    price: "50000.5",
    qty: "0.01",
    side: "buy",
  }];
}

async function world() {
  const storeDir = await Deno.makeTempDir({ prefix: "tw-ch-outage-nats-" });
  const natsPort = freePort();
  const nats = await startNatsServer({ port: natsPort, storeDir });
  const db = await scratchDatabase();
  const chDb = `tw_ch_outage_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  return {
    nats,
    db,
    chDb,
    async [Symbol.asyncDispose]() {
      await nats.stop();
      await db.drop();
      await ch(`DROP DATABASE IF EXISTS ${chDb}`).catch(() => {});
      await Deno.remove(storeDir, { recursive: true }).catch(() => {});
    },
  };
}

Deno.test({
  name:
    "ClickHouse back after a startup outage: health says ok only once its migrations are applied",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await world();
    await using chProxy = startTcpProxy({ hostname: "127.0.0.1", port: 8123 });
    chProxy.cut();
    await using engine = await startEngineProcess(
      {
        NATS_URL: w.nats.url,
        CLICKHOUSE_URL: chProxy.url,
        TRADEWIRE_CLICKHOUSE__DATABASE: w.chDb,
      },
      [],
      { databaseUrl: w.db.url },
    );
    const degraded = await waitForJson(
      engine,
      "/api/health/detailed",
      (b, c) => b.status === "degraded" && c === 503,
      90_000,
    );
    assert.equal((degraded.migrations as Record<string, string>).clickhouse, "unavailable");
    assert.ok(
      (degraded.problems as string[]).includes("clickhouse migrations not applied (unavailable)"),
      JSON.stringify(degraded.problems),
    );
    const nc = await connect({ servers: w.nats.url });
    try {
      const js = jetstream(nc);
      const base = Date.now() * 1000 - 60_000_000;
      for (let i = 0; i < 50; i++) {
        await js.publish("clean.md.trade.binance.BTC-USDT", encodeJson(trade(i, base)));
      }
      // Let the outage last long enough for the migrations' retry delay to reach its cap.
      await waitFor(
        () =>
          engine.lines.some((l) =>
            l.message === "ClickHouse unreachable, retrying its migrations in the background" &&
            Number(l.attempt) >= 6
          ),
        60_000,
        "six migration attempts",
      );
      chProxy.restore();
      const ok = await waitForJson(
        engine,
        "/api/health/detailed",
        (b, c) => b.status === "ok" && c === 200,
        90_000,
      );
      const okAt = Date.now();
      const ticks = await engine.get("/api/v1/market-data/ticks/BTC-USDT?exchange=binance");
      const ticksBody = await ticks.text();
      // How long health says ok before the schema is there (for the report).
      let okWithoutSchemaMs = 0;
      if ((ok.migrations as Record<string, string>).clickhouse !== "applied") {
        await waitForJson(
          engine,
          "/api/health/detailed",
          (b) => (b.migrations as Record<string, string>).clickhouse === "applied",
          60_000,
        ).catch(() => {});
        okWithoutSchemaMs = Date.now() - okAt;
      }
      assert.deepEqual(
        {
          health: ok.status,
          clickhouse_migrations: (ok.migrations as Record<string, string>).clickhouse,
          ticks_status: ticks.status,
        },
        { health: "ok", clickhouse_migrations: "applied", ticks_status: 200 },
        `health says ok (for ${okWithoutSchemaMs} ms) while ClickHouse has no schema yet; problems=${
          JSON.stringify(ok.problems)
        } ticks answer: ${ticksBody.slice(0, 300)}`,
      );
      await waitFor(
        async () =>
          await ch(`SELECT count() FROM ${w.chDb}.market_trades`).catch(() => "0") === "50",
        60_000,
        "50 trades in ClickHouse",
      );
      assert.equal(await engine.kill("SIGTERM"), 0);
    } finally {
      await nc.close();
    }
  },
});
