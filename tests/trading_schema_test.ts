/**
 * The trading schema (`migrations/postgres/0002_trading.sql`) against a real
 * PostgreSQL (`TW_TEST_POSTGRES_URL`, default the local server): it applies,
 * reverts and re-applies to the same catalog; its constraints refuse bad
 * rows; triggers keep `updated_at`; NUMERIC(20,8) round-trips exactly. Each
 * test gets its own `tw_test_<random>` database with every migration applied.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import {
  ALERT_SEVERITIES,
  ConflictError,
  findOrderByClientOrderId,
  insertFill,
  insertOrder,
  insertSignal,
  IntegrityError,
  listUnsubmittedOrders,
  mapDbError,
  ORDER_SIDES,
  ORDER_STATUSES,
  ORDER_TYPES,
  SIGNAL_STATUSES,
  TIMES_IN_FORCE,
  toNumeric,
  updateOrderStatus,
  upsertPosition,
  upsertSymbols,
} from "../db/mod.ts";
import { Decimal } from "decimal.js";
import { migratedDatabase } from "./_postgres.ts";

const TRADING_TABLES = [
  "alerts",
  "config",
  "fills",
  "orders",
  "portfolio_snapshots",
  "portfolios",
  "positions",
  "risk_metrics",
  "signals",
  "strategy_performance",
  "symbols",
];

/** Tables, columns, indexes, constraints, enums, functions and triggers of schema public. */
async function catalogDump(sql: Sql): Promise<unknown> {
  const columns = await sql`
    select table_name, column_name, data_type, udt_name, is_nullable, column_default,
      numeric_precision, numeric_scale, is_identity, identity_generation
    from information_schema.columns where table_schema = 'public'
    order by table_name, ordinal_position`;
  const indexes = await sql`
    select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'
    order by tablename, indexname`;
  const constraints = await sql`
    select c.conrelid::regclass::text as tbl, c.conname, c.contype,
      pg_get_constraintdef(c.oid) as def
    from pg_constraint c join pg_namespace n on n.oid = c.connamespace
    where n.nspname = 'public' order by 1, 2`;
  const enums = await sql`
    select t.typname, array_agg(e.enumlabel order by e.enumsortorder) as labels
    from pg_type t join pg_enum e on e.enumtypid = t.oid
    join pg_namespace n on n.oid = t.typnamespace
    where n.nspname = 'public' group by t.typname order by t.typname`;
  const functions = await sql`
    select p.proname, pg_get_function_identity_arguments(p.oid) as args, p.prosrc
    from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public' order by 1, 2`;
  const triggers = await sql`
    select tgrelid::regclass::text as tbl, tgname, pg_get_triggerdef(t.oid) as def
    from pg_trigger t where not tgisinternal order by 1, 2`;
  return JSON.parse(
    JSON.stringify({ columns, indexes, constraints, enums, functions, triggers }),
  );
}

async function enumLabels(sql: Sql, type: string): Promise<string[]> {
  const rows = await sql`
    select e.enumlabel from pg_enum e join pg_type t on t.oid = e.enumtypid
    where t.typname = ${type} order by e.enumsortorder`;
  return rows.map((row) => row.enumlabel as string);
}

async function publicTables(sql: Sql): Promise<string[]> {
  const rows = await sql`
    select table_name from information_schema.tables
    where table_schema = 'public' and table_type = 'BASE TABLE' order by table_name`;
  return rows.map((row) => row.table_name as string);
}

/** Runs `query` and returns the domain error it fails with. */
async function failure(query: Promise<unknown>): Promise<Error> {
  try {
    await query;
  } catch (error) {
    return mapDbError(error);
  }
  throw new assert.AssertionError({ message: "Expected the statement to fail" });
}

async function withSymbol(sql: Sql, symbol = "BTC-USDT"): Promise<void> {
  await upsertSymbols(sql, [{ symbol }]);
}

