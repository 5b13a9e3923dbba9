import assert from "node:assert/strict";
import fc from "fast-check";
import { toJson } from "../trading/money.ts";
import {
  decodeSignalBody,
  DEFAULT_SIGNAL_STRATEGY,
  defaultTimeInForce,
  MAX_SIGNAL_BODY_DEPTH,
  ORDER_TYPES,
  parseSignal,
  parseSignalBySchema,
  SignalNumber,
  type SignalReason,
  signalToJson,
  TIMES_IN_FORCE,
  UnreadSignalBody,
} from "../trading/signal.ts";

const base = { symbol: "BTC-USDT", side: "buy", qty: "0.5" };

function reasonsOf(input: unknown, defaults = {}): SignalReason[] {
  const result = parseSignal(input, defaults);
  assert.equal(result.ok, false, `accepted ${JSON.stringify(input)}`);
  return result.ok ? [] : result.reasons;
}

function pathsOf(input: unknown, defaults = {}): string[] {
  return reasonsOf(input, defaults).map((reason) => reason.path);
}

Deno.test("a minimal signal gets the market type, gtc (a crypto pair) and the default strategy", () => {
  const result = parseSignal(base, {});
  assert.ok(result.ok);
  const signal = result.signal;
  assert.equal(signal.symbol, "BTC-USDT");
  assert.equal(signal.side, "buy");
  assert.equal(toJson(signal.qty), "0.5");
  assert.equal(signal.type, "market");
  assert.equal(signal.time_in_force, "gtc");
  assert.equal(signal.strategy, DEFAULT_SIGNAL_STRATEGY);
  assert.equal("id" in signal, false, "no id is derived");
  assert.equal("limit_price" in signal, false);
  assert.equal("stop_price" in signal, false);
});

Deno.test("a signal naming no time in force is gtc for a crypto pair, day for a US equity; one named is kept", () => {
  for (const parse of [parseSignal, parseSignalBySchema]) {
    const tif = (body: Record<string, unknown>) => {
      const result = parse(body, {});
      assert.ok(result.ok, JSON.stringify(body));
      return result.signal.time_in_force;
    };
    assert.equal(tif(base), "gtc", parse.name);
    assert.equal(tif({ ...base, symbol: "ETH-USD", type: "limit", limit_price: "1" }), "gtc");
    assert.equal(tif({ ...base, symbol: "AAPL" }), "day", parse.name);
    assert.equal(tif({ ...base, symbol: "BRK.B", type: "stop", stop_price: "1" }), "day");
    assert.equal(tif({ ...base, time_in_force: "day" }), "day", parse.name);
    assert.equal(tif({ ...base, symbol: "AAPL", time_in_force: "gtc" }), "gtc", parse.name);
  }
  assert.equal(defaultTimeInForce("BTC-USDT"), "gtc");
  assert.equal(defaultTimeInForce("AAPL"), "day");
});

Deno.test("the strategy comes from the body, else the defaults", () => {
  const fromDefaults = parseSignal(base, { strategy: "momentum" });
  assert.ok(fromDefaults.ok);
  assert.equal(fromDefaults.signal.strategy, "momentum");
  const fromBody = parseSignal({ ...base, strategy: "meanrev" }, { strategy: "momentum" });
  assert.ok(fromBody.ok);
  assert.equal(fromBody.signal.strategy, "meanrev");
  assert.deepEqual(pathsOf(base, { strategy: "has space" }), ["strategy"]);
});

Deno.test("a full stop_limit signal keeps every field, decimals exact", () => {
  const result = parseSignal({
    id: "sig-2026.11.21:0001_a",
    symbol: "AAPL",
    side: "sell",
    qty: 10,
    type: "stop_limit",
    limit_price: "189.99",
    stop_price: 190.05,
    time_in_force: "gtc",
    strategy: "breakout",
    reason: "broke the range",
    exchange: "alpaca",
    broker: "alpaca",
  }, { strategy: "ignored" });
  assert.ok(result.ok);
  assert.deepEqual(signalToJson(result.signal), {
    id: "sig-2026.11.21:0001_a",
    symbol: "AAPL",
    side: "sell",
    qty: "10",
    type: "stop_limit",
    limit_price: "189.99",
    stop_price: "190.05",
    time_in_force: "gtc",
    strategy: "breakout",
    reason: "broke the range",
    exchange: "alpaca",
    broker: "alpaca",
  });
});

