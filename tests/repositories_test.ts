/**
 * The data-access layer (`db/`) against a real PostgreSQL
 * (`TW_TEST_POSTGRES_URL`, default the local server): repositories' queries,
 * the batch signal path with duplicates, the unit of work's retries, and the
 * mapping of database errors. Each test gets its own `tw_test_<random>`
 * database with every migration applied.
 */

import assert from "node:assert/strict";
import type { Sql, TransactionSql } from "postgres";
import { createPostgres } from "../adapters/postgres.ts";
import { RecordingClock } from "../lib/clock.ts";
import {
  addStrategyPerformance,
  ConflictError,
  countOpenOrders,
  DbConnectionError,
  DbError,
  DbTimeoutError,
  deleteConfig,
  fillTotalsBySymbol,
  findOrderByBrokerOrderId,
  findOrderByClientOrderId,
  findOrderBySignalId,
  findPosition,
  findSignalByKey,
  getAlert,
  getConfig,
  getKillSwitch,
  getOrder,
  getPortfolio,
  getSignal,
  getSymbol,
  insertFill,
  insertFills,
  insertFillsWithOrders,
  insertOrder,
  insertOrders,
  insertRiskMetrics,
  insertSignal,
  insertSignalsAndOrders,
  insertSnapshot,
  IntegrityError,
  isRetryable,
  latestSnapshot,
  listFills,
  listOpenOrders,
  listOpenPositions,
  listOrders,
  listRiskMetrics,
  listSignals,
  listSnapshots,
  listStrategyPerformance,
  listSymbols,
  listUnresolvedAlerts,
  listUnsubmittedOrders,
  mapDbError,
  markPositions,
  type NewFill,
  type NewOrder,
  NotFoundError,
  type Order,
  type OrderStatus,
  raiseAlert,
  realizedPnlBySymbol,
  recordSignalOutcome,
  resolveAlert,
  SerializationError,
  setConfig,
  setKillSwitch,
  type SignalBatchItem,
  storeAppliedFills,
  storedSignalKeys,
  toCostBasis,
  totalExposure,
  unitOfWork,
  updateLastPrices,
  updateOrderStatus,
  updateOrderStatuses,
  upsertPortfolio,
  upsertPosition,
  upsertPositions,
  upsertSymbols,
} from "../db/mod.ts";
import { migratedDatabase } from "./_postgres.ts";

const SYMBOLS = ["AAPL", "BTC-USDT", "ETH-USDT", "MSFT"];

async function seedSymbols(sql: Sql): Promise<void> {
  await upsertSymbols(sql, SYMBOLS.map((symbol) => ({ symbol })));
}

/** A deferred promise: resolve it from outside. */
/** Seeds the symbols and inserts a pending buy of 10 AAPL for strategy "s". */
async function seededOrder(sql: Sql) {
  await seedSymbols(sql);
  return await insertOrder(sql, { symbol: "AAPL", side: "buy", qty: "10", strategy: "s" });
}

function gate(): { promise: Promise<void>; open: () => void } {
  let open = () => {};
  const promise = new Promise<void>((resolve) => open = resolve);
  return { promise, open };
}

function accepted(
  strategy: string,
  id: string,
  order: Omit<NewOrder, "signal_id" | "strategy"> = { symbol: "BTC-USDT", side: "buy", qty: "1" },
): SignalBatchItem {
  return {
    signal: {
      strategy,
      client_signal_id: id,
      source: "nats",
      symbol: order.symbol,
      payload: { id },
    },
    outcome: { status: "accepted", order },
  };
}

function rejected(strategy: string, id: string, reasons: unknown[]): SignalBatchItem {
  return {
    signal: { strategy, client_signal_id: id, source: "rest", payload: { id } },
    outcome: { status: "rejected", reasons },
  };
}

// ---------------------------------------------------------------------------
// Errors (no database)
// ---------------------------------------------------------------------------

Deno.test("mapDbError maps SQLSTATE and errno codes to domain errors, through cause chains", () => {
  const coded = (code: string, extra: Record<string, unknown> = {}) =>
    Object.assign(new Error(`error ${code}`), { code, ...extra });
  const cases: Array<[string, new (...args: never[]) => Error]> = [
    ["23505", ConflictError],
    ["23503", IntegrityError],
    ["23514", IntegrityError],
    ["23502", IntegrityError],
    ["22P02", IntegrityError],
    ["57014", DbTimeoutError],
    ["55P03", DbTimeoutError],
    ["08006", DbConnectionError],
    ["08001", DbConnectionError],
    ["ECONNREFUSED", DbConnectionError],
    ["57P01", DbConnectionError],
    ["40001", SerializationError],
    ["40P01", SerializationError],
  ];
  for (const [code, cls] of cases) {
    const mapped = mapDbError(coded(code));
    assert.ok(mapped instanceof cls, `${code} → ${mapped.name}`);
    assert.ok(mapped instanceof DbError);
    assert.equal((mapped as DbError).code, code);
    assert.equal(mapped.cause instanceof Error, true);
  }
  const unique = mapDbError(coded("23505", {
    constraint_name: "orders_client_order_id_key",
    table_name: "orders",
    detail: "Key (client_order_id)=(x) already exists.",
  }));
  assert.ok(unique instanceof ConflictError);
  assert.equal(unique.constraint, "orders_client_order_id_key");
  assert.equal(unique.table, "orders");
  assert.match(unique.detail ?? "", /already exists/);
  assert.equal(unique.name, "ConflictError");

  const wrapped = mapDbError(new Error("outer", { cause: new AggregateError([coded("40P01")]) }));
  assert.ok(wrapped instanceof SerializationError);
  assert.equal(wrapped.deadlock, true);
  assert.equal(wrapped.retryable, true);
  assert.equal(isRetryable(coded("40001")), true);
  assert.equal(isRetryable(coded("23505")), false);

  const plain = new TypeError("not a database error");
  assert.equal(mapDbError(plain), plain);
  assert.equal(mapDbError(coded("42P01")).name, "Error");
  const already = new NotFoundError("order", "1");
  assert.equal(mapDbError(already), already);
  assert.equal(mapDbError("text").message, "text");
});

// ---------------------------------------------------------------------------
// Signals and the batch path
// ---------------------------------------------------------------------------

Deno.test("a signal is recorded once, decided once, and found by its idempotency key", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const signal = { strategy: "momentum", client_signal_id: "a-1", source: "nats" } as const;
  const first = await insertSignal(db.sql, { ...signal, symbol: "AAPL", payload: { qty: 1 } });
  assert.equal(first.created, true);
  assert.equal(first.signal.status, "received");
  assert.equal(first.signal.decided_at, null);
  assert.deepEqual(first.signal.payload, { qty: 1 });

  const other = await insertSignal(db.sql, { ...signal, strategy: "meanrev", payload: {} });
  assert.equal(other.created, true, "the key is scoped by strategy");

  const decided = await recordSignalOutcome(db.sql, first.signal.id, {
    status: "rejected",
    reasons: [{ rule: "max_qty", message: "qty 1 above 0.5" }],
  }, { by: "risk" });
  assert.equal(decided.status, "rejected");
  assert.deepEqual(decided.reasons, [{ rule: "max_qty", message: "qty 1 above 0.5" }]);
  assert.ok(decided.decided_at instanceof Date);
  assert.equal(decided.updated_by, "risk");

  const again = await recordSignalOutcome(db.sql, first.signal.id, { status: "accepted" })
    .catch((e) => e);
  assert.ok(again instanceof ConflictError);
  assert.equal((again.actual as { status: string }).status, "rejected");
  await assert.rejects(recordSignalOutcome(db.sql, "999", { status: "accepted" }), NotFoundError);

  const redelivered = await insertSignal(db.sql, { ...signal, payload: { qty: 2 } });
  assert.equal(redelivered.created, false);
  assert.equal(redelivered.signal.status, "rejected");
  assert.deepEqual(redelivered.signal.payload, { qty: 1 });

  const found = await findSignalByKey(db.sql, "momentum", "a-1");
  assert.equal(found?.signal.id, first.signal.id);
  assert.equal(found?.order, null);
  assert.equal(await findSignalByKey(db.sql, "momentum", "nope"), null);
  const stored = await storedSignalKeys(db.sql, [
    { strategy: "momentum", id: "a-1" },
    { strategy: "momentum", id: "nope" },
    { strategy: "trend", id: "a-1" },
    { strategy: "meanrev", id: "a-1" },
  ]);
  assert.deepEqual([...stored].sort(), ["meanrev\u0000a-1", "momentum\u0000a-1"]);
  assert.deepEqual(await storedSignalKeys(db.sql, []), new Set());
  assert.equal((await getSignal(db.sql, other.signal.id)).signal.strategy, "meanrev");
  await assert.rejects(getSignal(db.sql, "424242"), NotFoundError);

  const page = await listSignals(db.sql, { status: "received" });
  assert.deepEqual(page.items.map((s) => s.id), [other.signal.id]);
});

