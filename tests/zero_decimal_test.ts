import assert from "node:assert/strict";
import { isZero, isZeroDecimal, normalizeDecimal } from "../market/decimal.ts";
import { fixtureLines, prng } from "./_helpers.ts";

/** isZeroDecimal before its regular-expression fast path: the character loop alone. */
function loopIsZeroDecimal(text: string): boolean {
  if (typeof text !== "string") {
    normalizeDecimal(text);
    return isZero(text);
  }
  const length = text.length;
  let zero = true;
  let i = 0;
  for (; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) break;
    if (c !== 0x30) zero = false;
  }
  if (i === 0) throw notDecimal(text);
  if (i === length) return zero;
  if (text.charCodeAt(i) !== 0x2e || i === length - 1) throw notDecimal(text);
  for (i++; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x30 || c > 0x39) throw notDecimal(text);
    if (c !== 0x30) zero = false;
  }
  return zero;
}

/** market/decimal.ts's error for text that is no plain decimal. */
function notDecimal(text: unknown): TypeError {
  return new TypeError(`Not a decimal: ${JSON.stringify(text)}`);
}

/** What a zero test makes of `size`: its answer, or the error's class and message. */
function outcome(test: (size: string) => boolean, size: unknown): unknown {
  try {
    return test(size as string);
  } catch (error) {
    return error instanceof Error ? `${error.constructor.name}: ${error.message}` : error;
  }
}

function assertSame(size: unknown): void {
  assert.deepEqual(outcome(isZeroDecimal, size), outcome(loopIsZeroDecimal, size), String(size));
}

Deno.test("isZeroDecimal answers as its character loop did on the Binance sizes and prices of the fixtures", () => {
  const texts = new Set<string>();
  for (
    const file of [
      "ws_combined_session_2021-10-12.raw.jsonl",
      "rest_depth_snapshots_2021-10-12.raw.jsonl",
      "nknusdt_snapshot_then_depth_diffs.raw.jsonl",
    ]
  ) {
    for (const line of fixtureLines("binance", file)) {
      for (const [, text] of line.matchAll(/"([^"]*)"/g)) texts.add(text!);
    }
  }
  assert.ok(texts.size > 1_000, `${texts.size} texts`);
  for (const text of texts) {
    assertSame(text);
    // Sliced out of a longer string, as a parser's levels are.
    assertSame(` ${text}           `.slice(1, text.length + 1));
  }
});

Deno.test("isZeroDecimal answers as its character loop did on edge cases and values that are not strings", () => {
  const edges: unknown[] = [
    "",
    "0",
    "00",
    "0.",
    ".0",
    "0.0",
    "000.000",
    "0.00000001",
    "10",
    "1.0",
    "-0",
    "+0",
    "0e0",
    "1e3",
    " 0",
    "0 ",
    "0\n",
    "\n0",
    "0..0",
    "0.0.0",
    "٠",
    "０",
    "0x0",
    "Infinity",
    "NaN",
    0,
    1,
    -0,
    0.5,
    null,
    undefined,
    true,
    [],
    ["0"],
    {},
    { toString: () => "0" },
    12n,
  ];
  for (const edge of edges) assertSame(edge);
});

Deno.test("isZeroDecimal answers as its character loop did on 300,000 random short strings", () => {
  const random = prng(20261207);
  const alphabet = "0000000123456789..-+e x\n";
  for (let round = 0; round < 300_000; round++) {
    const length = Math.floor(random() * 12);
    let text = "";
    for (let i = 0; i < length; i++) text += alphabet[Math.floor(random() * alphabet.length)];
    assertSame(text);
  }
});
