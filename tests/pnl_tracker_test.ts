/**
 * Positions and P&L against a real PostgreSQL (a fresh `tw_test_<random>`
 * database per test), some with the position tracker on a private
 * nats-server: what the portfolio view loads at a restart, the order fills
 * are applied in, the starting cash, and the per-strategy and risk figures
 * stored beside them.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { ensureStreams } from "../adapters/nats.ts";
import {
  FillHandoff,
  newPositionTrackerStatus,
  positionTrackerActor,
  type RiskMetricLimits,
} from "../actors/position_tracker.ts";
import {
  getPortfolio,
  insertFills,
  insertFillsWithOrders,
  insertOrders,
  listPositions,
  listRiskMetrics,
  listStrategyPerformance,
  type NewFill,
  type Order,
  upsertSymbols,
} from "../db/mod.ts";
import { RecordingClock } from "../lib/clock.ts";
import { type Logger, memoryLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { fillMessage, fillsStream, publishFill } from "../trading/fills_stream.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

/** Orders of strategy `s` in BTC-USDT, one per side given. */
async function ordersOf(sql: Sql, sides: Array<"buy" | "sell">): Promise<Order[]> {
  await upsertSymbols(sql, [{ symbol: "BTC-USDT" }]);
  return await insertOrders(
    sql,
    sides.map((side) => ({ strategy: "s", symbol: "BTC-USDT", side, qty: "100" })),
  );
}

/** A fill of `order` (its symbol and side). */
function fillOf(
  order: Order,
  id: string,
  qty: string,
  price: string,
  at: number,
  extra: Partial<NewFill> = {},
): NewFill {
  return {
    order_id: order.id,
    broker_fill_id: id,
    symbol: order.symbol,
    side: order.side,
    qty,
    price,
    filled_at: new Date(at),
    ...extra,
  };
}

Deno.test("at a restart, realized P&L today is today's: a fill stamped on the next day by a broker clock ahead is not in it", async () => {
  await using db = await migratedDatabase();
  const clock = new RecordingClock(Date.parse("2026-03-10T23:59:59.900Z"));
  const [buy, sell] = await ordersOf(db.sql, ["buy", "sell"]);
  await insertFills(db.sql, [
    fillOf(buy!, "a", "10", "100", clock.now() - 5_000, { realized_pnl: "0" }),
    fillOf(sell!, "b", "5", "1", clock.now() - 1_000, { realized_pnl: "-495" }),
    // The broker's clock runs 200 ms ahead of ours.
    fillOf(sell!, "c", "1", "110", Date.parse("2026-03-11T00:00:00.100Z"), {
      realized_pnl: "10",
    }),
  ]);
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  assert.equal(state.realizedToday().toFixed(), "-495");
  clock.advance(200);
  assert.equal(state.realizedToday().toFixed(), "10");
});

Deno.test("at a restart, a losing fill stored but not applied counts in realized P&L today, with its fee", async () => {
  await using db = await migratedDatabase();
  const clock = new RecordingClock(Date.parse("2026-03-10T12:00:00Z"));
  const [buy, sell] = await ordersOf(db.sql, ["buy", "sell"]);
  await insertFills(db.sql, [
    fillOf(buy!, "a", "10", "100", clock.now() - 5_000, { realized_pnl: "0" }),
  ]);
  await db.sql`
    INSERT INTO positions (symbol, qty, avg_entry_price, cost_basis, realized_pnl)
    VALUES ('BTC-USDT', 10, 100, 1000, 0)`;
  // Stored, not applied: sell 10 at 60, fee 2: −402 once applied.
  await insertFills(db.sql, [
    fillOf(sell!, "b", "10", "60", clock.now() - 1_000, { commission: "2" }),
  ]);
  const state = new PortfolioState({ starting_cash: "100000", clock });
  await state.load(db.sql);
  assert.equal(state.unappliedFillCount(), 1);
  assert.equal(state.realizedToday().toFixed(), "-402");
});

/**
 * The position tracker alone with its in-process handoff, on a fresh
 * database and a private NATS; `start()` runs it (again) on the same state,
 * as after a crash of the tracker.
 */
