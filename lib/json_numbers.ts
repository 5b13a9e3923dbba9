/**
 * A JSON parser that keeps every number token as its exact source text.
 *
 * `JSON.parse` turns `0.00005100` into the float `0.000051`: the trailing
 * zeros are gone, and so is any integer beyond 2^53 (Kraken's connection ids).
 * Kraken v2 sends prices and sizes as bare JSON numbers and computes its book
 * checksum over their text as sent, so its frames are parsed with
 * {@linkcode parseJsonNumbers} instead: numbers come back as
 * {@linkcode JsonNumber} holding the token's text, everything else as
 * `JSON.parse` would give it.
 *
 * Use it only where the text of numbers matters; it is a hand-written
 * single-pass parser, fast but slower than the native `JSON.parse`.
 *
 * @example
 * ```ts
 * import { JsonNumber, parseJsonNumbers } from "./json_numbers.ts";
 *
 * const value = parseJsonNumbers('{"price":0.00005100}') as { price: JsonNumber };
 * value.price.text; // "0.00005100"
 * ```
 *
 * @module
 */

/** A JSON number token, kept as the exact text it was written with. */
export class JsonNumber {
  /** The token as written in the source, e.g. `"0.00005100"`, `"-1e+3"`. */
  readonly text: string;

  /** Wraps a number token's text (not validated: the parser only makes valid ones). */
  constructor(text: string) {
    this.text = text;
  }

  /** The token's value as a float (loses precision where a float cannot hold it). */
  toNumber(): number {
    return Number(this.text);
  }

  /** The token's text. */
  toString(): string {
    return this.text;
  }

  /** Serializes back to the same token through `JSON.stringify` (as a string). */
  toJSON(): string {
    return this.text;
  }
}

/** A parsed JSON value whose numbers are {@linkcode JsonNumber}. */
export type JsonValue =
  | null
  | boolean
  | string
  | JsonNumber
  | JsonValue[]
  | { [key: string]: JsonValue };

/** A parsed JSON object whose numbers are {@linkcode JsonNumber}. */
export type JsonObject = { [key: string]: JsonValue };

/** Deepest nesting of arrays and objects {@linkcode parseJsonNumbers} accepts by default. */
export const DEFAULT_JSON_MAX_DEPTH = 512;

/** Options for {@linkcode parseJsonNumbers}. */
export interface ParseJsonNumbersOptions {
  /**
   * Deepest nesting of arrays and objects accepted; deeper input is a
   * `SyntaxError` rather than a stack overflow.
   * @default {DEFAULT_JSON_MAX_DEPTH}
   */
  maxDepth?: number;
  /**
   * What a key given twice in one object gives: `"last"` keeps the last
   * value, as `JSON.parse` does; `"reject"` throws a
   * {@linkcode JsonDuplicateKeyError} naming the key.
   * @default {"last"}
   */
  duplicateKeys?: "last" | "reject";
}

/**
 * A key given more than once in one object (`{"active":true,"active":false}`),
 * thrown by {@linkcode parseJsonNumbers} with `duplicateKeys: "reject"`.
 */
export class JsonDuplicateKeyError extends SyntaxError {
  /** The key given more than once. */
  readonly key: string;

  /** Makes the error for `key`, found again at `position` of the JSON text. */
  constructor(key: string, position: number) {
    super(
      `Key ${JSON.stringify(key)} is given more than once at position ${position} of the JSON text`,
    );
    this.name = "JsonDuplicateKeyError";
    this.key = key;
  }
}

/**
 * Parses JSON `text` like `JSON.parse`, except that every number becomes a
 * {@linkcode JsonNumber} holding the token's exact text. Throws a
 * `SyntaxError` saying what is wrong and where when `text` is not JSON.
 *
 * @example
 * ```ts
 * import { parseJsonNumbers } from "./json_numbers.ts";
 *
 * const [a, b] = parseJsonNumbers("[1.50, 12345678901234567890]") as { text: string }[];
 * a!.text; // "1.50"
 * b!.text; // "12345678901234567890"
 * ```
 */
export function parseJsonNumbers(text: string, options: ParseJsonNumbersOptions = {}): JsonValue {
  const { maxDepth = DEFAULT_JSON_MAX_DEPTH, duplicateKeys = "last" } = options;
  if (typeof text !== "string") throw new TypeError("JSON text must be a string");
  if (!Number.isInteger(maxDepth) || maxDepth < 0) {
    throw new RangeError(`JSON maxDepth must be a non-negative integer, got ${maxDepth}`);
  }
  const parser = new _Parser(text, maxDepth, duplicateKeys === "reject");
  parser.skipSpace();
  const value = parser.value(0);
  parser.skipSpace();
  if (parser.pos < text.length) parser.fail("Unexpected data after the JSON value");
  return value;
}

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COMMA = 0x2c;
const COLON = 0x3a;
const MINUS = 0x2d;
const PLUS = 0x2b;
const DOT = 0x2e;
const ZERO = 0x30;
const NINE = 0x39;
const OPEN_BRACE = 0x7b;
const CLOSE_BRACE = 0x7d;
const OPEN_BRACKET = 0x5b;
const CLOSE_BRACKET = 0x5d;
const LOWER_E = 0x65;
const UPPER_E = 0x45;