Deno.test("trading migration creates every table, and the enums match the TypeScript lists", async () => {
  await using db = await migratedDatabase();
  const tables = await publicTables(db.sql);
  for (const table of TRADING_TABLES) assert.ok(tables.includes(table), `table ${table}`);
  assert.deepEqual(await enumLabels(db.sql, "order_side"), [...ORDER_SIDES]);
  assert.deepEqual(await enumLabels(db.sql, "order_type"), [...ORDER_TYPES]);
  assert.deepEqual(await enumLabels(db.sql, "time_in_force"), [...TIMES_IN_FORCE]);
  assert.deepEqual(await enumLabels(db.sql, "order_status"), [...ORDER_STATUSES]);
  assert.deepEqual(await enumLabels(db.sql, "signal_status"), [...SIGNAL_STATUSES]);
  assert.deepEqual(await enumLabels(db.sql, "alert_severity"), [...ALERT_SEVERITIES]);
  const money = await db.sql`
    select table_name, column_name, numeric_precision, numeric_scale
    from information_schema.columns
    where table_schema = 'public' and data_type = 'numeric'
      and (numeric_precision, numeric_scale) is distinct from (20, 8)`;
  // Money is NUMERIC(20,8); a position's cost basis (Σ qty × price, each of 8 decimals) is
  // kept exact at 16 (migration 0004).
  assert.deepEqual(
    [...money].map((row) => ({ ...row })),
    [{
      table_name: "positions",
      column_name: "cost_basis",
      numeric_precision: 38,
      numeric_scale: 16,
    }],
    "every other NUMERIC column is NUMERIC(20,8)",
  );
  const [portfolio] = await db.sql`select id, cash, starting_cash from portfolios`;
  // Pristine: the engine initialises it with portfolio.starting_cash (stored then, migration 0005).
  assert.deepEqual({ ...portfolio }, { id: "default", cash: "0.00000000", starting_cash: null });
  const indexes = (await db.sql`select indexname from pg_indexes where schemaname = 'public'`)
    .map((row) => row.indexname as string);
  for (
    const index of [
      "orders_symbol_status_idx",
      "orders_created_at_idx",
      "orders_broker_order_id_key",
      "orders_open_idx",
      "orders_unsubmitted_idx",
      "fills_filled_at_idx",
      "fills_broker_fill_id_key",
      "signals_idempotency_key",
      "alerts_unresolved_idx",
    ]
  ) {
    assert.ok(indexes.includes(index), `index ${index}`);
  }
  const triggers = await db.sql`
    select tgrelid::regclass::text as tbl from pg_trigger
    where not tgisinternal and tgname like '%touch_updated_at'`;
  const withUpdatedAt = await db.sql`
    select table_name from information_schema.columns
    where table_schema = 'public' and column_name = 'updated_at'`;
  assert.deepEqual(
    triggers.map((row) => row.tbl).sort(),
    withUpdatedAt.map((row) => row.table_name).sort(),
    "every table with updated_at has the trigger",
  );
});

Deno.test("trading migration reverts completely and re-applies to an identical catalog", async () => {
  await using db = await migratedDatabase();
  const before = await catalogDump(db.sql);
  // Down to version 1: 0003 (what the one-statement trading writes need), 0004 (the cost
  // basis) and 0005 (the portfolios' starting cash) go too.
  const down = await db.migrator.down(1, { only: "postgres" });
  // Every migration after 0001, newest first.
  const later = (await db.migrator.load("postgres")).map((m) => m.version).filter((v) => v > 1);
  assert.deepEqual(down.postgres?.reverted.map((m) => m.version), [...later].reverse());
  assert.deepEqual(await publicTables(db.sql), ["engine_runs", "schema_migrations"]);
  const leftovers = await db.sql`
    select t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace
    where n.nspname = 'public' and t.typtype = 'e'
    union all
    select p.proname from pg_proc p join pg_namespace n on n.oid = p.pronamespace
    where n.nspname = 'public'`;
  assert.deepEqual([...leftovers], [], "no enum or function is left behind");
  const up = await db.migrator.up(undefined, { only: "postgres" });
  assert.deepEqual(up.postgres?.applied.map((m) => m.version), later);
  assert.deepEqual(await catalogDump(db.sql), before);
});