Deno.test("the batch path creates one order per new accepted signal and reports duplicates inside and across batches", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const batch1: SignalBatchItem[] = [
    accepted("m", "1", { symbol: "AAPL", side: "buy", qty: "10", reason: "breakout" }),
    rejected("m", "2", [{ rule: "kill_switch" }, { rule: "market_hours" }]),
    accepted("m", "3", {
      symbol: "MSFT",
      side: "sell",
      qty: "0.5",
      type: "limit",
      limit_price: "410.1",
      time_in_force: "gtc",
    }),
    accepted("m", "1", { symbol: "AAPL", side: "buy", qty: "99" }), // duplicate inside the batch
    accepted("other", "1", { symbol: "BTC-USDT", side: "buy", qty: "0.01" }), // another strategy
  ];
  const r1 = await unitOfWork(db.sql, (tx) => insertSignalsAndOrders(tx, batch1, { by: "engine" }));
  assert.deepEqual(r1.map((r) => r.created), [true, true, true, false, true]);
  assert.equal(r1[3]?.duplicateOf, 0);
  assert.equal(r1[3]?.order?.id, r1[0]?.order?.id);
  assert.equal(r1[3]?.order?.qty, "10.00000000");
  assert.equal(r1[0]?.signal.status, "accepted");
  assert.equal(r1[0]?.order?.signal_id, r1[0]?.signal.id);
  assert.equal(r1[0]?.order?.strategy, "m");
  assert.equal(r1[0]?.order?.reason, "breakout");
  assert.equal(r1[0]?.order?.status, "pending");
  assert.equal(r1[0]?.order?.created_by, "engine");
  assert.equal(r1[1]?.order, null);
  assert.equal(r1[1]?.signal.status, "rejected");
  assert.deepEqual(r1[1]?.signal.reasons, [{ rule: "kill_switch" }, { rule: "market_hours" }]);
  assert.equal(r1[2]?.order?.limit_price, "410.10000000");
  assert.equal(r1[2]?.order?.time_in_force, "gtc");
  assert.equal(r1[4]?.order?.strategy, "other");

  const batch2: SignalBatchItem[] = [
    accepted("m", "2", { symbol: "AAPL", side: "buy", qty: "1" }), // was rejected: stays rejected
    accepted("m", "3", { symbol: "AAPL", side: "buy", qty: "1" }), // was accepted: same order
    accepted("m", "4", { symbol: "ETH-USDT", side: "buy", qty: "2" }),
    rejected("m", "4", [{ rule: "late duplicate" }]),
  ];
  const r2 = await unitOfWork(db.sql, (tx) => insertSignalsAndOrders(tx, batch2));
  assert.deepEqual(r2.map((r) => r.created), [false, false, true, false]);
  assert.equal(r2[0]?.signal.status, "rejected");
  assert.equal(r2[0]?.order, null);
  assert.equal(r2[1]?.order?.id, r1[2]?.order?.id);
  assert.equal(r2[1]?.order?.symbol, "MSFT");
  assert.equal(r2[3]?.order?.id, r2[2]?.order?.id);

  const [counts] = await db.sql`
    select (select count(*)::int from signals) as signals, (select count(*)::int from orders) as orders`;
  assert.deepEqual({ ...counts }, { signals: 5, orders: 4 });
  assert.equal((await findOrderBySignalId(db.sql, r1[0]?.signal.id ?? "0"))?.id, r1[0]?.order?.id);
  assert.deepEqual(await insertSignalsAndOrders(db.sql, []), []);
});

Deno.test("stored signals count once in strategy_performance, by strategy and UTC day of receipt", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const on = (item: SignalBatchItem, at: string): SignalBatchItem => ({
    ...item,
    signal: { ...item.signal, received_at: new Date(at) },
  });
  await insertSignalsAndOrders(db.sql, [
    on(accepted("m", "1"), "2025-03-01T23:59:59.999Z"),
    on(rejected("m", "2", [{ rule: "kill_switch" }]), "2025-03-01T10:00:00Z"),
    on(accepted("m", "3"), "2025-03-02T00:00:00Z"),
    on(accepted("m", "1"), "2025-03-01T12:00:00Z"), // duplicate inside the batch
    on(accepted("o", "1"), "2025-03-01T12:00:00Z"),
  ]);
  // Redelivered and re-sent signals are stored once, so they count once.
  await insertSignalsAndOrders(db.sql, [
    on(accepted("m", "1"), "2025-03-01T12:00:00Z"),
    on(rejected("m", "4", [{ rule: "max_qty" }]), "2025-03-02T08:00:00Z"),
  ]);
  const received = await insertSignal(db.sql, {
    strategy: "m",
    client_signal_id: "5",
    source: "rest",
    payload: {},
    received_at: new Date("2025-03-02T09:00:00Z"),
  });
  await recordSignalOutcome(db.sql, received.signal.id, { status: "rejected", reasons: ["x"] });
  await assert.rejects(
    recordSignalOutcome(db.sql, received.signal.id, { status: "accepted" }),
    ConflictError,
  );
  const rows = await listStrategyPerformance(db.sql);
  assert.deepEqual(
    rows.map((r) => [r.strategy, r.day, r.signals, r.rejected, r.orders]),
    [
      ["m", "2025-03-01", 2, 1, 1],
      ["o", "2025-03-01", 1, 0, 1],
      ["m", "2025-03-02", 3, 2, 1],
    ],
  );
});

Deno.test("concurrent batches with overlapping signal ids create exactly one order per signal", async () => {
  await using db = await migratedDatabase(8);
  await seedSymbols(db.sql);
  const ids = Array.from({ length: 200 }, (_, i) => `sig-${i}`);
  // Each batch covers a shifted, overlapping window of ids, half of them in reverse order.
  const batches = Array.from({ length: 8 }, (_, b) => {
    const window = ids.slice(b * 15, b * 15 + 80).map((id) => accepted("race", id));
    return b % 2 === 0 ? window : window.reverse();
  });
  const results = await Promise.all(
    batches.map((batch) => unitOfWork(db.sql, (tx) => insertSignalsAndOrders(tx, batch))),
  );
  const created = results.flat().filter((r) => r.created);
  const distinct = new Set(batches.flat().map((item) => item.signal.client_signal_id));
  assert.equal(created.length, distinct.size);
  const orderBySignal = new Map<string, string>();
  for (const result of results.flat()) {
    assert.ok(result.order !== null);
    const previous = orderBySignal.get(result.signal.id);
    if (previous !== undefined) assert.equal(result.order.id, previous);
    orderBySignal.set(result.signal.id, result.order.id);
  }
  const [counts] = await db.sql`
    select (select count(*)::int from signals) as signals, (select count(*)::int from orders) as orders`;
  assert.deepEqual({ ...counts }, { signals: distinct.size, orders: distinct.size });
});

Deno.test("a batch whose order breaks a rule fails as a whole and leaves nothing behind", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const batch = [
    accepted("m", "ok", { symbol: "AAPL", side: "buy", qty: "1" }),
    accepted("m", "bad", { symbol: "UNKNOWN", side: "buy", qty: "1" }),
  ];
  const error = await unitOfWork(db.sql, (tx) => insertSignalsAndOrders(tx, batch)).catch((e) => e);
  assert.ok(error instanceof IntegrityError, String(error));
  const [counts] = await db.sql`select count(*)::int as n from signals`;
  assert.equal(counts?.n, 0);
  await assert.rejects(insertSignalsAndOrders(db.sql, [rejected("m", "x", [])]), TypeError);
  await assert.rejects(
    insertSignalsAndOrders(db.sql, [accepted("m", "y", {
      symbol: "AAPL",
      side: "buy",
      qty: "0.123456789",
    })]),
    RangeError,
  );
});