async function trackerRig(
  options: {
    starting_cash?: string;
    log?: Logger;
    snapshot_interval_ms?: number;
    limits?: Partial<RiskMetricLimits>;
  } = {},
) {
  const startingCash = options.starting_cash ?? "100000";
  const cache = new LatestCache();
  const db = await migratedDatabase();
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  await ensureStreams(nc, [fillsStream()]);
  const handoff = new FillHandoff();
  const state = new PortfolioState({ starting_cash: startingCash });
  const status = newPositionTrackerStatus();
  let stop: (() => Promise<void>) | null = null;
  const start = async () => {
    const controller = new AbortController();
    const tracker = positionTrackerActor({
      nats: nc,
      sql: db.sql,
      cache,
      state,
      status,
      options: {
        portfolio: {
          starting_cash: startingCash,
          snapshot_interval_ms: options.snapshot_interval_ms ?? 3_600_000,
        },
        max_price_age_ms: 5_000,
        ...(options.limits === undefined ? {} : { limits: options.limits }),
      },
      handoff,
      ...(options.log === undefined ? {} : { log: options.log }),
    }).start(controller.signal);
    await tracker.ready;
    await waitFor(() => status.running, 5_000, "tracker running");
    stop = async () => {
      stop = null;
      controller.abort();
      await tracker.done;
      await waitFor(() => !status.running, 5_000, "tracker stopped");
    };
    return stop;
  };
  const jsm = await jetstreamManager(nc);
  /** Waits until the tracker got the first `streamSeq` messages of FILLS and acked them all. */
  const acked = (streamSeq: number) =>
    waitFor(
      async () => {
        const info = await jsm.consumers.info("FILLS", "position_tracker");
        return info.delivered.stream_seq === streamSeq && info.num_ack_pending === 0;
      },
      5_000,
      `${streamSeq} messages acked`,
    );
  /** Waits until the tracker's consumer has delivered the first `streamSeq` messages. */
  const delivered = (streamSeq: number) =>
    waitFor(
      async () =>
        (await jsm.consumers.info("FILLS", "position_tracker")).delivered.stream_seq === streamSeq,
      5_000,
      `${streamSeq} messages delivered`,
    );
  return {
    sql: db.sql,
    js: jetstream(nc),
    cache,
    acked,
    delivered,
    handoff,
    state,
    status,
    start,
    async [Symbol.asyncDispose]() {
      await (stop as (() => Promise<void>) | null)?.();
      await nc.close();
      await server.stop();
      await db[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a new fill is not stored with its position ahead of an older fill loaded unapplied at a restart", async () => {
  await using rig = await trackerRig();
  const [buy, sell, rebuy] = await ordersOf(rig.sql, ["buy", "sell", "buy"]);
  const now = Date.now();
  let stop = await rig.start();
  // 1. Buy 10 @ 100, applied.
  const [first] = await insertFills(rig.sql, [fillOf(buy!, "f1", "10", "100", now - 3_000)]);
  await publishFill(rig.js, fillMessage(first!.fill, buy!));
  await waitFor(() => rig.status.applied === 1, 5_000, "first fill applied");
  // 2. Sell 10 @ 120, stored while the tracker was down (it crashed holding the message, which
  //    JetStream redelivers only after ack_wait): the restarted tracker loads it unapplied.
  await stop();
  const [second] = await insertFills(rig.sql, [fillOf(sell!, "f2", "10", "120", now - 2_000)]);
  stop = await rig.start();
  assert.equal(rig.state.unappliedFillCount(), 1);
  // 3. A new broker fill, buy 10 @ 90: the engine asks to store it with its position.
  const pending = {
    portfolio_id: "default",
    symbol: "BTC-USDT",
    side: "buy" as const,
    qty: "10",
    price: "90",
    fee: "0",
    filled_at: now - 1_000,
  };
  assert.equal(rig.handoff.reserve([pending]), null, "refused: an older fill is not applied");
  // So the engine stores it alone and publishes it; the older fill's message comes later.
  const [third] = await insertFills(rig.sql, [fillOf(rebuy!, "f3", "10", "90", now - 1_000)]);
  await publishFill(rig.js, fillMessage(third!.fill, rebuy!));
  await waitFor(() => rig.status.applied === 3, 5_000, "the older fill applied first, then it");
  await publishFill(rig.js, fillMessage(second!.fill, sell!));
  await rig.acked(3);
  assert.equal(rig.status.applied, 3, "its message only acked");
  // In the order stored: long 10 @ 100, sold @ 120 (+200), flat, bought 10 @ 90.
  const [row] = await listPositions(rig.sql);
  assert.deepEqual(
    [row?.qty, row?.avg_entry_price, row?.realized_pnl],
    ["10.00000000", "90.00000000", "200.00000000"],
  );
  const realized = await rig.sql<{ id: string; realized_pnl: string }[]>`
    SELECT id::text, realized_pnl::text FROM fills ORDER BY id`;
  assert.deepEqual(realized.map((f) => f.realized_pnl), [
    "0.00000000",
    "200.00000000",
    "0.00000000",
  ]);
  assert.equal(rig.state.unappliedFillCount(), 0);
  // With nothing left unapplied, a reservation is granted again.
  const granted = rig.handoff.reserve([{ ...pending, side: "sell" }]);
  assert.ok(granted !== null);
  granted.release();
  await stop();
});

Deno.test("a fill whose message comes before an older stored fill's is applied after it", async () => {
  await using rig = await trackerRig();
  const [buy, sell] = await ordersOf(rig.sql, ["buy", "sell"]);
  const stop = await rig.start();
  const now = Date.now();
  const stored = await insertFills(rig.sql, [
    fillOf(buy!, "a", "10", "100", now - 2_000),
    fillOf(sell!, "b", "4", "130", now - 1_000),
  ]);
  // Registered by the engine as stored without their positions; the older one's publish is
  // retried, so the newer one's message comes first.
  for (const { fill } of stored) {
    rig.state.addUnappliedFill(fill.id, {
      symbol: fill.symbol,
      side: fill.side,
      qty: d(fill.qty),
      price: d(fill.price),
    });
  }
  assert.equal(
    rig.handoff.reserve([{
      portfolio_id: "default",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "1",
      price: "1",
      fee: "0",
      filled_at: now,
    }]),
    null,
  );
  await publishFill(rig.js, fillMessage(stored[1]!.fill, sell!));
  await waitFor(() => rig.status.applied === 2, 5_000, "both applied");
  const [row] = await listPositions(rig.sql);
  // Long 10 @ 100, then sold 4 @ 130: +120, long 6 — not a short 4 @ 130 covered by a buy.
  assert.deepEqual([row?.qty, row?.realized_pnl], ["6.00000000", "120.00000000"]);
  await publishFill(rig.js, fillMessage(stored[0]!.fill, buy!));
  await rig.acked(2);
  assert.equal(rig.status.applied, 2);
  assert.equal(rig.state.unappliedFillCount(), 0);
  await stop();
});

Deno.test("the starting cash is stored when the portfolio is initialised: editing portfolio.starting_cash later changes no P&L", async () => {
  await using db = await migratedDatabase();
  const first = new PortfolioState({ starting_cash: "100000" });
  await first.load(db.sql);
  assert.equal((await getPortfolio(db.sql)).starting_cash, "100000.00000000");
  assert.equal(first.value(() => null).total_pnl.toFixed(), "0");
  // The next start, with the configured figure edited to 50000: nothing traded in between.
  const next = new PortfolioState({ starting_cash: "50000" });
  await next.load(db.sql);
  assert.equal(next.starting_cash.toFixed(), "100000");
  assert.equal(next.cash.toFixed(), "100000");
  assert.equal(next.value(() => null).total_pnl.toFixed(), "0");
  assert.equal((await getPortfolio(db.sql)).starting_cash, "100000.00000000");
});

Deno.test("the tracker warns when portfolio.starting_cash differs from the stored starting cash", async () => {
  const { log, lines } = memoryLogger("warn");
  await using rig = await trackerRig({ starting_cash: "50000", log });
  await rig.sql`UPDATE portfolios SET cash = 100000, equity = 100000, starting_cash = 100000`;
  const stop = await rig.start();
  assert.equal(rig.state.starting_cash.toFixed(), "100000");
  const warning = lines.find((line) => String(line.message).includes("starting_cash"));
  assert.deepEqual(
    [warning?.stored, warning?.configured, warning?.portfolio],
    ["100000", "50000", "default"],
  );
  await stop();
});

Deno.test("a portfolio used before its starting cash was stored gets the one its figures tell", async () => {
  await using db = await migratedDatabase();
  // Cash 99,700 after buying 2 @ 150 from 100,000 (nothing realized): a basis of 300.
  await upsertSymbols(db.sql, [{ symbol: "BTC-USDT" }]);
  await db.sql`UPDATE portfolios SET cash = 99700, equity = 99700 WHERE id = 'default'`;
  await db.sql`
    INSERT INTO positions (symbol, qty, avg_entry_price, cost_basis, realized_pnl)
    VALUES ('BTC-USDT', 2, 150, 300, 0)`;
  const state = new PortfolioState({ starting_cash: "5000" });
  await state.load(db.sql);
  assert.equal(state.starting_cash.toFixed(), "100000");
  assert.equal((await getPortfolio(db.sql)).starting_cash, "100000.00000000");
  assert.equal(state.value(() => null).total_pnl.toFixed(), "0");
});

Deno.test("each strategy's day collects its fills — count, notional, realized P&L, fees, wins and losses — whichever way a fill is applied", async () => {
  await using rig = await trackerRig();
  await upsertSymbols(rig.sql, [{ symbol: "BTC-USDT" }]);
  const [a, b, c, e] = await insertOrders(rig.sql, [
    { strategy: "alpha", symbol: "BTC-USDT", side: "buy", qty: "10" },
    { strategy: "beta", symbol: "BTC-USDT", side: "sell", qty: "4" },
    { strategy: "alpha", symbol: "BTC-USDT", side: "sell", qty: "6" },
    { strategy: "alpha", symbol: "BTC-USDT", side: "buy", qty: "1" },
  ]);
  const stop = await rig.start();
  const now = Date.now();
  // A: alpha buys 10 @ 100, fee 1 — its message, the tracker's one statement.
  const [first] = await insertFills(rig.sql, [
    fillOf(a!, "a", "10", "100", now - 4_000, { commission: "1" }),
  ]);
  await publishFill(rig.js, fillMessage(first!.fill, a!));
  await waitFor(() => rig.status.applied === 1, 5_000, "A applied");
  // B: beta sells 4 @ 110, fee 0.5 — stored with its position by the engine's statement.
  const pending = {
    portfolio_id: "default",
    symbol: "BTC-USDT",
    side: "sell" as const,
    qty: "4",
    price: "110",
    fee: "0.5",
    filled_at: now - 3_000,
  };
  const reservation = rig.handoff.reserve([pending]);
  assert.ok(reservation !== null);
  const stored = await insertFillsWithOrders(
    rig.sql,
    [
      fillOf(b!, "b", "4", "110", now - 3_000, {
        commission: "0.5",
        realized_pnl: reservation.realized[0],
      }),
    ],
    [],
    { positions: reservation.positions },
  );
  reservation.commit(stored.fills.map((fill) => fill.id));
  // C: alpha sells 6 @ 90, fee 0.5, and D: alpha buys 1 @ 95 — stored without their positions;
  // only D's message comes, so C is applied first, under lock.
  const later = await insertFills(rig.sql, [
    fillOf(c!, "c", "6", "90", now - 2_000, { commission: "0.5" }),
    fillOf(e!, "d", "1", "95", now - 1_000),
  ]);
  for (const { fill } of later) {
    rig.state.addUnappliedFill(fill.id, {
      symbol: fill.symbol,
      side: fill.side,
      qty: d(fill.qty),
      price: d(fill.price),
    });
  }
  await publishFill(rig.js, fillMessage(later[1]!.fill, e!));
  await waitFor(() => rig.status.applied === 4, 5_000, "all applied");
  await stop();
  const day = new Date(now).toISOString().slice(0, 10);
  const rows = await listStrategyPerformance(rig.sql, { from: day, to: day });
  assert.deepEqual(
    rows.map((r) => [
      r.strategy,
      r.fills,
      d(r.notional).toFixed(),
      d(r.realized_pnl).toFixed(),
      d(r.commission).toFixed(),
      r.wins,
      r.losses,
    ]),
    [
      // A −1 (its fee); C 6 × (90 − 100) − 0.5; D opens: 0. One losing close.
      ["alpha", 3, "1635", "-61.5", "1.5", 0, 1],
      // B 4 × (110 − 100) − 0.5: a winning close.
      ["beta", 1, "440", "39.5", "0.5", 1, 0],
    ],
  );
});

Deno.test("risk figures are stored with each snapshot, with the limits in force, and once more at a graceful stop", async () => {
  await using rig = await trackerRig({
    snapshot_interval_ms: 3_600_000,
    limits: { max_gross_exposure: d("5000"), daily_loss_limit: d("100"), max_open_orders: 7 },
  });
  const [buy, sell] = await ordersOf(rig.sql, ["buy", "sell"]);
  const stop = await rig.start();
  const now = Date.now();
  const fills = await insertFills(rig.sql, [
    fillOf(buy!, "a", "20", "100", now - 2_000),
    fillOf(sell!, "b", "10", "95", now - 1_000),
  ]);
  for (const [i, order] of [buy!, sell!].entries()) {
    await publishFill(rig.js, fillMessage(fills[i]!.fill, order));
  }
  await waitFor(() => rig.status.applied === 2, 5_000, "fills applied");
  // Marked at a mid of 90: long 10, cost 1000, equity 100000 − 2000 + 950 + 900 = 99850.
  const us = Date.now() * 1000;
  rig.cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: us,
    ts_local: us,
    bid_price: "89.5",
    bid_qty: "1",
    ask_price: "90.5",
    ask_qty: "1",
  }]);
  rig.state.setOpenOrder("o-1", { symbol: "BTC-USDT", side: "buy", remaining_qty: d("1") });
  assert.equal(rig.status.snapshots, 0);
  await stop();
  assert.equal(rig.status.snapshots, 1, "one snapshot at the stop");
  const metrics = await listRiskMetrics(rig.sql);
  assert.deepEqual(
    metrics.map((m) => [
      m.metric,
      d(m.value).toFixed(),
      m.limit_value === null ? null : d(m.limit_value).toFixed(),
    ]).sort(),
    [
      ["daily_realized_pnl", "-50", "-100"],
      ["drawdown", "150", null], // from the starting cash, the highest equity so far
      ["equity", "99850", null],
      ["gross_exposure", "900", "5000"],
      ["net_exposure", "900", null],
      ["open_orders", "3", "7"], // the two orders of the fills, still open, and one more
    ],
  );
  assert.equal(new Set(metrics.map((m) => m.measured_at.getTime())).size, 1);
});

