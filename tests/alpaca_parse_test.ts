import assert from "node:assert/strict";
import { isoToUs, MalformedFrameError } from "../market/events.ts";
import {
  alpacaAuthMessage,
  type AlpacaParsedFrame,
  alpacaSubscribeMessage,
  alpacaUnsubscribeMessage,
  parseAlpacaFrame,
} from "../venues/alpaca/parse.ts";
import { fixtureLines, FUZZ_PIECES, mutateFrame, prng } from "./_helpers.ts";

const DOC_LINES = fixtureLines("alpaca", "docs_stream_data_v2_messages.jsonl");
const RX = 1_614_009_105_000_000;

/** Asserts that `fn` throws a MalformedFrameError with a sentence-case message. */
function assertMalformed(fn: () => unknown, label: string): MalformedFrameError {
  try {
    fn();
  } catch (error) {
    assert.ok(
      error instanceof MalformedFrameError,
      `${label}: threw ${(error as Error)?.name} ${(error as Error)?.message}`,
    );
    assert.match(error.message, /^[A-Z]/, `${label}: message not in sentence case`);
    assert.doesNotMatch(error.message, /\.$/, `${label}: message ends with a period`);
    return error;
  }
  assert.fail(`${label}: did not throw`);
}

function parse(frame: string): AlpacaParsedFrame {
  return parseAlpacaFrame(frame, RX);
}

function only<T>(items: T[]): T {
  assert.equal(items.length, 1);
  return items[0]!;
}

// --- Documentation messages ---------------------------------------------------------

Deno.test("every server message of the v2 stream docs parses; client messages are refused", () => {
  const outcomes: string[] = [];
  for (const [i, line] of DOC_LINES.entries()) {
    if ("action" in JSON.parse(line)) {
      // Client-to-server messages (auth, subscribe, unsubscribe) are not server frames.
      assertMalformed(() => parse(line), `line ${i + 1}`);
      outcomes.push("client");
      continue;
    }
    const { events, control, notices } = parse(line);
    outcomes.push(events[0]?.kind ?? control?.type ?? notices[0]?.type ?? "nothing");
    if (!line.startsWith("[")) {
      // The docs show data points bare; on the wire they come inside an array.
      assert.deepEqual(parse(`[${line}]`), { events, control, notices }, `line ${i + 1}`);
    }
  }
  assert.deepEqual(outcomes, [
    "connected",
    "client",
    "authenticated",
    "client",
    "client",
    "client",
    "connected",
    "authenticated",
    ...Array(11).fill("error"),
    "subscription",
    "client",
    "subscription",
    "client",
    "subscription",
    "trade",
    "quote",
    "bar",
    "bar",
    "trading_status",
  ]);
});

Deno.test("every documented error code is surfaced as an error control", () => {
  const errors = DOC_LINES.filter((l) => l.includes('"T":"error"')).map((l) => parse(l).control);
  assert.deepEqual(errors, [
    { type: "error", code: 400, msg: "invalid syntax" },
    { type: "error", code: 401, msg: "not authenticated" },
    { type: "error", code: 402, msg: "auth failed" },
    { type: "error", code: 403, msg: "already authenticated" },
    { type: "error", code: 404, msg: "auth timeout" },
    { type: "error", code: 405, msg: "symbol limit exceeded" },
    { type: "error", code: 406, msg: "connection limit exceeded" },
    { type: "error", code: 407, msg: "slow client" },
    { type: "error", code: 408, msg: "v2 not enabled" },
    { type: "error", code: 409, msg: "insufficient subscription" },
    { type: "error", code: 500, msg: "internal error" },
  ]);
});

Deno.test("subscription acks list every channel, missing ones empty", () => {
  const line = DOC_LINES.find((l) => l.includes('"bars":["IBM"'))!;
  assert.deepEqual(parse(line), {
    events: [],
    notices: [],
    control: {
      type: "subscription",
      trades: ["AAPL"],
      quotes: ["AMD", "CLDR"],
      bars: ["IBM", "AAPL", "VOO"],
      updatedBars: [],
      dailyBars: [],
      statuses: [],
      lulds: [],
      corrections: [],
      cancelErrors: [],
      imbalances: [],
    },
  });
  const full = parse(
    '[{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":[],"updatedBars":[],' +
      '"dailyBars":["VOO"],"statuses":["*"],"lulds":[],"corrections":["AAPL"],' +
      '"cancelErrors":["AAPL"],"futureChannel":["X"]}]',
  ).control;
  assert.equal(full?.type, "subscription");
  assert.deepEqual(full.type === "subscription" && [full.statuses, full.cancelErrors], [
    ["*"],
    ["AAPL"],
  ]);
});