// ---------------------------------------------------------------------------
// Orders
// ---------------------------------------------------------------------------

Deno.test("orders are found by id, client order id and broker order id", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const [a, b] = await insertOrders(db.sql, [
    { symbol: "AAPL", side: "buy", qty: "5", strategy: "s", client_order_id: "cid-a" },
    { symbol: "MSFT", side: "sell", qty: "1", strategy: "s", broker: "alpaca" },
  ]);
  assert.ok(a && b);
  assert.equal(a.client_order_id, "cid-a");
  assert.match(b.client_order_id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(await getOrder(db.sql, a.id), a);
  await assert.rejects(getOrder(db.sql, "123456"), NotFoundError);
  await assert.rejects(getOrder(db.sql, "abc"), RangeError);
  assert.equal((await findOrderByClientOrderId(db.sql, "cid-a"))?.id, a.id);
  assert.equal(await findOrderByClientOrderId(db.sql, "nope"), null);
  await updateOrderStatus(db.sql, b.id, {
    from: "pending",
    to: "submitted",
    broker_order_id: "X1",
  });
  assert.equal((await findOrderByBrokerOrderId(db.sql, "alpaca", "X1"))?.id, b.id);
  assert.equal(await findOrderByBrokerOrderId(db.sql, "paper", "X1"), null);
});

Deno.test("order status updates are checked against the expected status and filled quantity", async () => {
  await using db = await migratedDatabase();
  const order = await seededOrder(db.sql);
  const submitted = await updateOrderStatus(db.sql, order.id, {
    from: "pending",
    to: "submitted",
    broker_order_id: "B-1",
  }, { by: "broker.paper" });
  assert.equal(submitted.status, "submitted");
  assert.equal(submitted.updated_by, "broker.paper");
  const stale = await updateOrderStatus(db.sql, order.id, { from: "pending", to: "submitted" })
    .catch((e) => e);
  assert.ok(stale instanceof ConflictError);
  assert.equal((stale.actual as Order).status, "submitted");
  await assert.rejects(
    updateOrderStatus(db.sql, "987654", { from: "pending", to: "submitted" }),
    NotFoundError,
  );

  const partial = await updateOrderStatus(db.sql, order.id, {
    from: ["submitted", "partially_filled"],
    to: "partially_filled",
    filled_qty: "4",
    avg_fill_price: "100.5",
    expected_filled_qty: "0",
  });
  assert.equal(partial.filled_qty, "4.00000000");
  assert.equal(partial.broker_order_id, "B-1");
  assert.equal(partial.closed_at, null);
  const raced = await updateOrderStatus(db.sql, order.id, {
    from: ["submitted", "partially_filled"],
    to: "partially_filled",
    filled_qty: "6",
    avg_fill_price: "100.6",
    expected_filled_qty: "0",
  }).catch((e) => e);
  assert.ok(raced instanceof ConflictError, "a fill computed from a stale read is refused");
  const filled = await updateOrderStatus(db.sql, order.id, {
    from: ["submitted", "partially_filled"],
    to: "filled",
    filled_qty: "10",
    avg_fill_price: "100.7",
    expected_filled_qty: "4.00000000",
  });
  assert.equal(filled.status, "filled");
  assert.ok(filled.closed_at instanceof Date);
  assert.ok(filled.submitted_at instanceof Date);
  await assert.rejects(
    updateOrderStatus(db.sql, order.id, { from: [], to: "filled" }),
    RangeError,
  );
});

Deno.test("a batch of status updates applies each one or reports why not", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const orders = await insertOrders(
    db.sql,
    Array.from({ length: 3 }, () => ({ symbol: "AAPL", side: "buy", qty: "1", strategy: "s" })),
  );
  const [a, b, c] = orders;
  assert.ok(a && b && c);
  await updateOrderStatus(db.sql, c.id, { from: "pending", to: "cancelled" });
  const results = await updateOrderStatuses(db.sql, [
    { id: a.id, from: "pending", to: "submitted", broker_order_id: "A" },
    { id: c.id, from: "pending", to: "submitted" },
    { id: "555555", from: "pending", to: "submitted" },
    { id: b.id, from: "pending", to: "filled", filled_qty: "1", avg_fill_price: "3" },
  ]);
  assert.equal(results[0]?.ok && results[0].order.broker_order_id, "A");
  assert.ok(results[1]?.ok === false && results[1].error instanceof ConflictError);
  assert.ok(results[2]?.ok === false && results[2].error instanceof NotFoundError);
  assert.ok(results[3]?.ok === true && results[3].order.status === "filled");
  await assert.rejects(
    updateOrderStatuses(db.sql, [
      { id: a.id, from: "submitted", to: "cancelled" },
      { id: a.id, from: "submitted", to: "cancelled" },
    ]),
    RangeError,
  );
  assert.deepEqual(await updateOrderStatuses(db.sql, []), []);
});

Deno.test("listOrders filters by symbol, status, strategy and dates and pages without duplicates or gaps", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const specs: NewOrder[] = [];
  for (let i = 0; i < 40; i++) {
    specs.push({
      symbol: SYMBOLS[i % 4] ?? "AAPL",
      side: i % 2 === 0 ? "buy" : "sell",
      qty: `${i + 1}`,
      strategy: i % 3 === 0 ? "alpha" : "beta",
    });
  }
  const orders = await insertOrders(db.sql, specs);
  // Spread creation times over 40 days, oldest first, and move some orders on.
  for (const [i, order] of orders.entries()) {
    await db.sql`update orders set created_at = ${new Date(Date.UTC(2025, 0, 1 + i))}
      where id = ${order.id}`;
    if (i % 5 === 0) {
      await updateOrderStatus(db.sql, order.id, { from: "pending", to: "submitted" });
    }
  }
  const all = async (filter: Parameters<typeof listOrders>[1]) => {
    const ids: string[] = [];
    let after: string | null = null;
    for (let pages = 0; pages < 100; pages++) {
      const page = await listOrders(db.sql, { ...filter, after });
      ids.push(...page.items.map((o) => o.id));
      if (page.next === null) return ids;
      after = page.next;
    }
    throw new Error("Too many pages");
  };
  const everything = await all({ limit: 7 });
  assert.deepEqual(everything, orders.map((o) => o.id).reverse());
  const ascending = await all({ limit: 6, direction: "asc" });
  assert.deepEqual(ascending, orders.map((o) => o.id));

  const expect = (pred: (order: Order, i: number) => boolean) =>
    orders.filter(pred).map((o) => o.id).reverse();
  assert.deepEqual(await all({ symbol: "AAPL", limit: 3 }), expect((o) => o.symbol === "AAPL"));
  assert.deepEqual(
    await all({ status: "submitted", limit: 2 }),
    expect((_, i) => i % 5 === 0),
  );
  assert.deepEqual(
    await all({ status: ["submitted", "pending"] as OrderStatus[], symbol: "MSFT" }),
    expect((o) => o.symbol === "MSFT"),
  );
  assert.deepEqual(
    await all({ strategy: "alpha", symbol: "BTC-USDT" }),
    expect((o) => o.strategy === "alpha" && o.symbol === "BTC-USDT"),
  );
  assert.deepEqual(
    await all({ from: new Date(Date.UTC(2025, 0, 11)), to: new Date(Date.UTC(2025, 0, 21)) }),
    expect((_, i) => i >= 10 && i < 20),
  );

  // Rows added between pages appear neither twice nor in place of others.
  const first = await listOrders(db.sql, { limit: 10 });
  await insertOrders(db.sql, [{ symbol: "AAPL", side: "buy", qty: "1", strategy: "late" }]);
  const second = await listOrders(db.sql, { limit: 10, after: first.next });
  assert.deepEqual(
    [...first.items, ...second.items].map((o) => o.id),
    orders.map((o) => o.id).reverse().slice(0, 20),
  );
  await assert.rejects(listOrders(db.sql, { limit: 0 }), RangeError);
  await assert.rejects(listOrders(db.sql, { after: "1; drop table orders" }), RangeError);
});

