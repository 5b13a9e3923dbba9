import assert from "node:assert/strict";
import {
  DEFAULT_JSON_MAX_DEPTH,
  JsonNumber,
  type JsonValue,
  parseJsonNumbers,
} from "../lib/json_numbers.ts";
import { prng } from "./_helpers.ts";

const FIXTURES = new URL("../../shared/fixtures/", import.meta.url);

function fixtureLines(path: string): string[] {
  return Deno.readTextFileSync(new URL(path, FIXTURES)).split("\n").filter((line) => line !== "");
}

/** What `JSON.parse` would give: numbers as floats. */
function toPlain(value: JsonValue): unknown {
  if (value instanceof JsonNumber) return value.toNumber();
  if (Array.isArray(value)) return value.map(toPlain);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) {
      Object.defineProperty(out, key, {
        value: toPlain(item),
        enumerable: true,
        writable: true,
        configurable: true,
      });
    }
    return out;
  }
  return value;
}

Deno.test("parseJsonNumbers keeps every number token's exact text", () => {
  const tokens = [
    "0.00005100",
    "0",
    "-0",
    "0.0",
    "100.000",
    "12345678901234567890",
    "3007355780899554854",
    "-1.5e-10",
    "1E+3",
    "2e5",
    "0.1000000000000000055511151231257827",
  ];
  for (const token of tokens) {
    const value = parseJsonNumbers(token);
    assert.ok(value instanceof JsonNumber);
    assert.equal(value.text, token);
    assert.equal(value.toString(), token);
    assert.equal(value.toNumber(), Number(token));
  }
  const parsed = parseJsonNumbers(`[${tokens.join(", ")}]`) as JsonNumber[];
  assert.deepEqual(parsed.map((n) => n.text), tokens);
  const price = parseJsonNumbers('{"price":0.00005100,"qty":1486.59884909}') as Record<
    string,
    JsonNumber
  >;
  assert.equal(price.price!.text, "0.00005100");
  assert.equal(JSON.stringify(price), '{"price":"0.00005100","qty":"1486.59884909"}');
});

Deno.test("parseJsonNumbers reads strings with escapes and unicode like JSON.parse", () => {
  const samples = [
    String.raw`"plain"`,
    String.raw`""`,
    String.raw`"a\"b\\c\/d\b\f\n\r\t"`,
    String.raw`"caf\u00e9 \u00E9 \ud83d\ude00 lone \ud800 end"`,
    `"raw unicode: café ₿ 😀"`,
    String.raw`"\\u0041 is not an escape, \u0041 is"`,
    String.raw`"ends with escape\n"`,
  ];
  for (const sample of samples) assert.equal(parseJsonNumbers(sample), JSON.parse(sample));
});

Deno.test("parseJsonNumbers reads nested arrays and objects, literals and whitespace", () => {
  const text = ' \n\t{ "a" : [ 1 , [ [] , {} ] , { "b" : { "c" : [ true , false , null ] } } ] ,' +
    ' "d" : "x" , "e" : -2.50 }\r\n ';
  const value = parseJsonNumbers(text);
  assert.deepEqual(toPlain(value), JSON.parse(text));
  const e = (value as Record<string, JsonValue>).e as JsonNumber;
  assert.equal(e.text, "-2.50");
  assert.deepEqual(parseJsonNumbers("[]"), []);
  assert.deepEqual(parseJsonNumbers("{}"), {});
  assert.equal(parseJsonNumbers("null"), null);
  assert.equal(parseJsonNumbers(" true "), true);
  assert.deepEqual(toPlain(parseJsonNumbers('{"a":1,"a":2}')), { a: 2 });
});

Deno.test("parseJsonNumbers makes __proto__ an own property, not the prototype", () => {
  const value = parseJsonNumbers('{"__proto__":{"polluted":true},"x":1}') as Record<
    string,
    unknown
  >;
  assert.equal(Object.getPrototypeOf(value), Object.prototype);
  assert.ok(Object.hasOwn(value, "__proto__"));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  assert.deepEqual(
    toPlain(value as JsonValue),
    JSON.parse('{"__proto__":{"polluted":true},"x":1}'),
  );
});

Deno.test("parseJsonNumbers rejects malformed JSON with a SyntaxError, as JSON.parse does", () => {
  const bad = [
    "",
    " ",
    "{",
    "}",
    "[1,]",
    "[,1]",
    '{"a":1,}',
    '{"a" 1}',
    '{"a":}',
    "{a:1}",
    "{'a':1}",
    "[1 2]",
    "1 2",
    "01",
    "-01",
    "1.",
    ".5",
    "-",
    "+1",
    "1e",
    "1e+",
    "0x10",
    "NaN",
    "Infinity",
    "tru",
    "nul",
    "falsey",
    '"abc',
    '"\\x"',
    '"\\u12G4"',
    '"\\u12"',
    '"tab\there"',
    '"new\nline"',
    '"\\',
    "[",
    '{"a":[}',
    "[1]]",
  ];
  for (const text of bad) {
    assert.throws(
      () => JSON.parse(text),
      SyntaxError,
      `JSON.parse accepted ${JSON.stringify(text)}`,
    );
    assert.throws(
      () => parseJsonNumbers(text),
      SyntaxError,
      `parseJsonNumbers accepted ${JSON.stringify(text)}`,
    );
  }
  assert.throws(() => parseJsonNumbers("[1,]"), /Unexpected character "\]" at position 3/);
  assert.throws(() => parseJsonNumbers('{"a":'), /Unexpected end at position 5/);
});

