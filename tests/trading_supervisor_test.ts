import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { AlpacaBroker } from "../brokers/alpaca.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { memoryLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { listOrders } from "../db/orders.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";

Deno.test("an Alpaca broker that cannot start leaves paper trading running, and starts once Alpaca is back", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer();
  const upstream = new URL(fake.baseUrl);
  await using proxy = startTcpProxy({ hostname: upstream.hostname, port: Number(upstream.port) });
  proxy.cut();
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = {
    ...base,
    risk: { ...base.risk, market_hours: "always", price_collar_pct: null },
    brokers: {
      ...base.brokers,
      alpaca: {
        ...base.brokers.alpaca,
        enabled: true,
        base_url: proxy.url,
        key_id: FAKE_ALPACA_KEY_ID,
        secret_key: FAKE_ALPACA_SECRET_KEY,
        request_timeout_ms: 1_000,
      },
    },
  };
  const { log, lines } = memoryLogger();
  const nats = await connect({ servers: server.url });
  const cache = new LatestCache();
  const trading = tradingSupervisor({ config, nats, sql: db.sql, cache, log });
  const root = await startRoot({ name: "root", intensity: 5, periodMs: 30_000 }, [trading]);
  try {
    const failures = () =>
      lines.filter((l) => l.message === "broker could not start; trying again").length;
    await waitFor(() => failures() >= 2, 20_000, "two failed starts of the Alpaca broker");
    // Paper is still there and trades: before, the failed start crashed the brokers child,
    // which took every broker (paper too) away and restarted the subtree.
    assert.ok(trading.brokers.has("paper"));
    cache.update([{
      kind: "top",
      exchange: "binance",
      symbol: "BTC-USDT",
      venue_symbol: "BTCUSDT",
      ts_exchange: Date.now() * 1000,
      ts_local: Date.now() * 1000,
      bid_price: "100",
      bid_qty: "10",
      ask_price: "101",
      ask_qty: "10",
    }]);
    const [outcome] = await trading.engine.processSignals([{
      body: { id: "paper-1", symbol: "BTC-USDT", side: "buy", qty: "1" },
      strategy: "s",
      key: "paper-1",
      source: "rest",
    }]);
    assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
    await waitFor(
      async () => (await listOrders(db.sql, {})).items[0]?.status === "filled",
      10_000,
      "paper order filled",
    );
    const brokersRow = root.inspect().find((row) => row.name === "root/trading/brokers");
    assert.equal(brokersRow?.restarts, 0);
    assert.equal(brokersRow?.status, "running");

    proxy.restore();
    const alpaca = trading.brokers.get("alpaca") as AlpacaBroker;
    await waitFor(
      () => alpaca.streamStatus().state === "listening",
      30_000,
      "Alpaca's stream listening once it can be reached",
    );
    assert.ok(lines.some((l) => l.message === "broker started" && l.broker === "alpaca"));
  } finally {
    await deadline(root.stop(), 20_000, "trading subtree stop");
    await nats.close();
  }
});

Deno.test("the trading subtree stores its risk figures beside the configured limits", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = {
    ...base,
    risk: { ...base.risk, max_open_orders: 7, max_gross_exposure: "5000" },
  };
  const nats = await connect({ servers: server.url });
  const trading = tradingSupervisor({
    config,
    nats,
    sql: db.sql,
    cache: new LatestCache(),
    log: memoryLogger().log,
  });
  const root = await startRoot({ name: "root" }, [trading]);
  // The tracker takes a last snapshot, with its risk figures, at a graceful stop.
  await deadline(root.stop(), 20_000, "trading subtree stop");
  await nats.close();
  const rows = await db.sql<Array<{ metric: string; limit_value: string | null }>>`
    select metric, limit_value::text as limit_value from risk_metrics order by id`;
  const limits = Object.fromEntries(rows.map((row) => [row.metric, row.limit_value]));
  assert.equal(limits.open_orders, "7.00000000");
  assert.equal(limits.gross_exposure, "5000.00000000");
});
