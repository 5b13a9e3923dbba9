import assert from "node:assert/strict";
import { Decimal as LibraryDecimal } from "decimal.js";
import {
  Decimal,
  DECIMAL_PRECISION,
  fitsDb,
  fromDb,
  parseDecimal,
  safeParseDecimal,
  toDb,
  toJson,
} from "../trading/money.ts";

Deno.test("parseDecimal reads plain decimal strings exactly", () => {
  assert.equal(toJson(parseDecimal("12")), "12");
  assert.equal(toJson(parseDecimal("0.50")), "0.5");
  assert.equal(toJson(parseDecimal("007.10")), "7.1");
  assert.equal(toJson(parseDecimal("-3.25")), "-3.25");
  assert.equal(toJson(parseDecimal("0.1").plus(parseDecimal("0.2"))), "0.3");
  assert.equal(
    toJson(parseDecimal("12345678901234567890.123456789")),
    "12345678901234567890.123456789",
  );
});

Deno.test("parseDecimal refuses everything that is not a plain decimal", () => {
  const bad = [
    "",
    " ",
    " 1",
    "1 ",
    "1,5",
    "1.",
    ".5",
    "+1",
    "--1",
    "1e5",
    "1E5",
    "1e-5",
    "0x10",
    "NaN",
    "Infinity",
    "-Infinity",
    "1_000",
    "١",
    "1.2.3",
    "-",
    "1".repeat(65),
  ];
  for (const input of bad) {
    const result = safeParseDecimal(input);
    assert.equal(result.ok, false, `accepted ${JSON.stringify(input)}`);
    assert.throws(() => parseDecimal(input), TypeError);
  }
  for (const input of [null, undefined, true, {}, [], [1], 1n]) {
    const result = safeParseDecimal(input);
    assert.equal(result.ok, false);
    if (!result.ok) assert.match(result.message, /^must be a decimal string or number, got /);
  }
  assert.deepEqual(safeParseDecimal("1,5"), {
    ok: false,
    message: 'must be a decimal such as "12.5", got "1,5"',
  });
});

Deno.test("parseDecimal takes finite numbers through their shortest text", () => {
  assert.equal(toJson(parseDecimal(0.1)), "0.1");
  assert.equal(toJson(parseDecimal(0.1 + 0.2)), "0.30000000000000004");
  assert.equal(toJson(parseDecimal(1e21)), "1000000000000000000000");
  assert.equal(toJson(parseDecimal(5e-7)), "0.0000005");
  assert.equal(toJson(parseDecimal(-2)), "-2");
  for (const input of [NaN, Infinity, -Infinity]) {
    assert.equal(safeParseDecimal(input).ok, false);
    assert.throws(() => parseDecimal(input), /must be a finite number/);
  }
});

Deno.test("negative zero becomes zero and never renders as -0", () => {
  for (const input of ["-0", "-0.000", -0]) {
    const value = parseDecimal(input);
    assert.equal(value.isNeg(), false);
    assert.equal(JSON.stringify(value), '"0"');
  }
  assert.equal(toJson(new Decimal(-5).times(0)), "0");
  assert.equal(toDb(new Decimal("-0.000000001")), "0.00000000");
});

Deno.test("the decimal clone keeps 40 digits and rounds half to even", () => {
  assert.equal(DECIMAL_PRECISION, 40);
  assert.equal(toJson(new Decimal(1).dividedBy(3)), "0." + "3".repeat(40));
  assert.equal(toJson(new Decimal(2).dividedBy(3)), "0." + "6".repeat(39) + "7");
  // A decimal of another configuration is copied into ours.
  const foreign = new LibraryDecimal("1.5");
  assert.equal(toJson(parseDecimal(foreign).dividedBy(7)), toJson(new Decimal("1.5").dividedBy(7)));
  assert.equal(safeParseDecimal(new LibraryDecimal(NaN)).ok, false);
});

Deno.test("toDb renders NUMERIC(20,8) text, rounding half to even", () => {
  assert.equal(toDb(parseDecimal("12.5")), "12.50000000");
  assert.equal(toDb(parseDecimal("-1.5")), "-1.50000000");
  assert.equal(toDb(parseDecimal("0")), "0.00000000");
  assert.equal(toDb(parseDecimal("0.000000005")), "0.00000000");
  assert.equal(toDb(parseDecimal("0.000000015")), "0.00000002");
  assert.equal(toDb(parseDecimal("0.000000025")), "0.00000002");
  assert.equal(toDb(new Decimal(1).dividedBy(3)), "0.33333333");
  assert.equal(toDb(parseDecimal("999999999999.99999999")), "999999999999.99999999");
  assert.equal(toDb(parseDecimal("-999999999999.99999999")), "-999999999999.99999999");
});

Deno.test("toDb refuses values that do not fit 12 integer digits", () => {
  assert.throws(() => toDb(parseDecimal("1000000000000")), RangeError);
  assert.throws(() => toDb(parseDecimal("-1000000000000")), RangeError);
  // Rounding up to 13 digits does not fit either.
  assert.throws(() => toDb(parseDecimal("999999999999.999999995")), RangeError);
  assert.throws(() => toDb(new Decimal(NaN)), TypeError);
  assert.throws(() => toDb(new Decimal(Infinity)), TypeError);
});

Deno.test("fitsDb tells whether a value is stored without rounding", () => {
  assert.equal(fitsDb(parseDecimal("0.00000001")), true);
  assert.equal(fitsDb(parseDecimal("0.000000001")), false);
  assert.equal(fitsDb(parseDecimal("999999999999")), true);
  assert.equal(fitsDb(parseDecimal("1000000000000")), false);
});

Deno.test("fromDb reads NUMERIC text back and refuses NaN and garbage", () => {
  assert.equal(toJson(fromDb("12.50000000")), "12.5");
  assert.equal(toJson(fromDb("-0.00000001")), "-0.00000001");
  for (const text of ["NaN", "Infinity", "-Infinity", "", "1e3", " 1"]) {
    assert.throws(() => fromDb(text), TypeError);
  }
  assert.throws(() => fromDb(12 as unknown as string), TypeError);
  // A round trip through the database text is exact at 8 places.
  for (const text of ["0.00000001", "123456789012.12345678", "-42"]) {
    assert.ok(fromDb(toDb(parseDecimal(text))).eq(parseDecimal(text)));
  }
});

Deno.test("toJson renders plain decimals, never exponent notation", () => {
  assert.equal(toJson(new Decimal("1e-30")), "0.000000000000000000000000000001");
  assert.equal(toJson(new Decimal("1e30")), "1000000000000000000000000000000");
  assert.equal(toJson(parseDecimal("1.50")), "1.5");
  assert.equal(JSON.stringify({ x: new Decimal("1e-9") }), '{"x":"0.000000001"}');
  assert.throws(() => toJson(new Decimal(NaN)), TypeError);
});
