/**
 * Validator benchmark: a message of 500 trades (one symbol, as feeds publish
 * them) decoded and validated, beside its floor (marked `baseline`): decoding
 * and `JSON.parse` of the same bytes, which the validator actor does anyway.
 *
 * Payloads cycle through 200,000 distinct trade ids and prices near 100, so
 * the measured path is the accepting one (schema, ranges, time window,
 * duplicate lookup, spike check, id memory), not an early rejection. The
 * validator runs with the default duplicate window (10,000 ids per symbol)
 * and, in a group of its own, with 100,000.
 *
 * Run with `deno bench bench/validator_bench.ts` (no services needed).
 */

import type { TradeEvent } from "../market/events.ts";
import { Validator } from "../market/validation.ts";

const TRADES = 500;
const PAYLOADS = 400;
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

/** A validator that has seen every payload once (its windows full), accepting all. */
function warmed(options: ConstructorParameters<typeof Validator>[0]): Validator {
  const validator = new Validator(options);
  for (const payload of payloads) {
    const { rejected } = validator.validate(JSON.parse(decoder.decode(payload)), NOW_US, {
      subject: SUBJECT,
    });
    if (rejected.length > 0) throw new Error(`Bench data refused: ${rejected[0]!.detail}`);
  }
  return validator;
}

const validator = warmed({});
const wideValidator = warmed({ duplicate_window: 100_000 });

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

Deno.bench(
  "decode + JSON.parse, 500 trades",
  { group: "validate 500 trades, duplicate_window 100,000", baseline: true },
  () => {
    const batch = JSON.parse(decoder.decode(payloads[next++ % PAYLOADS]!)) as unknown[];
    sink += batch.length;
  },
);

Deno.bench(
  "decode + JSON.parse + validate, 500 trades, duplicate_window 100,000",
  { group: "validate 500 trades, duplicate_window 100,000" },
  () => {
    const batch: unknown = JSON.parse(decoder.decode(payloads[next++ % PAYLOADS]!));
    sink += wideValidator.validate(batch, NOW_US, { subject: SUBJECT }).accepted.length;
  },
);

globalThis.addEventListener("unload", () => {
  if (sink < 0) throw new Error("unreachable");
});
