import assert from "node:assert/strict";
import fc from "fast-check";
import { Decimal, parseDecimal as d, toJson, ZERO } from "../trading/money.ts";
import {
  applyFill,
  applyPortfolioFill,
  emptyPosition,
  markPosition,
  newPortfolio,
  type Portfolio,
  type PortfolioFill,
  portfolioValueToJson,
  type Position,
  type PositionFill,
  valuePortfolio,
} from "../trading/positions.ts";

function fill(side: "buy" | "sell", qty: string, price: string, fee = "0"): PositionFill {
  return { side, qty: d(qty), price: d(price), fee: d(fee) };
}

function replay(fills: PositionFill[], symbol = "AAPL"): Position {
  return fills.reduce(applyFill, emptyPosition(symbol));
}

/** The position's figures as strings, for readable assertions. */
function view(position: Position) {
  return {
    qty: toJson(position.qty),
    avg: toJson(position.avg_entry_price),
    realized: toJson(position.realized_pnl),
    fees: toJson(position.fees),
  };
}

Deno.test("buys in parts average up by volume and realize nothing", () => {
  const position = replay([fill("buy", "10", "100"), fill("buy", "5", "106")]);
  assert.deepEqual(view(position), { qty: "15", avg: "102", realized: "0", fees: "0" });
  const marked = markPosition(position, d("110"));
  assert.equal(toJson(marked.unrealized_pnl), "120");
  assert.equal(toJson(marked.market_value), "1650");
  assert.equal(toJson(marked.mark_price), "110");
});

Deno.test("a partial close realizes against the average and keeps it; a full close flattens", () => {
  let position = replay([fill("buy", "10", "100"), fill("buy", "5", "106")]);
  position = applyFill(position, fill("sell", "5", "110"));
  assert.deepEqual(view(position), { qty: "10", avg: "102", realized: "40", fees: "0" });
  position = applyFill(position, fill("sell", "10", "99"));
  assert.deepEqual(view(position), { qty: "0", avg: "0", realized: "10", fees: "0" });
  assert.equal(toJson(markPosition(position, d("500")).unrealized_pnl), "0");
  assert.equal(position.qty.isNeg(), false, "flat is +0");
});

Deno.test("fees reduce realized P&L, on opening fills too", () => {
  let position = applyFill(emptyPosition("AAPL"), fill("buy", "10", "100", "1"));
  assert.deepEqual(view(position), { qty: "10", avg: "100", realized: "-1", fees: "1" });
  position = applyFill(position, fill("sell", "4", "110", "1"));
  assert.deepEqual(view(position), { qty: "6", avg: "100", realized: "38", fees: "2" });
  // A rebate (negative fee) adds.
  position = applyFill(position, fill("sell", "6", "100", "-0.5"));
  assert.deepEqual(view(position), { qty: "0", avg: "0", realized: "38.5", fees: "1.5" });
});

Deno.test("a long flips to a short through zero", () => {
  let position = replay([fill("buy", "2", "100"), fill("sell", "5", "90")]);
  // 2 closed at −10 each; 3 opened short at 90.
  assert.deepEqual(view(position), { qty: "-3", avg: "90", realized: "-20", fees: "0" });
  const marked = markPosition(position, d("85"));
  assert.equal(toJson(marked.unrealized_pnl), "15");
  assert.equal(toJson(marked.market_value), "-255");
  position = applyFill(position, fill("buy", "1", "80"));
  assert.deepEqual(view(position), { qty: "-2", avg: "90", realized: "-10", fees: "0" });
});

Deno.test("a short flips to a long through zero, with fees", () => {
  let position = applyFill(emptyPosition("BTC-USDT"), fill("sell", "4", "50", "0.2"));
  assert.deepEqual(view(position), { qty: "-4", avg: "50", realized: "-0.2", fees: "0.2" });
  position = applyFill(position, fill("buy", "10", "40", "0.5"));
  // 4 covered at +10 each = 40, minus both fees; 6 opened long at 40.
  assert.deepEqual(view(position), { qty: "6", avg: "40", realized: "39.3", fees: "0.7" });
});

Deno.test("shorts average by volume and gain when the mark falls", () => {
  const position = replay([fill("sell", "2", "100"), fill("sell", "2", "110")]);
  assert.deepEqual(view(position), { qty: "-4", avg: "105", realized: "0", fees: "0" });
  const marked = markPosition(position, d("100"));
  assert.equal(toJson(marked.unrealized_pnl), "20");
  assert.equal(toJson(marked.market_value), "-400");
});