Deno.test("null counts as absent for optional fields", () => {
  const result = parseSignal({
    ...base,
    id: null,
    type: null,
    limit_price: null,
    stop_price: null,
    time_in_force: null,
    strategy: null,
    reason: null,
    exchange: null,
    broker: null,
  }, { strategy: "s1" });
  assert.ok(result.ok);
  assert.equal(result.signal.type, "market");
  assert.equal(result.signal.strategy, "s1");
  assert.equal("id" in result.signal, false);
});

Deno.test("a body that is not an object is refused with one reason", () => {
  for (const input of [null, undefined, "x", 42, [base], true]) {
    assert.deepEqual(reasonsOf(input), [{ path: "", message: "signal must be a JSON object" }]);
  }
});

Deno.test("required fields are reported missing", () => {
  assert.deepEqual(reasonsOf({}), [
    { path: "symbol", message: "symbol is required" },
    { path: "side", message: "side is required" },
    { path: "qty", message: "qty is required" },
  ]);
});

Deno.test("symbol must be a canonical symbol", () => {
  for (const symbol of ["AAPL", "BRK.B", "BTC-USDT", "ETH-BTC", "SPY"]) {
    assert.ok(parseSignal({ ...base, symbol }, {}).ok, symbol);
  }
  for (const symbol of ["", "btc-usdt", "BTC/USD", "BTC USDT", "A".repeat(11), 5, "BTC-", "-USD"]) {
    assert.deepEqual(pathsOf({ ...base, symbol }), ["symbol"], String(symbol));
  }
});

Deno.test("side must be buy or sell", () => {
  assert.deepEqual(reasonsOf({ ...base, side: "hold" }), [
    { path: "side", message: 'side must be one of buy, sell, got "hold"' },
  ]);
  assert.deepEqual(pathsOf({ ...base, side: "BUY" }), ["side"]);
});

Deno.test("qty must be a positive decimal that fits NUMERIC(20,8)", () => {
  for (const qty of ["1", "0.00000001", 0.1, 3, "999999999999.99999999"]) {
    assert.ok(parseSignal({ ...base, qty }, {}).ok, String(qty));
  }
  const cases: Array<[unknown, RegExp]> = [
    ["0", /qty must be greater than 0, got 0/],
    [0, /greater than 0/],
    [-1, /qty must be greater than 0, got -1/],
    ["-0.5", /greater than 0/],
    ["1,5", /qty must be a decimal such as "12.5", got "1,5"/],
    ["1e3", /must be a decimal such as/],
    ["", /must be a decimal such as/],
    ["NaN", /must be a decimal such as/],
    [NaN, /qty must be a finite number, got NaN/],
    [Infinity, /finite number/],
    [true, /qty must be a decimal string or number, got boolean/],
    [{}, /got an object/],
    ["0.000000001", /at most 8 decimal places and 12 integer digits/],
    ["1000000000000", /at most 8 decimal places and 12 integer digits/],
  ];
  for (const [qty, message] of cases) {
    const reasons = reasonsOf({ ...base, qty });
    assert.equal(reasons.length, 1, JSON.stringify(reasons));
    assert.equal(reasons[0]!.path, "qty");
    assert.match(reasons[0]!.message, message);
  }
});

Deno.test("type must be an order type", () => {
  assert.deepEqual(reasonsOf({ ...base, type: "iceberg" }), [
    { path: "type", message: 'type must be one of market, limit, stop, stop_limit, got "iceberg"' },
  ]);
});

