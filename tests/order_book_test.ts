import assert from "node:assert/strict";
import { compareDecimal, isZero, normalizeDecimal } from "../market/decimal.ts";
import { OrderBook } from "../market/order_book.ts";

Deno.test("normalizeDecimal gives one text for every spelling of a number", () => {
  assert.equal(normalizeDecimal("0.35130000"), "0.3513");
  assert.equal(normalizeDecimal("000100.000"), "100");
  assert.equal(normalizeDecimal("0"), "0");
  assert.equal(normalizeDecimal("0.0"), "0");
  for (const bad of ["", "-1", "1e5", "1.", ".5", "abc", "1,5", " 1"]) {
    assert.throws(() => normalizeDecimal(bad), TypeError);
  }
});

Deno.test("compareDecimal orders decimals exactly, beyond float precision", () => {
  assert.ok(compareDecimal("10", "9.99999999") > 0);
  assert.ok(compareDecimal("0.35130000", "0.3513") === 0);
  assert.ok(compareDecimal("0.1", "0.09") > 0);
  assert.ok(compareDecimal("12345678901234567.00000001", "12345678901234567.00000002") < 0);
  assert.ok(isZero("0.00000000") && isZero("0") && !isZero("0.00000001"));
});

Deno.test("order book keeps bids descending and asks ascending and removes zero levels", () => {
  const book = new OrderBook();
  book.replace([["100.0", "1"], ["101", "2"], ["99.5", "3"]], [["103", "1"], ["102.50", "4"]]);
  assert.deepEqual(book.levels("bid"), [["101", "2"], ["100.0", "1"], ["99.5", "3"]]);
  assert.deepEqual(book.levels("ask"), [["102.50", "4"], ["103", "1"]]);
  book.apply("bid", "100", "0.000");
  book.apply("ask", "102.5", "7");
  book.apply("ask", "104", "0");
  assert.deepEqual(book.levels("bid"), [["101", "2"], ["99.5", "3"]]);
  assert.deepEqual(book.levels("ask", 1), [["102.5", "7"]]);
  assert.deepEqual(book.size(), { bids: 2, asks: 2 });
  assert.equal(book.crossed(), false);
  book.apply("bid", "102.5", "1");
  assert.equal(book.crossed(), true);
  book.truncate(1);
  assert.deepEqual(book.size(), { bids: 1, asks: 1 });
  assert.deepEqual(book.top(), { bid: ["102.5", "1"], ask: ["102.5", "7"] });
});

Deno.test("order book refuses malformed decimals without changing", () => {
  const book = new OrderBook();
  book.replace([["1", "1"]], []);
  assert.throws(() => book.apply("bid", "NaN", "1"), TypeError);
  assert.throws(() => book.apply("bid", "2", "-1"), TypeError);
  assert.deepEqual(book.levels("bid"), [["1", "1"]]);
});

Deno.test("order book matches a sorted model over random updates", () => {
  let seed = 42;
  const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
  const book = new OrderBook();
  const model = new Map<number, string>();
  for (let i = 0; i < 5_000; i++) {
    const tick = Math.floor(random() * 200);
    const size = random() < 0.3 ? "0" : String(1 + Math.floor(random() * 9));
    book.apply("bid", (tick / 100).toFixed(2), size);
    if (size === "0") model.delete(tick);
    else model.set(tick, size);
  }
  const expected = [...model.entries()].sort((a, b) => b[0] - a[0]).map((
    [tick, size],
  ) => [(tick / 100).toFixed(2), size]);
  assert.deepEqual(book.levels("bid"), expected);
});
