/**
 * The brokers child starts each broker on its own and
 * retries one that cannot start, while the engine goes on accepting signals
 * for it (REST works). What the stream missed before its first `listening`
 * is looked up then, as after a reconnect.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { AlpacaBroker } from "../brokers/alpaca.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { memoryLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { getOrder } from "../db/orders.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";
import { startWsServer } from "./fakes/ws_server.ts";

Deno.test("an order filled at Alpaca while its stream could not start yet is filled in the engine once the stream starts", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  // Alpaca: REST goes to the fake; the /stream handshake is answered here, and refused (503)
  // until the test lets it in.
  await using alpacaFront = await startWsServer({
    http: async (request) => {
      const url = new URL(request.url);
      const body = request.method === "GET" || request.method === "HEAD"
        ? null
        : await request.text();
      return await fetch(`${fake.baseUrl}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body,
      });
    },
    onMessage: (socket, text) => {
      const message = JSON.parse(text);
      if (message.action === "authenticate") {
        socket.send(JSON.stringify({
          stream: "authorization",
          data: { status: "authorized", action: message.action },
        }));
      } else if (message.action === "listen") {
        socket.send(JSON.stringify({ stream: "listening", data: { streams: ["trade_updates"] } }));
      }
    },
  });
  alpacaFront.refuse(503);
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = {
    ...base,
    risk: {
      ...base.risk,
      market_hours: "always",
      price_collar_pct: null,
      max_order_notional: null,
      max_gross_exposure: null,
    },
    brokers: {
      ...base.brokers,
      alpaca: {
        ...base.brokers.alpaca,
        enabled: true,
        base_url: alpacaFront.httpUrl,
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
    await waitFor(
      () => lines.some((l) => l.message === "broker could not start; trying again"),
      20_000,
      "a failed start of the Alpaca broker",
    );
    // The engine takes an Alpaca order meanwhile: submitted over REST.
    const [outcome] = await trading.engine.processSignals([{
      body: {
        id: "late-stream-1",
        symbol: "AAPL",
        side: "buy",
        qty: "10",
        type: "limit",
        limit_price: "50",
        time_in_force: "gtc",
        broker: "alpaca",
      },
      strategy: "s",
      key: "late-stream-1",
      source: "rest",
    }]);
    assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
    const id = outcome.status === "accepted" ? outcome.order.id : "";
    await waitFor(
      async () => (await getOrder(db.sql, id)).status === "submitted",
      10_000,
      "order submitted to Alpaca",
    );
    const order = await getOrder(db.sql, id);
    // It fills at Alpaca while nobody listens to trade_updates.
    fake.fillOrder(order.client_order_id, "10", "50");
    // Then the stream can be opened: the next start attempt listens.
    alpacaFront.accept();
    const alpaca = trading.brokers.get("alpaca") as AlpacaBroker;
    await waitFor(
      () => alpaca.streamStatus().state === "listening",
      30_000,
      "Alpaca's stream listening",
    );
    let status = "";
    try {
      await waitFor(
        async () => (status = (await getOrder(db.sql, id)).status) === "filled",
        10_000,
        "order filled in the engine",
      );
    } catch {
      assert.fail(
        `the order Alpaca filled before its stream first listened stays '${status}' in the engine ` +
          `(counted open, position never updated); nothing reconciled it when the stream started`,
      );
    }
  } finally {
    await deadline(root.stop(), 20_000, "trading subtree stop");
    await nats.close();
  }
});
