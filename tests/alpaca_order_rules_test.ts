/**
 * What Alpaca refuses about a US equity order is refused at the signal,
 * before the order exists (README, Trading → brokers): a limit or stop price
 * with sub-penny decimals (at most 2 at or above $1.00, 4 below — else
 * Alpaca answers 422, code 42210000, "sub-penny increment does not fulfill
 * minimum pricing criteria"), and a fractional quantity in an order that is
 * not a day order (Alpaca's fractional trading documentation: day orders
 * only; market, limit, stop and stop_limit alike).
 *
 * The unit tests call `alpacaRefusals`; the others drive the execution
 * engine with the real Alpaca adapter against the loopback fake of Alpaca's
 * Trading API, behind a fetch wrapper that answers an order breaking one of
 * these rules the way Alpaca does (422) — the fake does not model them.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { Hono } from "hono";
import { type AlpacaBroker, alpacaBroker, alpacaRefusals } from "../brokers/alpaca.ts";
import type { OrderShape } from "../brokers/broker.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { tradingRoutes } from "../api/trading.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { getOrder } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import type { TopEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { Decimal } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";

/** An order shape from text: `qty`, `limit_price` and `stop_price` as decimals. */
function shape(
  order: Pick<OrderShape, "symbol" | "type" | "time_in_force"> & {
    qty?: string;
    limit_price?: string;
    stop_price?: string;
  },
): OrderShape {
  const { qty, limit_price, stop_price, ...rest } = order;
  const result: OrderShape = { ...rest };
  if (qty !== undefined) result.qty = new Decimal(qty);
  if (limit_price !== undefined) result.limit_price = new Decimal(limit_price);
  if (stop_price !== undefined) result.stop_price = new Decimal(stop_price);
  return result;
}

Deno.test("Alpaca refuses in advance a US equity limit or stop price with sub-penny decimals", () => {
  const limit = (price: string) =>
    alpacaRefusals(
      shape({ symbol: "AAPL", type: "limit", time_in_force: "gtc", qty: "10", limit_price: price }),
    );
  assert.deepEqual(limit("187.55"), []);
  assert.deepEqual(limit("187.5"), []);
  assert.deepEqual(limit("187.5500"), [], "trailing zeros are no decimals");
  assert.deepEqual(limit("1"), []);
  assert.deepEqual(limit("187.555"), [
    {
      path: "limit_price",
      message: "alpaca: limit_price 187.555 has sub-penny decimals (at or above $1.00: at most 2)",
    },
  ]);
  assert.deepEqual(limit("1.001"), [
    {
      path: "limit_price",
      message: "alpaca: limit_price 1.001 has sub-penny decimals (at or above $1.00: at most 2)",
    },
  ]);
  // Below $1.00, four decimals.
  assert.deepEqual(limit("0.9999"), []);
  assert.deepEqual(limit("0.0001"), []);
  assert.deepEqual(limit("0.99995"), [
    {
      path: "limit_price",
      message: "alpaca: limit_price 0.99995 has sub-penny decimals (below $1.00: at most 4)",
    },
  ]);
  assert.deepEqual(
    alpacaRefusals(
      shape({
        symbol: "MSFT",
        type: "stop",
        time_in_force: "day",
        qty: "1",
        stop_price: "410.125",
      }),
    ),
    [{
      path: "stop_price",
      message: "alpaca: stop_price 410.125 has sub-penny decimals (at or above $1.00: at most 2)",
    }],
  );
  assert.deepEqual(
    alpacaRefusals(shape({
      symbol: "MSFT",
      type: "stop_limit",
      time_in_force: "day",
      qty: "1",
      stop_price: "410.125",
      limit_price: "0.12345",
    })),
    [
      {
        path: "limit_price",
        message: "alpaca: limit_price 0.12345 has sub-penny decimals (below $1.00: at most 4)",
      },
      {
        path: "stop_price",
        message: "alpaca: stop_price 410.125 has sub-penny decimals (at or above $1.00: at most 2)",
      },
    ],
  );
});