Deno.test("a trade keeps the exact price text; the id is exchange:id and the side unknown", () => {
  const line = DOC_LINES.find((l) => l.includes('"T":"t"'))!;
  assert.deepEqual(parse(`[${line}]`).events, [{
    kind: "trade",
    exchange: "alpaca",
    symbol: "AAPL",
    venue_symbol: "AAPL",
    ts_exchange: 1_614_009_104_208_000,
    ts_local: RX,
    trade_id: "D:96921",
    price: "126.55",
    qty: "1",
    side: "unknown",
  }]);
});

Deno.test("a quote keeps nanosecond-timestamp microseconds and both exchanges", () => {
  const line = DOC_LINES.find((l) => l.includes('"T":"q"'))!;
  assert.deepEqual(only(parse(`[${line}]`).events), {
    kind: "quote",
    exchange: "alpaca",
    symbol: "AMD",
    venue_symbol: "AMD",
    ts_exchange: 1_614_009_105_335_689,
    ts_local: RX,
    bid_price: "87.66",
    bid_qty: "1",
    ask_price: "87.68",
    ask_qty: "4",
    bid_exchange: "U",
    ask_exchange: "Q",
  });
});

Deno.test("minute, updated and daily bars become 1m, 1m and 1d bars", () => {
  const minute = DOC_LINES.find((l) => l.includes('"T":"b"'))!;
  assert.deepEqual(only(parse(`[${minute}]`).events), {
    kind: "bar",
    exchange: "alpaca",
    symbol: "SPY",
    venue_symbol: "SPY",
    ts_exchange: 1_614_021_300_000_000,
    ts_local: RX,
    interval: "1m",
    start: 1_614_021_300_000_000,
    open: "388.985",
    high: "389.13",
    low: "388.975",
    close: "389.12",
    volume: "49378",
    trades: null,
    vwap: null,
  });
  const daily = only(parse(DOC_LINES.find((l) => l.includes('"T":"d"'))!).events);
  assert.equal(daily.kind === "bar" && daily.interval, "1d");
  // Current docs: bars carry n and vw; an updated bar ("u") re-sends a minute bar.
  const updated = only(
    parse(
      '[{"T":"u","S":"SPY","o":388.985,"h":389.13,"l":388.975,"c":389.12,"v":49378,"n":461,' +
        '"vw":389.062639,"t":"2021-02-22T19:15:00Z"}]',
    ).events,
  );
  assert.deepEqual(
    updated.kind === "bar" && [updated.interval, updated.start, updated.trades, updated.vwap],
    ["1m", 1_614_021_300_000_000, 461, "389.062639"],
  );
});