Deno.test("limit_price and stop_price are required exactly where the type needs them", () => {
  const ok = [
    { type: "market" },
    { type: "limit", limit_price: "100" },
    { type: "stop", stop_price: "100" },
    { type: "stop_limit", limit_price: "100", stop_price: "101" },
  ];
  for (const fields of ok) assert.ok(parseSignal({ ...base, ...fields }, {}).ok, fields.type);

  assert.deepEqual(reasonsOf({ ...base, type: "limit" }), [
    { path: "limit_price", message: "limit_price is required for limit orders" },
  ]);
  assert.deepEqual(reasonsOf({ ...base, type: "stop" }), [
    { path: "stop_price", message: "stop_price is required for stop orders" },
  ]);
  assert.deepEqual(pathsOf({ ...base, type: "stop_limit" }), ["limit_price", "stop_price"]);
  assert.deepEqual(reasonsOf({ ...base, limit_price: "1", stop_price: "2" }), [
    { path: "limit_price", message: "limit_price is not allowed for market orders" },
    { path: "stop_price", message: "stop_price is not allowed for market orders" },
  ]);
  assert.deepEqual(reasonsOf({ ...base, type: "limit", limit_price: "1", stop_price: "2" }), [
    { path: "stop_price", message: "stop_price is not allowed for limit orders" },
  ]);
  assert.deepEqual(reasonsOf({ ...base, type: "stop", limit_price: "1", stop_price: "2" }), [
    { path: "limit_price", message: "limit_price is not allowed for stop orders" },
  ]);
  // The prices themselves are positive decimals.
  assert.deepEqual(reasonsOf({ ...base, type: "limit", limit_price: "-1" }), [
    { path: "limit_price", message: "limit_price must be greater than 0, got -1" },
  ]);
  assert.deepEqual(pathsOf({ ...base, type: "stop", stop_price: "abc" }), ["stop_price"]);
});

Deno.test("time_in_force must be known, and ioc/fok are refused for stop orders", () => {
  assert.deepEqual(pathsOf({ ...base, time_in_force: "gtd" }), ["time_in_force"]);
  for (const type of ORDER_TYPES) {
    for (const tif of TIMES_IN_FORCE) {
      const body = {
        ...base,
        type,
        time_in_force: tif,
        ...(type === "limit" || type === "stop_limit" ? { limit_price: "10" } : {}),
        ...(type === "stop" || type === "stop_limit" ? { stop_price: "10" } : {}),
      };
      const refused = (type === "stop" || type === "stop_limit") &&
        (tif === "ioc" || tif === "fok");
      const result = parseSignal(body, {});
      assert.equal(result.ok, !refused, `${type}/${tif}`);
      if (!result.ok) {
        assert.deepEqual(result.reasons, [{
          path: "time_in_force",
          message: `time_in_force ${tif} is not allowed for ${type} orders (use day or gtc)`,
        }]);
      }
    }
  }
});

Deno.test("id must be 1..128 characters of [A-Za-z0-9_.:-]", () => {
  for (const id of ["a", "A-z_0.9:x", "x".repeat(128)]) {
    assert.ok(parseSignal({ ...base, id }, {}).ok, id);
  }
  for (const id of ["", "x".repeat(129), "has space", "a/b", "ü", 12]) {
    assert.deepEqual(pathsOf({ ...base, id }), ["id"], String(id));
  }
});

Deno.test("strategy, reason, exchange and broker are checked", () => {
  assert.deepEqual(pathsOf({ ...base, strategy: "a.b" }), ["strategy"]);
  assert.deepEqual(pathsOf({ ...base, strategy: "" }), ["strategy"]);
  assert.deepEqual(pathsOf({ ...base, reason: 5 }), ["reason"]);
  assert.deepEqual(pathsOf({ ...base, reason: "x".repeat(1001) }), ["reason"]);
  assert.ok(parseSignal({ ...base, reason: "x".repeat(1000) }, {}).ok);
  // PostgreSQL's text and jsonb cannot hold U+0000.
  assert.deepEqual(reasonsOf({ ...base, reason: "a\u0000b" }), [{
    path: "reason",
    message: "reason must be well-formed Unicode without NUL characters (U+0000)",
  }]);
  assert.deepEqual(pathsOf({ ...base, reason: "a\ud800" }), ["reason"]);
  assert.deepEqual(reasonsOf({ ...base, exchange: "nyse" }), [{
    path: "exchange",
    message: 'exchange must be one of binance, coinbase, kraken, alpaca, got "nyse"',
  }]);
  assert.deepEqual(pathsOf({ ...base, broker: "Paper" }), ["broker"]);
  assert.deepEqual(pathsOf({ ...base, broker: "" }), ["broker"]);
  assert.ok(parseSignal({ ...base, broker: "paper" }, {}).ok);
});