Deno.test("fills with non-positive quantity or price are refused", () => {
  const position = emptyPosition("AAPL");
  assert.throws(() => applyFill(position, fill("buy", "0", "1")), RangeError);
  assert.throws(() => applyFill(position, fill("buy", "-1", "1")), RangeError);
  assert.throws(() => applyFill(position, fill("buy", "1", "0")), RangeError);
  // The fee is optional.
  assert.equal(toJson(applyFill(position, { side: "buy", qty: d("1"), price: d("2") }).fees), "0");
});

Deno.test("the portfolio keeps cash, equity and exposure from fills", () => {
  let portfolio = newPortfolio(d("10000"));
  portfolio = applyPortfolioFill(portfolio, { symbol: "AAPL", ...fill("buy", "10", "100", "1") });
  assert.equal(toJson(portfolio.cash), "8999");
  portfolio = applyPortfolioFill(portfolio, {
    symbol: "BTC-USD",
    ...fill("sell", "5", "200", "2"),
  });
  assert.equal(toJson(portfolio.cash), "9997");
  const marks = new Map([["AAPL", d("110")], ["BTC-USD", d("190")]]);
  const value = valuePortfolio(portfolio, (symbol) => marks.get(symbol));
  assert.deepEqual(portfolioValueToJson(value), {
    cash: "9997",
    equity: "10147",
    gross_exposure: "2050",
    net_exposure: "150",
    realized_pnl: "-3",
    unrealized_pnl: "150",
    total_pnl: "147",
    positions: [
      {
        symbol: "AAPL",
        qty: "10",
        avg_entry_price: "100",
        realized_pnl: "-1",
        fees: "1",
        mark_price: "110",
        market_value: "1100",
        unrealized_pnl: "100",
      },
      {
        symbol: "BTC-USD",
        qty: "-5",
        avg_entry_price: "200",
        realized_pnl: "-2",
        fees: "2",
        mark_price: "190",
        market_value: "-950",
        unrealized_pnl: "50",
      },
    ],
    unmarked: [],
  });
});

Deno.test("a position without a mark is valued at its entry price and listed unmarked", () => {
  let portfolio = newPortfolio(d("1000"));
  portfolio = applyPortfolioFill(portfolio, { symbol: "AAPL", ...fill("buy", "2", "100") });
  portfolio = applyPortfolioFill(portfolio, { symbol: "MSFT", ...fill("buy", "1", "50") });
  portfolio = applyPortfolioFill(portfolio, { symbol: "MSFT", ...fill("sell", "1", "60") });
  const value = valuePortfolio(portfolio, () => null);
  assert.deepEqual(value.unmarked, ["AAPL"], "flat MSFT needs no mark");
  assert.equal(toJson(value.equity), "1010");
  assert.equal(toJson(value.unrealized_pnl), "0");
  assert.equal(toJson(value.realized_pnl), "10");
  assert.equal(value.positions.length, 2, "flat positions stay, with their realized P&L");
});

Deno.test("applying a fill leaves the previous position and portfolio untouched", () => {
  const before = newPortfolio(d("100"));
  const after = applyPortfolioFill(before, { symbol: "AAPL", ...fill("buy", "1", "10") });
  assert.equal(before.positions.size, 0);
  assert.equal(toJson(before.cash), "100");
  assert.equal(after.positions.size, 1);
});

// ---- Property tests ----------------------------------------------------------

const TOLERANCE = new Decimal("1e-18");

function close(actual: Decimal, expected: Decimal, what: string): void {
  assert.ok(
    actual.minus(expected).abs().lte(TOLERANCE),
    `${what}: ${toJson(actual)} != ${toJson(expected)}`,
  );
}

/** A fill as integers: quantity in 1e-4 units, price and fee in cents. */
interface RawFill {
  side: "buy" | "sell";
  qtyUnits: number;
  priceCents: number;
  feeCents: number;
}

const rawFill: fc.Arbitrary<RawFill> = fc.record({
  side: fc.constantFrom("buy" as const, "sell" as const),
  qtyUnits: fc.integer({ min: 1, max: 5_000_000 }),
  priceCents: fc.integer({ min: 1, max: 10_000_000 }),
  feeCents: fc.integer({ min: 0, max: 10_000 }),
});