Deno.test("status, LULD, correction, cancel and imbalance messages become notices", () => {
  const status = DOC_LINES.find((l) => l.includes('"T":"s"'))!;
  assert.deepEqual(parse(status).notices, [{
    type: "trading_status",
    symbol: "AAPL",
    tsUs: 1_614_021_300_000_000,
    tape: "C",
    statusCode: "H",
    statusMessage: "Trading Halt",
    reasonCode: "T12",
    reasonMessage: "Trading Halted; For information requested by NASDAQ",
  }]);
  // Examples from the current real-time stock data docs, in one frame with a trade.
  const frame = "[" + [
    '{"T":"c","S":"EEM","x":"M","oi":52983525033527,"op":39.1582,"os":440000,"oc":[" ","7"],' +
    '"ci":52983525034326,"cp":39.1809,"cs":440000,"cc":[" ","7"],"z":"B",' +
    '"t":"2023-04-06T14:25:06.542305024Z"}',
    '{"T":"x","S":"GOOGL","i":465,"x":"D","p":105.31,"s":300,"a":"C","z":"C",' +
    '"t":"2023-04-06T13:15:42.83540958Z"}',
    '{"T":"t","S":"AAPL","i":628,"x":"K","p":162.92,"s":3,"c":["@","F","T","I"],"z":"C",' +
    '"t":"2023-04-06T11:54:26.838232225Z"}',
    '{"T":"l","S":"IONM","u":3.24,"d":2.65,"i":"B","t":"2023-04-06T13:34:45.565004401Z","z":"C"}',
    '{"T":"i","S":"INAQU","p":9.12,"z":"C","t":"2024-12-13T19:58:09.242138635Z"}',
  ].join(",") + "]";
  const { events, control, notices } = parse(frame);
  assert.equal(control, null);
  assert.deepEqual(events.map((e) => e.kind === "trade" && e.trade_id), ["K:628"]);
  assert.deepEqual(notices, [
    {
      type: "correction",
      symbol: "EEM",
      tsUs: 1_680_791_106_542_305,
      tape: "B",
      exchange: "M",
      original: {
        tradeId: "M:52983525033527",
        price: "39.1582",
        qty: "440000",
        conditions: [" ", "7"],
      },
      corrected: {
        tradeId: "M:52983525034326",
        price: "39.1809",
        qty: "440000",
        conditions: [" ", "7"],
      },
    },
    {
      type: "cancel_error",
      symbol: "GOOGL",
      tsUs: 1_680_786_942_835_409,
      tape: "C",
      tradeId: "D:465",
      exchange: "D",
      price: "105.31",
      qty: "300",
      action: "cancel",
    },
    {
      type: "luld",
      symbol: "IONM",
      tsUs: 1_680_788_085_565_004,
      tape: "C",
      limitUp: "3.24",
      limitDown: "2.65",
      indicator: "B",
    },
    {
      type: "imbalance",
      symbol: "INAQU",
      tsUs: 1_734_119_889_242_138,
      tape: "C",
      price: "9.12",
    },
  ]);
});

// --- Exact numbers -------------------------------------------------------------------

function tradeWith(price: string, id = "1"): string {
  return `[{"T":"t","S":"AAPL","i":${id},"x":"V","p":${price},"s":100,"t":"2021-02-22T15:51:44Z"}]`;
}

function priceOf(frame: string): string {
  const event = only(parse(frame).events);
  assert.equal(event.kind, "trade");
  return event.kind === "trade" ? event.price : "";
}

Deno.test("number tokens keep their exact text, never a float's", () => {
  assert.equal(priceOf(tradeWith("126.50")), "126.50", "a float would drop the zero");
  assert.equal(priceOf(tradeWith("0.30000000000000004")), "0.30000000000000004");
  assert.equal(
    priceOf(tradeWith("0.1000000000000000055511151231257827")),
    "0.1000000000000000055511151231257827",
  );
  assert.equal(priceOf(tradeWith("12345678901234567890.5")), "12345678901234567890.5");
  assert.equal(priceOf(tradeWith("0")), "0");
  const id = only(parse(tradeWith("1", "9007199254740993")).events);
  assert.equal(id.kind === "trade" && id.trade_id, "V:9007199254740993", "beyond 2^53 stays exact");
});

Deno.test("exponent-form numbers become the plain decimal of the same value", () => {
  assert.equal(priceOf(tradeWith("1e-7")), "0.0000001");
  assert.equal(priceOf(tradeWith("1.5E+3")), "1500");
  assert.equal(priceOf(tradeWith("1.25e1")), "12.5");
  assert.equal(priceOf(tradeWith("125e-2")), "1.25");
  assert.equal(priceOf(tradeWith("0.0012e2")), "0.12");
  assert.equal(priceOf(tradeWith("4.2e0")), "4.2");
  assertMalformed(() => parse(tradeWith("1e400")), "huge exponent");
});

Deno.test("whitespace and escapes anywhere in the JSON are read like JSON.parse would", () => {
  const pretty = JSON.stringify(JSON.parse(DOC_LINES[26]!), null, 2);
  assert.deepEqual(parse(`[\n ${pretty} \r\n]\t`), parse(`[${DOC_LINES[26]!}]`));
  const escaped = parse(
    '[{"T":"t","S":"A\\u0041PL","i":1,"x":"\\"","p":1,"s":1,"t":"2021-02-22T15:51:44Z","c":["\\n"]}]',
  );
  const trade = only(escaped.events);
  assert.equal(trade.symbol, "AAPL");
  assert.equal(trade.kind === "trade" && trade.trade_id, '":1');
  assert.throws(
    () =>
      parse('[{"T":"t","S":"A","i":1,"x":"V","p":"1\\u00326","s":1,"t":"2021-02-22T15:51:44Z"}]'),
    (error: unknown) =>
      error instanceof MalformedFrameError && error.message.endsWith('must be a number, got "126"'),
    "an escaped string is named by its value",
  );
  // Escaped field names are field names too.
  assert.equal(
    only(
      parse('[{"\\u0054":"q","S":"X","bp":1,"bs":1,"ap":2,"as":1,"t":"2021-02-22T15:51:44Z"}]')
        .events,
    ).kind,
    "quote",
  );
});

