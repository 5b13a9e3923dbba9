/**
 * How the Alpaca adapter prices the fills its trade updates become when the
 * stream did not show every execution (pure functions, no services): a
 * `partial_fill` without its own `qty`, and the executions missed before a
 * fill.
 */

import assert from "node:assert/strict";
import { fillMissedBefore, tradeUpdateEvent } from "../brokers/alpaca.ts";
import { parseDecimal, toJson } from "../trading/money.ts";

/** Alpaca's documented `partial_fill` (no `qty`) of an order filled `filled` at `avg` so far. */
function partialFill(filled: string, avg: string, extra: Record<string, unknown> = {}) {
  return {
    event: "partial_fill",
    execution_id: `e-${filled}`,
    price: "52",
    ...extra,
    order: {
      id: "o-1",
      client_order_id: "c-1",
      symbol: "AAPL",
      status: "partially_filled",
      side: "buy",
      qty: "10",
      filled_qty: filled,
      filled_avg_price: avg,
    },
  };
}

Deno.test("alpaca fill without qty is priced at the average of the executions since the update seen before", () => {
  // Seen: 2 @ 49. Now 6 at 50.5 on average: the 4 since cost 303 − 98 = 205, 51.25 each.
  const event = tradeUpdateEvent(
    partialFill("6", "50.5"),
    parseDecimal("2"),
    0,
    parseDecimal("49"),
  );
  assert.ok(event?.type === "fill");
  assert.equal(toJson(event.qty), "4");
  assert.equal(toJson(event.price), "51.25");
  assert.equal(event.qty_derived, true);
  // Rounded to 8 decimals, as fills are stored: (10 × 4 − 1 × 9) / 3.
  const third = tradeUpdateEvent(partialFill("4", "10"), parseDecimal("1"), 0, parseDecimal("9"));
  assert.ok(third?.type === "fill");
  assert.equal(toJson(third.price), "10.33333333");
});

Deno.test("alpaca fill without qty after a restart is all of the order's executions at its average", () => {
  const event = tradeUpdateEvent(partialFill("6", "50.5"), null, 0);
  assert.ok(event?.type === "fill");
  assert.equal(toJson(event.qty), "6");
  assert.equal(toJson(event.price), "50.5");
  assert.equal(toJson(event.cum_qty!), "6");
});

Deno.test("alpaca fill with its own qty keeps the execution's price", () => {
  const event = tradeUpdateEvent(
    partialFill("6", "50.5", { qty: "1" }),
    parseDecimal("2"),
    0,
    parseDecimal("49"),
  );
  assert.ok(event?.type === "fill");
  assert.equal(toJson(event.qty), "1");
  assert.equal(toJson(event.price), "52");
  assert.equal(event.qty_derived, undefined);
});

Deno.test("alpaca fill whose filled_qty shows executions the stream missed is preceded by a fill for them", () => {
  // Seen: 2 @ 49. Now an execution of 1 @ 52 with filled_qty 6 at 50.5: 3 were missed.
  const fill = tradeUpdateEvent(
    partialFill("6", "50.5", { qty: "1" }),
    parseDecimal("2"),
    7,
    parseDecimal("49"),
  );
  assert.ok(fill?.type === "fill");
  const previous = { filled_qty: parseDecimal("2"), filled_avg_price: parseDecimal("49") };
  const missed = fillMissedBefore(fill, parseDecimal("50.5"), previous);
  assert.ok(missed !== null);
  assert.equal(missed.fill_id, "o-1:5");
  assert.equal(toJson(missed.qty), "3");
  assert.equal(toJson(missed.price), "51"); // (50.5 × 6 − 52 − 98) / 3
  assert.equal(toJson(missed.cum_qty!), "5");
  assert.equal(missed.qty_derived, true);
  assert.equal(missed.at_ms, 7);
  // Nothing seen before (a restart): all 5 before it, at their average.
  const all = fillMissedBefore(fill, parseDecimal("50.5"), null);
  assert.equal(`${toJson(all!.qty)} @ ${toJson(all!.price)}`, "5 @ 50.2"); // (303 − 52) / 5
  // Nothing missed: the fill follows what was seen.
  const seen5 = { filled_qty: parseDecimal("5"), filled_avg_price: parseDecimal("50.2") };
  assert.equal(fillMissedBefore(fill, parseDecimal("50.5"), seen5), null);
  // A derived fill counts from the cumulative quantity already.
  const derived = tradeUpdateEvent(partialFill("6", "50.5"), parseDecimal("2"), 0);
  assert.ok(derived?.type === "fill");
  assert.equal(fillMissedBefore(derived, parseDecimal("50.5"), previous), null);
});

Deno.test("alpaca fills carry the order's average over their cumulative quantity for the engine to price a part from", () => {
  // A derived fill: Alpaca's filled_avg_price over filled_qty.
  const derived = tradeUpdateEvent(
    partialFill("6", "50.5"),
    parseDecimal("2"),
    0,
    parseDecimal("49"),
  );
  assert.ok(derived?.type === "fill");
  assert.equal(`${toJson(derived.cum_qty!)} @ ${toJson(derived.cum_avg_price!)}`, "6 @ 50.5");
  // The executions missed before a fill: the average at their cumulative quantity, (303 − 52) / 5.
  const fill = tradeUpdateEvent(partialFill("6", "50.5", { qty: "1" }), parseDecimal("2"), 0);
  assert.ok(fill?.type === "fill");
  const previous = { filled_qty: parseDecimal("2"), filled_avg_price: parseDecimal("49") };
  const missed = fillMissedBefore(fill, parseDecimal("50.5"), previous);
  assert.equal(`${toJson(missed!.cum_qty!)} @ ${toJson(missed!.cum_avg_price!)}`, "5 @ 50.2");
  // Without an average from Alpaca there is none.
  const bare = tradeUpdateEvent(
    {
      ...partialFill("6", "50.5", { qty: "1" }),
      order: { ...partialFill("6", "50.5").order, filled_avg_price: null },
    },
    null,
    0,
  );
  assert.ok(bare?.type === "fill");
  assert.equal(bare.cum_avg_price, undefined);
});