Deno.test("unknown fields are refused, named", () => {
  assert.deepEqual(reasonsOf({ ...base, type: "limit", limitPrice: "1", limit_price: "1" }), [
    { path: "", message: 'unknown field "limitPrice"' },
  ]);
  assert.deepEqual(reasonsOf({ ...base, a: 1, b: 2 }), [
    { path: "", message: 'unknown fields "a", "b"' },
  ]);
});

Deno.test("every reason is reported at once", () => {
  const reasons = reasonsOf({
    id: "",
    symbol: "btc",
    side: "hold",
    qty: "1e5",
    type: "stop",
    limit_price: "1.000000001",
    time_in_force: "ioc",
    strategy: "a b",
    reason: 5,
    exchange: "nyse",
    broker: "X",
    extra: true,
  });
  assert.deepEqual(reasons.map((reason) => reason.path).sort(), [
    "",
    "broker",
    "exchange",
    "id",
    "limit_price",
    "limit_price",
    "qty",
    "reason",
    "side",
    "stop_price",
    "strategy",
    "symbol",
    "time_in_force",
  ]);
  for (const reason of reasons) assert.ok(reason.message.length > 0);
});

Deno.test("signalToJson and parseSignal round-trip any valid signal", () => {
  const decimal = fc.tuple(fc.bigInt({ min: 1n, max: 10n ** 20n - 1n }), fc.nat({ max: 8 }))
    .map(([units, scale]) => {
      const digits = units.toString().padStart(scale + 1, "0");
      return scale === 0 ? digits : `${digits.slice(0, -scale)}.${digits.slice(-scale)}`;
    })
    .filter((text) => !/^0+(\.0+)?$/.test(text) && text.split(".")[0]!.length <= 12);
  const body = fc.record({
    symbol: fc.constantFrom("AAPL", "BTC-USDT", "BRK.B"),
    side: fc.constantFrom("buy", "sell"),
    qty: decimal,
    type: fc.constantFrom(...ORDER_TYPES),
    price: decimal,
    tif: fc.constantFrom("day", "gtc"),
    id: fc.option(fc.stringMatching(/^[A-Za-z0-9_.:-]{1,128}$/), { nil: undefined }),
  });
  fc.assert(fc.property(body, (b) => {
    const input: Record<string, unknown> = {
      symbol: b.symbol,
      side: b.side,
      qty: b.qty,
      type: b.type,
      time_in_force: b.tif,
    };
    if (b.type === "limit" || b.type === "stop_limit") input.limit_price = b.price;
    if (b.type === "stop" || b.type === "stop_limit") input.stop_price = b.price;
    if (b.id !== undefined) input.id = b.id;
    const first = parseSignal(input, { strategy: "prop" });
    assert.ok(first.ok, JSON.stringify(first));
    const json = signalToJson(first.signal);
    const second = parseSignal(JSON.parse(JSON.stringify(json)), {});
    assert.ok(second.ok);
    assert.deepEqual(signalToJson(second.signal), json);
    assert.ok(first.signal.qty.eq(b.qty));
  }));
});

