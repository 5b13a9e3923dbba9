/**
 * A fill reconciliation catches up (Alpaca filled it while the engine was
 * down, or its stream was cut) is dated when the broker filled it — Alpaca's
 * `filled_at`, else its `updated_at`, no later than now and no earlier than
 * the order's creation — not when it was reconciled: realized P&L today,
 * what `risk.daily_loss_limit` is checked against, counts the fills executed
 * today (review 39).
 */

import assert from "node:assert/strict";
import { alpacaBroker, parseAlpacaOrder, toBrokerOrderState } from "../brokers/alpaca.ts";
import { getOrder, listFills, type Order } from "../db/mod.ts";
import { loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import {
  catchUpEvents,
  caughtUpFillAt,
  ExecutionEngine,
  type SignalOutcome,
} from "../trading/execution.ts";
import { parseDecimal, ZERO } from "../trading/money.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { clockAt, noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";

const DAY_MS = 86_400_000;

Deno.test("a loss Alpaca realized while the engine was down counts on the day Alpaca filled it, not the day it was reconciled", async () => {
  await using db = await migratedDatabase();
  const fake = await startAlpacaTradingServer({ prices: { AAPL: "100" } });
  try {
    const base = await loadConfig({ args: [], env: {} });
    const risk = { ...noRiskLimits(base), daily_loss_limit: "500" } as typeof base.risk;
    // The engine runs on the real time (the fake stamps its orders with it), shifted later.
    const clock = clockAt(new Date().toISOString());
    const state = new PortfolioState({ starting_cash: "100000", clock });
    await state.load(db.sql);
    const cache = new LatestCache({ clock });
    const start = async () => {
      const broker = alpacaBroker({
        base_url: fake.baseUrl,
        key_id: FAKE_ALPACA_KEY_ID,
        secret_key: FAKE_ALPACA_SECRET_KEY,
        request_timeout_ms: 2_000,
        handshake_timeout_ms: 2_000,
        reconnect_initial_ms: 20,
        reconnect_max_ms: 100,
      }, { clock });
      const engine = new ExecutionEngine({
        sql: db.sql,
        brokers: new Map([["alpaca", broker]]),
        cache,
        state,
        config: { risk, execution: { ...base.execution, default_broker: "alpaca" } },
        publish: () => {},
        publishFill: () => Promise.resolve(),
        clock,
        log: nullLogger,
        options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 20 },
      });
      await engine.start();
      await broker.start(AbortSignal.timeout(10_000));
      return { broker, engine };
    };
    const limit = async (
      engine: ExecutionEngine,
      id: string,
      side: string,
      price: string,
    ): Promise<SignalOutcome | undefined> => {
      const [outcome] = await engine.processSignals([{
        body: {
          id,
          symbol: "AAPL",
          side,
          qty: "10",
          type: "limit",
          limit_price: price,
          time_in_force: "gtc",
          broker: "alpaca",
        },
        strategy: "catch-up",
        source: "rest",
      }]);
      return outcome;
    };
    const settled = async (orderId: string, status: string) => {
      await waitFor(
        async () => (await getOrder(db.sql, orderId)).status === status,
        10_000,
        `order ${orderId} ${status}`,
      );
    };

    // Friday: buy 10 AAPL at 100, then rest a sell at 40.
    let run = await start();
    const buy = await limit(run.engine, "buy-1", "buy", "100");
    assert.ok(buy?.status === "accepted", JSON.stringify(buy));
    await settled(buy.order.id, "submitted");
    fake.fillOrder(buy.order.client_order_id, "10", "100");
    await settled(buy.order.id, "filled");
    const sell = await limit(run.engine, "sell-1", "sell", "40");
    assert.ok(sell?.status === "accepted", JSON.stringify(sell));
    await settled(sell.order.id, "submitted");

    // The engine stops for the weekend; Alpaca fills the sell meanwhile: −600 realized then.
    await run.engine.stop();
    await run.broker[Symbol.asyncDispose]();
    fake.fillOrder(sell.order.client_order_id, "10", "40");
    const alpacaFilledAt = Date.parse(fake.order(sell.order.client_order_id)!.filled_at!);

    // Three days later the engine starts and reconciles.
    clock.jump(new Date(clock.now() + 3 * DAY_MS).toISOString());
    run = await start();
    try {
      await run.engine.reconcile();
      await settled(sell.order.id, "filled");
      const [fill] = (await listFills(db.sql, { order_id: sell.order.id, limit: 10 })).items;
      assert.ok(fill !== undefined);

      const today = state.realizedToday(clock.now()).toFixed();
      const next = await limit(run.engine, "buy-2", "buy", "50");
      const filledAt = new Date(fill.filled_at).toISOString();
      assert.ok(
        Math.abs(Date.parse(filledAt) - alpacaFilledAt) < 60_000,
        `the caught-up fill is stamped ${filledAt}, Alpaca filled it at ` +
          `${new Date(alpacaFilledAt).toISOString()}; realized P&L "today" ` +
          `(${new Date(clock.now()).toISOString()}) is ${today}; a new buy today: ` +
          JSON.stringify(next?.status === "rejected" ? next.reasons : next?.status),
      );
      assert.equal(next?.status, "accepted", JSON.stringify(next));
    } finally {
      await run.engine.stop();
      await run.broker[Symbol.asyncDispose]();
    }
  } finally {
    await fake.stop();
  }
});