Deno.test("Alpaca refuses in advance a fractional US equity quantity unless the order is a day order", () => {
  const prices = {
    market: {},
    limit: { limit_price: "187.55" },
    stop: { stop_price: "180" },
    stop_limit: { stop_price: "180", limit_price: "179.5" },
  } as const;
  for (const type of ["market", "limit", "stop", "stop_limit"] as const) {
    // Every type takes a fractional quantity as a day order.
    assert.deepEqual(
      alpacaRefusals(
        shape({ symbol: "AAPL", type, time_in_force: "day", qty: "0.5", ...prices[type] }),
      ),
      [],
      type,
    );
    for (const time_in_force of ["gtc", "ioc", "fok"] as const) {
      assert.deepEqual(
        alpacaRefusals(shape({ symbol: "AAPL", type, time_in_force, qty: "0.5", ...prices[type] })),
        [{
          path: "time_in_force",
          message: `alpaca: a fractional qty (0.5) takes time_in_force day, not ${time_in_force}`,
        }],
        `${type} ${time_in_force}`,
      );
    }
  }
  // A whole quantity takes every time in force, written with decimals or not.
  assert.deepEqual(
    alpacaRefusals(shape({ symbol: "AAPL", type: "market", time_in_force: "gtc", qty: "10" })),
    [],
  );
  assert.deepEqual(
    alpacaRefusals(shape({ symbol: "AAPL", type: "market", time_in_force: "ioc", qty: "3.000" })),
    [],
  );
  // Both rules at once: both reasons.
  assert.deepEqual(
    alpacaRefusals(shape({
      symbol: "AAPL",
      type: "limit",
      time_in_force: "gtc",
      qty: "0.5",
      limit_price: "187.555",
    })),
    [
      {
        path: "limit_price",
        message:
          "alpaca: limit_price 187.555 has sub-penny decimals (at or above $1.00: at most 2)",
      },
      {
        path: "time_in_force",
        message: "alpaca: a fractional qty (0.5) takes time_in_force day, not gtc",
      },
    ],
  );
});

Deno.test("Alpaca's US equity rules leave crypto pairs and orders without quantity or prices alone", () => {
  // Crypto pairs: fractional and finely priced, gtc — only the crypto rules apply.
  assert.deepEqual(
    alpacaRefusals(shape({
      symbol: "BTC-USD",
      type: "limit",
      time_in_force: "gtc",
      qty: "0.00012345",
      limit_price: "64123.456789",
    })),
    [],
  );
  assert.deepEqual(
    alpacaRefusals(
      shape({ symbol: "ETH-USD", type: "market", time_in_force: "day", qty: "0.25" }),
    ),
    [{
      path: "time_in_force",
      message: "alpaca: crypto orders take time_in_force gtc or ioc, not day",
    }],
  );
  // A caller that knows only the symbol, type and time in force gets what it always got.
  assert.deepEqual(alpacaRefusals({ symbol: "AAPL", type: "limit", time_in_force: "gtc" }), []);
});

/** Alpaca's answer to an equity order it refuses for a documented rule, or null. */
function alpacaDocumentedRefusal(body: Record<string, unknown>): string | null {
  if (String(body.symbol).includes("/")) return null;
  for (const field of ["limit_price", "stop_price"]) {
    const raw = body[field];
    if (raw === undefined || raw === null) continue;
    const price = new Decimal(String(raw));
    if (price.decimalPlaces() > (price.gte(1) ? 2 : 4)) {
      return `invalid ${field} ${
        String(raw)
      }. sub-penny increment does not fulfill minimum pricing criteria`;
    }
  }
  if (!new Decimal(String(body.qty)).isInteger() && body.time_in_force !== "day") {
    return "fractional orders must be DAY orders";
  }
  return null;
}

interface Rig extends AsyncDisposable {
  sql: Sql;
  engine: ExecutionEngine;
  /** The trading routes over the engine, mounted at `/api/v1/trading`. */
  app: Hono;
  /** Orders posted to Alpaca (whether or not it took them). */
  posted: Record<string, unknown>[];
  /** What the wrapper answered with 422, as Alpaca would. */
  refusedAtAlpaca: string[];
  /** Everything the engine published (the execution actor puts it on NATS). */
  published: { subject: string; data: unknown }[];
  /** How many orders the database holds. */
  orderCount(): Promise<number>;
}