Deno.test("the fast path of parseSignal gives the schema's result for any body", () => {
  const unread = new UnreadSignalBody("[[[", { path: "", message: "too deep" });
  const decimalish = fc.oneof(
    fc.constantFrom("0.5", "1", "0", "-1", "1e3", "0.123456789", "1234567890123", "007.10", "1,5"),
    fc.constantFrom(0.1, 2, -0, 1e21, Number.NaN, Number.POSITIVE_INFINITY),
    fc.constantFrom(null, true, [], {}),
    fc.constantFrom(
      ...["0.5", "1e-3", "1E+2", "-0", "0.100000000000000001", "1e999999", "1".repeat(70)].map(
        (text) => new SignalNumber(text),
      ),
    ),
  );
  const value = (values: readonly unknown[]) =>
    fc.oneof(fc.constantFrom(...values), fc.constantFrom(null, 1, "", "X"));
  const body = fc.record({
    id: value(["s-1", "has space", "x".repeat(129)]),
    symbol: value(["BTC-USDT", "AAPL", "btc-usdt"]),
    side: value(["buy", "sell", "hold"]),
    qty: decimalish,
    type: value([...ORDER_TYPES, "iceberg"]),
    limit_price: decimalish,
    stop_price: decimalish,
    time_in_force: value([...TIMES_IN_FORCE, "gtd"]),
    strategy: value(["momentum", "has space"]),
    reason: value(["why", "x".repeat(1001), "a\u0000b", "\udfff"]),
    exchange: value(["binance", "nyse"]),
    broker: value(["paper", "Paper"]),
    extra: fc.constantFrom(1, "x"),
  }, { requiredKeys: [] });
  const defaults = fc.constantFrom({}, { strategy: "subject" }, { strategy: "bad subject" });
  fc.assert(
    fc.property(
      fc.oneof(body, fc.constantFrom(null, [], "text", 1, unread)),
      defaults,
      (input, d) => {
        const fast = parseSignal(input, d);
        const schema = parseSignalBySchema(input, d);
        assert.equal(fast.ok, schema.ok, JSON.stringify(input));
        if (fast.ok && schema.ok) {
          assert.deepEqual(signalToJson(fast.signal), signalToJson(schema.signal));
          assert.deepEqual(Object.keys(fast.signal), Object.keys(schema.signal));
        } else {
          assert.deepEqual(fast, schema);
        }
      },
    ),
    { numRuns: 5_000 },
  );
  // Valid bodies, which the random ones above rarely are, with every optional field.
  const valid = fc.record({
    type: fc.constantFrom(...ORDER_TYPES),
    tif: fc.constantFrom("day", "gtc"),
    qty: fc.constantFrom("0.5", 3, "12.00000001"),
    extras: fc.record({
      id: fc.constantFrom("s-1", null),
      reason: fc.constantFrom("why", null),
      exchange: fc.constantFrom("binance", "kraken", null),
      broker: fc.constantFrom("paper", null),
      strategy: fc.constantFrom("meanrev", null),
    }, { requiredKeys: [] }),
  });
  fc.assert(fc.property(valid, (v) => {
    const input: Record<string, unknown> = {
      symbol: "BTC-USDT",
      side: "sell",
      qty: v.qty,
      type: v.type,
      time_in_force: v.tif,
      ...v.extras,
    };
    if (v.type === "limit" || v.type === "stop_limit") input.limit_price = "101.5";
    if (v.type === "stop" || v.type === "stop_limit") input.stop_price = 99;
    const fast = parseSignal(input, { strategy: "subject" });
    const schema = parseSignalBySchema(input, { strategy: "subject" });
    assert.ok(fast.ok && schema.ok);
    assert.deepEqual(signalToJson(fast.signal), signalToJson(schema.signal));
    assert.deepEqual(Object.keys(fast.signal), Object.keys(schema.signal));
  }));
});

Deno.test("decodeSignalBody reads numbers exactly, as parseSignal takes them", () => {
  const read = (text: string) => parseSignal(decodeSignalBody(text), {});
  // Too many decimals as a number is refused as it is as a string: JSON.parse made it 0.1.
  assert.deepEqual(
    reasonsOf(decodeSignalBody(`{"symbol":"BTC-USDT","side":"buy","qty":0.100000000000000001}`)),
    [{
      path: "qty",
      message:
        "qty must have at most 8 decimal places and 12 integer digits, got 0.100000000000000001",
    }],
  );
  for (const [token, qty] of [["0.15", "0.15"], ["1.5E-1", "0.15"], ["2e2", "200"], ["7", "7"]]) {
    const result = read(`{"symbol":"BTC-USDT","side":"buy","qty":${token}}`);
    assert.ok(result.ok, token);
    assert.equal(toJson(result.signal.qty), qty, token);
  }
  for (const token of ["1e99999999999999999", `1${"0".repeat(70)}`, "0"]) {
    const result = read(`{"symbol":"BTC-USDT","side":"buy","qty":${token}}`);
    assert.equal(result.ok, false, token);
  }
  // Far out of range, in few characters: refused without writing out its digits.
  for (const token of ["1e999999999999", "-1e-999999999999", "1.5e65"]) {
    const reasons = reasonsOf(
      decodeSignalBody(`{"symbol":"BTC-USDT","side":"buy","qty":${token}}`),
    );
    assert.deepEqual(reasons, [{
      path: "qty",
      message: `qty must have at most 8 decimal places and 12 integer digits, got ${token}`,
    }]);
  }
  assert.deepEqual(
    pathsOf(decodeSignalBody(`{"symbol":"BTC-USDT","side":1,"qty":1,"id":5,"reason":2}`)),
    ["id", "side", "reason"],
  );
});