Deno.test("orders refuse a non-positive quantity, an overfill and prices their type does not allow", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const base = { symbol: "BTC-USDT", side: "buy", strategy: "s" } as const;
  for (const qty of ["-1", "0"]) {
    const error = await failure(insertOrder(db.sql, { ...base, qty }));
    assert.ok(error instanceof IntegrityError, String(error));
    // PostgreSQL checks constraints in name order: -1 already breaks filled_qty <= qty.
    assert.ok(
      ["orders_qty_positive", "orders_filled_qty_range"].includes(error.constraint ?? ""),
      error.constraint,
    );
    assert.equal(error.code, "23514");
  }
  const limitWithoutPrice = await failure(
    insertOrder(db.sql, { ...base, qty: "1", type: "limit" }),
  );
  assert.ok(limitWithoutPrice instanceof IntegrityError);
  assert.equal(limitWithoutPrice.constraint, "orders_limit_price_by_type");
  const marketWithPrice = await failure(
    insertOrder(db.sql, { ...base, qty: "1", limit_price: "100" }),
  );
  assert.ok(marketWithPrice instanceof IntegrityError);
  const negativePrice = await failure(
    insertOrder(db.sql, { ...base, qty: "1", type: "stop", stop_price: "-5" }),
  );
  assert.ok(negativePrice instanceof IntegrityError);
  assert.equal(negativePrice.constraint, "orders_stop_price_positive");
  const unknownSymbol = await failure(insertOrder(db.sql, { ...base, symbol: "NOPE", qty: "1" }));
  assert.ok(unknownSymbol instanceof IntegrityError);
  assert.equal(unknownSymbol.code, "23503");

  const order = await insertOrder(db.sql, { ...base, qty: "2" });
  const overfill = await failure(updateOrderStatus(db.sql, order.id, {
    from: "pending",
    to: "partially_filled",
    filled_qty: "2.00000001",
    avg_fill_price: "10",
  }));
  assert.ok(overfill instanceof IntegrityError);
  assert.equal(overfill.constraint, "orders_filled_qty_range");
  const filledShort = await failure(updateOrderStatus(db.sql, order.id, {
    from: "pending",
    to: "filled",
    filled_qty: "1",
    avg_fill_price: "10",
  }));
  assert.ok(filledShort instanceof IntegrityError);
  assert.equal(filledShort.constraint, "orders_filled_status");
  const [count] = await db.sql`select count(*)::int as n from orders`;
  assert.equal(count?.n, 1);
});

Deno.test("a duplicate client order id is a ConflictError and a duplicate signal id returns the stored signal", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const order = { symbol: "BTC-USDT", side: "sell", qty: "1", strategy: "s" } as const;
  await insertOrder(db.sql, { ...order, client_order_id: "c-1" });
  const duplicate = await failure(insertOrder(db.sql, { ...order, client_order_id: "c-1" }));
  assert.ok(duplicate instanceof ConflictError, String(duplicate));
  assert.equal(duplicate.constraint, "orders_client_order_id_key");
  assert.equal(duplicate.code, "23505");

  const signal = { strategy: "momentum", client_signal_id: "sig-1", source: "nats" } as const;
  const first = await insertSignal(db.sql, { ...signal, payload: { qty: "1" } });
  const again = await insertSignal(db.sql, { ...signal, payload: { qty: "2" } });
  assert.equal(first.created, true);
  assert.equal(again.created, false);
  assert.deepEqual(again.signal, first.signal);
  const [count] = await db.sql`select count(*)::int as n from signals`;
  assert.equal(count?.n, 1);

  const withOrder = await insertOrder(db.sql, { ...order, signal_id: first.signal.id });
  const secondOrder = await failure(insertOrder(db.sql, { ...order, signal_id: first.signal.id }));
  assert.ok(secondOrder instanceof ConflictError);
  assert.equal(secondOrder.constraint, "orders_signal_id_key");
  assert.equal(
    (await findOrderByClientOrderId(db.sql, withOrder.client_order_id))?.id,
    withOrder.id,
  );
});