function aaplTop(price: string): TopEvent {
  const us = Date.now() * 1000;
  return {
    kind: "top",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: us,
    ts_local: us,
    bid_price: price,
    bid_qty: "100",
    ask_price: price,
    ask_qty: "100",
  };
}

async function rig(risk?: (config: Config) => Config["risk"]): Promise<Rig> {
  const db = await migratedDatabase();
  const fake = await startAlpacaTradingServer({ prices: { AAPL: "187.5" } });
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = { ...base, risk: (risk ?? noRiskLimits)(base) };
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  const cache = new LatestCache();
  cache.update([aaplTop("187.5")]);
  const fresh = setInterval(() => cache.update([aaplTop("187.5")]), 200);
  const posted: Record<string, unknown>[] = [];
  const refusedAtAlpaca: string[] = [];
  const published: { subject: string; data: unknown }[] = [];
  const broker: AlpacaBroker = alpacaBroker({
    base_url: fake.baseUrl,
    key_id: FAKE_ALPACA_KEY_ID,
    secret_key: FAKE_ALPACA_SECRET_KEY,
    request_timeout_ms: 2_000,
    handshake_timeout_ms: 2_000,
    reconnect_initial_ms: 20,
    reconnect_max_ms: 100,
  }, {
    fetch: async (input, init) => {
      const url = new URL(String(input instanceof Request ? input.url : input));
      if (init?.method === "POST" && url.pathname === "/v2/orders") {
        const body = JSON.parse(String(init.body)) as Record<string, unknown>;
        posted.push(body);
        const refusal = alpacaDocumentedRefusal(body);
        if (refusal !== null) {
          refusedAtAlpaca.push(refusal);
          return Response.json({ code: 42210000, message: refusal }, { status: 422 });
        }
      }
      return await fetch(input, init);
    },
  });
  const engine = new ExecutionEngine({
    sql: db.sql,
    brokers: new Map([["alpaca", broker]]),
    cache,
    state,
    config: { risk: config.risk, execution: { ...config.execution, default_broker: "alpaca" } },
    publish: (subject, data) => void published.push({ subject, data }),
    publishFill: () => Promise.resolve(),
    log: nullLogger,
    options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
  });
  await engine.start();
  await broker.start(AbortSignal.timeout(10_000));
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.notFound(notFound);
  app.route(
    "/api/v1/trading",
    tradingRoutes({
      sql: db.sql,
      engine,
      state,
      cache,
      maxPriceAgeMs: 60_000,
      apiKeyHashes: [],
    }),
  );
  return {
    sql: db.sql,
    engine,
    app,
    posted,
    refusedAtAlpaca,
    published,
    async orderCount() {
      const [row] = await db.sql<{ n: number }[]>`SELECT count(*)::int AS n FROM orders`;
      return row!.n;
    },
    async [Symbol.asyncDispose]() {
      clearInterval(fresh);
      await engine.stop();
      await broker[Symbol.asyncDispose]();
      await fake.stop();
      await db[Symbol.asyncDispose]();
    },
  };
}

function signal(id: string, body: Record<string, unknown>) {
  return {
    body: { id, symbol: "AAPL", side: "buy", broker: "alpaca", ...body },
    strategy: "alpaca-rules",
    source: "rest" as const,
  };
}

function postSignal(r: Rig, body: Record<string, unknown>): Promise<Response> {
  return Promise.resolve(r.app.request("/api/v1/trading/signal", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      symbol: "AAPL",
      side: "buy",
      broker: "alpaca",
      strategy: "alpaca-rules",
      ...body,
    }),
  }));
}

/** The reasons of the `signals.rejected` events published so far. */
function rejectEvents(r: Rig): unknown[] {
  return r.published
    .filter((p) => p.subject.endsWith("signals.rejected"))
    .map((p) => (p.data as { reasons: unknown }).reasons);
}