function toFill(raw: RawFill, symbol = "X"): PortfolioFill {
  return {
    symbol,
    side: raw.side,
    qty: d(raw.qtyUnits).dividedBy(10_000),
    price: d(raw.priceCents).dividedBy(100),
    fee: d(raw.feeCents).dividedBy(100),
  };
}

Deno.test("property: a position equals the sum of its fills", () => {
  fc.assert(
    fc.property(
      fc.array(rawFill, { minLength: 1, maxLength: 60 }),
      fc.integer({ min: 1, max: 10_000_000 }),
      (raws, markCents) => {
        const fills = raws.map((raw) => toFill(raw));
        const mark = d(markCents).dividedBy(100);
        const position = fills.reduce(applyFill, emptyPosition("X"));

        // Recomputed from the fills alone, by cash flows.
        let qty = ZERO;
        let cashFlow = ZERO;
        let fees = ZERO;
        for (const f of fills) {
          const notional = f.qty.times(f.price);
          qty = f.side === "buy" ? qty.plus(f.qty) : qty.minus(f.qty);
          cashFlow = f.side === "buy" ? cashFlow.minus(notional) : cashFlow.plus(notional);
          fees = fees.plus(f.fee!);
        }
        assert.ok(position.qty.eq(qty), "qty = Σ signed qty, exactly");
        assert.ok(position.fees.eq(fees), "fees = Σ fees, exactly");
        const marked = markPosition(position, mark);
        const total = cashFlow.plus(qty.times(mark)).minus(fees);
        close(marked.realized_pnl.plus(marked.unrealized_pnl), total, "realized + unrealized");
        assert.ok(marked.market_value.eq(qty.times(mark)));
        assert.equal(position.avg_entry_price.isZero(), position.qty.isZero());
        assert.ok(!position.avg_entry_price.isNeg());

        // The portfolio agrees: equity − starting cash is the same total.
        const start = d("1000000");
        const portfolio = fills.reduce(applyPortfolioFill, newPortfolio(start) as Portfolio);
        assert.ok(portfolio.cash.eq(start.plus(cashFlow).minus(fees)), "cash, exactly");
        const value = valuePortfolio(portfolio, () => mark);
        close(value.total_pnl, total, "equity − starting cash");
        close(value.realized_pnl.plus(value.unrealized_pnl), value.total_pnl, "P&L split");
        assert.ok(value.gross_exposure.eq(qty.times(mark).abs()));
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("property: splitting fills into partials at the same price changes nothing", () => {
  const splitFill = fc.tuple(
    rawFill,
    fc.array(fc.double({ min: 0, max: 1, noNaN: true }), {
      maxLength: 4,
    }),
  );
  fc.assert(
    fc.property(fc.array(splitFill, { minLength: 1, maxLength: 30 }), (items) => {
      const whole: PositionFill[] = [];
      const parts: PositionFill[] = [];
      for (const [raw, cuts] of items) {
        whole.push(toFill(raw));
        // Cut the quantity (and the fee alongside) at distinct interior points.
        const qtyCuts = [
          ...new Set(cuts.map((c) => Math.floor(c * raw.qtyUnits)).filter((c) => c > 0)),
        ].filter((c) => c < raw.qtyUnits).sort((a, b) => a - b);
        const bounds = [0, ...qtyCuts, raw.qtyUnits];
        let feeLeft = raw.feeCents;
        for (let i = 1; i < bounds.length; i++) {
          const units = bounds[i]! - bounds[i - 1]!;
          const last = i === bounds.length - 1;
          const fee = last ? feeLeft : Math.floor(raw.feeCents * units / raw.qtyUnits);
          feeLeft -= fee;
          parts.push(toFill({ ...raw, qtyUnits: units, feeCents: fee }));
        }
      }
      const a = replay(whole, "X");
      const b = replay(parts, "X");
      assert.ok(a.qty.eq(b.qty), "qty, exactly");
      assert.ok(a.fees.eq(b.fees), "fees, exactly");
      close(a.avg_entry_price, b.avg_entry_price, "average entry price");
      close(a.realized_pnl, b.realized_pnl, "realized P&L");
    }),
    { numRuns: 500 },
  );
});