Deno.test("open orders are listed and counted per symbol, and the outbox lists pending ones", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const orders = await insertOrders(db.sql, [
    { symbol: "AAPL", side: "buy", qty: "1", strategy: "s" },
    { symbol: "AAPL", side: "buy", qty: "1", strategy: "s", broker: "alpaca" },
    { symbol: "MSFT", side: "buy", qty: "1", strategy: "s" },
    { symbol: "MSFT", side: "buy", qty: "1", strategy: "s" },
  ]);
  const [a, b, c, d] = orders;
  assert.ok(a && b && c && d);
  await updateOrderStatus(db.sql, b.id, { from: "pending", to: "submitted" });
  await updateOrderStatus(db.sql, d.id, { from: "pending", to: "expired" });
  assert.deepEqual((await listOpenOrders(db.sql)).map((o) => o.id), [a.id, b.id, c.id]);
  assert.deepEqual((await listOpenOrders(db.sql, { broker: "alpaca" })).map((o) => o.id), [b.id]);
  assert.deepEqual(await countOpenOrders(db.sql), new Map([["AAPL", 2], ["MSFT", 1]]));
  assert.deepEqual(await countOpenOrders(db.sql, { symbol: "MSFT" }), new Map([["MSFT", 1]]));
  assert.deepEqual((await listUnsubmittedOrders(db.sql)).map((o) => o.id), [a.id, c.id]);
  assert.deepEqual(
    await listUnsubmittedOrders(db.sql, { createdBefore: new Date(Date.now() - 60_000) }),
    [],
  );
});

// ---------------------------------------------------------------------------
// Fills and positions
// ---------------------------------------------------------------------------

Deno.test("fills are inserted idempotently in batches and listed by date range", async () => {
  await using db = await migratedDatabase();
  const order = await seededOrder(db.sql);
  const fill = (id: string, day: number, qty = "1"): NewFill => ({
    order_id: order.id,
    broker_fill_id: id,
    symbol: "AAPL",
    side: "buy",
    qty,
    price: "100.25",
    commission: "0.01",
    liquidity: "taker",
    filled_at: new Date(Date.UTC(2025, 2, day, 15)),
  });
  const first = await insertFills(db.sql, [fill("e1", 1), fill("e2", 2), fill("e1", 1, "9")]);
  assert.deepEqual(first.map((r) => r.created), [true, true, false]);
  assert.equal(first[2]?.fill.id, first[0]?.fill.id);
  assert.equal(first[2]?.fill.qty, "1.00000000");
  const second = await insertFills(db.sql, [fill("e2", 2), fill("e3", 3), fill("e4", 4)]);
  assert.deepEqual(second.map((r) => r.created), [false, true, true]);
  assert.equal(second[0]?.fill.id, first[1]?.fill.id);
  const single = await insertFill(db.sql, fill("e4", 4));
  assert.equal(single.created, false);
  assert.equal(single.fill.commission, "0.01000000");

  const march2to4 = await listFills(db.sql, {
    from: new Date(Date.UTC(2025, 2, 2)),
    to: new Date(Date.UTC(2025, 2, 4)),
    direction: "asc",
  });
  assert.deepEqual(march2to4.items.map((f) => f.broker_fill_id), ["e2", "e3"]);
  const paged = await listFills(db.sql, { order_id: order.id, limit: 3 });
  assert.deepEqual(paged.items.map((f) => f.broker_fill_id), ["e4", "e3", "e2"]);
  const rest = await listFills(db.sql, { order_id: order.id, limit: 3, after: paged.next });
  assert.deepEqual(rest.items.map((f) => f.broker_fill_id), ["e1"]);
  assert.equal(rest.next, null);
  const [totals] = await fillTotalsBySymbol(db.sql);
  assert.deepEqual(totals, {
    symbol: "AAPL",
    bought: "4.00000000",
    sold: "0.00000000",
    net_qty: "4.00000000",
    commission: "0.04000000",
    realized_pnl: "0.00000000",
    fills: 4,
  });
});

Deno.test("fills get their ids in the order given, not by order id or broker fill id", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  const [first, second] = await insertOrders(db.sql, [
    { symbol: "AAPL", side: "sell", qty: "10", strategy: "s" },
    { symbol: "AAPL", side: "sell", qty: "10", strategy: "s" },
  ]);
  // The broker executed order 2's fill first, then two of order 1's ("z" before "a").
  const fill = (order: Order, id: string, price: string): NewFill => ({
    order_id: order.id,
    broker_fill_id: id,
    symbol: "AAPL",
    side: "sell",
    qty: "1",
    price,
    filled_at: new Date(),
  });
  const given = [fill(second!, "b", "10"), fill(first!, "z", "11"), fill(first!, "a", "12")];
  const inserted = await insertFills(db.sql, given);
  const ids = inserted.map((r) => BigInt(r.fill.id));
  assert.ok(ids[0]! < ids[1]! && ids[1]! < ids[2]!, `ids in input order: ${ids.join(", ")}`);
  // The same in the one-statement path the engine stores fills with.
  const stored = await insertFillsWithOrders(db.sql, [
    fill(second!, "d", "13"),
    fill(first!, "y", "14"),
    fill(first!, "c", "15"),
  ], []);
  const more = stored.fills.map((f) => BigInt(f.id));
  assert.ok(ids[2]! < more[0]! && more[0]! < more[1]! && more[1]! < more[2]!, more.join(", "));
  const rows = await db.sql<{ price: string }[]>`SELECT price::text FROM fills ORDER BY id`;
  assert.deepEqual(rows.map((r) => Number(r.price)), [10, 11, 12, 13, 14, 15]);
});

Deno.test("fills and the order updates they cause are stored in one statement, all or nothing", async () => {
  await using db = await migratedDatabase();
  const order = await seededOrder(db.sql);
  const fill = (id: string, qty: string): NewFill => ({
    order_id: order.id,
    broker_fill_id: id,
    symbol: "AAPL",
    side: "buy",
    qty,
    price: "100.25",
    commission: "0.01",
    filled_at: new Date(Date.UTC(2025, 2, 1, 15)),
  });
  const stored = await insertFillsWithOrders(db.sql, [fill("e1", "4")], [{
    order,
    update: {
      from: "pending",
      to: "partially_filled",
      filled_qty: "4",
      avg_fill_price: "100.25",
      broker_order_id: "b-1",
      expected_filled_qty: order.filled_qty,
    },
  }]);
  assert.equal(stored.fills[0]?.qty, "4.00000000");
  assert.equal(stored.fills[0]?.order_id, order.id);
  const updated = stored.orders[0]!;
  assert.deepEqual(updated, await getOrder(db.sql, order.id), "as stored, every column");
  assert.equal(updated.status, "partially_filled");
  assert.ok(updated.submitted_at instanceof Date);

  // A fill stored before, or an order not in the expected state: nothing is written.
  const rest = {
    from: "partially_filled" as const,
    to: "filled" as const,
    filled_qty: "10",
    avg_fill_price: "100.25",
    expected_filled_qty: "4.00000000",
  };
  await assert.rejects(
    insertFillsWithOrders(db.sql, [fill("e2", "6"), fill("e1", "4")], [{
      order: updated,
      update: rest,
    }]),
    SerializationError,
  );
  await assert.rejects(
    insertFillsWithOrders(db.sql, [fill("e2", "6")], [{
      order: updated,
      update: { ...rest, expected_filled_qty: "0" },
    }]),
    SerializationError,
  );
  assert.deepEqual(
    (await listFills(db.sql, { order_id: order.id })).items.map((f) => f.broker_fill_id),
    [
      "e1",
    ],
  );
  assert.equal((await getOrder(db.sql, order.id)).status, "partially_filled");
  const done = await insertFillsWithOrders(db.sql, [fill("e2", "6")], [{
    order: updated,
    update: rest,
  }]);
  assert.equal(done.orders[0]?.status, "filled");
  assert.deepEqual(done.orders[0], await getOrder(db.sql, order.id));
});