Deno.test("decodeSignalBody bodies serialize as sent, numbers jsonb cannot hold as floats", () => {
  const text = `{"qty":0.10,"p":1.5E-1,"big":1e999999,"long":1${
    "1".repeat(70)
  },"__proto__":{"n":[-0,1e3]}}`;
  const body = decodeSignalBody(text);
  assert.equal(Object.getPrototypeOf(body), Object.prototype, "__proto__ stays a key");
  assert.equal(
    JSON.stringify(body),
    `{"qty":0.10,"p":1.5E-1,"big":null,"long":${Number("1".repeat(71))},` +
      `"__proto__":{"n":[-0,1e3]}}`,
  );
  // A bare number, string or other value comes back as JSON.parse gives it.
  assert.equal(decodeSignalBody("12.50"), 12.5);
  assert.equal(decodeSignalBody(`"text"`), "text");
  assert.equal(decodeSignalBody("null"), null);
  assert.throws(() => decodeSignalBody(`{"qty":`), SyntaxError);
  assert.throws(() => decodeSignalBody("not json"), SyntaxError);
});

Deno.test("decodeSignalBody refuses a body nested too deeply, unread, with a reason", () => {
  const nest = (depth: number) =>
    `{"symbol":"BTC-USDT","side":"buy","qty":"1","x":"[{[{",` +
    `"junk":${"[".repeat(depth - 1)}${"]".repeat(depth - 1)}}`;
  // At the limit it is read (and refused for its unknown field).
  assert.deepEqual(pathsOf(decodeSignalBody(nest(MAX_SIGNAL_BODY_DEPTH))), [""]);
  assert.match(reasonsOf(decodeSignalBody(nest(MAX_SIGNAL_BODY_DEPTH)))[0]!.message, /unknown/);
  for (const text of [nest(MAX_SIGNAL_BODY_DEPTH + 1), nest(20_000), "[".repeat(20_000)]) {
    const body = decodeSignalBody(text);
    assert.ok(body instanceof UnreadSignalBody);
    assert.deepEqual(reasonsOf(body), [{
      path: "",
      message: `signal must not nest arrays or objects more than ${MAX_SIGNAL_BODY_DEPTH} deep`,
    }]);
    assert.equal(JSON.stringify(body), JSON.stringify({ raw: text }));
  }
  // Brackets inside strings, escaped quotes included, do not count.
  const quoted = `{"a":"\\\"${"[".repeat(100)}","symbol":"BTC-USDT","side":"buy","qty":1}`;
  assert.equal(pathsOf(decodeSignalBody(quoted)).join(), "");
  assert.throws(() => decodeSignalBody(`{"a":"\\"${"[".repeat(10)}`), SyntaxError);
});

Deno.test("decodeSignalBody refuses a body giving a key twice, unread, with a reason", () => {
  for (
    const [text, key] of [
      ['{"symbol":"BTC-USDT","side":"buy","side":"sell","qty":"1"}', "side"],
      ['{"symbol":"BTC-USDT","side":"buy","qty":"1","qty":"100"}', "qty"],
      ['{"symbol":"BTC-USDT","side":"buy","qty":"1","x":{"a":1,"a":2}}', "a"],
    ] as const
  ) {
    const body = decodeSignalBody(text);
    assert.ok(body instanceof UnreadSignalBody, text);
    assert.deepEqual(reasonsOf(body), [{
      path: "",
      message: `signal must not give a key more than once: "${key}"`,
    }]);
    // Recorded as it came, and rejected.
    assert.equal(JSON.stringify(body), JSON.stringify({ raw: text }));
    const parsed = parseSignal(body, {});
    assert.equal(parsed.ok, false);
  }
  // The same key in two objects is no repeat.
  const fine = decodeSignalBody('{"symbol":"BTC-USDT","side":"buy","qty":"1","x":{"side":1}}');
  assert.ok(!(fine instanceof UnreadSignalBody));
});