Deno.test("no reservation while a message of a fill not applied waits; one of a fill applied ahead does not stop it", async () => {
  await using rig = await trackerRig();
  const [buy, sell, other] = await ordersOf(rig.sql, ["buy", "sell", "buy"]);
  const stop = await rig.start();
  const now = Date.now();
  const pending = (side: "buy" | "sell", at: number) => ({
    portfolio_id: "default",
    symbol: "BTC-USDT",
    side,
    qty: "1",
    price: "100",
    fee: "0",
    filled_at: at,
  });
  /** Stores `order`'s fill with the reserved positions; its message is then published. */
  const storeReserved = async (order: Order, id: string, at: number) => {
    const reservation = rig.handoff.reserve([pending(order.side, at)]);
    assert.ok(reservation !== null, `reservation for ${id}`);
    const stored = await insertFillsWithOrders(
      rig.sql,
      [
        fillOf(order, id, "1", "100", at, { realized_pnl: reservation.realized[0] }),
      ],
      [],
      { positions: reservation.positions },
    );
    return { reservation, fill: stored.fills[0]! };
  };
  // A fill stored with its positions; its message reaches the tracker while the reservation is
  // still open (the tracker waits meanwhile), so it is there, unprocessed, at the commit.
  const a = await storeReserved(buy!, "a", now - 3_000);
  await publishFill(rig.js, fillMessage(a.fill, buy!));
  await rig.delivered(1);
  a.reservation.commit([a.fill.id]);
  const next = rig.handoff.reserve([pending("sell", now - 2_000)]);
  assert.ok(next !== null, "the waiting message is of a fill applied ahead");
  next.release();
  await rig.acked(1);
  // Now a message of a fill stored without its position waits at the commit: refused.
  const b = await storeReserved(sell!, "b", now - 2_000);
  const [c] = await insertFills(rig.sql, [fillOf(other!, "c", "1", "100", now - 1_000)]);
  await publishFill(rig.js, fillMessage(c!.fill, other!));
  await rig.delivered(2);
  b.reservation.commit([b.fill.id]);
  assert.equal(rig.handoff.reserve([pending("buy", now)]), null, "a fill not applied waits");
  await waitFor(() => rig.status.applied === 3, 5_000, "all applied");
  await stop();
});

