/**
 * The execution engine (`trading/execution.ts`) against a real PostgreSQL —
 * a fresh database per test with every migration — and the real paper
 * broker; the trading subtree (`actors/trading.ts`) against a private
 * nats-server per test.
 *
 * Where a test needs a broker that fails on demand it uses
 * {@linkcode FaultyBroker}: every call goes to a real paper broker, with
 * failures injected before the call reaches it ("connection refused") or
 * after ("answer lost") — so a retried submit really reaches a broker twice.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { connect } from "@nats-io/transport-node";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import {
  type Broker,
  type BrokerEvent,
  type BrokerOrderRequest,
  type BrokerOrderState,
  type BrokerRefusal,
  BrokerRejectedError,
  BrokerUnavailableError,
  type OrderShape,
} from "../brokers/broker.ts";
import type { AlpacaBroker } from "../brokers/alpaca.ts";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import {
  ConflictError,
  getKillSwitch,
  getOrder,
  insertSignalsAndOrders,
  listFills,
  listOrders,
  listSignals,
  listUnresolvedAlerts,
  type Order,
  unitOfWork,
  updateOrderStatus,
  upsertSymbols,
} from "../db/mod.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import type { Exchange } from "../market/events.ts";
import {
  CancelNotSentError,
  ExecutionEngine,
  type ExecutionEngineOptions,
  type PositionsPartner,
} from "../trading/execution.ts";
import type { FillMessage } from "../trading/fills_stream.ts";
import { parseDecimal as d, ZERO } from "../trading/money.ts";
import { applyTrackedFill, PortfolioState } from "../trading/portfolio_state.ts";
import type { RejectReason, SignalRejectEvent } from "../trading/signals_stream.ts";
import { executionActor } from "../actors/execution.ts";
import { jetstream } from "@nats-io/jetstream";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { deadline, noRiskLimits, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";

/** Puts a fresh best bid/ask of `symbol` into `cache`. */
function quote(
  cache: LatestCache,
  symbol: string,
  bid: string,
  ask: string,
  atMs: number = Date.now(),
  exchange: Exchange = "binance",
): void {
  cache.update([{
    kind: "top",
    exchange,
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

/**
 * A broker whose every call goes to a real paper broker, with failures on
 * demand: `failures` lists what happens to the next submits — `"before"`
 * fails without reaching the paper broker, `"after"` reaches it and loses
 * the answer. `inject` delivers an event as if the broker sent it. The paper
 * broker's own events are delivered, held (`events: "hold"`, until
 * `release`) or lost (`"drop"`: a stream that is down); `reconnected` tells
 * the engine the stream is back.
 */
class FaultyBroker implements Broker {
  readonly name: string;
  /** Client order id of every submit attempt, in order. */
  readonly submits: string[] = [];
  /** Failures of the next submits, consumed in order. */
  readonly failures: Array<"before" | "after"> = [];
  /** Whether lookups fail ("broker unreachable"). */
  lookupsDown = false;
  /** What the broker says it refuses about every order, in advance. */
  refusing: string[] = [];
  /** What becomes of the paper broker's events. */
  events: "deliver" | "hold" | "drop" = "deliver";
  /** Events lost so far (`events: "drop"`). */
  dropped = 0;
  /** Runs inside the next lookup, after the broker's answer is read and before it is given. */
  beforeLookupAnswer: (() => Promise<void>) | null = null;
  /** What lookups answer instead of the paper broker, by client order id (partial fills). */
  readonly lookups = new Map<string, BrokerOrderState>();
  readonly inner: PaperBroker;
  readonly #listeners = new Set<(event: BrokerEvent) => void | Promise<void>>();
  readonly #reconnectListeners = new Set<() => void | Promise<void>>();
  readonly #held: BrokerEvent[] = [];

  constructor(inner: PaperBroker) {
    this.inner = inner;
    this.name = inner.name;
    inner.onEvent((event) => {
      if (this.events === "deliver") return this.inject(event);
      if (this.events === "hold") this.#held.push(event);
      else this.dropped++;
    });
  }

  /** Delivers the held events and delivers from now on; resolves with how many were held. */
  async release(): Promise<number> {
    this.events = "deliver";
    const held = this.#held.splice(0);
    for (const event of held) await this.inject(event);
    return held.length;
  }

  onReconnect(listener: () => void | Promise<void>): () => void {
    this.#reconnectListeners.add(listener);
    return () => this.#reconnectListeners.delete(listener);
  }

  /** The event stream is back: what was dropped meanwhile stays lost. */
  async reconnected(): Promise<void> {
    this.events = "deliver";
    for (const listener of [...this.#reconnectListeners]) await listener();
  }

  async submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    this.submits.push(order.client_order_id);
    const failure = this.failures.shift();
    if (failure === "before") throw new BrokerUnavailableError("connection refused");
    const result = await this.inner.submit(order);
    if (failure === "after") throw new BrokerUnavailableError("connection reset: answer lost");
    return result;
  }

  /** How the next cancels fail, if they do. */
  cancelFailure: "unreachable" | "refused" | null = null;

  cancel(clientOrderId: string): Promise<void> {
    if (this.cancelFailure === "unreachable") {
      return Promise.reject(new BrokerUnavailableError("connection refused"));
    }
    if (this.cancelFailure === "refused") {
      return Promise.reject(new BrokerRejectedError("order is not cancelable"));
    }
    return this.inner.cancel(clientOrderId);
  }

  refusals(order: OrderShape): BrokerRefusal[] {
    return this.refusing.map((reason) => ({
      path: "broker",
      message: `${reason} (${order.symbol} ${order.time_in_force})`,
    }));
  }

  async getOrder(clientOrderId: string): Promise<BrokerOrderState | null> {
    if (this.lookupsDown) throw new BrokerUnavailableError("unreachable");
    const answer = this.lookups.get(clientOrderId) ?? await this.inner.getOrder(clientOrderId);
    const hook = this.beforeLookupAnswer;
    this.beforeLookupAnswer = null;
    await hook?.();
    return answer;
  }

  openOrders(): Promise<BrokerOrderState[]> {
    return this.inner.openOrders();
  }

  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async inject(event: BrokerEvent): Promise<void> {
    for (const listener of [...this.#listeners]) await listener(event);
  }

  start(signal: AbortSignal): Promise<void> {
    return this.inner.start(signal);
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.inner[Symbol.asyncDispose]();
  }
}

/** Risk limits with every limit off, to switch single rules on. */
interface Harness extends AsyncDisposable {
  sql: Sql;
  config: Config;
  cache: LatestCache;
  state: PortfolioState;
  broker: FaultyBroker;
  engine: ExecutionEngine;
  published: Array<{ subject: string; data: Record<string, unknown> }>;
  fills: FillMessage[];
  /** A new engine on the same database, cache, state and broker. */
  newEngine(overrides?: Partial<HarnessOptions>): ExecutionEngine;
  /** Orders as stored, oldest first. */
  orders(): Promise<Order[]>;
  /** Subjects published so far that start with `prefix`. */
  subjects(prefix: string): string[];
}

interface HarnessOptions {
  risk: (config: Config) => Config["risk"];
  /** The engine's position tracker partner. @default {none: fills are stored without positions} */
  positions: PositionsPartner;
  clock: Clock;
  engine: ExecutionEngineOptions;
  start: boolean;
}

async function harness(options: Partial<HarnessOptions> = {}): Promise<Harness> {
  const db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const clock = options.clock ?? systemClock;
  const config: Config = {
    ...base,
    risk: options.risk ? options.risk(base) : noRiskLimits(base),
  };
  const cache = new LatestCache({ clock });
  quote(cache, "BTC-USDT", "50000", "50001", clock.now());
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  const broker = new FaultyBroker(paperBroker({
    cache,
    options: config.brokers.paper,
    max_price_age_ms: config.execution.max_price_age_ms,
    clock,
  }));
  const published: Harness["published"] = [];
  const fills: FillMessage[] = [];
  const engines: ExecutionEngine[] = [];
  const newEngine = (overrides: Partial<HarnessOptions> = {}) => {
    const engine = new ExecutionEngine({
      sql: db.sql,
      brokers: new Map([["paper", broker]]),
      cache,
      state,
      config: {
        risk: overrides.risk ? overrides.risk(base) : config.risk,
        execution: config.execution,
      },
      publish: (subject, data) =>
        published.push({ subject, data: data as Record<string, unknown> }),
      publishFill: (fill) => {
        fills.push(fill);
        return Promise.resolve();
      },
      clock: overrides.clock ?? clock,
      positions: overrides.positions ?? options.positions,
      log: nullLogger,
      options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20, ...options.engine },
    });
    engines.push(engine);
    return engine;
  };
  const engine = newEngine();
  if (options.start ?? true) await engine.start();
  return {
    sql: db.sql,
    config,
    cache,
    state,
    broker,
    engine,
    published,
    fills,
    newEngine,
    orders: async () => (await listOrders(db.sql, { direction: "asc", limit: 1000 })).items,
    subjects: (prefix) => published.map((p) => p.subject).filter((s) => s.startsWith(prefix)),
    [Symbol.asyncDispose]: async () => {
      for (const e of engines) await e.stop();
      await broker[Symbol.asyncDispose]();
      await db[Symbol.asyncDispose]();
    },
  };
}

async function fillsOf(sql: Sql, orderId: string) {
  return (await listFills(sql, { order_id: orderId, limit: 1000 })).items;
}

async function waitForStatus(sql: Sql, id: string, status: Order["status"]): Promise<Order> {
  let order: Order | undefined;
  await waitFor(
    async () => {
      order = await getOrder(sql, id);
      return order.status === status;
    },
    5_000,
    `order ${id} ${status} (is ${order?.status})`,
  );
  return order!;
}

/** A 1 BTC-USDT gtc limit signal of strategy "grid": it rests at the paper broker. */
function restingLimit(
  id: string,
  side: "buy" | "sell",
  price: string,
  source: "nats" | "rest" = "nats",
) {
  return {
    body: {
      id,
      symbol: "BTC-USDT",
      side,
      qty: "1",
      type: "limit",
      limit_price: price,
      time_in_force: "gtc",
    },
    strategy: "grid",
    source,
  };
}

/** A signal buying 1 `symbol` at market, as the engine takes it in. */
function marketBuy(
  id: string,
  symbol = "BTC-USDT",
  strategy = "manual",
  source: "nats" | "rest" = "rest",
) {
  return { body: { id, symbol, side: "buy", qty: "1" }, strategy, source };
}

function rulesOf(reasons: readonly RejectReason[]): string[] {
  return reasons.map((r) => "rule" in r ? r.rule : `path:${r.path}`);
}

// ---------------------------------------------------------------------------
// Signals to fills
// ---------------------------------------------------------------------------

Deno.test("a valid signal is stored pending, submitted and filled once, its fill published once", async () => {
  await using h = await harness();
  const [outcome] = await h.engine.processSignals([{
    body: { id: "s-1", symbol: "BTC-USDT", side: "buy", qty: "0.5" },
    strategy: "momentum",
    source: "nats",
  }]);
  assert.equal(outcome?.status, "accepted");
  assert.equal(outcome.duplicate, false);
  if (outcome.status !== "accepted") return;
  assert.equal(outcome.order.status, "pending");
  assert.equal(outcome.order.strategy, "momentum");
  assert.equal(outcome.signal.client_signal_id, "s-1");
  const filled = await waitForStatus(h.sql, outcome.order.id, "filled");
  await h.engine.idle();
  assert.equal(filled.filled_qty, "0.50000000");
  assert.equal(filled.avg_fill_price, "50001.00000000");
  assert.equal(filled.broker_order_id, `paper-${filled.client_order_id}`);
  assert.notEqual(filled.submitted_at, null);
  const fills = await fillsOf(h.sql, filled.id);
  assert.equal(fills.length, 1);
  assert.equal(fills[0]!.qty, "0.50000000");
  assert.equal(h.fills.length, 1);
  assert.equal(h.fills[0]!.id, fills[0]!.id);
  assert.equal(h.fills[0]!.qty, "0.5");
  assert.deepEqual(h.subjects("orders."), [
    "orders.pending.BTC-USDT",
    "orders.submitted.BTC-USDT",
    "orders.filled.BTC-USDT",
  ]);
  const last = h.published.at(-1)!.data;
  assert.equal(last.filled_qty, "0.5");
  assert.equal(last.avg_fill_price, "50001");
  assert.equal(h.broker.submits.length, 1);
  assert.equal(h.engine.stats().open_orders, 0);

  // The broker delivering the same fill again changes nothing.
  await h.broker.inject({
    type: "fill",
    client_order_id: filled.client_order_id,
    broker_order_id: filled.broker_order_id!,
    fill_id: fills[0]!.broker_fill_id,
    qty: d("0.5"),
    price: d("50001"),
    fee: ZERO,
    at_ms: Date.now(),
  });
  await h.engine.idle();
  assert.equal((await fillsOf(h.sql, filled.id)).length, 1);
  assert.equal(h.fills.length, 1);
  assert.equal((await listUnresolvedAlerts(h.sql)).length, 0);
});

Deno.test("an order's submit and fill are stored by one write even when a batch limit falls between them", async () => {
  // One update per batch: before, the submit went alone and the order row was written twice.
  await using h = await harness({ engine: { event_batch_max: 1 } });
  await h.sql.unsafe(`
    CREATE TABLE order_writes (order_id bigint, status order_status);
    CREATE FUNCTION record_order_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN INSERT INTO order_writes VALUES (NEW.id, NEW.status); RETURN NEW; END $$;
    CREATE TRIGGER record_order_writes AFTER UPDATE ON orders
      FOR EACH ROW EXECUTE FUNCTION record_order_write();`);
  const outcomes = await h.engine.processSignals(["w-1", "w-2", "w-3"].map((id) => marketBuy(id)));
  const ids = outcomes.map((outcome) => {
    assert.equal(outcome.status, "accepted");
    return outcome.status === "accepted" ? outcome.order.id : "";
  });
  for (const id of ids) await waitForStatus(h.sql, id, "filled");
  await h.engine.idle();
  const writes = await h.sql<{ order_id: string; status: string }[]>`
    SELECT order_id::text, status::text FROM order_writes ORDER BY order_id`;
  assert.deepEqual([...writes], ids.map((id) => ({ order_id: id, status: "filled" })));
  assert.equal(h.subjects("orders.submitted.").length, 3);
});

Deno.test("an invalid signal is recorded as rejected with every reason and a reject event", async () => {
  await using h = await harness();
  const body = { id: "bad-1", symbol: "btc", side: "hold", qty: -1, type: "limit" };
  const [outcome] = await h.engine.processSignals([
    { body, strategy: "momentum", source: "nats", key: "js-7" },
  ]);
  assert.equal(outcome?.status, "rejected");
  if (outcome.status !== "rejected") return;
  assert.deepEqual(rulesOf(outcome.reasons), [
    "path:symbol",
    "path:side",
    "path:qty",
    "path:limit_price",
  ]);
  const signals = (await listSignals(h.sql)).items;
  assert.equal(signals.length, 1);
  assert.equal(signals[0]!.status, "rejected");
  assert.equal(signals[0]!.client_signal_id, "bad-1");
  assert.deepEqual(signals[0]!.payload, body);
  assert.equal((signals[0]!.reasons ?? []).length, 4);
  const events = h.published.filter((p) => p.subject === "signals.rejected");
  assert.equal(events.length, 1);
  const event = events[0]!.data as unknown as SignalRejectEvent;
  assert.equal(event.signal_id, signals[0]!.id);
  assert.equal(event.strategy, "momentum");
  assert.equal(event.client_signal_id, "bad-1");
  assert.equal(event.reasons.length, 4);
  assert.equal((await h.orders()).length, 0);

  // Not JSON at all (as the actor hands it in): recorded under its delivery key.
  const [text] = await h.engine.processSignals([
    { body: "buy everything", strategy: "momentum", source: "nats", key: "js-8" },
  ]);
  assert.equal(text?.status, "rejected");
  if (text.status !== "rejected") return;
  assert.equal(text.signal.client_signal_id, "js-8");
  assert.deepEqual(text.signal.payload, { raw: "buy everything" });
  assert.deepEqual(rulesOf(text.reasons), ["path:"]);
});

Deno.test("a body holding U+0000 or a lone surrogate (which jsonb refuses) is recorded as rejected, and its batch is stored", async () => {
  await using h = await harness();
  const input = (body: unknown, key: string) => ({
    body,
    strategy: "momentum",
    source: "nats" as const,
    key,
  });
  const nulReason = {
    id: "nul-1",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.5",
    reason: "a\u0000b",
  };
  const nulKey = { id: "nul-2", symbol: "BTC-USDT", side: "buy", qty: "0.5", "x\u0000": 1 };
  const nulSymbol = { id: "nul-3", symbol: "BTC\u0000USDT", side: "buy", qty: "0.5" };
  const surrogate = { id: "sur-1", symbol: "BTC-USDT", side: "buy", qty: "0.5", reason: "\ud800" };
  const surrogateSymbol = { id: "sur-2", symbol: "\udc00", side: "buy", qty: "0.5" };
  const outcomes = await h.engine.processSignals([
    input(nulReason, "js-1"),
    input(nulKey, "js-2"),
    input(nulSymbol, "js-3"),
    input("not json \u0000", "js-4"),
    input({ id: "ok-1", symbol: "BTC-USDT", side: "buy", qty: "0.5" }, "js-5"),
    input(surrogate, "js-6"),
    input(surrogateSymbol, "js-7"),
    // A long array: its walk must not overflow the call stack (it did, failing the batch).
    input({
      id: "big-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "0.5",
      extra: new Array(200_000).fill(0),
    }, "js-8"),
  ]);
  assert.deepEqual(outcomes.map((o) => o.status), [
    "rejected",
    "rejected",
    "rejected",
    "rejected",
    "accepted",
    "rejected",
    "rejected",
    "rejected",
  ]);
  const first = outcomes[0]!;
  if (first.status !== "rejected") return;
  assert.deepEqual(first.reasons.map((r) => r.message), [
    "reason must be well-formed Unicode without NUL characters (U+0000)",
  ]);
  const rows = new Map(
    (await listSignals(h.sql, { limit: 10 })).items.map((r) => [r.client_signal_id, r]),
  );
  assert.deepEqual([...rows.values()].map((r) => [r.client_signal_id, r.status, r.symbol]).sort(), [
    ["big-1", "rejected", "BTC-USDT"],
    ["js-4", "rejected", null],
    ["nul-1", "rejected", "BTC-USDT"],
    ["nul-2", "rejected", "BTC-USDT"],
    ["nul-3", "rejected", null],
    ["ok-1", "accepted", "BTC-USDT"],
    ["sur-1", "rejected", "BTC-USDT"],
    ["sur-2", "rejected", null],
  ]);
  // Kept exactly, as JSON text: jsonb cannot hold the character itself.
  assert.deepEqual(rows.get("nul-1")!.payload, { raw: JSON.stringify(nulReason) });
  assert.deepEqual(JSON.parse((rows.get("nul-2")!.payload as { raw: string }).raw), nulKey);
  assert.deepEqual(rows.get("js-4")!.payload, { raw: JSON.stringify("not json \u0000") });
  assert.deepEqual(rows.get("sur-1")!.payload, { raw: JSON.stringify(surrogate) });
  assert.equal((await h.orders()).length, 1);
});

Deno.test("a batch that fails after creating its symbols leaves no stale symbol behind: later orders for it work", async () => {
  await using h = await harness();
  // The statement storing the batch fails after the symbol row was written in its transaction.
  await h.sql.unsafe(`
    create function boom() returns trigger language plpgsql as $$
    begin
      if new.client_signal_id = 'boom' then raise exception 'boom'; end if;
      return new;
    end $$;
    create trigger boom before insert on signals for each row execute function boom();`);
  const limit = (id: string) => ({
    body: { id, symbol: "ADA-USDT", side: "buy", qty: "1", type: "limit", limit_price: "0.5" },
    strategy: "momentum",
    source: "nats" as const,
  });
  await assert.rejects(h.engine.processSignals([limit("boom")]), /boom/);
  assert.equal((await h.sql`select 1 from symbols where symbol = 'ADA-USDT'`).length, 0);
  const [outcome] = await h.engine.processSignals([limit("after")]);
  assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
  assert.equal((await h.sql`select 1 from symbols where symbol = 'ADA-USDT'`).length, 1);
});

Deno.test("each risk rule refuses an order and names itself", async () => {
  const SATURDAY = Date.UTC(2025, 0, 4, 15, 0, 0); // NYSE closed
  const fixed: Clock = { now: () => SATURDAY, sleep: systemClock.sleep };
  await using h = await harness({ clock: fixed, start: false });
  await upsertSymbols(h.sql, [{ symbol: "BTC-USDT" }, {
    symbol: "AAPL",
    asset_class: "us_equity",
  }]);
  type Case = {
    rule: string;
    risk: (risk: Config["risk"]) => Config["risk"];
    body: Record<string, unknown>;
    setUp?: (engine: ExecutionEngine, state: PortfolioState) => Promise<void> | void;
  };
  const buy = (qty: string, extra: Record<string, unknown> = {}) => ({
    symbol: "BTC-USDT",
    side: "buy",
    qty,
    ...extra,
  });
  const cases: Case[] = [
    {
      rule: "kill_switch",
      risk: (r) => r,
      body: buy("1"),
      setUp: async (engine) => {
        await engine.setKillSwitch({ active: true, reason: "test" });
      },
    },
    {
      rule: "market_hours",
      risk: (r) => ({ ...r, symbols: { AAPL: { market_hours: "us_equity" } } }),
      body: { symbol: "AAPL", side: "buy", qty: "1", type: "limit", limit_price: "100" },
    },
    {
      rule: "no_market_price",
      risk: (r) => r,
      body: { symbol: "ETH-USDT", side: "buy", qty: "1" },
    },
    { rule: "max_order_qty", risk: (r) => ({ ...r, max_order_qty: "1" }), body: buy("2") },
    { rule: "max_notional", risk: (r) => ({ ...r, max_order_notional: "1000" }), body: buy("1") },
    {
      rule: "price_collar",
      risk: (r) => ({ ...r, price_collar_pct: "5" }),
      body: buy("1", { type: "limit", limit_price: "40000" }),
    },
    {
      rule: "max_position",
      risk: (r) => ({ ...r, max_position_qty: "1" }),
      body: buy("0.5"),
      setUp: (_, state) =>
        state.setPosition({
          symbol: "BTC-USDT",
          qty: d("1"),
          avg_entry_price: d("50000"),
          realized_pnl: ZERO,
          fees: ZERO,
        }),
    },
    {
      rule: "max_gross_exposure",
      risk: (r) => ({ ...r, max_gross_exposure: "60000" }),
      body: buy("0.5"),
      setUp: (_, state) =>
        state.setPosition({
          symbol: "BTC-USDT",
          qty: d("1"),
          avg_entry_price: d("50000"),
          realized_pnl: ZERO,
          fees: ZERO,
        }),
    },
    {
      rule: "daily_loss_limit",
      risk: (r) => ({ ...r, daily_loss_limit: "100" }),
      body: buy("1"),
      setUp: (_, state) =>
        state.record({
          symbol: "BTC-USDT",
          position: {
            symbol: "BTC-USDT",
            qty: ZERO,
            avg_entry_price: ZERO,
            realized_pnl: d("-150"),
            fees: ZERO,
          },
          cash: d("99850"),
          realized: d("-150"),
          filled_at: SATURDAY,
          closing: true,
          trade_pnl: d("-150"),
        }),
    },
  ];
  let n = 0;
  for (const c of cases) {
    const state = new PortfolioState({ starting_cash: "100000", clock: fixed });
    await state.load(h.sql);
    const engine = new ExecutionEngine({
      sql: h.sql,
      brokers: new Map([["paper", h.broker]]),
      cache: h.cache,
      state,
      config: { risk: c.risk(h.config.risk), execution: h.config.execution },
      publish: () => {},
      publishFill: () => Promise.resolve(),
      clock: fixed,
    });
    await engine.start();
    try {
      await c.setUp?.(engine, state);
      const [outcome] = await engine.processSignals([
        { body: { id: `risk-${n++}`, ...c.body }, strategy: "risk", source: "rest" },
      ]);
      assert.equal(outcome?.status, "rejected", c.rule);
      if (outcome.status !== "rejected") continue;
      assert.deepEqual(rulesOf(outcome.reasons), [c.rule], c.rule);
      assert.match(outcome.reasons[0]!.message, /\S/);
    } finally {
      if (engine.killSwitch().active) await engine.setKillSwitch({ active: false });
      await engine.stop();
    }
  }
  assert.equal((await h.orders()).length, 0);
});

Deno.test("a market order whose only price is stale is refused, saying how old the price is", async () => {
  await using h = await harness();
  await upsertSymbols(h.sql, [{ symbol: "ETH-USDT" }]);
  quote(h.cache, "ETH-USDT", "3000", "3001", Date.now() - 125_000);
  const [stale, never] = await h.engine.processSignals([
    marketBuy("stale-1", "ETH-USDT", "s"),
    marketBuy("stale-2", "SOL-USDT", "s"),
  ]);
  if (stale?.status !== "rejected" || never?.status !== "rejected") throw new Error("rejected");
  assert.deepEqual(stale.reasons, [{
    rule: "no_market_price",
    message: "no fresh market price for ETH-USDT: the newest is 2 min old, over " +
      `execution.max_price_age_ms ${h.config.execution.max_price_age_ms}; market orders need one`,
  }]);
  assert.deepEqual(never.reasons, [{
    rule: "no_market_price",
    message: "no market price for SOL-USDT: market orders need one",
  }]);
  // A fresh price now: the same order goes through.
  quote(h.cache, "ETH-USDT", "3000", "3001");
  const [fresh] = await h.engine.processSignals([marketBuy("stale-3", "ETH-USDT", "s")]);
  assert.equal(fresh?.status, "accepted");
});

Deno.test("signals of one batch count each other: the second cannot exceed max_open_orders", async () => {
  await using h = await harness({ risk: (c) => ({ ...noRiskLimits(c), max_open_orders: 1 }) });
  const outcomes = await h.engine.processSignals([
    restingLimit("g-1", "buy", "40000"),
    restingLimit("g-2", "buy", "40000"),
  ]);
  assert.deepEqual(outcomes.map((o) => o.status), ["accepted", "rejected"]);
  const second = outcomes[1]!;
  if (second.status !== "rejected") return;
  assert.deepEqual(rulesOf(second.reasons), ["max_open_orders"]);
  // Still true for a later batch: the first order rests at the broker.
  const first = outcomes[0]!;
  if (first.status !== "accepted") return;
  await waitForStatus(h.sql, first.order.id, "submitted");
  const [third] = await h.engine.processSignals([restingLimit("g-3", "buy", "40000")]);
  assert.equal(third?.status, "rejected");
  assert.deepEqual(h.state.openQty("BTC-USDT").buy.toString(), "1");
});

Deno.test("a batch decided while the one before commits counts its orders as open", async () => {
  await using h = await harness({ risk: (c) => ({ ...noRiskLimits(c), max_open_orders: 1 }) });
  // The symbol's row exists (a first order creates it, in its own transaction) and no order rests.
  const [warm] = await h.engine.processSignals([marketBuy("p-0", "BTC-USDT", "grid", "nats")]);
  if (warm?.status === "accepted") await waitForStatus(h.sql, warm.order.id, "filled");
  // The row shows filled as soon as it commits; the engine stops counting the order as open
  // just after, when its writer lane has taken the answer.
  await h.engine.idle();
  // Handed in back to back: the second is decided while the first commits.
  const first = h.engine.enqueueSignals([restingLimit("p-1", "sell", "60000")]);
  await first.decided;
  const second = h.engine.enqueueSignals([restingLimit("p-2", "sell", "60000")]);
  const [a] = await first.outcomes;
  const [b] = await second.outcomes;
  assert.equal(a?.status, "accepted");
  assert.equal(b?.status, "rejected");
  if (b?.status === "rejected") assert.deepEqual(rulesOf(b.reasons), ["max_open_orders"]);
  assert.equal((await h.orders()).length, 2);
});

Deno.test("a gated batch is decided only once its gate opens, while batches behind it go on", async () => {
  await using h = await harness();
  // ETH-USDT has no price yet (as after a NATS outage): decided now, a market buy would be refused.
  let open!: () => void;
  let gate: Promise<void> | null = new Promise<void>((resolve) => open = resolve);
  const held = h.engine.enqueueSignals([marketBuy("g-1", "ETH-USDT", "grid", "nats")], {
    gate: () => gate,
  });
  let heldDecided = false;
  void held.decided.then(() => heldDecided = true);
  // A batch behind it (a REST signal) is not held up by it.
  const [rest] = await h.engine.processSignals([marketBuy("r-1")]);
  assert.equal(rest?.status, "accepted");
  assert.equal(heldDecided, false);
  assert.equal((await h.orders()).length, 1);
  // Market data is back: the gate opens, and the batch is decided on the fresh price.
  quote(h.cache, "ETH-USDT", "3000", "3001");
  gate = null;
  open();
  const [decided] = await held.outcomes;
  assert.equal(decided?.status, "accepted", JSON.stringify(decided));
});

Deno.test("orders in other symbols count in gross exposure: same batch, or open at the broker", async () => {
  // Limit 1000 at prices of 100: 6 of one symbol (600) and 6 of another (600) exceed it together.
  await using h = await harness({
    risk: (c) => ({ ...noRiskLimits(c), max_gross_exposure: "1000" }),
  });
  quote(h.cache, "BTC-USDT", "100", "100");
  quote(h.cache, "ETH-USDT", "100", "100");
  const buy = (id: string, symbol: string, extra: Record<string, string> = {}) => ({
    body: { id, symbol, side: "buy", qty: "6", ...extra },
    strategy: "x",
    source: "nats" as const,
  });
  const resting = { type: "limit", limit_price: "90", time_in_force: "gtc" };
  // In one batch: the second order would take gross exposure to 1200.
  const outcomes = await h.engine.processSignals([
    buy("b-1", "BTC-USDT", resting),
    buy("e-1", "ETH-USDT", resting),
  ]);
  assert.deepEqual(outcomes.map((o) => o.status), ["accepted", "rejected"]);
  const [first, second] = outcomes;
  if (second?.status === "rejected") {
    assert.deepEqual(rulesOf(second.reasons), ["max_gross_exposure"]);
    assert.match(second.reasons[0]!.message, /open orders of other symbols 600/);
  }
  // Open at the broker (resting at 90, valued at the mark 100): the same in a later batch.
  if (first?.status === "accepted") await waitForStatus(h.sql, first.order.id, "submitted");
  const [later] = await h.engine.processSignals([buy("e-2", "ETH-USDT", resting)]);
  assert.equal(later?.status, "rejected");
  // What fits beside it is accepted: 600 + 4 × 100.
  const [fits] = await h.engine.processSignals([{
    ...buy("e-3", "ETH-USDT"),
    body: { id: "e-3", symbol: "ETH-USDT", side: "buy", qty: "4" },
  }]);
  assert.equal(fits?.status, "accepted");
  // Orders count as if all filled, reductions not counted: a sell of BTC beside the resting buy
  // of 6 adds nothing while short 1 is less than long 6, and is refused once short 7 is more.
  const sell = (id: string, qty: string) => ({
    body: { id, symbol: "BTC-USDT", side: "sell", qty },
    strategy: "x",
    source: "nats" as const,
  });
  const [small, big] = await h.engine.processSignals([sell("s-1", "1"), sell("s-2", "7")]);
  assert.equal(small?.status, "accepted");
  assert.equal(big?.status, "rejected");
});

Deno.test("a position without a fresh price counts in gross exposure at its newest price, not at cost", async () => {
  await using h = await harness({
    risk: (c) => ({ ...noRiskLimits(c), max_gross_exposure: "1000" }),
  });
  // Long 6 ETH bought at 50 (cost 300); its only price, 100, is a minute old — stale for the
  // orders' checks, yet the best value of the position there is.
  h.state.record(
    applyTrackedFill(h.state.position("ETH-USDT"), h.state.cash, {
      symbol: "ETH-USDT",
      side: "buy",
      qty: d("6"),
      price: d("50"),
      fee: ZERO,
      filled_at: Date.now() - 120_000,
    }),
    "held-eth",
  );
  quote(h.cache, "ETH-USDT", "100", "100", Date.now() - 60_000);
  quote(h.cache, "BTC-USDT", "100", "100");
  const [outcome] = await h.engine.processSignals([{
    body: { id: "g-1", symbol: "BTC-USDT", side: "buy", qty: "6" },
    strategy: "x",
    source: "nats" as const,
  }]);
  // 6 × 100 (ETH at its minute-old price) + 6 × 100 = 1200 > 1000; at cost it was 900.
  assert.equal(outcome?.status, "rejected");
  if (outcome?.status === "rejected") {
    assert.deepEqual(rulesOf(outcome.reasons), ["max_gross_exposure"]);
  }
});

Deno.test("a fill stored before the position tracker applies it counts in the position and gross exposure", async () => {
  // The tracker is busy (as in a burst): the fill is stored without its position.
  await using h = await harness({
    risk: (c) => ({ ...noRiskLimits(c), max_position_qty: "1", max_gross_exposure: "60000" }),
    positions: { reserve: () => null },
  });
  const [first] = await h.engine.processSignals([marketBuy("t-1")]);
  if (first?.status !== "accepted") throw new Error("accepted");
  await waitForStatus(h.sql, first.order.id, "filled");
  await h.engine.idle();
  assert.equal(h.fills.length, 1);
  assert.equal(h.state.position("BTC-USDT").qty.toString(), "0", "not applied yet");
  assert.equal(h.state.unappliedQty("BTC-USDT").toString(), "1");
  const [second] = await h.engine.processSignals([marketBuy("t-2")]);
  assert.equal(second?.status, "rejected");
  if (second?.status === "rejected") {
    assert.deepEqual(rulesOf(second.reasons), ["max_position", "max_gross_exposure"]);
  }
  // A state loaded meanwhile (a tracker restarting) counts the stored fill as unapplied too.
  const reloaded = new PortfolioState({ starting_cash: "100000" });
  await reloaded.load(h.sql);
  assert.equal(reloaded.unappliedQty("BTC-USDT").toString(), "1");
  // The tracker records the fill, by its id: it is counted once, as the position.
  const fill = h.fills[0]!;
  h.state.record(
    applyTrackedFill(h.state.position(fill.symbol), h.state.cash, {
      symbol: fill.symbol,
      side: fill.side,
      qty: d(fill.qty),
      price: d(fill.price),
      fee: d(fill.fee),
      filled_at: fill.filled_at,
    }),
    fill.id,
  );
  assert.equal(h.state.unappliedQty("BTC-USDT").toString(), "0");
  assert.equal(h.state.unappliedFillCount(), 0);
  assert.equal(h.state.position("BTC-USDT").qty.toString(), "1");
  const [third] = await h.engine.processSignals([marketBuy("t-3")]);
  assert.equal(third?.status, "rejected");
  const sell = {
    body: { id: "t-4", symbol: "BTC-USDT", side: "sell", qty: "1" },
    source: "rest" as const,
  };
  const [fourth] = await h.engine.processSignals([sell]);
  assert.equal(fourth?.status, "accepted", "a reduction is not refused");
});

Deno.test("a signal id maps to one order, within a batch and across batches", async () => {
  await using h = await harness();
  const signal = (id: string, qty = "0.1") => ({
    body: { id, symbol: "BTC-USDT", side: "buy", qty },
    strategy: "dup",
    source: "nats" as const,
  });
  const first = await h.engine.processSignals([signal("a"), signal("a", "0.2"), signal("b")]);
  assert.deepEqual(first.map((o) => [o.status, o.duplicate]), [
    ["accepted", false],
    ["accepted", true],
    ["accepted", false],
  ]);
  const [a, aAgain] = first;
  if (a?.status !== "accepted" || aAgain?.status !== "accepted") return;
  assert.equal(aAgain.order.id, a.order.id);
  assert.equal(aAgain.order.qty, "0.10000000");
  // A redelivered batch (the broker may have filled the orders meanwhile).
  await waitForStatus(h.sql, a.order.id, "filled");
  const again = await h.engine.processSignals([
    { ...signal("a"), redelivered: true },
    { ...signal("b"), redelivered: true },
    { ...signal("c"), redelivered: true },
  ]);
  assert.deepEqual(again.map((o) => [o.status, o.duplicate]), [
    ["accepted", true],
    ["accepted", true],
    ["accepted", false],
  ]);
  if (again[0]?.status !== "accepted") return;
  assert.equal(again[0].order.id, a.order.id);
  assert.equal(again[0].order.status, "filled");
  // No id: the delivery key is the idempotency key.
  const keyed = { body: { symbol: "BTC-USDT", side: "sell", qty: "0.1" }, strategy: "dup" };
  const [k1] = await h.engine.processSignals([{ ...keyed, source: "nats", key: "js-41" }]);
  const [k2] = await h.engine.processSignals([{ ...keyed, source: "nats", key: "js-41" }]);
  assert.equal(k1?.duplicate, false);
  assert.equal(k2?.duplicate, true);
  await h.engine.idle();
  const orders = await h.orders();
  assert.equal(orders.length, 4);
  assert.equal(new Set(orders.map((o) => o.signal_id)).size, 4);
  await waitFor(async () => (await h.orders()).every((o) => o.status === "filled"), 5_000);
  await h.engine.idle();
  assert.equal(h.broker.submits.length, 4);
  assert.equal(h.fills.length, 4);
});

Deno.test("a stored signal sent again (not a redelivery) takes no risk room from a new signal of its batch", async () => {
  await using h = await harness({ risk: (c) => ({ ...noRiskLimits(c), max_open_orders: 2 }) });
  const [a] = await h.engine.processSignals([restingLimit("a", "buy", "40000")]);
  if (a?.status !== "accepted") throw new Error("accepted");
  await waitForStatus(h.sql, a.order.id, "submitted");
  // The strategy publishes "a" again (its publish timed out), then "b": one batch.
  const outcomes = await h.engine.processSignals([
    restingLimit("a", "buy", "40000"),
    restingLimit("b", "buy", "40000"),
  ]);
  assert.deepEqual(outcomes.map((o) => [o.status, o.duplicate]), [
    ["accepted", true],
    ["accepted", false],
  ]);
  // The room is still counted: a third order is one too many.
  const [c] = await h.engine.processSignals([restingLimit("c", "buy", "40000")]);
  assert.equal(c?.status, "rejected");
  assert.equal((await h.orders()).length, 2);
});

Deno.test("a signal whose commit answer was lost is taken over when it comes again", async () => {
  await using h = await harness();
  // The engine's transaction committed but the answer never came back: the caller saw a
  // failure, and the engine never learnt of the order.
  await upsertSymbols(h.sql, [{ symbol: "BTC-USDT" }]);
  const [stored] = await unitOfWork(h.sql, (tx) =>
    insertSignalsAndOrders(tx, [{
      signal: {
        strategy: "lost",
        client_signal_id: "l-1",
        source: "nats",
        symbol: "BTC-USDT",
        payload: { id: "l-1", symbol: "BTC-USDT", side: "buy", qty: "0.3", exchange: "binance" },
      },
      outcome: { status: "accepted", order: { symbol: "BTC-USDT", side: "buy", qty: "0.3" } },
    }]));
  const [again] = await h.engine.processSignals([{
    body: { id: "l-1", symbol: "BTC-USDT", side: "buy", qty: "0.3", exchange: "binance" },
    strategy: "lost",
    source: "nats",
    redelivered: true,
  }]);
  assert.equal(again?.duplicate, true);
  if (again?.status !== "accepted") throw new Error("accepted");
  assert.equal(again.order.id, stored!.order!.id);
  const order = await waitForStatus(h.sql, stored!.order!.id, "filled");
  await h.engine.settled();
  assert.equal((await fillsOf(h.sql, order.id)).length, 1);
  assert.equal(h.broker.submits.length, 1);
  assert.equal((await h.orders()).length, 1);
});

Deno.test("a broker that cannot be reached is retried with the same client order id: one order at the broker", async () => {
  await using h = await harness();
  h.broker.failures.push("before", "before", "after");
  const [outcome] = await h.engine.processSignals([{
    body: { id: "flaky-1", symbol: "BTC-USDT", side: "sell", qty: "0.25" },
    strategy: "flaky",
    source: "rest",
  }]);
  if (outcome?.status !== "accepted") throw new Error("expected an accepted signal");
  const order = await waitForStatus(h.sql, outcome.order.id, "filled");
  await h.engine.settled();
  // The third attempt reached the broker; a fourth happens only if its retry came before the
  // broker's events showed the order was there — the broker recognised it by its id.
  assert.ok([3, 4].includes(h.broker.submits.length), `${h.broker.submits.length} submits`);
  assert.deepEqual(new Set(h.broker.submits), new Set([order.client_order_id]));
  assert.equal(h.broker.inner.stats().submitted, 1);
  assert.equal(h.engine.stats().submit_retries, 3);
  assert.equal((await fillsOf(h.sql, order.id)).length, 1);
  assert.equal(h.fills.length, 1);
  assert.equal(order.avg_fill_price, "50000.00000000");
});

Deno.test("what the broker refuses in advance rejects the signal before any order exists", async () => {
  await using h = await harness();
  h.broker.refusing = ["paper: no day orders today"];
  const [outcome] = await h.engine.processSignals([{
    body: { id: "day-1", symbol: "BTC-USDT", side: "buy", qty: "0.1", time_in_force: "day" },
    strategy: "momentum",
    source: "rest",
  }]);
  assert.equal(outcome?.status, "rejected");
  if (outcome.status !== "rejected") return;
  assert.deepEqual(outcome.reasons, [
    { path: "broker", message: "paper: no day orders today (BTC-USDT day)" },
  ]);
  assert.equal((await h.orders()).length, 0);
  assert.deepEqual(h.broker.submits, []);
  assert.equal(h.subjects("signals.rejected").length, 1);
  h.broker.refusing = [];
  const [again] = await h.engine.processSignals([{
    body: { id: "day-2", symbol: "BTC-USDT", side: "buy", qty: "0.1", time_in_force: "day" },
    strategy: "momentum",
    source: "rest",
  }]);
  assert.equal(again?.status, "accepted");
});

Deno.test("a broker refusal rejects the order, persisted and published", async () => {
  await using h = await harness();
  // A stop order without a stop price cannot be made by a signal; a market order in a symbol
  // the risk check prices (a trade) but the paper broker cannot (no bid/ask) is refused there.
  h.cache.update([{
    kind: "trade",
    exchange: "binance",
    symbol: "SOL-USDT",
    venue_symbol: "SOLUSDT",
    trade_id: "1",
    price: "150",
    qty: "1",
    side: "buy",
    ts_exchange: Date.now() * 1000,
    ts_local: Date.now() * 1000,
  }]);
  const [outcome] = await h.engine.processSignals([{
    body: { id: "sol-1", symbol: "SOL-USDT", side: "buy", qty: "1", exchange: "binance" },
    strategy: "refused",
    source: "rest",
  }]);
  if (outcome?.status !== "accepted") throw new Error("expected an accepted signal");
  const order = await waitForStatus(h.sql, outcome.order.id, "rejected");
  assert.match(order.status_reason ?? "", /no fresh market price/);
  assert.deepEqual(h.subjects("orders."), ["orders.pending.SOL-USDT", "orders.rejected.SOL-USDT"]);
  assert.equal(h.engine.stats().open_orders, 0);
});

// ---------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------

Deno.test("after a crash, reconciliation submits unsubmitted orders once and catches up missed fills", async () => {
  await using h = await harness({ start: false });
  await upsertSymbols(h.sql, [{ symbol: "BTC-USDT" }]);
  const order = (qty: string) => ({
    symbol: "BTC-USDT",
    side: "buy" as const,
    qty,
    broker: "paper",
  });
  // What a crashed engine left: three orders committed pending, never sent...
  const results = await unitOfWork(
    h.sql,
    (tx) =>
      insertSignalsAndOrders(
        tx,
        ["c-1", "c-2", "c-3"].map((id, i) => ({
          signal: {
            strategy: "crash",
            client_signal_id: id,
            source: "nats" as const,
            symbol: "BTC-USDT",
            payload: { id, exchange: "binance" },
          },
          outcome: { status: "accepted" as const, order: order(`0.${i + 1}`) },
        })),
      ),
  );
  const [pending, submitted, lost] = results.map((r) => r.order!);
  // ...one the broker took and filled while nobody listened (an event lost in the crash)...
  await updateOrderStatus(h.sql, submitted!.id, { from: "pending", to: "submitted" });
  const silent = paperBroker({
    cache: h.cache,
    options: h.config.brokers.paper,
    max_price_age_ms: 5_000,
  });
  const broker = new FaultyBroker(silent);
  await broker.inner.submit({
    client_order_id: submitted!.client_order_id,
    symbol: "BTC-USDT",
    side: "buy",
    type: "market",
    time_in_force: "day",
    qty: d("0.2"),
    limit_price: null,
    stop_price: null,
    exchange: "binance",
  });
  await broker.inner.settled();
  // ...and one marked submitted that the broker lost (the paper broker keeps no state).
  await updateOrderStatus(h.sql, lost!.id, { from: "pending", to: "submitted" });

  const fills: FillMessage[] = [];
  const engine = new ExecutionEngine({
    sql: h.sql,
    brokers: new Map([["paper", broker]]),
    cache: h.cache,
    state: h.state,
    config: { risk: h.config.risk, execution: h.config.execution },
    publish: () => {},
    publishFill: (fill) => {
      fills.push(fill);
      return Promise.resolve();
    },
  });
  try {
    await engine.start();
    assert.equal(engine.stats().open_orders, 3);
    const report = await engine.reconcile();
    assert.equal(report.checked, 3);
    assert.equal(report.submitted, 2);
    assert.equal(report.updated, 1);
    for (const o of [pending!, submitted!, lost!]) await waitForStatus(h.sql, o.id, "filled");
    await engine.idle();
    const caughtUp = await fillsOf(h.sql, submitted!.id);
    assert.deepEqual(caughtUp.map((f) => [f.broker_fill_id, f.qty]), [[
      "reconcile-0.2",
      "0.20000000",
    ]]);
    assert.equal((await fillsOf(h.sql, pending!.id)).length, 1);
    assert.equal((await fillsOf(h.sql, lost!.id)).length, 1);
    await engine.settled();
    assert.equal(broker.submits.length, 2);
    assert.equal(new Set(fills.map((f) => f.id)).size, 3);

    // Reconciling again (a second restart) changes nothing, but publishes again the fills no
    // position tracker applied (none runs here).
    const published = fills.length;
    const again = await engine.reconcile();
    assert.equal(again.submitted, 0);
    assert.equal(again.updated, 0);
    assert.equal(again.republished_fills, 3);
    await engine.settled();
    assert.equal(fills.length, published + 3);
    assert.equal((await listFills(h.sql, { limit: 100 })).items.length, 3);
    assert.equal(broker.submits.length, 2);
    // Once applied (realized_pnl set by the tracker), a fill is not published again.
    await h.sql`update fills set realized_pnl = 0`;
    assert.equal((await engine.reconcile()).republished_fills, 0);
  } finally {
    await engine.stop();
    await broker[Symbol.asyncDispose]();
  }
});

// ---------------------------------------------------------------------------
// Kill switch, cancels, illegal events
// ---------------------------------------------------------------------------

/** A resting 1 BTC-USDT buy, submitted; the broker's partial fill of it (not sent) and its view. */
async function partiallyFilled(h: Harness, id: string, brokerFilled = "0.4") {
  const [outcome] = await h.engine.processSignals([restingLimit(id, "buy", "49000")]);
  assert.equal(outcome?.status, "accepted");
  if (outcome.status !== "accepted") throw new Error("not accepted");
  await waitForStatus(h.sql, outcome.order.id, "submitted");
  const { id: orderId, client_order_id } = outcome.order;
  const fill = (fillId: string, qty: string, cum: string): BrokerEvent => ({
    type: "fill",
    client_order_id,
    broker_order_id: `paper-${client_order_id}`,
    fill_id: fillId,
    qty: d(qty),
    price: d("49000"),
    fee: ZERO,
    cum_qty: d(cum),
    at_ms: Date.now(),
  });
  // What the broker says it filled so far.
  h.broker.lookups.set(client_order_id, {
    client_order_id,
    broker_order_id: `paper-${client_order_id}`,
    status: "partially_filled",
    filled_qty: d(brokerFilled),
    avg_fill_price: d("49000"),
  });
  return { orderId, fill };
}

async function fillsAndFilled(h: Harness, orderId: string) {
  await h.engine.idle();
  return {
    fills: (await fillsOf(h.sql, orderId)).map((f) => `${f.broker_fill_id} ${f.qty}`).sort(),
    filled: (await getOrder(h.sql, orderId)).filled_qty,
  };
}

Deno.test("reconciliation counts a fill once when the stream delivers it during the lookup", async () => {
  await using h = await harness();
  const { orderId, fill } = await partiallyFilled(h, "race-1");
  h.broker.beforeLookupAnswer = () => h.broker.inject(fill("exec-1", "0.4", "0.4"));
  await h.engine.reconcile();
  assert.deepEqual(await fillsAndFilled(h, orderId), {
    fills: ["exec-1 0.40000000"],
    filled: "0.40000000",
  });
});

Deno.test("a fill a reconciliation already counted is not counted again when the stream delivers it late", async () => {
  await using h = await harness();
  const { orderId, fill } = await partiallyFilled(h, "late-1", "0.5");
  await h.engine.reconcile();
  assert.deepEqual(await fillsAndFilled(h, orderId), {
    fills: ["reconcile-0.5 0.50000000"],
    filled: "0.50000000",
  });
  // The broker's own events come after: the first is wholly counted already, the second
  // partly (0.1 of its 0.3), the third not at all.
  await h.broker.inject(fill("exec-1", "0.4", "0.4"));
  await h.broker.inject(fill("exec-2", "0.3", "0.7"));
  await h.broker.inject(fill("exec-3", "0.2", "0.9"));
  assert.deepEqual(await fillsAndFilled(h, orderId), {
    fills: ["exec-2 0.20000000", "exec-3 0.20000000", "reconcile-0.5 0.50000000"],
    filled: "0.90000000",
  });
  assert.equal(h.engine.stats().fills_counted_before, 2);
  assert.equal(h.engine.stats().illegal_events, 0);
});

Deno.test("a fill whose cumulative quantity shows executions never seen gets its order looked up: they are recorded at the averages' price", async () => {
  await using h = await harness({
    engine: { broker_retry_initial_ms: 5, broker_retry_max_ms: 20 },
  });
  const { orderId, fill } = await partiallyFilled(h, "gap-1", "0.7");
  const coid = (await getOrder(h.sql, orderId)).client_order_id;
  // The broker filled 0.4 at 49000 (never delivered), then 0.3 at 49350: 0.7 at 49150 on average.
  h.broker.lookups.set(coid, { ...h.broker.lookups.get(coid)!, avg_fill_price: d("49150") });
  const exec2 = fill("exec-2", "0.3", "0.7");
  assert.ok(exec2.type === "fill");
  await h.broker.inject({ ...exec2, price: d("49350") });
  await waitFor(
    async () => (await getOrder(h.sql, orderId)).filled_qty === "0.70000000",
    5_000,
    "the executions never seen, recorded",
  );
  assert.deepEqual(await fillsAndFilled(h, orderId), {
    fills: ["exec-2 0.30000000", "reconcile-0.7 0.40000000"],
    filled: "0.70000000",
  });
  const [missed] = (await fillsOf(h.sql, orderId)).filter((f) => f.broker_fill_id !== "exec-2");
  assert.equal(missed!.price, "49000.00000000"); // (49150 × 0.7 − 0.3 × 49350) / 0.4
  assert.equal((await getOrder(h.sql, orderId)).avg_fill_price, "49150.00000000");
});

Deno.test("a reconciliation answer read before a fill counted since is not counted: the order is looked up again", async () => {
  await using h = await harness({
    engine: { broker_retry_initial_ms: 5, broker_retry_max_ms: 20 },
  });
  // The broker filled 0.4 (its event lost); the lookup reads that.
  const { orderId, fill } = await partiallyFilled(h, "stale-1", "0.4");
  const coid = (await getOrder(h.sql, orderId)).client_order_id;
  h.broker.beforeLookupAnswer = async () => {
    // Before the answer arrives the broker fills 0.3 more, and the stream delivers it.
    h.broker.lookups.set(coid, { ...h.broker.lookups.get(coid)!, filled_qty: d("0.7") });
    await h.broker.inject(fill("exec-2", "0.3", "0.7"));
  };
  await h.engine.reconcile();
  await waitFor(
    async () => (await getOrder(h.sql, orderId)).filled_qty === "0.70000000",
    5_000,
    "all the broker's fills recorded",
  );
  // The answer of 0.4 (older than exec-2) counted nothing: the second lookup's 0.7 did.
  assert.deepEqual(await fillsAndFilled(h, orderId), {
    fills: ["exec-2 0.30000000", "reconcile-0.7 0.40000000"],
    filled: "0.70000000",
  });
});

Deno.test("when a broker's event stream comes back, its open orders are reconciled: fills missed meanwhile are recorded", async () => {
  await using h = await harness();
  const [outcome] = await h.engine.processSignals([restingLimit("gap-1", "buy", "49000")]);
  assert.equal(outcome?.status, "accepted");
  if (outcome.status !== "accepted") return;
  await waitForStatus(h.sql, outcome.order.id, "submitted");
  // The stream is down while the order fills: Alpaca does not replay what it missed.
  h.broker.events = "drop";
  quote(h.cache, "BTC-USDT", "48990", "48999", Date.now());
  h.broker.inner.onPrice("binance", "BTC-USDT");
  await waitFor(() => h.broker.dropped === 1, 5_000, "the fill event lost");
  await h.broker.reconnected();
  await waitForStatus(h.sql, outcome.order.id, "filled");
  await h.engine.settled();
  assert.deepEqual((await fillsOf(h.sql, outcome.order.id)).map((f) => [f.broker_fill_id, f.qty]), [
    ["reconcile-1", "1.00000000"],
  ]);
});

Deno.test("the kill switch rejects new orders and cancels open ones; it survives a restart", async () => {
  await using h = await harness();
  const outcomes = await h.engine.processSignals([
    restingLimit("k-1", "buy", "45000", "rest"),
    restingLimit("k-2", "buy", "44000", "rest"),
  ]);
  const ids = outcomes.map((o) => o.status === "accepted" ? o.order.id : "");
  for (const id of ids) await waitForStatus(h.sql, id, "submitted");
  const state = await h.engine.setKillSwitch({ active: true, cancel_open: true, reason: "drill" });
  assert.equal(state.active, true);
  assert.equal(state.cancel_requested, 2);
  for (const id of ids) {
    const order = await waitForStatus(h.sql, id, "cancelled");
    assert.equal(order.status_reason, "cancelled on request");
  }
  const [refused] = await h.engine.processSignals([restingLimit("k-3", "buy", "45000", "rest")]);
  assert.equal(refused?.status, "rejected");
  if (refused.status !== "rejected") return;
  assert.deepEqual(rulesOf(refused.reasons), ["kill_switch"]);
  assert.equal((await getKillSwitch(h.sql)).active, true);

  // A new engine (a restart) reads it back.
  const restarted = h.newEngine();
  await h.engine.stop();
  await restarted.start();
  assert.equal(restarted.killSwitch().active, true);
  assert.equal(restarted.killSwitch().reason, "drill");
  await restarted.setKillSwitch({ active: false });
  const [accepted] = await restarted.processSignals([restingLimit("k-4", "buy", "45000", "rest")]);
  assert.equal(accepted?.status, "accepted");
});

Deno.test("cancelOrder cancels an open order and refuses a closed one", async () => {
  await using h = await harness();
  const [resting, market] = await h.engine.processSignals([
    {
      body: {
        id: "r-1",
        symbol: "BTC-USDT",
        side: "sell",
        qty: "1",
        type: "limit",
        limit_price: "60000",
        time_in_force: "gtc",
      },
      strategy: "manual",
      source: "rest",
    },
    marketBuy("m-1"),
  ]);
  if (resting?.status !== "accepted" || market?.status !== "accepted") throw new Error("accepted");
  await waitForStatus(h.sql, resting.order.id, "submitted");
  await waitForStatus(h.sql, market.order.id, "filled");
  // A cancel the broker cannot be asked for says so, and why; the order stays open.
  h.broker.cancelFailure = "unreachable";
  const unreachable = await h.engine.cancelOrder(resting.order.id).catch((error) => error);
  assert.ok(unreachable instanceof CancelNotSentError);
  assert.equal(unreachable.retryable, true);
  assert.equal(unreachable.order.status, "submitted");
  assert.match(unreachable.message, /still submitted: the broker could not be reached/);
  h.broker.cancelFailure = "refused";
  const refused = await h.engine.cancelOrder(resting.order.id).catch((error) => error);
  assert.ok(refused instanceof CancelNotSentError);
  assert.equal(refused.retryable, false);
  assert.match(refused.message, /the broker refused to cancel it \(.*not cancelable\)/);
  h.broker.cancelFailure = null;
  await h.engine.cancelOrder(resting.order.id);
  await waitForStatus(h.sql, resting.order.id, "cancelled");
  await assert.rejects(() => h.engine.cancelOrder(market.order.id), ConflictError);
  await assert.rejects(() => h.engine.cancelOrder("999999"), /No order 999999/);
  assert.ok(h.subjects("orders.cancelled.").length === 1);
});

Deno.test("an order retrying against an unreachable broker can be cancelled before it gets there", async () => {
  await using h = await harness({
    engine: { submit_retry_initial_ms: 20, submit_retry_max_ms: 50 },
  });
  h.broker.failures.push(...Array<"before">(1000).fill("before"));
  const [outcome] = await h.engine.processSignals([
    marketBuy("u-1", "BTC-USDT", "x"),
  ]);
  if (outcome?.status !== "accepted") throw new Error("accepted");
  await waitFor(() => h.broker.submits.length >= 2, 5_000, "submit retries");
  const pending = await h.engine.cancelOrder(outcome.order.id, "operator gave up");
  assert.equal(pending.status, "pending");
  const order = await waitForStatus(h.sql, outcome.order.id, "cancelled");
  assert.equal(order.status_reason, "cancelled before it was submitted");
  await h.engine.settled();
  const attempts = h.broker.submits.length;
  assert.equal(h.broker.inner.stats().submitted, 0);
  assert.equal(h.engine.stats().open_orders, 0);
  await h.engine.idle();
  assert.equal(h.broker.submits.length, attempts);
  assert.deepEqual(h.subjects("orders."), ["orders.pending.BTC-USDT", "orders.cancelled.BTC-USDT"]);
});

Deno.test("a cancel during a submit retry after a lost answer asks the broker first: the broker's fill is recorded", async () => {
  await using h = await harness({
    engine: { submit_retry_initial_ms: 30, submit_retry_max_ms: 60 },
  });
  // The submit reaches the broker, which fills it at once, but the answer is lost; the
  // broker's event stream lags behind.
  h.broker.failures.push("after");
  h.broker.events = "hold";
  const [outcome] = await h.engine.processSignals([marketBuy("lost-1", "BTC-USDT", "x")]);
  if (outcome?.status !== "accepted") throw new Error("accepted");
  await waitFor(() => h.broker.submits.length >= 1, 2_000, "first submit");
  // Asked for while the engine waits to retry: the broker has the order, so it is not cancelled here.
  const asked = await h.engine.cancelOrder(outcome.order.id);
  assert.equal(asked.status, "pending");
  await h.engine.settled();
  assert.equal(await h.broker.release(), 2, "the broker's accepted and fill events");
  await h.engine.settled();
  const order = await getOrder(h.sql, outcome.order.id);
  assert.deepEqual(
    {
      status: order.status,
      filled_qty: order.filled_qty,
      fills: (await fillsOf(h.sql, order.id)).length,
    },
    { status: "filled", filled_qty: "1.00000000", fills: 1 },
  );
  assert.equal(h.broker.inner.stats().submitted, 1);
  assert.equal(h.broker.submits.length, 1, "not submitted again");
  assert.equal((await listUnresolvedAlerts(h.sql)).length, 0);
});

Deno.test("an illegal broker event raises an alert and changes nothing; the engine keeps working", async () => {
  await using h = await harness();
  const [outcome] = await h.engine.processSignals([
    marketBuy("i-1", "BTC-USDT", "x"),
  ]);
  if (outcome?.status !== "accepted") throw new Error("accepted");
  const order = await waitForStatus(h.sql, outcome.order.id, "filled");
  await h.engine.idle();
  // A second, new fill of a filled order (an overfill), then a cancel of it.
  await h.broker.inject({
    type: "fill",
    client_order_id: order.client_order_id,
    broker_order_id: order.broker_order_id!,
    fill_id: "rogue-1",
    qty: d("1"),
    price: d("50000"),
    fee: ZERO,
    at_ms: Date.now(),
  });
  await h.broker.inject({
    type: "cancelled",
    client_order_id: order.client_order_id,
    broker_order_id: order.broker_order_id,
    reason: "late cancel",
    at_ms: Date.now(),
  });
  await h.broker.inject({
    type: "fill",
    client_order_id: "no-such-order",
    broker_order_id: "x",
    fill_id: "f",
    qty: d("1"),
    price: d("1"),
    fee: ZERO,
    at_ms: Date.now(),
  });
  await h.engine.idle();
  assert.equal((await fillsOf(h.sql, order.id)).length, 1);
  assert.equal((await getOrder(h.sql, order.id)).status, "filled");
  const alerts = await listUnresolvedAlerts(h.sql);
  assert.equal(alerts.length, 3);
  assert.ok(alerts.every((a) => a.source === "execution"));
  assert.equal(h.fills.length, 1);
  const [next] = await h.engine.processSignals([
    {
      body: { id: "i-2", symbol: "BTC-USDT", side: "sell", qty: "1" },
      strategy: "x",
      source: "rest",
    },
  ]);
  if (next?.status !== "accepted") throw new Error("accepted");
  await waitForStatus(h.sql, next.order.id, "filled");
});

Deno.test("an order's average fill price is Σ qty × price ÷ Σ qty of its fills, across batches and a restart", async () => {
  await using h = await harness();
  const [outcome] = await h.engine.processSignals([{
    body: {
      id: "avg-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "6",
      type: "limit",
      limit_price: "1",
      time_in_force: "gtc",
    },
    strategy: "grid",
    source: "rest",
  }]);
  if (outcome?.status !== "accepted") throw new Error("accepted");
  const resting = await waitForStatus(h.sql, outcome.order.id, "submitted");
  const fill = (id: string, qty: string, price: string) =>
    h.broker.inject({
      type: "fill",
      client_order_id: resting.client_order_id,
      broker_order_id: resting.broker_order_id!,
      fill_id: id,
      qty: d(qty),
      price: d(price),
      fee: ZERO,
      at_ms: Date.now(),
    });
  // Each fill its own batch: the order is stored (average rounded to 8 decimals) in between.
  for (const [id, price] of [["f-1", "1"], ["f-2", "1"], ["f-3", "2"]] as const) {
    await fill(id, "1", price);
    await h.engine.idle();
  }
  assert.equal((await getOrder(h.sql, resting.id)).avg_fill_price, "1.33333333");
  // A restart loads the order's fills' notional, not its rounded average.
  await h.engine.stop();
  const engine = h.newEngine();
  await engine.start();
  await fill("f-4", "3", "1");
  await engine.idle();
  const filled = await getOrder(h.sql, resting.id);
  assert.equal(filled.status, "filled");
  // (1 + 1 + 2 + 3) ÷ 6 = 1.1666…; re-weighting the stored 1.33333333 gave 1.16666666.
  assert.equal(filled.avg_fill_price, "1.16666667");
  const published = h.published.filter((p) => p.subject.startsWith("orders.filled."));
  assert.equal(published.at(-1)?.data.avg_fill_price, "1.16666667");
});

// ---------------------------------------------------------------------------
// The NATS path
// ---------------------------------------------------------------------------

Deno.test("signals published on NATS become filled orders and positions; rejects and the kill switch go over NATS", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = { ...base, risk: noRiskLimits(base) };
  const nats = await connect({ servers: server.url });
  const cache = new LatestCache();
  quote(cache, "BTC-USDT", "50000", "50002");
  const trading = tradingSupervisor({
    config,
    nats,
    sql: db.sql,
    cache,
    log: nullLogger,
    execution: { ack_wait_ms: 2_000 },
  });
  const rejects: SignalRejectEvent[] = [];
  const rejectSub = nats.subscribe("signals.rejected", {
    callback: (_, msg) => {
      rejects.push(decodeJson(msg.data));
    },
  });
  const root = await startRoot({ name: "root" }, [trading]);
  try {
    assert.ok(trading.engine.running);
    nats.publish(
      "signals.momentum",
      encodeJson({ id: "n-1", symbol: "BTC-USDT", side: "buy", qty: "0.5" }),
    );
    nats.publish("signals.momentum", encodeJson({ symbol: "BTC-USDT", side: "sell", qty: "0" }));
    nats.publish("signals.momentum", new TextEncoder().encode("{not json"));
    await waitFor(() => trading.state.position("BTC-USDT").qty.eq(d("0.5")), 10_000, "position");
    const [order] = (await listOrders(db.sql, {})).items;
    assert.equal(order?.status, "filled");
    assert.equal(order?.strategy, "momentum");
    const [position] = await db.sql<{ qty: string }[]>`
      select qty from positions where symbol = 'BTC-USDT'`;
    assert.equal(position?.qty, "0.50000000");
    assert.equal(trading.engine.stats().fills_with_positions, 1, "stored with its fill");
    // A position changed behind the tracker: the fill is stored without it, and the tracker
    // applies it to the stored position.
    await db.sql`update positions set qty = 2 where symbol = 'BTC-USDT'`;
    nats.publish(
      "signals.momentum",
      encodeJson({ id: "n-3", symbol: "BTC-USDT", side: "buy", qty: "0.5" }),
    );
    await waitFor(() => trading.state.position("BTC-USDT").qty.eq(d("2.5")), 10_000, "moved");
    const [moved] = await db.sql<{ qty: string }[]>`
      select qty from positions where symbol = 'BTC-USDT'`;
    assert.equal(moved?.qty, "2.50000000");
    assert.equal(trading.engine.stats().fills_with_positions, 1);
    assert.equal(trading.engine.stats().fills, 2);
    await waitFor(() => rejects.length === 2, 5_000, "reject events");
    assert.ok(rejects.every((r) => r.strategy === "momentum"));
    assert.ok(rejects.some((r) => r.client_signal_id.startsWith("js-")));
    const signals = (await listSignals(db.sql)).items;
    assert.equal(signals.length, 4);

    const reply = decodeJson<Record<string, unknown>>(
      (await nats.request("control.kill_switch", encodeJson({ active: true, reason: "nats" }), {
        timeout: 5_000,
      })).data,
    );
    assert.equal(reply.ok, true);
    assert.equal(reply.active, true);
    assert.deepEqual([reply.cancel_requested, reply.not_cancelled], [0, []]);
    const bad = decodeJson<Record<string, unknown>>(
      (await nats.request("control.kill_switch", encodeJson({ active: "yes" }), { timeout: 5_000 }))
        .data,
    );
    assert.equal(bad.ok, false);
    nats.publish(
      "signals.momentum",
      encodeJson({ id: "n-2", symbol: "BTC-USDT", side: "buy", qty: "1" }),
    );
    await waitFor(() => rejects.length === 3, 5_000, "kill switch reject");
    assert.deepEqual(rulesOf(rejects[2]!.reasons), ["kill_switch"]);
  } finally {
    rejectSub.unsubscribe();
    await deadline(root.stop(), 20_000, "trading subtree stop");
    await nats.close();
  }
});

Deno.test("an Alpaca order filled while trade_updates was down is recorded once the stream is back", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  await using fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  const base = await loadConfig({ args: [], env: {} });
  const config: Config = {
    ...base,
    risk: noRiskLimits(base),
    brokers: {
      ...base.brokers,
      alpaca: {
        ...base.brokers.alpaca,
        enabled: true,
        base_url: fake.baseUrl,
        key_id: FAKE_ALPACA_KEY_ID,
        secret_key: FAKE_ALPACA_SECRET_KEY,
      },
    },
  };
  const nats = await connect({ servers: server.url });
  const trading = tradingSupervisor({
    config,
    nats,
    sql: db.sql,
    cache: new LatestCache(),
    log: nullLogger,
  });
  const root = await startRoot({ name: "root" }, [trading]);
  try {
    const alpaca = trading.brokers.get("alpaca") as AlpacaBroker;
    await waitFor(() => alpaca.streamStatus().state === "listening", 10_000, "stream listening");
    const [outcome] = await trading.engine.processSignals([{
      body: {
        id: "gap-1",
        symbol: "AAPL",
        side: "buy",
        qty: "10",
        type: "limit",
        limit_price: "50",
        time_in_force: "gtc",
        broker: "alpaca",
      },
      strategy: "resting",
      source: "rest",
    }]);
    assert.equal(outcome?.status, "accepted");
    if (outcome.status !== "accepted") return;
    const { id, client_order_id } = outcome.order;
    await waitForStatus(db.sql, id, "submitted");
    // The stream drops and stays down while the order fills at Alpaca, which replays nothing.
    fake.refuseStream();
    fake.dropStream();
    await waitFor(() => alpaca.streamStatus().reconnects >= 1, 10_000, "stream lost");
    fake.fillOrder(client_order_id, "10", "50");
    fake.acceptStream();
    await waitFor(
      () => alpaca.streamStatus().state === "listening" && fake.listeners() === 1,
      15_000,
      "stream back",
    );
    const filled = await waitForStatus(db.sql, id, "filled");
    assert.equal(filled.avg_fill_price, "50.00000000");
    assert.deepEqual((await fillsOf(db.sql, id)).map((f) => [f.broker_fill_id, f.qty]), [
      ["reconcile-10", "10.00000000"],
    ]);
  } finally {
    await root.stop();
    await nats.close();
  }
});

Deno.test("after a NATS outage the backlog of signals waits for fresh prices instead of being refused", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  // The engine reaches NATS through a proxy: cutting it is the engine's outage, not the server's.
  await using proxy = startTcpProxy({ hostname: "127.0.0.1", port: server.port });
  const base = await loadConfig({ args: [], env: {} });
  const maxAgeMs = 300;
  const engineNats = await connect({
    servers: `127.0.0.1:${proxy.port}`,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 50,
    reconnectJitter: 0,
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
      paperBroker({
        cache,
        options: base.brokers.paper,
        max_price_age_ms: maxAgeMs,
      }),
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
    options: { ack_wait_ms: 5_000, warmup_ms: 5_000 },
  });
  quote(cache, "BTC-USDT", "50000", "50002");
  const root = await startRoot({ name: "root" }, [actor]);
  const js = jetstream(nats);
  const decided = async () =>
    (await listSignals(db.sql, { limit: 1000 })).items.filter((s) => s.status !== "received");
  try {
    await js.publish(
      "signals.grid",
      encodeJson({ id: "before", symbol: "BTC-USDT", side: "buy", qty: "1" }),
    );
    await waitFor(async () => (await decided()).length === 1, 10_000, "the first signal decided");
    // The engine's connection drops; while it is away its prices go stale and signals queue up.
    const quotedAt = Date.now();
    quote(cache, "BTC-USDT", "50000", "50002", quotedAt);
    proxy.cut();
    await waitFor(() => Date.now() - quotedAt > maxAgeMs, 5_000, "the price stale");
    for (let i = 0; i < 5; i++) {
      await js.publish(
        "signals.grid",
        encodeJson({ id: `backlog-${i}`, symbol: "BTC-USDT", side: "buy", qty: "1" }),
      );
    }
    proxy.restore();
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
