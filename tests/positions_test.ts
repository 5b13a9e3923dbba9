import assert from "node:assert/strict";
import fc from "fast-check";
import { Decimal, parseDecimal as d, toJson, ZERO } from "../trading/money.ts";
import {
  applyFill,
  applyFillWithTrade,
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
import { type AppliedFill, PortfolioState, roundMoney } from "../trading/portfolio_state.ts";
import { RecordingClock } from "../lib/clock.ts";

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
  assert.equal(toJson(marked.mark_price!), "110");
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

Deno.test("a position without a mark is valued at cost, listed unmarked and shown without a mark price", () => {
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
  // Its entry price is no price any venue quoted: the JSON (snapshots, positions.<symbol>)
  // shows no mark, as GET /positions does.
  const [aapl] = portfolioValueToJson(value).positions;
  assert.deepEqual(
    [aapl?.mark_price, aapl?.market_value, aapl?.unrealized_pnl],
    [null, "200", "0"],
  );
  assert.equal(markPosition(portfolio.positions.get("AAPL")!, null).mark_price, null);
});

Deno.test("applying a fill leaves the previous position and portfolio untouched", () => {
  const before = newPortfolio(d("100"));
  const after = applyPortfolioFill(before, { symbol: "AAPL", ...fill("buy", "1", "10") });
  assert.equal(before.positions.size, 0);
  assert.equal(toJson(before.cash), "100");
  assert.equal(after.positions.size, 1);
});

Deno.test("a closing fill's trade is charged its opening fees and its own share of the fee, not the opened part's", () => {
  const long = replay([fill("buy", "10", "101", "1.01")], "BTC-USDT");
  assert.equal(toJson(long.open_fees!), "1.01");
  // A flip: closes 10 (+10), opens a short of 100 with 100/110 of the fee.
  const flip = applyFillWithTrade(long, fill("sell", "110", "102", "11.22"));
  assert.equal(toJson(flip.trade_pnl!), "7.97", "10 − 1.01 − 1.02: a win");
  assert.equal(toJson(flip.position.realized_pnl), "-2.23", "realized still expenses every fee");
  assert.equal(toJson(flip.position.open_fees!), "10.2");
  // A round trip that gains less than its fees: a loss, though the fill alone realizes +0.4885.
  const trip = applyFillWithTrade(long, fill("sell", "10", "101.15", "1.0115"));
  assert.equal(toJson(trip.trade_pnl!), "-0.5215");
  assert.equal(toJson(trip.position.open_fees!), "0", "flat: no opening fees left");
  // Opening or adding closes no trade; adding accumulates the fees; a reduction releases its share.
  const added = applyFillWithTrade(long, fill("buy", "10", "103", "1.03"));
  assert.equal(added.trade_pnl, null);
  assert.equal(toJson(added.position.open_fees!), "2.04");
  const part = applyFillWithTrade(added.position, fill("sell", "5", "110", "0.55"));
  // 5 × (110 − 102) − 5/20 × 2.04 − 0.55
  assert.equal(toJson(part.trade_pnl!), "38.94");
  assert.equal(toJson(part.position.open_fees!), "1.53");
  // A short's trade: covered below its entry.
  const short = replay([fill("sell", "4", "50", "0.2")]);
  assert.equal(
    toJson(applyFillWithTrade(short, fill("buy", "4", "45", "0.18")).trade_pnl!),
    "19.62",
  );
});

// ---- Property tests ----------------------------------------------------------

const TOLERANCE = new Decimal("1e-18");

function close(actual: Decimal, expected: Decimal, what: string): void {
  within(actual, expected, TOLERANCE, what);
}

function within(actual: Decimal, expected: Decimal, tolerance: Decimal, what: string): void {
  assert.ok(
    actual.minus(expected).abs().lte(tolerance.plus(TOLERANCE)),
    `${what}: ${toJson(actual)} != ${toJson(expected)} (±${toJson(tolerance)})`,
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

Deno.test("property: back to flat, the trades closed sum to the realized P&L — every fee charged once", () => {
  fc.assert(
    fc.property(fc.array(rawFill, { minLength: 1, maxLength: 60 }), (raws) => {
      let position = emptyPosition("X");
      let trades = ZERO;
      let shares = 0;
      for (const raw of raws) {
        const effect = applyFillWithTrade(position, toFill(raw));
        position = effect.position;
        if (effect.trade_pnl !== null) trades = trades.plus(effect.trade_pnl);
        shares += 3; // at most three shares rounded to 16 decimals per fill
      }
      if (!position.qty.isZero()) {
        const last = applyFillWithTrade(position, {
          side: position.qty.isNeg() ? "buy" : "sell",
          qty: position.qty.abs(),
          price: d("1"),
          fee: d("0.01"),
        });
        position = last.position;
        trades = trades.plus(last.trade_pnl!);
      }
      assert.ok(position.open_fees!.isZero(), "flat: no opening fees left");
      within(trades, position.realized_pnl, new Decimal(shares).times("0.5e-16"), "Σ trades");
    }),
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
      // Each part that reduces releases its share of the basis rounded to 16 decimals.
      const released = new Decimal(parts.length + whole.length).times("0.5e-16");
      within(a.cost_basis!, b.cost_basis!, released, "cost basis");
      within(a.realized_pnl, b.realized_pnl, released, "realized P&L");
      if (!a.qty.isZero()) {
        within(a.avg_entry_price, b.avg_entry_price, released.dividedBy(a.qty.abs()), "average");
      }
    }),
    { numRuns: 500 },
  );
});

// ---- Exact cost basis (realized P&L equals what cash says) ------------------------------

const DAY0 = Date.parse("2026-03-02T15:00:00Z");

function trackedState(startingCash: string): PortfolioState {
  return new PortfolioState({ starting_cash: startingCash, clock: new RecordingClock(DAY0) });
}

function track(state: PortfolioState, f: PositionFill, symbol = "X"): AppliedFill {
  return state.applyFill({
    symbol,
    side: f.side,
    qty: f.qty,
    price: f.price,
    fee: f.fee ?? ZERO,
    filled_at: DAY0,
  });
}

Deno.test("a round trip to flat on a low-priced asset realizes exactly the cash it moved", () => {
  const fills = [
    fill("buy", "1000000000", "0.00001236"),
    fill("buy", "2000000000", "0.00001235"),
    fill("sell", "3000000000", "0.00001235"),
  ];
  // Paid 12,360 + 24,700 = 37,060; got back 37,050.
  const opened = replay(fills.slice(0, 2));
  assert.equal(toJson(opened.cost_basis!), "37060");
  assert.equal(toJson(markPosition(opened, d("0.00001235")).unrealized_pnl), "-10");
  assert.equal(toJson(replay(fills).realized_pnl), "-10");

  const state = trackedState("100000");
  const applied = fills.map((f) => track(state, f));
  // Shown rounded (the exact average is 0.0000123533…), kept exact underneath.
  assert.equal(toJson(applied[1]!.position.avg_entry_price), "0.00001235");
  assert.equal(toJson(applied[1]!.position.cost_basis!), "37060");
  assert.equal(toJson(applied[2]!.realized), "-10");
  assert.ok(state.position("X").qty.isZero());
  assert.equal(toJson(state.cash.minus(state.starting_cash)), "-10");
  assert.equal(toJson(state.realizedToday(DAY0)), "-10", "the daily loss limit sees the loss");
  assert.equal(toJson(state.realizedTotal()), "-10");
});

Deno.test("closing a low-priced position in parts realizes each part rounded once, summing to the cash", () => {
  const state = trackedState("100000");
  track(state, fill("buy", "1000000000", "0.00001236"));
  track(state, fill("buy", "2000000000", "0.00001235"));
  // A third of 37,060 is released: 12,350 − 12,353.3333333333333333 = −3.33333333 (rounded once).
  const first = track(state, fill("sell", "1000000000", "0.00001235"));
  assert.equal(toJson(first.realized), "-3.33333333");
  assert.equal(toJson(first.position.cost_basis!), "24706.6666666666666667");
  assert.equal(toJson(first.position.avg_entry_price), "0.00001235", "kept when it shrinks");
  const second = track(state, fill("sell", "2000000000", "0.00001235"));
  assert.equal(toJson(second.realized), "-6.66666667");
  assert.equal(toJson(state.realizedToday(DAY0)), "-10");
  assert.equal(toJson(state.cash.minus(state.starting_cash)), "-10");
});

Deno.test("1,000 small fills at odd prices: the average entry is the exact one, rounded once", () => {
  const state = trackedState("1000000");
  let cost = ZERO;
  let qty = ZERO;
  for (let i = 0; i < 1000; i++) {
    const price = d((100 + ((i * 7919) % 1000) / 997).toFixed(8));
    const f = fill("buy", "0.00123457", price.toFixed());
    track(state, f);
    cost = cost.plus(f.qty.times(f.price));
    qty = qty.plus(f.qty);
  }
  const position = state.position("X");
  assert.ok(position.cost_basis!.eq(cost), "the basis is Σ qty × price, exactly");
  assert.equal(toJson(position.avg_entry_price), toJson(roundMoney(cost.dividedBy(qty))));
  // Selling it all realizes the proceeds less the exact basis, rounded once.
  const sold = track(state, fill("sell", toJson(qty), "101"));
  assert.equal(toJson(sold.realized), toJson(roundMoney(qty.times(101).minus(cost))));
});

Deno.test("cash moves by each fill's notional rounded to 8 decimals; the basis keeps the exact cost", () => {
  const state = trackedState("1000");
  for (let i = 0; i < 1000; i++) track(state, fill("buy", "0.00000001", "0.5"));
  const position = state.position("X");
  assert.equal(toJson(position.qty), "0.00001");
  // 0.000000005 per fill rounds half-even to 0: no cash moves (an account holds no 1e-9).
  assert.equal(toJson(state.cash), "1000");
  assert.equal(toJson(position.cost_basis!), "0.000005");
  assert.equal(toJson(position.avg_entry_price), "0.5");
});

/** An exact rational n / d (d > 0): the reference arithmetic of the property below. */
class Rational {
  readonly n: bigint;
  readonly d: bigint;
  constructor(n: bigint, d = 1n) {
    const sign = d < 0n ? -1n : 1n;
    const g = gcd(n < 0n ? -n : n, d < 0n ? -d : d) || 1n;
    this.n = sign * n / g;
    this.d = sign * d / g;
  }
  static of(x: Decimal): Rational {
    const [int, frac = ""] = x.toFixed().split(".");
    return new Rational(BigInt(int! + frac), 10n ** BigInt(frac.length));
  }
  plus(o: Rational): Rational {
    return new Rational(this.n * o.d + o.n * this.d, this.d * o.d);
  }
  minus(o: Rational): Rational {
    return this.plus(o.neg());
  }
  times(o: Rational): Rational {
    return new Rational(this.n * o.n, this.d * o.d);
  }
  div(o: Rational): Rational {
    return new Rational(this.n * o.d, this.d * o.n);
  }
  neg(): Rational {
    return new Rational(-this.n, this.d);
  }
  abs(): Rational {
    return this.n < 0n ? this.neg() : this;
  }
  sign(): number {
    return this.n === 0n ? 0 : this.n < 0n ? -1 : 1;
  }
  lte(o: Rational): boolean {
    return this.n * o.d <= o.n * this.d;
  }
  toString(): string {
    return `${this.n}/${this.d}`;
  }
}

function gcd(a: bigint, b: bigint): bigint {
  while (b !== 0n) [a, b] = [b, a % b];
  return a;
}

const R0 = new Rational(0n);

function assertNear(actual: Decimal, expected: Rational, bound: Rational, what: string): void {
  assert.ok(
    Rational.of(actual).minus(expected).abs().lte(bound),
    `${what}: ${toJson(actual)} vs exactly ${expected} (±${bound})`,
  );
}

/** Average cost with exact rationals: the position, and the realized P&L of one fill (net of fee). */
function exactFill(
  p: { qty: Rational; cost: Rational },
  f: PositionFill,
): { qty: Rational; cost: Rational; realized: Rational; reduced: boolean } {
  const qty = Rational.of(f.qty);
  const price = Rational.of(f.price);
  const signed = f.side === "buy" ? qty : qty.neg();
  const next = p.qty.plus(signed);
  const fee = Rational.of(f.fee ?? ZERO);
  if (p.qty.sign() === 0 || p.qty.sign() === signed.sign()) {
    return {
      qty: next,
      cost: p.cost.plus(signed.times(price)),
      realized: fee.neg(),
      reduced: false,
    };
  }
  const held = p.qty.abs();
  const closed = qty.lte(held) ? qty : held;
  const released = p.cost.times(closed).div(held);
  const proceeds = p.qty.sign() < 0 ? closed.times(price).neg() : closed.times(price);
  let cost = p.cost.minus(released);
  if (next.sign() === 0) cost = R0;
  else if (next.sign() !== p.qty.sign()) cost = next.times(price);
  return { qty: next, cost, realized: proceeds.minus(released).minus(fee), reduced: true };
}

/** Fills whose quantity and price have 8 decimals: notionals of up to 16, low prices included. */
const fineFill: fc.Arbitrary<PositionFill> = fc.record({
  side: fc.constantFrom("buy" as const, "sell" as const),
  qty: fc.integer({ min: 1, max: 2_000_000_000 }),
  price: fc.oneof(
    fc.integer({ min: 1, max: 10_000 }),
    fc.integer({ min: 1, max: 20_000_000_000 }),
  ),
  fee: fc.integer({ min: 0, max: 1_000 }),
}).map((r) => ({
  side: r.side,
  qty: d(r.qty).dividedBy(1e8),
  price: d(r.price).dividedBy(1e8),
  fee: d(r.fee).dividedBy(1e8),
}));

Deno.test("property: realized P&L is the exact average-cost arithmetic, rounded once per fill, and cash agrees", () => {
  const half8 = new Rational(1n, 2n * 10n ** 8n);
  const half16 = new Rational(1n, 2n * 10n ** 16n);
  fc.assert(
    fc.property(
      fc.oneof(
        fc.array(rawFill.map((raw) => toFill(raw) as PositionFill), {
          minLength: 1,
          maxLength: 60,
        }),
        fc.array(fineFill, { minLength: 1, maxLength: 60 }),
      ),
      (fills) => {
        const start = d("1000000000");
        const state = trackedState(start.toFixed());
        let pure = emptyPosition("X");
        let exact = { qty: R0, cost: R0, realized: R0 };
        let reductions = 0;
        let roundedCash = 0;
        let sumApplied = ZERO;
        for (const [i, f] of fills.entries()) {
          const step = exactFill(exact, f);
          exact = { qty: step.qty, cost: step.cost, realized: exact.realized.plus(step.realized) };
          if (step.reduced) reductions++;
          if (f.qty.times(f.price).decimalPlaces() > 8) roundedCash++;
          // Each released share rounded to 16 decimals drifts the basis by at most 0.5e-16.
          const drift = half16.times(new Rational(BigInt(reductions)));

          pure = applyFill(pure, f);
          assertNear(pure.cost_basis!, exact.cost, drift, `pure cost basis after fill ${i + 1}`);
          assertNear(pure.realized_pnl, exact.realized, drift, `pure realized after fill ${i + 1}`);
          assert.ok(pure.cost_basis!.decimalPlaces() <= 16, "the basis fits NUMERIC(38,16)");

          const applied = track(state, f);
          sumApplied = sumApplied.plus(applied.realized);
          // The fill's realized P&L: its exact figure rounded once (plus the basis' drift).
          assertNear(applied.realized, step.realized, half8.plus(drift), `fill ${i + 1} realized`);
          assert.ok(applied.realized.decimalPlaces() <= 8);
          assert.ok(applied.position.cost_basis!.eq(pure.cost_basis!), "tracked basis = pure");
          if (exact.qty.sign() !== 0) {
            const avg = exact.cost.div(exact.qty);
            const bound = half8.plus(drift.div(exact.qty.abs()));
            assertNear(applied.position.avg_entry_price, avg, bound, `avg after fill ${i + 1}`);
          }
        }
        const position = state.position("X");
        assert.ok(Rational.of(position.qty).minus(exact.qty).sign() === 0, "qty, exactly");
        assert.ok(
          position.realized_pnl.eq(sumApplied),
          "the fills' realized P&L sum to the position's",
        );
        assert.ok(state.realizedToday(DAY0).eq(sumApplied), "realized today = Σ fills' realized");
        // Realized − basis = what cash says: up to one rounding of each reducing fill's realized
        // P&L and of each notional with more than 8 decimals.
        const roundings = new Rational(BigInt(reductions + roundedCash));
        assertNear(
          state.cash.minus(start),
          Rational.of(position.realized_pnl.minus(position.cost_basis!)),
          half8.times(roundings).plus(half16.times(new Rational(BigInt(reductions)))),
          "cash − starting cash vs realized − cost basis",
        );
        assertNear(
          position.realized_pnl,
          exact.realized,
          half8.times(new Rational(BigInt(reductions))).plus(
            half16.times(new Rational(BigInt(reductions))),
          ),
          "realized vs exact",
        );
        if (exact.qty.sign() === 0 && roundedCash === 0) {
          assertNear(
            state.cash.minus(start),
            exact.realized,
            R0,
            "flat, no notional rounded: cash moved by exactly the exact realized P&L",
          );
        }
      },
    ),
    { numRuns: 500 },
  );
});