Deno.test("a fill delivered twice is stored once, and fills refuse non-positive quantities and prices", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const order = await insertOrder(db.sql, {
    symbol: "BTC-USDT",
    side: "buy",
    qty: "1",
    strategy: "s",
  });
  const fill = {
    order_id: order.id,
    broker_fill_id: "exec-1",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.4",
    price: "50000",
    filled_at: new Date("2025-01-02T10:00:00Z"),
  } as const;
  const first = await insertFill(db.sql, fill);
  const second = await insertFill(db.sql, { ...fill, qty: "0.5" });
  assert.equal(first.created, true);
  assert.equal(second.created, false);
  assert.equal(second.fill.id, first.fill.id);
  assert.equal(second.fill.qty, "0.40000000");
  const raw = await failure(db.sql`
    insert into fills (order_id, broker_fill_id, symbol, side, qty, price, filled_at)
    values (${order.id}, 'exec-1', 'BTC-USDT', 'buy', 1, 1, now())`);
  assert.ok(raw instanceof ConflictError);
  assert.equal(raw.constraint, "fills_broker_fill_id_key");
  for (
    const [qty, price, constraint] of [["0", "1", "fills_qty_positive"], [
      "1",
      "-1",
      "fills_price_positive",
    ]]
  ) {
    const error = await failure(
      insertFill(db.sql, {
        ...fill,
        broker_fill_id: `bad-${constraint}`,
        qty: qty!,
        price: price!,
      }),
    );
    assert.ok(error instanceof IntegrityError);
    assert.equal(error.constraint, constraint);
  }
  const [count] = await db.sql`select count(*)::int as n from fills`;
  assert.equal(count?.n, 1);
});

Deno.test("signals, positions and alerts refuse inconsistent rows", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const rejectedWithoutReasons = await failure(db.sql`
    insert into signals (strategy, client_signal_id, source, payload, status, decided_at)
    values ('s', 'x', 'rest', '{}', 'rejected', now())`);
  assert.ok(rejectedWithoutReasons instanceof IntegrityError);
  assert.equal(rejectedWithoutReasons.constraint, "signals_rejected_has_reasons");
  const unknownSource = await failure(db.sql`
    insert into signals (strategy, client_signal_id, source, payload) values ('s', 'y', 'fax', '{}')`);
  assert.ok(unknownSource instanceof IntegrityError);
  const openWithoutPrice = await failure(
    upsertPosition(db.sql, {
      symbol: "BTC-USDT",
      qty: "1",
      avg_entry_price: "0",
      realized_pnl: "0",
    }),
  );
  assert.ok(openWithoutPrice instanceof IntegrityError);
  assert.equal(openWithoutPrice.constraint, "positions_avg_entry_price");
  const resolvedWithoutTime = await failure(db.sql`
    insert into alerts (severity, source, message, resolved) values ('info', 'test', 'm', true)`);
  assert.ok(resolvedWithoutTime instanceof IntegrityError);
  assert.equal(resolvedWithoutTime.constraint, "alerts_resolved_at");
  const badEnum = await failure(db.sql`
    insert into orders (symbol, side, qty, strategy) values ('BTC-USDT', 'hold', 1, 's')`);
  assert.ok(badEnum instanceof IntegrityError);
  assert.equal(badEnum.code, "22P02");
});

