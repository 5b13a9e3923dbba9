/**
 * Validator benchmark: a message of 500 trades (one symbol, as feeds publish
 * them) decoded and validated, beside its floor (marked `baseline`): decoding
 * and `JSON.parse` of the same bytes, which the validator actor does anyway.
 *
 * Payloads cycle through distinct trade ids and prices near 100, so the
 * measured path is the accepting one (schema, ranges, time window, duplicate
 * lookup, spike check, id memory), not an early rejection.
 *
 * A second group is what a live feed gives the validator: every message has
 * new trade ids (four symbols in turn), written out as text and parsed — the
 * floor — then validated with the default duplicate window (10,000 ids per
 * symbol) and with 100,000. The validators have seen 1,000,000 trades first,
 * so their windows are full and every trade makes one id leave.
 *
 * Run with `deno bench bench/validator_bench.ts` (no services needed).
 */

import type { TradeEvent } from "../market/events.ts";
import { Validator } from "../market/validation.ts";

const TRADES = 500;
const PAYLOADS = 200;
const BASE_US = 1_700_000_000_000_000;
const NOW_US = BASE_US + 10_000_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

let id = 0;
const payloads: Uint8Array[] = [];
for (let p = 0; p < PAYLOADS; p++) {
  const trades: TradeEvent[] = [];
  for (let i = 0; i < TRADES; i++) {
    const ts = BASE_US + p * 10_000 + i * 20;
    trades.push({
      kind: "trade",
      exchange: "binance",
      symbol: "BTC-USDT",
      venue_symbol: "BTCUSDT",
      ts_exchange: ts,
      ts_local: ts + 1_500,
      trade_id: String(4_000_000_000 + id++),
      price: (100 + Math.sin(id / 97) * 0.5).toFixed(8),
      qty: "0.00125000",
      side: i % 2 === 0 ? "buy" : "sell",
    });
  }
  payloads.push(encoder.encode(JSON.stringify(trades)));
}
const SUBJECT = "md.trade.binance.BTC-USDT";

const validator = new Validator();
for (const payload of payloads) {
  const { rejected } = validator.validate(JSON.parse(decoder.decode(payload)), NOW_US, {
    subject: SUBJECT,
  });
  if (rejected.length > 0) throw new Error(`Bench data refused: ${rejected[0]!.detail}`);
}

let next = 0;
let sink = 0;

Deno.bench(
  "decode + JSON.parse, 500 trades",
  { group: "validate 500 trades", baseline: true },
  () => {
    const batch = JSON.parse(decoder.decode(payloads[next++ % PAYLOADS]!)) as unknown[];
    sink += batch.length;
  },
);

Deno.bench("decode + JSON.parse + validate, 500 trades", { group: "validate 500 trades" }, () => {
  const batch: unknown = JSON.parse(decoder.decode(payloads[next++ % PAYLOADS]!));
  sink += validator.validate(batch, NOW_US, { subject: SUBJECT }).accepted.length;
});

const parsed = payloads.map((payload) => JSON.parse(decoder.decode(payload)) as unknown[]);
Deno.bench("validate only (already parsed), 500 trades", { group: "validate 500 trades" }, () => {
  sink += validator.validate(parsed[next++ % PAYLOADS], NOW_US, { subject: SUBJECT }).accepted
    .length;
});

const FRESH_SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"];
let freshId = 5_000_000_000;
let freshTurn = 0;
const FRESH_PRICES = Array.from({ length: 16 }, (_, i) => (100 + i * 0.01).toFixed(8));

/** A message of 500 trades of the next symbol, with trade ids never used before, and its subject. */
function freshMessage(): { text: string; subject: string } {
  const symbol = FRESH_SYMBOLS[freshTurn++ % FRESH_SYMBOLS.length]!;
  const head = `{"kind":"trade","exchange":"binance","symbol":"${symbol}","venue_symbol":"${
    symbol.replace("-", "")
  }","ts_exchange":${NOW_US - 1_000},"ts_local":${NOW_US},"trade_id":"`;
  let text = "[";
  for (let i = 0; i < TRADES; i++) {
    text += `${i === 0 ? "" : ","}${head}${freshId++}","price":"${
      FRESH_PRICES[i % FRESH_PRICES.length]
    }","qty":"0.00125000","side":"${i % 2 === 0 ? "buy" : "sell"}"}`;
  }
  return { text: text + "]", subject: `md.trade.binance.${symbol}` };
}

/** A validator that has seen 1,000,000 new trades: its windows are full. */
function warmedOnFresh(duplicateWindow: number): Validator {
  const warm = new Validator({ duplicate_window: duplicateWindow });
  for (let n = 0; n < 1_000_000; n += TRADES) {
    const { text, subject } = freshMessage();
    const { rejected } = warm.validate(JSON.parse(text), NOW_US, { subject });
    if (rejected.length > 0) throw new Error(`Bench data refused: ${rejected[0]!.detail}`);
  }
  return warm;
}

// Made when their bench first runs (outside the timing), one at a time: the ids a validator
// holds would otherwise weigh on the garbage collection of every other bench.
let fresh: { window: number; validator: Validator } | null = null;

function validatorWithWindow(duplicateWindow: number): Validator {
  if (fresh?.window !== duplicateWindow) {
    fresh = null;
    fresh = { window: duplicateWindow, validator: warmedOnFresh(duplicateWindow) };
  }
  return fresh.validator;
}

Deno.bench(
  "new ids: write + JSON.parse, 500 trades",
  { group: "validate 500 trades with new ids", baseline: true },
  () => {
    const { text } = freshMessage();
    sink += (JSON.parse(text) as unknown[]).length;
  },
);

for (const duplicateWindow of [10_000, 100_000]) {
  Deno.bench(
    `new ids: write + JSON.parse + validate (duplicate_window ${
      duplicateWindow.toLocaleString("en-US")
    })`,
    { group: "validate 500 trades with new ids" },
    (b) => {
      const validator = validatorWithWindow(duplicateWindow);
      b.start();
      const { text, subject } = freshMessage();
      sink += validator.validate(JSON.parse(text), NOW_US, { subject }).accepted.length;
      b.end();
    },
  );
}

globalThis.addEventListener("unload", () => {
  if (sink < 0) throw new Error("unreachable");
});