Deno.test("applied fills, positions and cash are stored in one statement, checked against what was read", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  await upsertPortfolio(db.sql, { id: "default", cash: "1000" });
  const order = await insertOrder(db.sql, { symbol: "AAPL", side: "buy", qty: "3", strategy: "s" });
  const { fill } = await insertFill(db.sql, {
    order_id: order.id,
    broker_fill_id: "e1",
    symbol: "AAPL",
    side: "buy",
    qty: "3",
    price: "100",
    commission: "1",
    filled_at: new Date(Date.UTC(2025, 2, 1, 15)),
  });
  const applied = {
    id: fill.id,
    order_id: order.id,
    symbol: "AAPL",
    side: "buy" as const,
    qty: "3",
    price: "100",
    commission: "1",
    filled_at: new Date(Date.UTC(2025, 2, 1, 15)),
    realized_pnl: "-1",
  };
  const after = {
    qty: "3",
    avg_entry_price: "100",
    cost_basis: "300",
    realized_pnl: "-1",
    commission: "1",
  };
  const batch = {
    portfolio: { id: "default", cash_before: "1000", cash: "699", realized_pnl_delta: "-1" },
    fills: [applied],
    positions: [{ symbol: "AAPL", before: null, after, last_fill_id: fill.id }],
  };
  // Cash not as read, a figure of the fill not as stored: nothing is written.
  await assert.rejects(
    storeAppliedFills(db.sql, { ...batch, portfolio: { ...batch.portfolio, cash_before: "999" } }),
    SerializationError,
  );
  await assert.rejects(
    storeAppliedFills(db.sql, { ...batch, fills: [{ ...applied, price: "101" }] }),
    SerializationError,
  );
  assert.equal(await findPosition(db.sql, "AAPL"), null);
  assert.equal((await listFills(db.sql, { order_id: order.id })).items[0]?.realized_pnl, null);
  await storeAppliedFills(db.sql, batch);
  const position = await findPosition(db.sql, "AAPL");
  assert.equal(position?.qty, "3.00000000");
  assert.equal(position?.cost_basis, "300.0000000000000000");
  assert.equal(position?.last_fill_id, fill.id);
  assert.equal((await getPortfolio(db.sql, "default")).cash, "699.00000000");
  assert.equal(
    (await listFills(db.sql, { order_id: order.id })).items[0]?.realized_pnl,
    "-1.00000000",
  );
  // Applied already: the same batch again writes nothing.
  await assert.rejects(
    storeAppliedFills(db.sql, { ...batch, portfolio: { ...batch.portfolio, cash_before: "699" } }),
    SerializationError,
  );
  assert.equal((await getPortfolio(db.sql, "default")).realized_pnl, "-1.00000000");
});

Deno.test("new fills, their orders, positions and cash are stored in one statement, all or nothing", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  await upsertPortfolio(db.sql, { id: "default", cash: "1000" });
  const order = await insertOrder(db.sql, { symbol: "AAPL", side: "buy", qty: "3", strategy: "s" });
  const fill = (id: string, qty: string, realized: string): NewFill => ({
    order_id: order.id,
    broker_fill_id: id,
    symbol: "AAPL",
    side: "buy",
    qty,
    price: "100",
    commission: "0.5",
    filled_at: new Date(Date.UTC(2025, 2, 1, 15)),
    realized_pnl: realized,
  });
  const fills = [fill("e1", "1", "-0.5"), fill("e2", "2", "-0.5")];
  const change = {
    order,
    update: {
      from: "pending" as const,
      to: "filled" as const,
      filled_qty: "3",
      avg_fill_price: "100",
      expected_filled_qty: order.filled_qty,
    },
  };
  const positions = {
    portfolio: { id: "default", cash_before: "1000", cash: "699", realized_pnl_delta: "-1" },
    positions: [{
      symbol: "AAPL",
      before: null,
      after: {
        qty: "3",
        avg_entry_price: "100",
        cost_basis: "300",
        realized_pnl: "-1",
        commission: "1",
      },
      last_fill: 1,
    }],
  };
  // Cash or a position not as read: nothing at all is written — no fill, no order change.
  await assert.rejects(
    insertFillsWithOrders(db.sql, fills, [change], {
      positions: { ...positions, portfolio: { ...positions.portfolio, cash_before: "999" } },
    }),
    SerializationError,
  );
  await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "0",
    avg_entry_price: "0",
    realized_pnl: "0",
  });
  await assert.rejects(
    insertFillsWithOrders(db.sql, fills, [change], {
      positions: {
        ...positions,
        positions: [{ ...positions.positions[0]!, before: { ...positions.positions[0]!.after } }],
      },
    }),
    SerializationError,
  );
  assert.equal((await listFills(db.sql, { order_id: order.id })).items.length, 0);
  assert.equal((await getOrder(db.sql, order.id)).status, "pending");
  assert.equal((await getPortfolio(db.sql, "default")).cash, "1000.00000000");
  await db.sql`delete from positions`;

  const stored = await insertFillsWithOrders(db.sql, fills, [change], { positions });
  assert.deepEqual(stored.fills.map((f) => f.realized_pnl), ["-0.50000000", "-0.50000000"]);
  assert.equal(stored.orders[0]?.status, "filled");
  const position = await findPosition(db.sql, "AAPL");
  assert.equal(position?.qty, "3.00000000");
  assert.equal(position?.commission, "1.00000000");
  assert.equal(position?.cost_basis, "300.0000000000000000");
  assert.equal(position?.last_fill_id, stored.fills[1]?.id, "the last fill, by its index");
  const portfolio = await getPortfolio(db.sql, "default");
  assert.equal(portfolio.cash, "699.00000000");
  assert.equal(portfolio.realized_pnl, "-1.00000000");
});

Deno.test("a position's exact cost basis is stored, checked as read, and what it is marked against", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  await upsertPortfolio(db.sql, { id: "default", cash: "62940" });
  // Bought 1e9 @ 0.00001236 and 2e9 @ 0.00001235: cost 37,060, average 0.0000123533… shown rounded.
  const held = await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "3000000000",
    avg_entry_price: "0.00001235",
    cost_basis: "37060",
    realized_pnl: "0",
  });
  assert.equal(held.cost_basis, "37060.0000000000000000");
  assert.equal(await markPositions(db.sql, { AAPL: "0.00001235" }), 1);
  assert.equal(
    (await findPosition(db.sql, "AAPL"))?.unrealized_pnl,
    "-10.00000000",
    "unrealized against the basis, not the rounded average (which says 0)",
  );
  const order = await insertOrder(db.sql, {
    symbol: "AAPL",
    side: "sell",
    qty: "3000000000",
    strategy: "s",
  });
  const { fill } = await insertFill(db.sql, {
    order_id: order.id,
    broker_fill_id: "e1",
    symbol: "AAPL",
    side: "sell",
    qty: "3000000000",
    price: "0.00001235",
    commission: "0",
    filled_at: new Date(Date.UTC(2025, 2, 1, 15)),
  });
  const before = {
    qty: "3000000000",
    avg_entry_price: "0.00001235",
    cost_basis: "37060",
    realized_pnl: "0",
    commission: "0",
  };
  const batch = {
    portfolio: { id: "default", cash_before: "62940", cash: "99990", realized_pnl_delta: "-10" },
    fills: [{
      id: fill.id,
      order_id: order.id,
      symbol: "AAPL",
      side: "sell" as const,
      qty: "3000000000",
      price: "0.00001235",
      commission: "0",
      filled_at: new Date(Date.UTC(2025, 2, 1, 15)),
      realized_pnl: "-10",
    }],
    positions: [{
      symbol: "AAPL",
      before,
      after: {
        qty: "0",
        avg_entry_price: "0",
        cost_basis: "0",
        realized_pnl: "-10",
        commission: "0",
      },
      last_fill_id: fill.id,
    }],
  };
  // Computed from a basis the row does not hold (what the rounded average implies): refused.
  await assert.rejects(
    storeAppliedFills(db.sql, {
      ...batch,
      positions: [{ ...batch.positions[0]!, before: { ...before, cost_basis: "37050" } }],
    }),
    SerializationError,
  );
  assert.equal((await findPosition(db.sql, "AAPL"))?.qty, "3000000000.00000000");
  await storeAppliedFills(db.sql, batch);
  const flat = await findPosition(db.sql, "AAPL");
  assert.equal(flat?.cost_basis, "0.0000000000000000");
  assert.equal(flat?.realized_pnl, "-10.00000000");
  assert.equal((await getPortfolio(db.sql, "default")).cash, "99990.00000000");

  // 16 decimals are kept exactly; a 17th or a 23rd integer digit is refused, never rounded.
  const fine = await upsertPosition(db.sql, {
    symbol: "MSFT",
    qty: "0.00000003",
    avg_entry_price: "0.00000001",
    cost_basis: "0.0000000000000003",
    realized_pnl: "0",
  });
  assert.equal(fine.cost_basis, "0.0000000000000003");
  assert.throws(() => toCostBasis("0.00000000000000003", "cost_basis"), RangeError);
  assert.throws(() => toCostBasis("1".repeat(23), "cost_basis"), RangeError);
  assert.throws(() => toCostBasis("1e-3", "cost_basis"), TypeError);
  // Without a basis, qty × avg_entry_price (a short's is negative).
  const [short] = await upsertPositions(db.sql, [{
    symbol: "BTC-USDT",
    qty: "-0.5",
    avg_entry_price: "60000.12345678",
    realized_pnl: "0",
  }]);
  assert.equal(short?.cost_basis, "-30000.0617283900000000");
});