Deno.test("the fast timestamp path agrees with isoToUs", () => {
  const random = prng(7);
  const samples = [
    "2021-02-22T15:51:44.208Z",
    "2021-02-22T15:51:45.335689322Z",
    "2021-02-16T04:00:00Z",
    "2024-02-29T23:59:59.999999999Z",
    "2000-02-29T00:00:00.1Z",
    "2100-03-01T00:00:00.000001Z",
    "1970-01-01T00:00:00Z",
    "2021-02-30T12:00:00Z",
    "2021-02-22T15:51:44+01:00",
    "2021-02-22T15:51:44.5-05:30",
  ];
  for (let i = 0; i < 3_000; i++) {
    const pad = (n: number, w: number) => String(n).padStart(w, "0");
    const fraction = Math.floor(random() * 11);
    samples.push(
      `${pad(1970 + Math.floor(random() * 200), 4)}-${pad(1 + Math.floor(random() * 12), 2)}-` +
        `${pad(1 + Math.floor(random() * 31), 2)}T${pad(Math.floor(random() * 24), 2)}:` +
        `${pad(Math.floor(random() * 60), 2)}:${pad(Math.floor(random() * 60), 2)}` +
        (fraction === 0
          ? ""
          : `.${Array.from({ length: fraction }, () => Math.floor(random() * 10)).join("")}`) +
        "Z",
    );
  }
  for (const t of samples) {
    const frame = `[{"T":"t","S":"A","i":1,"x":"V","p":1,"s":1,"t":"${t}"}]`;
    let expected: number | null = null;
    try {
      expected = isoToUs(t);
    } catch (error) {
      assert.ok(error instanceof MalformedFrameError, t);
    }
    // A day its month does not have (2021-02-30) is malformed on both paths, never rolled over.
    if (expected === null) assertMalformed(() => parse(frame), t);
    else assert.equal(only(parse(frame).events).ts_exchange, expected, t);
  }
  for (
    const bad of [
      "2021-02-22 15:51:44Z",
      "2021-13-01T00:00:00Z",
      "2021-02-22T15:51:44.Z",
      "yesterday",
      "2021-02-22T25:00:00Z",
    ]
  ) {
    assertMalformed(() => parse(`[{"T":"t","S":"A","i":1,"x":"V","p":1,"s":1,"t":"${bad}"}]`), bad);
  }
});

// --- Malformed frames ------------------------------------------------------------------

const TRADE = DOC_LINES.find((l) => l.includes('"T":"t"'))!;

