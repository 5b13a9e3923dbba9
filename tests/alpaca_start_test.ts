/**
 * The brokers child starts each broker on its own and
 * retries one that cannot start, while the engine goes on accepting signals
 * for it (REST works). Alpaca replays nothing from before its stream's first
 * `listening`: what changed before it — while the stream could not start, or
 * while its handshake was slow after the engine's startup reconciliation had
 * read the orders — is looked up then, as after a reconnect.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { AlpacaBroker } from "../brokers/alpaca.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { memoryLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { startRoot } from "../actors/supervisor.ts";
import { type TradingDeps, tradingSupervisor } from "../actors/trading.ts";
import { listFills } from "../db/fills.ts";
import { getOrder } from "../db/orders.ts";
import { parseDecimal, toJson } from "../trading/money.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  type FakeAlpacaServer,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";
import { type FakeWsServer, startWsServer } from "./fakes/ws_server.ts";

/** Alpaca in front of the fake: REST passes through; the stream's handshake is answered here. */
interface AlpacaFront {
  server: FakeWsServer;
  /** While set, the stream's authorization waits for it (a slow handshake). */
  gate: PromiseWithResolvers<void> | null;
  /** `listen` requests answered. */
  listening: number;
}

async function alpacaFront(fake: FakeAlpacaServer): Promise<AlpacaFront> {
  const front: AlpacaFront = { server: undefined!, gate: null, listening: 0 };
  front.server = await startWsServer({
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
    onMessage: async (socket, text) => {
      const message = JSON.parse(text);
      if (message.action === "authenticate") {
        if (front.gate !== null) await front.gate.promise;
        socket.send(JSON.stringify({
          stream: "authorization",
          data: { status: "authorized", action: message.action },
        }));
      } else if (message.action === "listen") {
        front.listening++;
        socket.send(JSON.stringify({ stream: "listening", data: { streams: ["trade_updates"] } }));
      }
    },
  });
  return front;
}

/** The default configuration with Alpaca behind `front` and no risk limit in the way. */
async function alpacaConfig(front: FakeWsServer): Promise<Config> {
  const base = await loadConfig({ args: [], env: {} });
  return {
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
        base_url: front.httpUrl,
        key_id: FAKE_ALPACA_KEY_ID,
        secret_key: FAKE_ALPACA_SECRET_KEY,
        request_timeout_ms: 1_000,
      },
    },
  };
}

/** A stored numeric (`10.00000000`) as the decimal it is (`10`). */
function exact(numeric: string): string {
  return toJson(parseDecimal(numeric));
}

/** A limit order far from the price (it rests at Alpaca): buy 10 AAPL at 50. */
function restingBuy(id: string) {
  return {
    body: {
      id,
      symbol: "AAPL",
      side: "buy" as const,
      qty: "10",
      type: "limit" as const,
      limit_price: "50",
      time_in_force: "gtc" as const,
      broker: "alpaca",
    },
    strategy: "s",
    key: id,
    source: "rest" as const,
  };
}

/**
 * A first run of the trading subtree that places `restingBuy(signalId)` at
 * Alpaca and stops once it is submitted; returns the order's id.
 */
async function placeRestingOrder(
  deps: Pick<TradingDeps, "config" | "nats" | "sql">,
  front: AlpacaFront,
  signalId: string,
): Promise<string> {
  const { log } = memoryLogger();
  const trading = tradingSupervisor({ ...deps, cache: new LatestCache(), log });
  const root = await startRoot({ name: "root", intensity: 5, periodMs: 30_000 }, [trading]);
  try {
    await waitFor(() => front.listening === 1, 10_000, "first run's stream listening");
    await waitFor(() => trading.engine.running, 10_000, "engine running");
    const [outcome] = await trading.engine.processSignals([restingBuy(signalId)]);
    assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
    const id = outcome.status === "accepted" ? outcome.order.id : "";
    await waitFor(
      async () => (await getOrder(deps.sql, id)).status === "submitted",
      10_000,
      "order submitted to Alpaca",
    );
    return id;
  } finally {
    await deadline(root.stop(), 20_000, "first run stop");
  }
}

