/**
 * Cancelling a resting paper order through the engine (what
 * `DELETE /api/v1/trading/orders/{id}` calls): it never fills afterwards, also when the cancel
 * came while its submit was on its way to the paper broker.
 */

import assert from "node:assert/strict";
import { getOrder, listFills } from "../db/mod.ts";
import { btcUsdtTop, scratchEngine, SlowSubmitBroker } from "./_execution_engine.ts";
import { waitFor } from "./_helpers.ts";

const LIMIT = {
  symbol: "BTC-USDT",
  side: "buy",
  qty: "0.1",
  type: "limit",
  limit_price: "49000",
  time_in_force: "gtc",
};

Deno.test("a resting paper order cancelled through the engine never fills later, also one cancelled while its submit was on its way", async () => {
  await using h = await scratchEngine({ broker: (p) => new SlowSubmitBroker(p) });
  await h.engine.start();
  const [a] = await h.engine.processSignals([{
    body: { ...LIMIT, id: "c-a" },
    strategy: "cancel",
    source: "rest",
  }]);
  const idA = a!.status === "accepted" ? a!.order.id : "";
  await waitFor(async () => (await getOrder(h.db.sql, idA)).status === "submitted", 5_000, "sub");
  await h.engine.cancelOrder(idA);

  // The second one is cancelled while its submit is held on the way to the paper broker.
  h.broker.holdSubmits = true;
  const [b] = await h.engine.processSignals([{
    body: { ...LIMIT, id: "c-b" },
    strategy: "cancel",
    source: "rest",
  }]);
  const idB = b!.status === "accepted" ? b!.order.id : "";
  await waitFor(() => h.broker.submitsStarted === 2, 5_000, "second submit started");
  await h.engine.cancelOrder(idB);
  h.broker.releaseSubmits();
  await waitFor(() => h.broker.submitsDone === 2, 5_000, "second submit done");

  await waitFor(
    async () => {
      const [x, y] = [await getOrder(h.db.sql, idA), await getOrder(h.db.sql, idB)];
      return x.status === "cancelled" && y.status === "cancelled";
    },
    5_000,
    "both cancelled",
  );
  // The market falls through both limits.
  h.cache.update([btcUsdtTop({ bidPrice: "48000", askPrice: "48001" })]);
  assert.equal(h.paper.onPrice("binance", "BTC-USDT"), 0);
  await h.paper.settled();
  await h.engine.settled();
  for (const id of [idA, idB]) {
    assert.equal((await getOrder(h.db.sql, id)).status, "cancelled");
    assert.equal((await listFills(h.db.sql, { order_id: id, limit: 5 })).items.length, 0);
  }
  assert.equal(h.paper.stats().resting, 0);
});