Deno.test("malformed frames throw MalformedFrameError and nothing else", () => {
  const bad: Record<string, string> = {
    "empty": "",
    "whitespace": "  \n",
    "garbage bytes": "\u0000\u00ff\ufffd[[",
    "not JSON": "hello",
    "empty array": "[]",
    "empty object": "{}",
    "array of empty object": "[{}]",
    "array of number": "[1]",
    "array of array": "[[]]",
    "null": "null",
    "number": "42",
    "string": '"t"',
    "unknown type": '[{"T":"zz","S":"AAPL"}]',
    "type not a string": '[{"T":1}]',
    "trade missing price": `[${TRADE.replace('"p":126.55,', "")}]`,
    "price as a string": `[${TRADE.replace("126.55", '"126.55"')}]`,
    "price abc": `[${TRADE.replace("126.55", '"abc"')}]`,
    "price NaN": `[${TRADE.replace("126.55", "NaN")}]`,
    "price Infinity": `[${TRADE.replace("126.55", "Infinity")}]`,
    "negative price": `[${TRADE.replace("126.55", "-126.55")}]`,
    "price with leading zero": `[${TRADE.replace("126.55", "0126.55")}]`,
    "price ending in a dot": `[${TRADE.replace("126.55", "126.")}]`,
    "price with a plus": `[${TRADE.replace("126.55", "+126.55")}]`,
    "price null": `[${TRADE.replace("126.55", "null")}]`,
    "fractional trade id": `[${TRADE.replace("96921", "969.21")}]`,
    "symbol a number": `[${TRADE.replace('"AAPL"', "7")}]`,
    "conditions not strings": `[${TRADE.replace('["@","I"]', "[1,2]")}]`,
    "conditions a string": `[${TRADE.replace('["@","I"]', '"@"')}]`,
    "bad timestamp": `[${TRADE.replace("2021-02-22T15:51:44.208Z", "yesterday")}]`,
    "duplicate field": `[${TRADE.replace('"p":126.55', '"p":126.55,"p":1')}]`,
    "trailing comma in message": `[${TRADE.replace("}", ",}")}]`,
    "trailing comma in frame": `[${TRADE},]`,
    "missing comma": `[${TRADE}${TRADE}]`,
    "unterminated": `[${TRADE}`,
    "trailing garbage": `[${TRADE}]x`,
    "two frames": `[${TRADE}][${TRADE}]`,
    "unterminated string": '[{"T":"t',
    "raw control character": `[${TRADE.replace("AAPL", "AA\tPL")}]`,
    "bad escape": `[${TRADE.replace("AAPL", "AA\\xPL")}]`,
    "cancel with unknown action":
      '[{"T":"x","S":"A","i":1,"x":"D","p":1,"s":1,"a":"Q","t":"2023-04-06T13:15:42Z"}]',
    "unknown success message": '[{"T":"success","msg":"hello"}]',
    "error code fractional": '[{"T":"error","code":400.5,"msg":"x"}]',
    "error without message": '[{"T":"error","code":400}]',
    "subscription list of numbers": '[{"T":"subscription","trades":[1]}]',
    "two control messages":
      '[{"T":"success","msg":"connected"},{"T":"success","msg":"authenticated"}]',
    "client auth message": '{"action":"auth","key":"k","secret":"s"}',
    "nested too deep": `[{"T":"t","zz":${"[".repeat(10_000)}`,
    "deep array top": "[".repeat(100_000),
  };
  for (const [label, frame] of Object.entries(bad)) assertMalformed(() => parse(frame), label);
  assertMalformed(() => parseAlpacaFrame(undefined as unknown as string, RX), "undefined");
});

Deno.test("unknown fields are skipped, whatever their shape", () => {
  const frame = `[${TRADE.replace("{", '{"new":{"a":[1,{"b":null}],"c":true},"zz":-1.5e3,')}]`;
  assert.deepEqual(parse(frame).events, parse(`[${TRADE}]`).events);
});

/** What this fuzz inserts or writes over: JSON's punctuation (no NUL), an `E` exponent. */
const PIECES: readonly string[] = [...FUZZ_PIECES.filter((piece) => piece !== "\u0000"), "E"];

/** A random change of `frame` ({@linkcode mutateFrame} with {@linkcode PIECES}). */
function mutate(frame: string, random: () => number): string {
  return mutateFrame(frame, random, PIECES);
}

Deno.test("fuzz: mutated frames parse or throw MalformedFrameError; what parses is valid JSON", () => {
  const random = prng(20210222);
  const seeds = [
    ...DOC_LINES.filter((l) => l.startsWith("[")),
    ...DOC_LINES.filter((l) => l.startsWith('{"T"')).map((l) => `[${l},${l}]`),
    '[{"T":"c","S":"EEM","x":"M","oi":52983525033527,"op":39.1582,"os":440000,"oc":[" ","7"],' +
    '"ci":52983525034326,"cp":39.1809,"cs":440000,"cc":[" ","7"],"z":"B","t":"2023-04-06T14:25:06.542305024Z"}]',
    '[{"T":"b","S":"SPY","o":388.985,"h":389.13,"l":388.975,"c":389.12,"v":49378,"n":461,"vw":389.062639,"t":"2021-02-22T19:15:00Z"}]',
  ];
  let parsed = 0;
  let rejected = 0;
  for (let round = 0; round < 30_000; round++) {
    let frame = seeds[Math.floor(random() * seeds.length)]!;
    const mutations = 1 + Math.floor(random() * 3);
    for (let m = 0; m < mutations; m++) frame = mutate(frame, random);
    try {
      const result = parse(frame);
      // The reader is never laxer than JSON itself.
      assert.doesNotThrow(
        () => JSON.parse(frame),
        `accepted invalid JSON ${JSON.stringify(frame)}`,
      );
      for (const event of result.events) {
        const values = event.kind === "trade"
          ? [event.price, event.qty]
          : event.kind === "quote"
          ? [event.bid_price, event.bid_qty, event.ask_price, event.ask_qty]
          : event.kind === "bar"
          ? [event.open, event.high, event.low, event.close, event.volume]
          : [];
        for (const value of values) assert.match(value, /^\d+(?:\.\d+)?$/);
        assert.ok(Number.isSafeInteger(event.ts_exchange));
      }
      parsed++;
    } catch (error) {
      if (!(error instanceof MalformedFrameError)) {
        throw new Error(`Fuzz frame threw ${error}: ${JSON.stringify(frame)}`);
      }
      rejected++;
    }
  }
  assert.ok(parsed > 100 && rejected > 100, `parsed ${parsed}, rejected ${rejected}`);
});