Deno.test("parseJsonNumbers refuses nesting beyond maxDepth with a SyntaxError, not a stack overflow", () => {
  const deep = "[".repeat(100_000) + "]".repeat(100_000);
  assert.throws(() => parseJsonNumbers(deep), SyntaxError);
  const ok = "[".repeat(DEFAULT_JSON_MAX_DEPTH) + "]".repeat(DEFAULT_JSON_MAX_DEPTH);
  assert.deepEqual(toPlain(parseJsonNumbers(ok)), JSON.parse(ok));
  assert.throws(() => parseJsonNumbers('{"a":{"b":1}}', { maxDepth: 1 }), /Nesting deeper than 1/);
  assert.deepEqual(toPlain(parseJsonNumbers('{"a":{"b":1}}', { maxDepth: 2 })), { a: { b: 1 } });
  assert.throws(() => parseJsonNumbers("[]", { maxDepth: Number.NaN }), RangeError);
});

Deno.test("parseJsonNumbers gives JSON.parse's structure for every fixture frame", () => {
  const files = [
    "kraken/v2_book_minagbp_d25_2026-08-16.raw.jsonl",
    "kraken/v1_book1000_2021-04-17.raw.jsonl",
    "kraken/v1_trade_2021-04-17.raw.jsonl",
    "kraken/v1_ticker_2021-04-17.raw.jsonl",
    "coinbase/channel_ticker_2026-08-09.raw.jsonl",
    "coinbase/channel_candles_2026-08-09.raw.jsonl",
    "binance/ws_combined_session_2021-10-12.raw.jsonl",
  ];
  let frames = 0;
  for (const file of files) {
    for (const line of fixtureLines(file)) {
      assert.deepEqual(
        toPlain(parseJsonNumbers(line)),
        JSON.parse(line),
        `${file}: ${line.slice(0, 80)}`,
      );
      frames++;
    }
  }
  assert.ok(frames > 4_500);
});

Deno.test("parseJsonNumbers keeps the v2 book's number text byte for byte", () => {
  // Every number token of every Kraken v2 frame comes back unchanged. The regex finds them:
  // a number after `:`, `[` or `,` and before `,`, `}` or `]` is never inside these frames' strings.
  let tokens = 0;
  for (const line of fixtureLines("kraken/v2_book_minagbp_d25_2026-08-16.raw.jsonl")) {
    const expected = [...line.matchAll(/[:\[,](-?\d[\d.eE+-]*)(?=[,}\]])/g)].map((m) => m[1]);
    const seen: string[] = [];
    const walk = (value: JsonValue): void => {
      if (value instanceof JsonNumber) seen.push(value.text);
      else if (Array.isArray(value)) value.forEach(walk);
      else if (value !== null && typeof value === "object") Object.values(value).forEach(walk);
    };
    walk(parseJsonNumbers(line));
    assert.deepEqual(seen, expected);
    tokens += seen.length;
  }
  assert.ok(tokens > 200, `only ${tokens} number tokens seen`);
});

Deno.test("parseJsonNumbers agrees with JSON.parse on random mutations of real frames", () => {
  const random = prng(20260816);
  const seeds = [
    ...fixtureLines("kraken/v2_book_minagbp_d25_2026-08-16.raw.jsonl"),
    ...fixtureLines("coinbase/channel_market_trades_2026-08-09.raw.jsonl").slice(0, 20),
  ].filter((line) => line.length < 4_000);
  const alphabet = '{}[]",:.-+eE0123456789 \\u\nabtfnrl';
  let accepted = 0;
  for (let i = 0; i < 5_000; i++) {
    let text = seeds[Math.floor(random() * seeds.length)]!;
    const edits = 1 + Math.floor(random() * 3);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * (text.length + 1));
      const choice = random();
      if (choice < 0.25) text = text.slice(0, at);
      else if (choice < 0.5) text = text.slice(0, at) + text.slice(at + 1);
      else if (choice < 0.75) {
        text = text.slice(0, at) + alphabet[Math.floor(random() * alphabet.length)] +
          text.slice(at + 1);
      } else {text = text.slice(0, at) + alphabet[Math.floor(random() * alphabet.length)] +
          text.slice(at);}
    }
    let expected: unknown;
    let nativeFailed = false;
    try {
      expected = JSON.parse(text);
    } catch {
      nativeFailed = true;
    }
    if (nativeFailed) {
      assert.throws(() => parseJsonNumbers(text), SyntaxError, `accepted ${JSON.stringify(text)}`);
    } else {
      assert.deepEqual(
        toPlain(parseJsonNumbers(text)),
        expected,
        `differs on ${JSON.stringify(text)}`,
      );
      accepted++;
    }
  }
  assert.ok(accepted > 50, `only ${accepted} mutated frames were still JSON`);
});

Deno.test("parseJsonNumbers rejects a non-string argument with a TypeError", () => {
  assert.throws(() => parseJsonNumbers(42 as unknown as string), TypeError);
});
