/**
 * Reconciliation and an order whose submit is still on its way to the
 * broker: a pending order whose submit is in flight (the broker slow to
 * answer) is looked up by a reconciliation (the broker's stream came back)
 * while the kill switch is on. The broker does not know it yet; the order is
 * not closed behind the submit's back (the broker would then hold a live
 * order the engine calls cancelled) but left to its submit loop, which
 * cancels it.
 */

import assert from "node:assert/strict";
import { getOrder, listOrders } from "../db/mod.ts";
import { waitFor } from "./_helpers.ts";
import { FAST_SUBMIT_RETRIES, scratchEngine, SlowSubmitBroker } from "./_execution_engine.ts";

Deno.test("reconciliation with the kill switch on does not close a pending order whose submit is still in flight", async () => {
  await using h = await scratchEngine({
    broker: (paper) => new SlowSubmitBroker(paper),
    options: FAST_SUBMIT_RETRIES,
  });
  const { db, engine, broker, paper } = h;
  try {
    await engine.start();
    broker.holdSubmits = true;
    // A resting gtc limit buy (below the market): accepted, stored pending, its submit held.
    const [outcome] = await engine.processSignals([{
      body: {
        id: "k-1",
        symbol: "BTC-USDT",
        side: "buy",
        qty: "1",
        type: "limit",
        limit_price: "40000",
        time_in_force: "gtc",
      },
      strategy: "grid",
      source: "rest",
    }]);
    assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
    const orderId = outcome.status === "accepted" ? outcome.order.id : "";
    await waitFor(() => broker.submitsStarted >= 1, 5_000, "the submit to start");
    // The kill switch goes on without cancelling open orders.
    await engine.setKillSwitch({ active: true, reason: "test" });
    // The broker's stream comes back: the engine reconciles while the submit is still on its way.
    await broker.reconnected();
    await engine.reconcile();
    await engine.idle();
    // The submit lands at the broker.
    broker.releaseSubmits();
    await waitFor(() => broker.submitsDone >= 1, 5_000, "the submit to finish");
    await paper.settled();
    await engine.idle();
    // Let whatever the engine does about it happen (a cancel at the broker would show there).
    await waitFor(
      async () => {
        await paper.settled();
        await engine.idle();
        const open = (await paper.openOrders()).some((o) => o.client_order_id !== undefined);
        const row = await getOrder(db.sql, orderId);
        const dbOpen = !["filled", "cancelled", "expired", "rejected"].includes(row.status);
        return open === dbOpen;
      },
      5_000,
      "the broker and the database to agree",
    ).catch(() => {});
    const atBroker = await paper.openOrders();
    const row = await getOrder(db.sql, orderId);
    const orders = (await listOrders(db.sql, { limit: 10 })).items;
    assert.equal(orders.length, 1);
    // The broker has the order resting; the engine must not have it closed.
    const brokerOpen = atBroker.length > 0;
    const dbOpen = !["filled", "cancelled", "expired", "rejected"].includes(row.status);
    assert.equal(
      dbOpen,
      brokerOpen,
      `broker has ${atBroker.length} resting order(s), the database says ${row.status} ` +
        `(${row.status_reason ?? ""})`,
    );
  } finally {
    broker.releaseSubmits();
  }
});