/** `frame` with JSON whitespace inserted at random places between tokens. */
function spread(frame: string, random: () => number): string {
  let out = "";
  let inString = false;
  for (let i = 0; i < frame.length; i++) {
    const c = frame[i]!;
    if (!inString && "{}[],:".includes(c) && random() < 0.3) out += " ";
    out += c;
    if (inString) {
      if (c === "\\") out += frame[++i];
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
    }
    if (!inString && "{}[],:".includes(c) && random() < 0.5) {
      out += [" ", "\n", "\t", "\r\n", "  "][Math.floor(random() * 5)];
    }
  }
  return out;
}

Deno.test("whitespace between tokens and escapes elsewhere never change the result", () => {
  const random = prng(3);
  const frames = [
    ...DOC_LINES.filter((l) => l.startsWith("[")),
    ...DOC_LINES.filter((l) => l.startsWith('{"T"')).map((l) => `[${l},${l}]`),
  ];
  for (const frame of frames) {
    const expected = parse(frame);
    for (let round = 0; round < 20; round++) {
      const spaced = spread(frame, random);
      assert.deepEqual(parse(spaced), expected, JSON.stringify(spaced));
    }
    // An escape anywhere sends every string through the careful path.
    const escaped = frame.replace('{"T"', '{"zz":"\\n\\u00e9","T"');
    assert.deepEqual(parse(escaped), expected, escaped);
  }
});

Deno.test("mutated frames that are not JSON are always refused", () => {
  // Frames whose messages are all valid must parse exactly when JSON.parse accepts them.
  const random = prng(99);
  const base = `[${TRADE}]`;
  for (let round = 0; round < 5_000; round++) {
    const frame = mutate(base, random);
    let json = true;
    try {
      JSON.parse(frame);
    } catch {
      json = false;
    }
    if (!json) assertMalformed(() => parse(frame), JSON.stringify(frame));
  }
});

// --- Messages to send ------------------------------------------------------------------

Deno.test("alpacaAuthMessage and alpacaSubscribeMessage build the documented messages", () => {
  assert.deepEqual(JSON.parse(alpacaAuthMessage("AKID", "s3cr3t")), {
    action: "auth",
    key: "AKID",
    secret: "s3cr3t",
  });
  assert.throws(() => alpacaAuthMessage("", "x"), TypeError);
  assert.throws(() => alpacaAuthMessage("x", ""), TypeError);
  assert.equal(
    alpacaSubscribeMessage({ trades: ["AAPL"], quotes: ["AMD", "CLDR"], bars: ["AAPL", "VOO"] }),
    '{"action":"subscribe","trades":["AAPL"],"quotes":["AMD","CLDR"],"bars":["AAPL","VOO"]}',
  );
  assert.equal(
    alpacaSubscribeMessage({ bars: ["*"], dailyBars: ["VOO"], statuses: ["*"], quotes: [] }),
    '{"action":"subscribe","bars":["*"],"dailyBars":["VOO"],"statuses":["*"]}',
  );
  assert.equal(
    alpacaUnsubscribeMessage({ trades: ["VOO"], quotes: ["IBM"] }),
    '{"action":"unsubscribe","trades":["VOO"],"quotes":["IBM"]}',
  );
  assert.throws(() => alpacaSubscribeMessage({}), TypeError);
  assert.throws(() => alpacaSubscribeMessage({ trades: [] }), TypeError);
  assert.throws(() => alpacaSubscribeMessage({ trades: ["aapl"] }), TypeError);
  assert.throws(() => alpacaSubscribeMessage({ trades: ['AAPL","x'] }), TypeError);
});