Deno.test("positions are upserted, listed when open, and their realized P&L summed by symbol", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  await upsertPortfolio(db.sql, { id: "alpaca", broker: "alpaca" });
  const opened = await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "10",
    avg_entry_price: "100",
    realized_pnl: "0",
    commission: "1",
  });
  assert.ok(opened.opened_at instanceof Date);
  assert.equal(opened.commission, "1.00000000");
  const [aapl, msft, btc, alpacaAapl] = await upsertPositions(db.sql, [
    { symbol: "AAPL", qty: "4", avg_entry_price: "100", realized_pnl: "12.5" },
    { symbol: "MSFT", qty: "-3", avg_entry_price: "400", realized_pnl: "-2.25" },
    { symbol: "BTC-USDT", qty: "0", avg_entry_price: "0", realized_pnl: "7" },
    { portfolio_id: "alpaca", symbol: "AAPL", qty: "1", avg_entry_price: "99", realized_pnl: "1" },
  ], { by: "tracker" });
  assert.equal(aapl?.qty, "4.00000000");
  assert.equal(aapl?.commission, "1.00000000", "commission kept when not given");
  assert.equal(
    aapl?.opened_at?.getTime(),
    opened.opened_at?.getTime(),
    "same side keeps opened_at",
  );
  assert.equal(aapl?.updated_by, "tracker");
  assert.equal(msft?.qty, "-3.00000000");
  assert.equal(btc?.opened_at, null);
  assert.equal(alpacaAapl?.portfolio_id, "alpaca");

  const flipped = await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "-1",
    avg_entry_price: "101",
    realized_pnl: "20",
  });
  assert.ok((flipped.opened_at?.getTime() ?? 0) >= (opened.opened_at?.getTime() ?? 0));
  assert.equal((await findPosition(db.sql, "AAPL"))?.qty, "-1.00000000");
  assert.equal((await findPosition(db.sql, "AAPL", { portfolio_id: "alpaca" }))?.qty, "1.00000000");
  assert.equal(await findPosition(db.sql, "ETH-USDT"), null);

  const open = await listOpenPositions(db.sql, { portfolio_id: "default" });
  assert.deepEqual(open.map((p) => p.symbol), ["AAPL", "MSFT"]);
  assert.deepEqual(
    (await listOpenPositions(db.sql, { symbol: "AAPL" })).map((p) => p.portfolio_id),
    [
      "alpaca",
      "default",
    ],
  );
  assert.deepEqual(await realizedPnlBySymbol(db.sql), [
    { symbol: "AAPL", realized_pnl: "21.00000000" },
    { symbol: "BTC-USDT", realized_pnl: "7.00000000" },
    { symbol: "MSFT", realized_pnl: "-2.25000000" },
  ]);
  assert.deepEqual(await realizedPnlBySymbol(db.sql, { portfolio_id: "alpaca" }), [
    { symbol: "AAPL", realized_pnl: "1.00000000" },
  ]);
  await assert.rejects(
    upsertPositions(db.sql, [
      { symbol: "AAPL", qty: "1", avg_entry_price: "1", realized_pnl: "0" },
      { symbol: "AAPL", qty: "2", avg_entry_price: "1", realized_pnl: "0" },
    ]),
    RangeError,
  );
});

Deno.test("total exposure uses given marks, then stored marks, then last prices, then entry prices", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  await upsertPositions(db.sql, [
    { symbol: "AAPL", qty: "10", avg_entry_price: "100", realized_pnl: "0" },
    { symbol: "MSFT", qty: "-2", avg_entry_price: "400", realized_pnl: "0" },
    { symbol: "BTC-USDT", qty: "0.5", avg_entry_price: "60000", realized_pnl: "0" },
    { symbol: "ETH-USDT", qty: "0", avg_entry_price: "0", realized_pnl: "0" },
  ]);
  const unpriced = await totalExposure(db.sql);
  assert.deepEqual(unpriced, {
    gross: "31800.00000000", // 10·100 + 2·400 + 0.5·60000
    net: "30200.00000000",
    long: "31000.00000000",
    short: "800.00000000",
    positions: 3,
    unpriced: ["AAPL", "BTC-USDT", "MSFT"],
  });
  assert.equal(await updateLastPrices(db.sql, { MSFT: "410.5", NOPE: "1" }), 1);
  const marked = await markPositions(db.sql, { AAPL: "101.25" }, {
    at: new Date("2025-01-02T00:00:00Z"),
  });
  assert.equal(marked, 1);
  const aapl = await findPosition(db.sql, "AAPL");
  assert.equal(aapl?.market_value, "1012.50000000");
  assert.equal(aapl?.unrealized_pnl, "12.50000000");
  assert.equal(aapl?.marked_at?.toISOString(), "2025-01-02T00:00:00.000Z");
  const mixed = await totalExposure(db.sql, { marks: { "BTC-USDT": "60000.00000001" } });
  // 10·101.25 + 2·410.5 + 0.5·60000.00000001 = 1012.5 + 821 + 30000.000000005 → rounded to 8
  // places half to even, as the engine rounds money
  assert.equal(mixed.gross, "31833.50000000");
  assert.equal(mixed.net, "30191.50000000");
  assert.equal(mixed.short, "821.00000000");
  assert.deepEqual(mixed.unpriced, []);
  const given = await totalExposure(db.sql, {
    marks: new Map([["AAPL", "1"], ["MSFT", "1"], ["BTC-USDT", "2"]]),
  });
  assert.deepEqual([given.gross, given.net], ["13.00000000", "9.00000000"]);
  await assert.rejects(totalExposure(db.sql, { marks: { AAPL: "-1" } }), RangeError);
  assert.deepEqual((await totalExposure(db.sql, { portfolio_id: "none" })).gross, "0.00000000");

  const after = await upsertPosition(db.sql, {
    symbol: "AAPL",
    qty: "20",
    avg_entry_price: "100.5",
    realized_pnl: "0",
  });
  assert.equal(after.market_value, "2025.00000000", "market value follows the new quantity");
  assert.equal(after.unrealized_pnl, "15.00000000");
});

// ---------------------------------------------------------------------------
// Portfolios, symbols, alerts, config, metrics
// ---------------------------------------------------------------------------

