/**
 * Signals held after a NATS outage — one that nats.js only notices by its
 * pings (a half-open connection: a partition, a frozen proxy or server)
 * rather than by a reset.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import type { Status } from "@nats-io/nats-core";
import { encodeJson } from "../adapters/codec.ts";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { listSignals } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { executionActor } from "../actors/execution.ts";
import { startRoot } from "../actors/supervisor.ts";
import { deadline, noRiskLimits, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

function quote(cache: LatestCache, symbol: string, bid: string, ask: string, atMs = Date.now()) {
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: atMs * 1000,
    ts_local: atMs * 1000,
    bid_price: bid,
    bid_qty: "10",
    ask_price: ask,
    ask_qty: "10",
  }]);
}

/** A TCP proxy whose `freeze()` stops forwarding on the open connections without closing them. */
function freezingProxy(upstreamPort: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const live = new Set<{ frozen: boolean; close(): void }>();
  const pump = async (from: Deno.Conn, to: Deno.Conn, conn: { frozen: boolean }) => {
    const buf = new Uint8Array(64 * 1024);
    try {
      for (;;) {
        const n = await from.read(buf);
        if (n === null) break;
        if (conn.frozen) continue; // swallowed: the peer hears nothing
        let off = 0;
        while (off < n) off += await to.write(buf.subarray(off, n));
      }
    } catch { /* closed */ }
  };
  const accepting = (async () => {
    for await (const client of listener) {
      let upstream: Deno.Conn;
      try {
        upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
      } catch {
        client.close();
        continue;
      }
      const conn = {
        frozen: false,
        close() {
          try {
            client.close();
          } catch { /* */ }
          try {
            upstream.close();
          } catch { /* */ }
        },
      };
      live.add(conn);
      void pump(client, upstream, conn);
      void pump(upstream, client, conn);
    }
  })().catch(() => {});
  return {
    port,
    freeze() {
      for (const c of live) c.frozen = true;
    },
    async [Symbol.asyncDispose]() {
      listener.close();
      for (const c of live) c.close();
      await accepting;
    },
  };
}

Deno.test("after a NATS outage noticed by pings (half-open connection), the backlog still waits for fresh prices", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using proxy = freezingProxy(server.port);
  const base = await loadConfig({ args: [], env: {} });
  const maxAgeMs = 300;
  // Pings every 150 ms, two outstanding: a dead connection is noticed after ~300-450 ms (the
  // nats.js default, used by the engine, is 2 × 2 minutes).
  const engineNats = await connect({
    servers: `127.0.0.1:${proxy.port}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 50,
    reconnectJitter: 0,
    pingInterval: 150,
    maxPingOut: 2,
  });
  const nats = await connect({ servers: server.url });
  const cache = new LatestCache();
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  const execution = { ...base.execution, max_price_age_ms: maxAgeMs };
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([[
      "paper",
      paperBroker({ cache, options: base.brokers.paper, max_price_age_ms: maxAgeMs }),
    ]]),
    cache,
    state,
    config: { risk: noRiskLimits(base), execution },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    log: nullLogger,
  });
  const actor = executionActor({
    nats: engineNats,
    engine,
    config: { execution },
    options: { ack_wait_ms: 1_500, warmup_ms: 5_000 },
  });
  quote(cache, "BTC-USDT", "50000", "50002");
  const root = await startRoot({ name: "root" }, [actor]);
  const js = jetstream(nats);
  const decided = async () =>
    (await listSignals(db.sql, { limit: 1000 })).items.filter((s) => s.status !== "received");
  const statuses: string[] = [];
  void (async () => {
    for await (const s of engineNats.status() as AsyncIterable<Status>) statuses.push(s.type);
  })();
  try {
    await js.publish(
      "signals.grid",
      encodeJson({ id: "before", symbol: "BTC-USDT", side: "buy", qty: "1" }),
    );
    await waitFor(async () => (await decided()).length === 1, 10_000, "the first signal decided");
    // The engine's link goes silent while its price is fresh (market data stops with it).
    quote(cache, "BTC-USDT", "50000", "50002");
    proxy.freeze();
    await waitFor(() => statuses.includes("disconnect"), 10_000, "the dead connection noticed");
    for (let i = 0; i < 5; i++) {
      await js.publish(
        "signals.grid",
        encodeJson({ id: `backlog-${i}`, symbol: "BTC-USDT", side: "buy", qty: "1" }),
      );
    }
    await waitFor(() => statuses.includes("reconnect"), 10_000, "reconnected");
    // The backlog reaches the engine before the market data does.
    await waitFor(() => actor.counters.messages >= 6, 10_000, "the backlog delivered");
    quote(cache, "BTC-USDT", "50000", "50002");
    await waitFor(async () => (await decided()).length === 6, 10_000, "the backlog decided");
    const refused = (await decided()).filter((s) => s.status !== "accepted");
    assert.deepEqual(refused.map((s) => [s.client_signal_id, s.reasons]), []);
  } finally {
    await deadline(root.stop(), 20_000, "execution stop");
    await nats.close();
    await engineNats.close();
  }
});