/** The single-character escapes after a backslash, by the character's code. */
const ESCAPES: Record<number, string> = {
  0x22: '"',
  0x5c: "\\",
  0x2f: "/",
  0x62: "\b",
  0x66: "\f",
  0x6e: "\n",
  0x72: "\r",
  0x74: "\t",
};

const KEY_CACHE_MASK = 63;
/** Recently seen object keys, by a hash of length and first character. */
const keyCache: (string | undefined)[] = new Array(KEY_CACHE_MASK + 1).fill(undefined);

/** The plain characters of a string, up to a quote, a backslash or a control character. */
// deno-lint-ignore no-control-regex -- JSON forbids raw control characters in strings: stop at them.
const STRING_BODY = /[^"\\\u0000-\u001f]*/y;

/** One parse: the source and a cursor into it. */
class _Parser {
  readonly src: string;
  readonly maxDepth: number;
  readonly rejectDuplicateKeys: boolean;
  pos = 0;

  constructor(src: string, maxDepth: number, rejectDuplicateKeys: boolean) {
    this.src = src;
    this.maxDepth = maxDepth;
    this.rejectDuplicateKeys = rejectDuplicateKeys;
  }

  fail(reason: string, at: number = this.pos): never {
    throw new SyntaxError(`${reason} at position ${at} of the JSON text`);
  }

  unexpected(): never {
    if (this.pos >= this.src.length) this.fail("Unexpected end");
    this.fail(`Unexpected character ${JSON.stringify(this.src[this.pos])}`);
  }

  skipSpace(): void {
    const src = this.src;
    let pos = this.pos;
    for (;;) {
      const c = src.charCodeAt(pos);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) pos++;
      else break;
    }
    this.pos = pos;
  }

  value(depth: number): JsonValue {
    const c = this.src.charCodeAt(this.pos);
    if (c === QUOTE) return this.string();
    if (c === OPEN_BRACE) return this.object(depth + 1);
    if (c === OPEN_BRACKET) return this.array(depth + 1);
    if ((c >= ZERO && c <= NINE) || c === MINUS) return this.number();
    if (c === 0x74) return this.literal("true", true);
    if (c === 0x66) return this.literal("false", false);
    if (c === 0x6e) return this.literal("null", null);
    return this.unexpected();
  }

  literal<T extends JsonValue>(word: string, value: T): T {
    if (!this.src.startsWith(word, this.pos)) {
      const end = this.pos + word.length;
      if (end > this.src.length && word.startsWith(this.src.slice(this.pos))) {
        this.fail("Unexpected end", this.src.length);
      }
      this.fail(`Invalid literal, expected ${word}`);
    }
    this.pos += word.length;
    return value;
  }

  object(depth: number): JsonObject {
    if (depth > this.maxDepth) this.fail(`Nesting deeper than ${this.maxDepth}`);
    const src = this.src;
    const result: JsonObject = {};
    this.pos++;
    if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
    if (src.charCodeAt(this.pos) === CLOSE_BRACE) {
      this.pos++;
      return result;
    }
    for (;;) {
      if (src.charCodeAt(this.pos) !== QUOTE) {
        if (this.pos >= src.length) this.fail("Unexpected end");
        this.fail("Expected a string key");
      }
      const keyAt = this.pos;
      const key = this.key();
      if (this.rejectDuplicateKeys && Object.hasOwn(result, key)) {
        throw new JsonDuplicateKeyError(key, keyAt);
      }
      if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
      if (src.charCodeAt(this.pos) !== COLON) {
        if (this.pos >= src.length) this.fail("Unexpected end");
        this.fail("Expected ':' after a key");
      }
      this.pos++;
      if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
      const value = this.value(depth);
      if (key === "__proto__") {
        Object.defineProperty(result, key, {
          value,
          enumerable: true,
          writable: true,
          configurable: true,
        });
      } else {
        result[key] = value;
      }
      if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
      const c = src.charCodeAt(this.pos);
      if (c === COMMA) {
        this.pos++;
        if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
      } else if (c === CLOSE_BRACE) {
        this.pos++;
        return result;
      } else {
        if (this.pos >= src.length) this.fail("Unexpected end");
        this.fail("Expected ',' or '}' in an object");
      }
    }
  }

  array(depth: number): JsonValue[] {
    if (depth > this.maxDepth) this.fail(`Nesting deeper than ${this.maxDepth}`);
    const src = this.src;
    const result: JsonValue[] = [];
    this.pos++;
    if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
    if (src.charCodeAt(this.pos) === CLOSE_BRACKET) {
      this.pos++;
      return result;
    }
    for (;;) {
      result.push(this.value(depth));
      if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
      const c = src.charCodeAt(this.pos);
      if (c === COMMA) {
        this.pos++;
        if (src.charCodeAt(this.pos) <= 0x20) this.skipSpace();
      } else if (c === CLOSE_BRACKET) {
        this.pos++;
        return result;
      } else {
        if (this.pos >= src.length) this.fail("Unexpected end");
        this.fail("Expected ',' or ']' in an array");
      }
    }
  }

  /** An object key: looked up in a small cache of recent keys before slicing a new one. */
  key(): string {
    const src = this.src;
    const start = this.pos + 1;
    let pos = start;
    let c = src.charCodeAt(pos);
    while (c !== QUOTE && c !== BACKSLASH && c >= 0x20) c = src.charCodeAt(++pos);
    if (c !== QUOTE) return this.string();
    const length = pos - start;
    const slot = (length * 31 + src.charCodeAt(start)) & KEY_CACHE_MASK;
    const cached = keyCache[slot];
    if (cached !== undefined && cached.length === length && src.startsWith(cached, start)) {
      this.pos = pos + 1;
      return cached;
    }
    const key = src.slice(start, pos);
    keyCache[slot] = key;
    this.pos = pos + 1;
    return key;
  }

  /** A string starting at the opening quote; slices it when it has no escapes. */
  string(): string {
    const src = this.src;
    const start = this.pos + 1;
    STRING_BODY.lastIndex = start;
    STRING_BODY.test(src);
    const pos = STRING_BODY.lastIndex;
    const c = src.charCodeAt(pos);
    if (c === QUOTE) {
      this.pos = pos + 1;
      return src.slice(start, pos);
    }
    if (c === BACKSLASH) return this.escapedString(start, pos);
    if (pos >= src.length) this.fail("Unterminated string", start - 1);
    return this.fail("Control character in a string", pos);
  }

  /** The rest of a string that has escapes, from `start`, the first backslash at `pos`. */
  escapedString(start: number, pos: number): string {
    const src = this.src;
    let out = src.slice(start, pos);
    let chunk = pos;
    for (;;) {
      const c = src.charCodeAt(pos);
      if (c === QUOTE) {
        this.pos = pos + 1;
        return out + src.slice(chunk, pos);
      }
      if (c === BACKSLASH) {
        out += src.slice(chunk, pos);
        const e = src.charCodeAt(pos + 1);
        const simple = ESCAPES[e];
        if (simple !== undefined) {
          out += simple;
          pos += 2;
        } else if (e === 0x75) {
          const code = this.hex4(pos + 2);
          out += String.fromCharCode(code);
          pos += 6;
        } else {
          if (pos + 1 >= src.length) this.fail("Unterminated string", start - 1);
          this.fail("Invalid escape in a string", pos);
        }
        chunk = pos;
        continue;
      }
      if (c < 0x20 || Number.isNaN(c)) {
        if (pos >= src.length) this.fail("Unterminated string", start - 1);
        this.fail("Control character in a string", pos);
      }
      pos++;
    }
  }

  hex4(at: number): number {
    let code = 0;
    for (let i = at; i < at + 4; i++) {
      const c = this.src.charCodeAt(i);
      let digit: number;
      if (c >= ZERO && c <= NINE) digit = c - ZERO;
      else if (c >= 0x61 && c <= 0x66) digit = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) digit = c - 0x41 + 10;
      else {
        if (i >= this.src.length) this.fail("Unterminated string");
        this.fail("Invalid \\u escape in a string", at - 2);
      }
      code = code * 16 + digit;
    }
    return code;
  }

  /** A number token, checked against the JSON grammar, kept as text. */
  number(): JsonNumber {
    const src = this.src;
    const start = this.pos;
    let pos = start;
    let c = src.charCodeAt(pos);
    if (c === MINUS) c = src.charCodeAt(++pos);
    if (c === ZERO) {
      c = src.charCodeAt(++pos);
    } else if (c > ZERO && c <= NINE) {
      do c = src.charCodeAt(++pos); while (c >= ZERO && c <= NINE);
    } else {
      this.pos = pos;
      this.fail(pos >= src.length ? "Unexpected end" : "Invalid number");
    }
    if (c === DOT) {
      c = src.charCodeAt(++pos);
      if (!(c >= ZERO && c <= NINE)) {
        this.pos = pos;
        this.fail(pos >= src.length ? "Unexpected end" : "Invalid number: no digit after '.'");
      }
      do c = src.charCodeAt(++pos); while (c >= ZERO && c <= NINE);
    }
    if (c === LOWER_E || c === UPPER_E) {
      c = src.charCodeAt(++pos);
      if (c === PLUS || c === MINUS) c = src.charCodeAt(++pos);
      if (!(c >= ZERO && c <= NINE)) {
        this.pos = pos;
        this.fail(pos >= src.length ? "Unexpected end" : "Invalid number: no digit in exponent");
      }
      do c = src.charCodeAt(++pos); while (c >= ZERO && c <= NINE);
    }
    this.pos = pos;
    return new JsonNumber(src.slice(start, pos));
  }
}