/** An Alpaca order object as its REST API returns one, with `fields` over a partly filled buy. */
function alpacaOrder(fields: Record<string, unknown>): Record<string, unknown> {
  return {
    id: "61e69015-8549-4bfd-b9c3-01e75843f47d",
    client_order_id: "tw-1",
    symbol: "AAPL",
    asset_class: "us_equity",
    status: "partially_filled",
    side: "buy",
    qty: "10",
    filled_qty: "4",
    filled_avg_price: "100",
    submitted_at: "2026-12-04T15:00:00Z",
    updated_at: "2026-12-04T15:30:00.123456789-05:00",
    filled_at: null,
    ...fields,
  };
}

Deno.test("an Alpaca order with fills says when it was last filled: filled_at, else updated_at", () => {
  const state = (fields: Record<string, unknown>) =>
    toBrokerOrderState(parseAlpacaOrder(alpacaOrder(fields)));
  assert.equal(
    state({ status: "filled", filled_qty: "10", filled_at: "2026-12-04T15:45:00.5Z" }).filled_at_ms,
    Date.parse("2026-12-04T15:45:00.500Z"),
  );
  // Partly filled: no filled_at yet; updated_at is no earlier than its last fill.
  assert.equal(state({}).filled_at_ms, Date.parse("2026-12-04T20:30:00.123Z"));
  // A filled_at that is not a time is none; so is one of another type (the order still parses).
  assert.equal(
    state({ filled_at: "yesterday" }).filled_at_ms,
    Date.parse("2026-12-04T20:30:00.123Z"),
  );
  assert.equal(
    state({ filled_at: 1_733_000_000 }).filled_at_ms,
    Date.parse("2026-12-04T20:30:00.123Z"),
  );
  assert.equal(
    "filled_at_ms" in state({ filled_at: "2026-02-30T25:00:00Z", updated_at: null }),
    false,
  );
  assert.equal("filled_at_ms" in state({ updated_at: "2026-12-04 15:30" }), false);
  // Nothing filled: no fill time.
  assert.equal("filled_at_ms" in state({ filled_qty: "0", filled_avg_price: null }), false);
});

Deno.test("a caught-up fill is dated when the broker filled it, within the order's creation and now", () => {
  const createdAt = Date.parse("2026-12-04T15:00:00Z");
  const now = Date.parse("2026-12-07T14:00:00Z");
  const row = { created_at: new Date(createdAt) };
  const at = (filled_at_ms?: number) =>
    caughtUpFillAt(row, filled_at_ms === undefined ? {} : { filled_at_ms }, now);
  assert.equal(at(createdAt + 60_000), createdAt + 60_000);
  assert.equal(at(), now, "the broker does not say: now");
  assert.equal(at(now + 5_000), now, "a broker clock ahead: capped at now");
  assert.equal(at(createdAt - 5_000), createdAt, "never before the order existed");
  assert.equal(at(Number.NaN), now);

  const order = {
    id: "1",
    client_order_id: "tw-1",
    broker: "alpaca",
    broker_order_id: "b-1",
    status: "submitted",
    created_at: new Date(createdAt),
  } as Order;
  const events = catchUpEvents(order, { filled: ZERO, value: ZERO }, {
    client_order_id: "tw-1",
    broker_order_id: "b-1",
    status: "filled",
    filled_qty: parseDecimal("10"),
    avg_fill_price: parseDecimal("40"),
    filled_at_ms: createdAt + 60_000,
  }, now);
  const fill = events.find((event) => event.type === "fill");
  assert.equal(fill?.at_ms, createdAt + 60_000);
});