Deno.test("an order filled at Alpaca while its stream could not start yet is filled in the engine once the stream starts", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  // The /stream handshake is refused (503) until the test lets it in.
  const front = await alpacaFront(fake);
  await using _front = front.server;
  front.server.refuse(503);
  const config = await alpacaConfig(front.server);
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
    const [outcome] = await trading.engine.processSignals([restingBuy("late-stream-1")]);
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
    front.server.accept();
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

Deno.test("an order filled at Alpaca between the startup reconciliation and the stream's first listening is filled in the engine, once", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  const front = await alpacaFront(fake);
  await using _front = front.server;
  const config = await alpacaConfig(front.server);
  const nats = await connect({ servers: server.url });
  try {
    const id = await placeRestingOrder({ config, nats, sql: db.sql }, front, "window-1");
    // A restart: Alpaca's stream handshake is slow this time.
    front.gate = Promise.withResolvers<void>();
    const { log, lines } = memoryLogger();
    const trading = tradingSupervisor({ config, nats, sql: db.sql, cache: new LatestCache(), log });
    const root = await startRoot({ name: "root", intensity: 5, periodMs: 30_000 }, [trading]);
    try {
      await waitFor(
        () => lines.some((l) => l.message === "reconciliation done"),
        10_000,
        "the startup reconciliation",
      );
      assert.equal(front.listening, 1, "the second run's stream has not listened yet");
      const order = await getOrder(db.sql, id);
      assert.equal(order.status, "submitted");
      // The order fills at Alpaca before the stream listens: no trade update reaches anyone.
      fake.fillOrder(order.client_order_id, "10", "50");
      front.gate.resolve(); // the stream's first connection listens (a successful start)
      const alpaca = trading.brokers.get("alpaca") as AlpacaBroker;
      await waitFor(
        () => alpaca.streamStatus().state === "listening",
        10_000,
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
          `Alpaca filled the order (10 @ 50) after the startup reconciliation looked it up and ` +
            `before the stream first listened; the engine still has it '${status}' ` +
            `(Alpaca connections: ${alpaca.streamStatus().connections}, reconnects: ` +
            `${alpaca.streamStatus().reconnects})`,
        );
      }
      const fills = (await listFills(db.sql, { order_id: id })).items;
      assert.deepEqual(fills.map((fill) => [exact(fill.qty), exact(fill.price)]), [["10", "50"]]);
      await waitFor(
        () => trading.state.position("AAPL").qty.toString() === "10",
        10_000,
        "position of 10",
      );
    } finally {
      await deadline(root.stop(), 20_000, "second run stop");
    }
  } finally {
    await nats.close();
  }
});

Deno.test("an order filled at Alpaca while the engine was down is counted once when the stream's first listening reconciles it again after the startup reconciliation", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  const front = await alpacaFront(fake);
  await using _front = front.server;
  const config = await alpacaConfig(front.server);
  const nats = await connect({ servers: server.url });
  try {
    const id = await placeRestingOrder({ config, nats, sql: db.sql }, front, "twice-1");
    // It fills while the engine is down; the restart's stream listens after the startup
    // reconciliation caught it up, and reconciles it again.
    fake.fillOrder((await getOrder(db.sql, id)).client_order_id, "10", "50");
    front.gate = Promise.withResolvers<void>();
    const { log, lines } = memoryLogger();
    const trading = tradingSupervisor({ config, nats, sql: db.sql, cache: new LatestCache(), log });
    const root = await startRoot({ name: "root", intensity: 5, periodMs: 30_000 }, [trading]);
    try {
      await waitFor(
        () => lines.some((l) => l.message === "reconciliation done"),
        10_000,
        "the startup reconciliation",
      );
      await waitFor(
        async () => (await getOrder(db.sql, id)).status === "filled",
        10_000,
        "filled by the startup reconciliation",
      );
      front.gate.resolve();
      await waitFor(
        () => lines.filter((l) => l.message === "reconciliation done").length === 2,
        10_000,
        "the reconciliation of the stream's first listening",
      );
      await trading.engine.idle();
      const fills = (await listFills(db.sql, { order_id: id })).items;
      assert.deepEqual(fills.map((fill) => [exact(fill.qty), exact(fill.price)]), [["10", "50"]]);
      const order = await getOrder(db.sql, id);
      assert.equal(exact(order.filled_qty), "10");
      await waitFor(
        () => trading.state.position("AAPL").qty.toString() === "10",
        10_000,
        "position of 10",
      );
      assert.equal(trading.state.position("AAPL").qty.toString(), "10");
    } finally {
      await deadline(root.stop(), 20_000, "second run stop");
    }
  } finally {
    await nats.close();
  }
});