Deno.test("portfolios keep their latest state and a history of snapshots", async () => {
  await using db = await migratedDatabase();
  const initial = await getPortfolio(db.sql);
  assert.equal(initial.id, "default");
  await assert.rejects(getPortfolio(db.sql, "missing"), NotFoundError);
  const updated = await upsertPortfolio(db.sql, { id: "default", cash: "1000.5", equity: "1200" });
  assert.equal(updated.cash, "1000.50000000");
  assert.equal(updated.broker, "paper");
  const again = await upsertPortfolio(db.sql, { id: "default", equity: "1300" });
  assert.equal(again.cash, "1000.50000000", "absent fields keep their value");
  assert.equal(again.equity, "1300.00000000");

  const figures = {
    cash: "1000",
    equity: "1100",
    market_value: "100",
    gross_exposure: "100",
    net_exposure: "100",
    realized_pnl: "0",
    unrealized_pnl: "5",
  };
  assert.equal(await latestSnapshot(db.sql), null);
  const taken: string[] = [];
  for (let minute = 0; minute < 5; minute++) {
    const { created, snapshot } = await insertSnapshot(db.sql, {
      ...figures,
      equity: `${1100 + minute}`,
      taken_at: new Date(Date.UTC(2025, 0, 1, 0, minute)),
      positions: [{ symbol: "AAPL", qty: "1" }],
    });
    assert.equal(created, true);
    taken.push(snapshot.id);
  }
  const duplicate = await insertSnapshot(db.sql, {
    ...figures,
    taken_at: new Date(Date.UTC(2025, 0, 1, 0, 4)),
  });
  assert.equal(duplicate.created, false);
  assert.equal(duplicate.snapshot.equity, "1104.00000000");
  const latest = await latestSnapshot(db.sql);
  assert.equal(latest?.id, taken[4]);
  assert.deepEqual(latest?.positions, [{ symbol: "AAPL", qty: "1" }]);
  const history = await listSnapshots(db.sql, {
    from: new Date(Date.UTC(2025, 0, 1, 0, 1)),
    to: new Date(Date.UTC(2025, 0, 1, 0, 4)),
    direction: "asc",
    limit: 2,
  });
  assert.deepEqual(history.items.map((s) => s.id), taken.slice(1, 3));
  const more = await listSnapshots(db.sql, {
    from: new Date(Date.UTC(2025, 0, 1, 0, 1)),
    to: new Date(Date.UTC(2025, 0, 1, 0, 4)),
    direction: "asc",
    limit: 2,
    after: history.next,
  });
  assert.deepEqual(more.items.map((s) => s.id), taken.slice(3, 4));
  assert.equal(more.next, null);
});

Deno.test("symbols are upserted and listed, and last prices only move forward in time", async () => {
  await using db = await migratedDatabase();
  const stored = await upsertSymbols(db.sql, [
    { symbol: "AAPL", asset_class: "us_equity", exchange: "alpaca", tick_size: "0.01" },
    { symbol: "BTC-USDT", base_asset: "BTC", quote_asset: "USDT", lot_size: "0.00001" },
    { symbol: "OLD", active: false },
  ]);
  assert.deepEqual(stored.map((s) => s.symbol), ["AAPL", "BTC-USDT", "OLD"]);
  assert.equal(stored[0]?.tick_size, "0.01000000");
  const changed = await upsertSymbols(db.sql, [{ symbol: "AAPL", asset_class: "us_equity" }], {
    by: "admin",
  });
  assert.equal(changed[0]?.tick_size, null);
  assert.equal(changed[0]?.updated_by, "admin");
  assert.deepEqual((await listSymbols(db.sql, { active: true })).map((s) => s.symbol), [
    "AAPL",
    "BTC-USDT",
  ]);
  assert.equal((await listSymbols(db.sql)).length, 3);
  const t1 = new Date("2025-01-01T00:00:01Z");
  const t0 = new Date("2025-01-01T00:00:00Z");
  assert.equal(await updateLastPrices(db.sql, { AAPL: "187.25" }, { at: t1 }), 1);
  assert.equal(await updateLastPrices(db.sql, new Map([["AAPL", "180"]]), { at: t0 }), 0);
  const aapl = await getSymbol(db.sql, "AAPL");
  assert.equal(aapl.last_price, "187.25000000");
  assert.equal(aapl.last_price_at?.getTime(), t1.getTime());
  await assert.rejects(getSymbol(db.sql, "NOPE"), NotFoundError);
});

Deno.test("alerts are raised, merged by dedupe key while unresolved, listed and resolved", async () => {
  await using db = await migratedDatabase();
  const a = await raiseAlert(db.sql, {
    severity: "warning",
    source: "broker.alpaca",
    message: "Order rejected",
    dedupe_key: "alpaca-rejects",
    details: { order: "1" },
  });
  assert.equal(a.created, true);
  const again = await raiseAlert(db.sql, {
    severity: "critical",
    source: "broker.alpaca",
    message: "Orders rejected",
    dedupe_key: "alpaca-rejects",
  });
  assert.equal(again.created, false);
  assert.equal(again.alert.id, a.alert.id);
  assert.equal(again.alert.occurrences, 2);
  assert.equal(again.alert.severity, "critical");
  const info = await raiseAlert(db.sql, { severity: "info", source: "risk", message: "Heads up" });
  const unresolved = await listUnresolvedAlerts(db.sql);
  assert.deepEqual(unresolved.map((x) => x.id), [a.alert.id, info.alert.id]);
  assert.deepEqual(
    (await listUnresolvedAlerts(db.sql, { minSeverity: "warning" })).map((x) => x.id),
    [a.alert.id],
  );
  const resolved = await resolveAlert(db.sql, a.alert.id, { by: "ops" });
  assert.equal(resolved.resolved, true);
  assert.equal(resolved.resolved_by, "ops");
  assert.ok(resolved.resolved_at instanceof Date);
  const twice = await resolveAlert(db.sql, a.alert.id, { by: "someone else" });
  assert.equal(twice.resolved_by, "ops");
  assert.equal(twice.resolved_at?.getTime(), resolved.resolved_at?.getTime());
  await assert.rejects(resolveAlert(db.sql, "31337"), NotFoundError);
  assert.deepEqual((await listUnresolvedAlerts(db.sql)).map((x) => x.id), [info.alert.id]);
  const fresh = await raiseAlert(db.sql, {
    severity: "warning",
    source: "broker.alpaca",
    message: "Rejected again",
    dedupe_key: "alpaca-rejects",
  });
  assert.equal(fresh.created, true, "a resolved alert's key opens a new alert");
  assert.equal((await getAlert(db.sql, a.alert.id)).occurrences, 2);
});

Deno.test("config values and the kill switch are stored and read back", async () => {
  await using db = await migratedDatabase();
  assert.equal(await getConfig(db.sql, "missing"), null);
  const initial = await getKillSwitch(db.sql);
  assert.deepEqual(initial, { active: false, reason: null, changed_at: null, changed_by: null });
  const on = await setKillSwitch(db.sql, { active: true, reason: "runaway" }, { by: "api:ops" });
  assert.equal(on.active, true);
  assert.equal(on.reason, "runaway");
  assert.equal(on.changed_by, "api:ops");
  assert.deepEqual(await getKillSwitch(db.sql), on);
  const off = await setKillSwitch(db.sql, { active: false });
  assert.equal(off.active, false);
  assert.equal(off.changed_by, "system");
  const entry = await setConfig(db.sql, "limits", { max: "10.5", symbols: ["AAPL"] }, {
    description: "risk overrides",
  });
  assert.deepEqual(entry.value, { max: "10.5", symbols: ["AAPL"] });
  const replaced = await setConfig(db.sql, "limits", "plain");
  assert.equal(replaced.value, "plain");
  assert.equal(replaced.description, "risk overrides");
  assert.equal((await getConfig<string>(db.sql, "limits"))?.value, "plain");
  assert.equal(await deleteConfig(db.sql, "limits"), true);
  assert.equal(await deleteConfig(db.sql, "limits"), false);
});