Deno.test("after a reservation's statement lost its answer, the tracker reads the positions back before reserving again", async () => {
  await using rig = await trackerRig();
  const [buy] = await ordersOf(rig.sql, ["buy"]);
  const stop = await rig.start();
  const now = Date.now();
  const pending = {
    portfolio_id: "default",
    symbol: "BTC-USDT",
    side: "buy" as const,
    qty: "10",
    price: "100",
    fee: "1",
    filled_at: now - 1_000,
  };
  const reservation = rig.handoff.reserve([pending]);
  assert.ok(reservation !== null);
  // The engine's statement commits the fill with its position and cash, but its answer is lost
  // (the connection dropped): the engine cannot tell, so it ends the reservation as unknown.
  await insertFillsWithOrders(
    rig.sql,
    [fillOf(buy!, "a", "10", "100", now - 1_000, {
      commission: "1",
      realized_pnl: reservation.realized[0],
    })],
    [],
    { positions: reservation.positions },
  );
  reservation.unknown();
  await waitFor(
    () => rig.state.position("BTC-USDT").qty.eq(d("10")),
    5_000,
    "the stored position read back",
  );
  assert.equal(rig.state.cash.toFixed(), "98999");
  // A reservation now computes from what PostgreSQL holds: selling the 10 realizes +99.
  const next = rig.handoff.reserve([{ ...pending, side: "sell", price: "110", fee: "1" }]);
  assert.ok(next !== null);
  assert.equal(next.realized[0]?.toFixed(), "99");
  next.release();
  await stop();
});
