/**
 * Repository arguments that are not valid keys are refused before a round
 * trip with a `RangeError` (a bad argument, as the trading API's 400), never
 * reported after one as a broken schema rule (`IntegrityError`, SQLSTATE
 * 22xxx): ids outside 1..2^63-1 and unknown enum labels in list filters.
 */

import assert from "node:assert/strict";
import {
  findOrderBySignalId,
  getAlert,
  getOrder,
  getSignal,
  insertFill,
  listFills,
  listSignals,
  listUnresolvedAlerts,
  MAX_ROW_ID,
  NotFoundError,
  raiseAlert,
  recordSignalOutcome,
  resolveAlert,
  updateOrderStatus,
} from "../db/mod.ts";
import { migratedDatabase } from "./_postgres.ts";

/** 2^63: 19 digits like a real id, one past the largest `bigint`. */
const BEYOND_BIGINT = (MAX_ROW_ID + 1n).toString();

Deno.test("an id above the largest bigint is a RangeError in every repository function taking an id", async () => {
  await using db = await migratedDatabase(2);
  const calls: Record<string, (id: string) => Promise<unknown>> = {
    getOrder: (id) => getOrder(db.sql, id),
    updateOrderStatus: (id) => updateOrderStatus(db.sql, id, { from: "pending", to: "submitted" }),
    findOrderBySignalId: (id) => findOrderBySignalId(db.sql, id),
    getSignal: (id) => getSignal(db.sql, id),
    recordSignalOutcome: (id) => recordSignalOutcome(db.sql, id, { status: "accepted" }),
    getAlert: (id) => getAlert(db.sql, id),
    resolveAlert: (id) => resolveAlert(db.sql, id),
    listFills: (id) => listFills(db.sql, { order_id: id }),
    insertFill: (id) =>
      insertFill(db.sql, {
        order_id: id,
        broker_fill_id: "f-1",
        symbol: "AAPL",
        side: "buy",
        qty: "1",
        price: "1",
        filled_at: new Date(),
      }),
  };
  for (const [name, call] of Object.entries(calls)) {
    await assert.rejects(call(BEYOND_BIGINT), RangeError, name);
    await assert.rejects(call("0"), RangeError, name);
  }
});

Deno.test("the largest bigint is still a valid id: not found, not refused", async () => {
  await using db = await migratedDatabase(2);
  const max = MAX_ROW_ID.toString();
  await assert.rejects(getOrder(db.sql, max), NotFoundError);
  await assert.rejects(getAlert(db.sql, max), NotFoundError);
  assert.equal(await findOrderBySignalId(db.sql, max), null);
  assert.deepEqual((await listFills(db.sql, { order_id: max })).items, []);
});

Deno.test("an unknown signal status or alert severity in a list filter is a RangeError", async () => {
  await using db = await migratedDatabase(2);
  await raiseAlert(db.sql, { source: "test", severity: "warning", message: "m" });
  await assert.rejects(listSignals(db.sql, { status: "bogus" as never }), RangeError);
  await assert.rejects(
    listUnresolvedAlerts(db.sql, { minSeverity: "bogus" as never }),
    RangeError,
  );
  assert.equal((await listUnresolvedAlerts(db.sql, { minSeverity: "warning" })).length, 1);
  assert.deepEqual((await listSignals(db.sql, { status: "received" })).items, []);
});