Deno.test("risk metrics and strategy performance are recorded and read back", async () => {
  await using db = await migratedDatabase();
  const base = new Date("2025-01-02T10:00:00Z").getTime();
  assert.equal(
    await insertRiskMetrics(db.sql, [
      { metric: "gross_exposure", value: "100", limit_value: "1000", measured_at: new Date(base) },
      { metric: "gross_exposure", value: "150", measured_at: new Date(base + 60_000) },
      { metric: "position_qty", symbol: "AAPL", value: "-3", measured_at: new Date(base) },
    ]),
    3,
  );
  const exposure = await listRiskMetrics(db.sql, { metric: "gross_exposure" });
  assert.deepEqual(exposure.map((m) => [m.value, m.limit_value]), [
    ["100.00000000", "1000.00000000"],
    ["150.00000000", null],
  ]);
  const latest = await listRiskMetrics(db.sql, { metric: "gross_exposure", limit: 1 });
  assert.deepEqual(latest.map((m) => m.value), ["150.00000000"]);

  await addStrategyPerformance(db.sql, {
    strategy: "momentum",
    day: "2025-01-02",
    signals: 3,
    rejected: 1,
  });
  const day = await addStrategyPerformance(db.sql, {
    strategy: "momentum",
    day: new Date("2025-01-02T23:59:00Z"),
    orders: 2,
    fills: 2,
    notional: "1000.5",
    realized_pnl: "-1.25",
    losses: 1,
  });
  assert.deepEqual(
    [day.day, day.signals, day.rejected, day.orders, day.notional, day.realized_pnl, day.losses],
    ["2025-01-02", 3, 1, 2, "1000.50000000", "-1.25000000", 1],
  );
  await addStrategyPerformance(db.sql, { strategy: "carry", day: "2025-01-03", signals: 1 });
  const listed = await listStrategyPerformance(db.sql, { from: "2025-01-01", to: "2025-01-02" });
  assert.deepEqual(listed.map((p) => p.strategy), ["momentum"]);
  await assert.rejects(
    addStrategyPerformance(db.sql, { strategy: "x", day: "2025-1-2" }),
    RangeError,
  );
  await assert.rejects(
    addStrategyPerformance(db.sql, { strategy: "x", day: "2025-01-02", orders: -1 }),
    RangeError,
  );
});

// ---------------------------------------------------------------------------
// Unit of work
// ---------------------------------------------------------------------------

/** Reads the counter under key `k`, waits for `beforeWrite`, then increments it. */
async function increment(tx: TransactionSql, beforeWrite?: () => Promise<void>): Promise<number> {
  const [row] = await tx`select (value #>> '{}')::int as n from config where key = 'k'`;
  await beforeWrite?.();
  const next = (row?.n as number) + 1;
  await tx`update config set value = ${JSON.stringify(next)}::text::jsonb where key = 'k'`;
  return next;
}

Deno.test("unit of work reruns a transaction that lost a serialization conflict, after a backoff", async () => {
  await using db = await migratedDatabase();
  await setConfig(db.sql, "k", 0);
  const clock = new RecordingClock();
  const bRead = gate();
  const aCommitted = gate();
  const retries: Array<{ attempt: number; code: string | undefined }> = [];
  let bRuns = 0;
  const a = unitOfWork(
    db.sql,
    (tx) => increment(tx, () => bRead.promise),
    { isolation: "serializable" },
  ).then((value) => {
    aCommitted.open();
    return value;
  });
  const b = unitOfWork(db.sql, (tx) => {
    bRuns++;
    if (bRuns > 1) return increment(tx);
    return increment(tx, async () => {
      bRead.open();
      await aCommitted.promise;
    });
  }, {
    isolation: "serializable",
    clock,
    backoff: { initialMs: 10, jitter: 0 },
    onRetry: (error, attempt) => retries.push({ attempt, code: error.code }),
  });
  assert.deepEqual(await Promise.all([a, b]), [1, 2]);
  assert.equal(bRuns, 2);
  assert.deepEqual(retries, [{ attempt: 1, code: "40001" }]);
  assert.deepEqual(clock.sleeps, [10]);
  assert.equal((await getConfig(db.sql, "k"))?.value, 2);
});

Deno.test("unit of work gives up with a SerializationError when retries run out", async () => {
  await using db = await migratedDatabase();
  await setConfig(db.sql, "k", 0);
  const bRead = gate();
  const aCommitted = gate();
  let bRuns = 0;
  const a = unitOfWork(db.sql, (tx) => increment(tx, () => bRead.promise), {
    isolation: "repeatable read",
  }).then(() => aCommitted.open());
  const b = unitOfWork(db.sql, (tx) => {
    bRuns++;
    return increment(tx, async () => {
      bRead.open();
      await aCommitted.promise;
    });
  }, { isolation: "repeatable read", retries: 0 }).catch((e) => e);
  await a;
  const error = await b;
  assert.ok(error instanceof SerializationError, String(error));
  assert.equal(error.retryable, true);
  assert.equal(bRuns, 1);
  assert.equal((await getConfig(db.sql, "k"))?.value, 1);
});

Deno.test("unit of work reruns the victim of a deadlock", async () => {
  await using db = await migratedDatabase();
  await setConfig(db.sql, "x", 0);
  await setConfig(db.sql, "y", 0);
  const aLocked = gate();
  const bLocked = gate();
  const runs = { a: 0, b: 0 };
  const retried: boolean[] = [];
  const options = {
    retries: 3,
    backoff: { initialMs: 1, jitter: 0 },
    onRetry: (error: SerializationError) => retried.push(error.deadlock),
  };
  const lockBoth = (
    tx: TransactionSql,
    first: string,
    second: string,
    mine: ReturnType<typeof gate>,
    theirs: ReturnType<typeof gate>,
    attempt: number,
  ) =>
    (async () => {
      await tx`set local deadlock_timeout = '50ms'`;
      await tx`update config set value = '1' where key = ${first}`;
      if (attempt === 1) {
        mine.open();
        await theirs.promise;
      }
      await tx`update config set value = '2' where key = ${second}`;
      return first;
    })();
  const [a, b] = await Promise.all([
    unitOfWork(db.sql, (tx) => lockBoth(tx, "x", "y", aLocked, bLocked, ++runs.a), options),
    unitOfWork(db.sql, (tx) => lockBoth(tx, "y", "x", bLocked, aLocked, ++runs.b), options),
  ]);
  assert.deepEqual([a, b], ["x", "y"]);
  assert.deepEqual(retried, [true]);
  assert.equal(runs.a + runs.b, 3);
});

Deno.test("unit of work commits everything or nothing and maps errors without retrying them", async () => {
  await using db = await migratedDatabase();
  await seedSymbols(db.sql);
  let runs = 0;
  const error = await unitOfWork(db.sql, async (tx) => {
    runs++;
    await insertOrder(tx, {
      symbol: "AAPL",
      side: "buy",
      qty: "1",
      strategy: "s",
      client_order_id: "u1",
    });
    await insertOrder(tx, {
      symbol: "AAPL",
      side: "buy",
      qty: "1",
      strategy: "s",
      client_order_id: "u1",
    });
  }).catch((e) => e);
  assert.ok(error instanceof ConflictError, String(error));
  assert.equal(runs, 1);
  assert.equal(await findOrderByClientOrderId(db.sql, "u1"), null);

  const boom = new Error("application failure");
  await assert.rejects(
    unitOfWork(db.sql, async (tx) => {
      await setConfig(tx, "half", true);
      throw boom;
    }),
    (e) => e === boom,
  );
  assert.equal(await getConfig(db.sql, "half"), null);

  const value = await unitOfWork(db.sql, async (tx) => {
    await setConfig(tx, "whole", 1);
    return [1, 2, 3];
  });
  assert.deepEqual(value, [1, 2, 3]);
  assert.equal((await getConfig(db.sql, "whole"))?.value, 1);

  const readOnly = await unitOfWork(db.sql, (tx) => setConfig(tx, "ro", 1), { readOnly: true })
    .catch((e) => e);
  assert.ok(readOnly instanceof Error);
  assert.equal(await getConfig(db.sql, "ro"), null);

  const timeout = await unitOfWork(db.sql, async (tx) => {
    await tx`set local statement_timeout = 50`;
    await tx`select pg_sleep(5)`;
  }).catch((e) => e);
  assert.ok(timeout instanceof DbTimeoutError, String(timeout));
  assert.equal(timeout.code, "57014");
  await assert.rejects(unitOfWork(db.sql, () => Promise.resolve(1), { retries: -1 }), RangeError);
});

Deno.test("an unreachable server surfaces as DbConnectionError", async () => {
  const sql = createPostgres({
    url: "postgres://postgres@127.0.0.1:1/nowhere",
    sslmode: "disable",
    connect_timeout_s: 2,
  });
  try {
    const error = await unitOfWork(sql, (tx) => getConfig(tx, "k")).catch((e) => e);
    assert.ok(error instanceof DbConnectionError, String(error));
    assert.equal(error.code, "ECONNREFUSED");
    const direct = await getConfig(sql, "k").catch((e) => e);
    assert.ok(direct instanceof DbConnectionError);
  } finally {
    await sql.end({ timeout: 0 });
  }
});