Deno.test("a sub-penny AAPL limit signal for Alpaca is answered 422 and published as rejected, no order made", async () => {
  await using r = await rig();
  const res = await postSignal(r, {
    id: "subpenny-1",
    qty: "10",
    type: "limit",
    limit_price: "187.555",
    time_in_force: "gtc",
  });
  const body = await res.json();
  assert.equal(res.status, 422, JSON.stringify(body));
  assert.equal(body.error.code, "signal_rejected");
  const reasons = [{
    path: "limit_price",
    message: "alpaca: limit_price 187.555 has sub-penny decimals (at or above $1.00: at most 2)",
  }];
  assert.deepEqual(body.error.details, reasons);
  assert.deepEqual(rejectEvents(r), [reasons]);
  assert.equal(await r.orderCount(), 0);
  assert.deepEqual(r.posted, [], "nothing is sent to Alpaca");
});

Deno.test("a fractional AAPL signal for Alpaca that is not a day order is rejected, no order made", async () => {
  await using r = await rig();
  const [outcome] = await r.engine.processSignals([
    signal("fractional-gtc-1", { qty: "0.5", type: "market", time_in_force: "gtc" }),
  ]);
  assert.equal(outcome?.status, "rejected", JSON.stringify(outcome));
  if (outcome.status !== "rejected") return;
  const reasons = [{
    path: "time_in_force",
    message: "alpaca: a fractional qty (0.5) takes time_in_force day, not gtc",
  }];
  assert.deepEqual(outcome.reasons, reasons);
  assert.deepEqual(rejectEvents(r), [reasons]);
  assert.equal(await r.orderCount(), 0);
  assert.deepEqual(r.posted, []);
});

Deno.test("fractional day orders and prices within Alpaca's increments still reach Alpaca", async () => {
  await using r = await rig();
  const outcomes = await r.engine.processSignals([
    signal("fractional-day-market", { qty: "0.5", type: "market", time_in_force: "day" }),
    signal("fractional-day-limit", {
      qty: "0.25",
      type: "limit",
      limit_price: "187.55",
      time_in_force: "day",
    }),
    signal("sub-dollar-limit", {
      qty: "10",
      type: "limit",
      limit_price: "0.1234",
      time_in_force: "gtc",
    }),
  ]);
  for (const outcome of outcomes) {
    assert.equal(outcome.status, "accepted", JSON.stringify(outcome));
  }
  await waitFor(() => r.posted.length === 3, 5_000, "three orders posted to Alpaca");
  for (const outcome of outcomes) {
    if (outcome.status !== "accepted") continue;
    await waitFor(
      async () => (await getOrder(r.sql, outcome.order.id)).status !== "pending",
      5_000,
      `order ${outcome.order.id} leaves pending`,
    );
    assert.notEqual((await getOrder(r.sql, outcome.order.id)).status, "rejected");
  }
  assert.deepEqual(r.refusedAtAlpaca, []);
});

Deno.test("an order Alpaca would refuse takes no risk room from the next signal of its batch", async () => {
  // max_open_orders 1: the sub-penny order must not take the only slot from the good one.
  await using r = await rig((config) => ({ ...noRiskLimits(config), max_open_orders: 1 }));
  const [doomed, good] = await r.engine.processSignals([
    signal("batch-subpenny", {
      qty: "10",
      type: "limit",
      limit_price: "187.555",
      time_in_force: "gtc",
    }),
    signal("batch-good", { qty: "10", type: "limit", limit_price: "187.55", time_in_force: "gtc" }),
  ]);
  assert.equal(doomed?.status, "rejected", JSON.stringify(doomed));
  assert.equal(good?.status, "accepted", JSON.stringify(good));
  await waitFor(() => r.posted.length === 1, 5_000, "the good order posted to Alpaca");
  assert.equal(r.posted[0]?.limit_price, "187.55");
  assert.equal(await r.orderCount(), 1);
  assert.deepEqual(r.refusedAtAlpaca, []);
});