Deno.test("updated_at follows real changes only, created_at never moves", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const order = await insertOrder(db.sql, {
    symbol: "BTC-USDT",
    side: "buy",
    qty: "1",
    strategy: "s",
  });
  assert.equal(order.updated_at.getTime(), order.created_at.getTime());
  const [noop] = await db.sql`
    update orders set status = status, updated_by = updated_by where id = ${order.id}
    returning updated_at`;
  assert.equal(noop?.updated_at.getTime(), order.updated_at.getTime());
  const [before] = await db.sql`select updated_at::text as at from orders where id = ${order.id}`;
  const updated = await updateOrderStatus(db.sql, order.id, { from: "pending", to: "submitted" });
  const [after] = await db.sql`
    select updated_at::text as at, updated_at > created_at as later, created_at
    from orders where id = ${order.id}`;
  assert.notEqual(after?.at, before?.at);
  assert.equal(after?.later, true);
  assert.equal(after?.created_at.getTime(), order.created_at.getTime());
  assert.ok(updated.updated_at.getTime() >= order.updated_at.getTime());
  const [config] = await db.sql`
    insert into config (key, value) values ('k', '1') returning created_at, updated_at`;
  const [changed] = await db.sql`
    update config set value = '2' where key = 'k' returning updated_at > ${config?.created_at} as later`;
  assert.equal(changed?.later, true);
});

Deno.test("NUMERIC(20,8) round-trips exactly as strings, and values that would round are refused", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const order = await insertOrder(db.sql, {
    symbol: "BTC-USDT",
    side: "buy",
    type: "stop_limit",
    qty: "0.00000001",
    limit_price: "123456789012.12345678",
    stop_price: new Decimal("999999999999.99999999"),
    strategy: "s",
  });
  assert.equal(order.qty, "0.00000001");
  assert.equal(order.limit_price, "123456789012.12345678");
  assert.equal(order.stop_price, "999999999999.99999999");
  const [row] = await db.sql`select qty, limit_price, qty + qty as doubled from orders`;
  assert.equal(row?.qty, "0.00000001");
  assert.equal(row?.limit_price, "123456789012.12345678");
  assert.equal(row?.doubled, "0.00000002");
  const position = await upsertPosition(db.sql, {
    symbol: "BTC-USDT",
    qty: "-0.1",
    avg_entry_price: "0.2",
    realized_pnl: "-123456789012.12345678",
  });
  assert.equal(position.qty, "-0.10000000");
  assert.equal(position.realized_pnl, "-123456789012.12345678");

  assert.equal(toNumeric("0.000000010", "x"), "0.000000010");
  assert.throws(() => toNumeric("0.000000001", "qty"), RangeError);
  assert.throws(() => toNumeric("1234567890123", "qty"), RangeError);
  assert.throws(() => toNumeric("1e-8", "qty"), TypeError);
  assert.throws(() => toNumeric(0.1 as unknown as string, "qty"), TypeError);
  await assert.rejects(
    insertOrder(db.sql, { symbol: "BTC-USDT", side: "buy", qty: "1.000000001", strategy: "s" }),
    RangeError,
  );
  const [count] = await db.sql`select count(*)::int as n from orders`;
  assert.equal(count?.n, 1);
});

Deno.test("orders persisted before the broker call stay in the outbox until acknowledged", async () => {
  await using db = await migratedDatabase();
  await withSymbol(db.sql);
  const base = { symbol: "BTC-USDT", side: "buy", qty: "1", strategy: "s" } as const;
  const a = await insertOrder(db.sql, base);
  const b = await insertOrder(db.sql, base);
  const c = await insertOrder(db.sql, base);
  assert.equal(a.submitted_at, null);
  const acked = await updateOrderStatus(db.sql, b.id, {
    from: "pending",
    to: "submitted",
    broker_order_id: "broker-b",
  });
  assert.ok(acked.submitted_at instanceof Date);
  assert.equal(acked.broker_order_id, "broker-b");
  await updateOrderStatus(db.sql, c.id, { from: "pending", to: "rejected", status_reason: "no" });
  const outbox = await listUnsubmittedOrders(db.sql);
  assert.deepEqual(outbox.map((o) => o.client_order_id), [a.client_order_id]);
});
