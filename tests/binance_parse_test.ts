import assert from "node:assert/strict";
import { type Level, MalformedFrameError, type MarketEvent } from "../market/events.ts";
import {
  type BinanceDepthDiff,
  type BinanceDepthSnapshot,
  parseBinanceCompactFrame,
  parseBinanceDepthSnapshot,
  parseBinanceFrame,
} from "../venues/binance/parse.ts";
import { BinanceBookSync, type BinanceSyncResult } from "../venues/binance/book_sync.ts";
import {
  binanceCombinedUrl,
  binanceStreamNames,
  binanceSymbol,
  binanceSymbolMap,
  SymbolMap,
} from "../venues/binance/symbols.ts";
import { fixtureLines, mutateFrame, prng } from "./_helpers.ts";

function lines(file: string): string[] {
  return fixtureLines("binance", file);
}

const SESSION = lines("ws_combined_session_2021-10-12.raw.jsonl");
const SNAPSHOTS = lines("rest_depth_snapshots_2021-10-12.raw.jsonl");
const NKN = lines("nknusdt_snapshot_then_depth_diffs.raw.jsonl");
const ENVELOPE = lines("cryptofeed_session_2021-10-12.envelope.jsonl");
const SESSION_SYMBOLS = ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"];
const SYMBOLS = binanceSymbolMap([
  ...SESSION_SYMBOLS,
  "BNB-BTC",
  "BNB-USDT",
  "BTC-USDT",
  "ETH-USDT",
]);
const RX = 1_633_998_512_000_000;

function diffOf(frame: string, receivedUs = RX): BinanceDepthDiff {
  const { events, control } = parseBinanceFrame(frame, receivedUs, SYMBOLS);
  assert.equal(events.length, 0);
  assert.equal(control?.type, "depth_diff");
  return control as BinanceDepthDiff;
}

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

// --- Independent reference book: a Map per side, sorted by Number at the end ---

class ReferenceBook {
  readonly bids = new Map<number, string>();
  readonly asks = new Map<number, string>();
  constructor(bids: Level[], asks: Level[]) {
    this.apply(bids, asks);
  }
  apply(bids: Level[], asks: Level[]): void {
    for (const [side, levels] of [[this.bids, bids], [this.asks, asks]] as const) {
      for (const [price, size] of levels) {
        if (Number(size) === 0) side.delete(Number(price));
        else side.set(Number(price), size);
      }
    }
  }
  top(n: number): { bids: [number, string][]; asks: [number, string][] } {
    return {
      bids: [...this.bids].sort((a, b) => b[0] - a[0]).slice(0, n),
      asks: [...this.asks].sort((a, b) => a[0] - b[0]).slice(0, n),
    };
  }
}

function bookTop(sync: BinanceBookSync, n: number) {
  const numeric = (levels: Level[]) => levels.map(([p, s]): [number, string] => [Number(p), s]);
  return {
    bids: numeric(sync.book.levels("bid", n)),
    asks: numeric(sync.book.levels("ask", n)),
  };
}

function assertOk(result: BinanceSyncResult, label: string): void {
  assert.notEqual(result.status, "resync", `${label}: unexpected resync: ${result.reason}`);
}

// --- Symbols ---------------------------------------------------------------

Deno.test("binanceSymbol joins BASE-QUOTE and rejects other spellings", () => {
  assert.equal(binanceSymbol("BTC-USDT"), "BTCUSDT");
  assert.equal(binanceSymbol("1000SATS-USDT"), "1000SATSUSDT");
  for (const bad of ["BTCUSDT", "btc-usdt", "BTC-", "-USDT", "BTC-US-DT", "BTC/USDT", ""]) {
    assert.throws(() => binanceSymbol(bad), TypeError, bad);
  }
});

Deno.test("binanceSymbolMap maps both ways and refuses ambiguous symbols", () => {
  const map = binanceSymbolMap(["BTC-USDT", "ETH-BTC"]);
  assert.equal(map.canonical("BTCUSDT"), "BTC-USDT");
  assert.equal(map.venue("ETH-BTC"), "ETHBTC");
  assert.equal(map.canonical("btcusdt"), undefined);
  assert.deepEqual(map.canonicalSymbols(), ["BTC-USDT", "ETH-BTC"]);
  assert.equal(map.size, 2);
  assert.throws(() => binanceSymbolMap(["AB-CD", "ABC-D"]), TypeError);
  assert.throws(() => binanceSymbolMap(["BTC-USDT", "BTC-USDT"]), TypeError);
  assert.throws(() => new SymbolMap([["X", "A-B"], ["Y", "A-B"]]), TypeError);
});

Deno.test("binanceStreamNames lists lower-case streams per symbol", () => {
  assert.deepEqual(
    binanceStreamNames(["BTC-USDT", "ETH-BTC"], { depth: true, trades: true, bookTicker: true }),
    [
      "btcusdt@depth@100ms",
      "btcusdt@trade",
      "btcusdt@bookTicker",
      "ethbtc@depth@100ms",
      "ethbtc@trade",
      "ethbtc@bookTicker",
    ],
  );
  assert.deepEqual(
    binanceStreamNames(["NKN-USDT"], {
      depth: false,
      trades: false,
      aggTrades: true,
      bookTicker: false,
      klineInterval: "1m",
    }),
    ["nknusdt@aggTrade", "nknusdt@kline_1m"],
  );
  assert.deepEqual(binanceStreamNames(["NKN-USDT"], { depthSpeed: "1000ms", trades: false }), [
    "nknusdt@depth@1000ms",
    "nknusdt@bookTicker",
  ]);
  assert.throws(() => binanceStreamNames(["NKN-USDT"], { klineInterval: "7m" }), TypeError);
});

Deno.test("binanceCombinedUrl builds /stream?streams=a/b/c and checks its input", () => {
  assert.equal(
    binanceCombinedUrl("wss://stream.binance.com:9443", ["btcusdt@trade", "btcusdt@bookTicker"]),
    "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker",
  );
  assert.equal(
    binanceCombinedUrl("wss://data-stream.binance.vision/", ["btcusdt@depth@100ms"]),
    "wss://data-stream.binance.vision/stream?streams=btcusdt@depth@100ms",
  );
  assert.throws(() => binanceCombinedUrl("wss://stream.binance.com:9443", []), RangeError);
  const many = Array.from({ length: 1025 }, (_, i) => `s${i}usdt@trade`);
  assert.throws(() => binanceCombinedUrl("wss://stream.binance.com:9443", many), RangeError);
  assert.throws(() => binanceCombinedUrl("https://api.binance.com", ["a@trade"]), TypeError);
  assert.throws(() => binanceCombinedUrl("wss://x", ["a@trade/b@trade"]), TypeError);
});

// --- Fixture frames ------------------------------------------------------------

Deno.test("every frame of the combined-stream session parses", () => {
  const counts = { depth_diff: 0, top: 0, trade: 0, empty: 0 };
  for (const [i, frame] of SESSION.entries()) {
    const { events, control } = parseBinanceFrame(frame, RX + i, SYMBOLS);
    if (control !== null) {
      assert.equal(control.type, "depth_diff", `line ${i + 1}`);
      counts.depth_diff++;
    }
    for (const event of events) {
      assert.ok(event.kind === "top" || event.kind === "trade", `line ${i + 1}: ${event.kind}`);
      assert.equal(event.ts_local, RX + i);
      assert.ok(SESSION_SYMBOLS.includes(event.symbol));
      counts[event.kind]++;
    }
    if (events.length === 0 && control === null) counts.empty++;
  }
  // SOURCES.md: 177 depth diffs, 84 bookTicker, 2 aggTrade, 2 open (x=false) klines.
  assert.deepEqual(counts, { depth_diff: 177, top: 84, trade: 2, empty: 2 });
});

Deno.test("aggTrade becomes a trade: id a, time T, m false means the buyer took", () => {
  const frame = SESSION.find((l) => l.includes('"e":"aggTrade"') && l.includes("NKNUSDT"))!;
  assert.deepEqual(parseBinanceFrame(frame, RX, SYMBOLS), {
    events: [{
      kind: "trade",
      exchange: "binance",
      symbol: "NKN-USDT",
      venue_symbol: "NKNUSDT",
      ts_exchange: 1_633_998_523_963_000,
      ts_local: RX,
      trade_id: "15683430",
      price: "0.35280000",
      qty: "58.00000000",
      side: "buy",
    }],
    control: null,
  });
});

Deno.test("bookTicker becomes a top event timed on receipt", () => {
  const frame = SESSION.find((l) => l.includes("@bookTicker"))!;
  assert.deepEqual(parseBinanceFrame(frame, RX, SYMBOLS).events, [{
    kind: "top",
    exchange: "binance",
    symbol: "NKN-USDT",
    venue_symbol: "NKNUSDT",
    ts_exchange: RX,
    ts_local: RX,
    bid_price: "0.35210000",
    bid_qty: "672.00000000",
    ask_price: "0.35260000",
    ask_qty: "3199.00000000",
  }]);
});

Deno.test("depthUpdate becomes a depth_diff control, never a book event", () => {
  assert.deepEqual(diffOf(NKN[1]!, RX), {
    type: "depth_diff",
    symbol: "NKN-USDT",
    venueSymbol: "NKNUSDT",
    firstUpdateId: 499869750,
    finalUpdateId: 499869752,
    bids: [["0.35130000", "6195.00000000"], ["0.34750000", "5548.00000000"], [
      "0.34640000",
      "6222.00000000",
    ]],
    asks: [],
    eventTimeUs: 1_633_998_512_068_000,
    receivedUs: RX,
  });
});

Deno.test("the nautilus ETHUSDT trade capture parses: m true means the aggressor sold", () => {
  const [frame] = lines("nautilus_ws_spot_trade_2021-12-12.jsonl");
  assert.deepEqual(parseBinanceFrame(frame!, RX, SYMBOLS).events, [{
    kind: "trade",
    exchange: "binance",
    symbol: "ETH-USDT",
    venue_symbol: "ETHUSDT",
    ts_exchange: 1_639_351_062_243_000,
    ts_local: RX,
    trade_id: "705291099",
    price: "4149.74000000",
    qty: "0.43870000",
    side: "sell",
  }]);
});

Deno.test("documentation examples: every server payload parses, client requests are refused", () => {
  const examples = lines("docs_web_socket_streams_examples.jsonl");
  const outcomes: string[] = [];
  for (const [i, frame] of examples.entries()) {
    const json = JSON.parse(frame);
    if ("method" in json) {
      // Client-to-server requests (SUBSCRIBE, ...), not server payloads.
      assertMalformed(() => parseBinanceFrame(frame, RX, SYMBOLS), `line ${i + 1}`);
      outcomes.push("request");
      continue;
    }
    if ("lastUpdateId" in json) {
      // The partial book depth payload names no symbol; a raw one cannot be routed. It is
      // parsed below wrapped in its combined-stream envelope and as a snapshot body.
      const error = assertMalformed(() => parseBinanceFrame(frame, RX, SYMBOLS), `line ${i + 1}`);
      assert.match(error.message, /no symbol/);
      outcomes.push("partial depth");
      continue;
    }
    const { events, control } = parseBinanceFrame(frame, RX, SYMBOLS);
    outcomes.push(events[0]?.kind ?? control?.type ?? "nothing");
  }
  assert.deepEqual(outcomes, [
    "server_shutdown",
    "server_shutdown",
    "request",
    "result",
    "request",
    "result",
    "request",
    "result",
    "request",
    "result",
    "request",
    "result",
    "unsupported", // referencePrice
    "trade", // aggTrade
    "trade",
    "unsupported", // blockTrade: off-book, kept out of the trade tape
    "nothing", // kline still open (x false)
    "nothing",
    "unsupported", // 24hrMiniTicker
    "unsupported", // 24hrTicker
    "unsupported", // 1hTicker
    "top",
    "unsupported", // avgPrice
    "partial depth",
    "depth_diff",
  ]);
  assert.deepEqual(parseBinanceFrame(examples[7]!, RX, SYMBOLS).control, {
    type: "result",
    id: 3,
    result: ["btcusdt@aggTrade"],
  });
  assert.deepEqual(parseBinanceFrame(examples[0]!, RX, SYMBOLS).control, {
    type: "server_shutdown",
    eventTimeUs: 1_770_123_456_789_000,
  });
  const partial = examples[23]!;
  assert.deepEqual(
    parseBinanceFrame(`{"stream":"bnbbtc@depth5@100ms","data":${partial}}`, RX, SYMBOLS).events,
    [{
      kind: "book",
      exchange: "binance",
      symbol: "BNB-BTC",
      venue_symbol: "BNBBTC",
      ts_exchange: RX,
      ts_local: RX,
      action: "snapshot",
      bids: [["0.0024", "10"]],
      asks: [["0.0026", "100"]],
      sequence: 160,
    }],
  );
  assert.deepEqual(parseBinanceDepthSnapshot(partial), {
    lastUpdateId: 160,
    bids: [["0.0024", "10"]],
    asks: [["0.0026", "100"]],
  });
});

Deno.test("a closed kline becomes a bar, an open one yields nothing", () => {
  const open = SESSION.find((l) => l.includes('"e":"kline"'))!;
  assert.deepEqual(parseBinanceFrame(open, RX, SYMBOLS), { events: [], control: null });
  const closed = open.replace('"x":false', '"x":true');
  assert.deepEqual(parseBinanceFrame(closed, RX, SYMBOLS).events, [{
    kind: "bar",
    exchange: "binance",
    symbol: "NKN-USDT",
    venue_symbol: "NKNUSDT",
    ts_exchange: 1_633_998_523_963_000,
    ts_local: RX,
    interval: "1m",
    start: 1_633_998_480_000_000,
    open: "0.35270000",
    high: "0.35280000",
    low: "0.35220000",
    close: "0.35280000",
    volume: "25877.00000000",
    trades: 30,
    vwap: null,
  }]);
});

Deno.test("request errors become error controls, flat or nested", () => {
  assert.deepEqual(
    parseBinanceFrame('{"code": 0, "msg": "Unknown property","id": 7}', RX, SYMBOLS).control,
    { type: "error", code: 0, msg: "Unknown property", id: 7 },
  );
  assert.deepEqual(
    parseBinanceFrame('{"code":2,"msg":"Invalid request: too many parameters"}', RX, SYMBOLS)
      .control,
    { type: "error", code: 2, msg: "Invalid request: too many parameters", id: null },
  );
  assert.deepEqual(
    parseBinanceFrame('{"error":{"code":3,"msg":"Invalid JSON"},"id":"a1"}', RX, SYMBOLS).control,
    { type: "error", code: 3, msg: "Invalid JSON", id: "a1" },
  );
});

Deno.test("REST depth snapshots parse, error bodies do not", () => {
  const ids = SNAPSHOTS.map((body) => parseBinanceDepthSnapshot(body).lastUpdateId);
  assert.deepEqual(ids, [499869752, 281916627, 259345543, 15602511]);
  const [doc] = lines("docs_rest_depth_example.jsonl");
  assert.deepEqual(parseBinanceDepthSnapshot(doc!), {
    lastUpdateId: 1027024,
    bids: [["4.00000000", "431.00000000"]],
    asks: [["4.00000200", "12.00000000"]],
  });
  // The pre-2020 REST format had a third, empty element per level.
  assert.deepEqual(
    parseBinanceDepthSnapshot('{"lastUpdateId":1,"bids":[["1.0","2.0",[]]],"asks":[]}').bids,
    [["1.0", "2.0"]],
  );
  const error = assertMalformed(
    () => parseBinanceDepthSnapshot('{"code":-1121,"msg":"Invalid symbol."}'),
    "error body",
  );
  assert.match(error.message, /-1121/);
  assertMalformed(() => parseBinanceDepthSnapshot("<html>502</html>"), "html");
  assertMalformed(() => parseBinanceDepthSnapshot('{"lastUpdateId":-1,"bids":[],"asks":[]}'), "id");
  assertMalformed(
    () => parseBinanceDepthSnapshot('{"lastUpdateId":1,"bids":[["x","1"]],"asks":[]}'),
    "price",
  );
});

// --- Malformed frames -------------------------------------------------------------

const TRADE = '{"e":"trade","E":1,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":2,"m":true}';

Deno.test("malformed frames throw MalformedFrameError and nothing else", () => {
  const bad: Record<string, string> = {
    "empty": "",
    "garbage bytes": "\u0000\u00ff\ufffd{{",
    "truncated": TRADE.slice(0, 30),
    "array": "[]",
    "empty object": "{}",
    "null": "null",
    "number": "42",
    "string": '"trade"',
    "unknown event": '{"e":"pizza","s":"BNBBTC"}',
    "event type not a string": '{"e":5}',
    "unknown symbol": TRADE.replace("BNBBTC", "DOGEBTC"),
    "lower-case symbol": TRADE.replace("BNBBTC", "bnbbtc"),
    "price not a string": TRADE.replace('"0.001"', "0.001"),
    "price abc": TRADE.replace('"0.001"', '"abc"'),
    "price NaN": TRADE.replace('"0.001"', '"NaN"'),
    "negative price": TRADE.replace('"0.001"', '"-0.001"'),
    "price with exponent": TRADE.replace('"0.001"', '"1e-3"'),
    "price with spaces": TRADE.replace('"0.001"', '" 0.001"'),
    "price ending in a dot": TRADE.replace('"0.001"', '"1."'),
    "empty quantity": TRADE.replace('"100"', '""'),
    "missing quantity": TRADE.replace(',"q":"100"', ""),
    "maker flag not boolean": TRADE.replace('"m":true', '"m":1'),
    "trade id negative": TRADE.replace("12345", "-5"),
    "trade id fractional": TRADE.replace("12345", "1.5"),
    "trade id unsafe": TRADE.replace("12345", "9007199254740993"),
    "time as string": TRADE.replace('"T":2', '"T":"2"'),
    "stream name not a string": `{"stream":1,"data":${TRADE}}`,
    "stream without data": '{"stream":"bnbbtc@trade"}',
    "stream data array": '{"stream":"bnbbtc@trade","data":[1]}',
    "bookTicker missing ask": '{"u":1,"s":"BNBUSDT","b":"1","B":"1","a":"2"}',
    "depth U above u": '{"e":"depthUpdate","E":1,"s":"BNBBTC","U":10,"u":9,"b":[],"a":[]}',
    "depth levels not arrays": '{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":1,"b":{},"a":[]}',
    "depth level short": '{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":1,"b":[["1"]],"a":[]}',
    "depth level numbers": '{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":1,"b":[[1,2]],"a":[]}',
    "depth size bad": '{"e":"depthUpdate","E":1,"s":"BNBBTC","U":1,"u":1,"b":[["1","x"]],"a":[]}',
    "kline without bar": '{"e":"kline","E":1,"s":"BNBBTC"}',
    "kline closed flag missing":
      '{"e":"kline","E":1,"s":"BNBBTC","k":{"t":1,"i":"1m","o":"1","c":"1","h":"1","l":"1","v":"1","n":1}}',
    "result in a stream frame": '{"stream":"x@trade","data":{"result":null,"id":1}}',
    "result with object id": '{"result":null,"id":{}}',
    "error code not a number": '{"code":"2","msg":"x"}',
    "error without msg": '{"code":2}',
    "client request": '{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}',
    "raw partial depth": '{"lastUpdateId":1,"bids":[],"asks":[]}',
    "partial depth unknown symbol":
      '{"stream":"dogeusdt@depth5","data":{"lastUpdateId":1,"bids":[],"asks":[]}}',
    "trailing garbage": `${TRADE}x`,
    "nested too deep": "[".repeat(100_000),
  };
  for (const [label, frame] of Object.entries(bad)) {
    assertMalformed(() => parseBinanceFrame(frame, RX, SYMBOLS), label);
  }
  assertMalformed(
    () => parseBinanceFrame(undefined as unknown as string, RX, SYMBOLS),
    "undefined",
  );
});

Deno.test("fuzz: mutated real frames parse or throw MalformedFrameError, never anything else", () => {
  const random = prng(20211012);
  const seeds = [
    ...SESSION.filter((_, i) => i % 5 === 0),
    ...lines("docs_web_socket_streams_examples.jsonl"),
    ...lines("nautilus_ws_spot_trade_2021-12-12.jsonl"),
  ];
  let parsed = 0;
  let rejected = 0;
  for (let round = 0; round < 20_000; round++) {
    let frame = seeds[Math.floor(random() * seeds.length)]!;
    const mutations = 1 + Math.floor(random() * 3);
    for (let m = 0; m < mutations; m++) frame = mutateFrame(frame, random);
    try {
      const result = parseBinanceFrame(frame, RX, SYMBOLS);
      assert.ok(Array.isArray(result.events));
      for (const event of result.events) assertSane(event);
      parsed++;
    } catch (error) {
      if (!(error instanceof MalformedFrameError)) {
        throw new Error(`Fuzz frame threw ${error}: ${JSON.stringify(frame)}`);
      }
      rejected++;
    }
  }
  assert.ok(parsed > 100 && rejected > 100, `parsed ${parsed}, rejected ${rejected}`);
  for (let round = 0; round < 2_000; round++) {
    const body = mutateFrame(SNAPSHOTS[3]!, random);
    try {
      parseBinanceDepthSnapshot(body);
    } catch (error) {
      if (!(error instanceof MalformedFrameError)) throw error;
    }
  }
});

// --- The compact path (depth diffs and book tickers read without JSON.parse) -----------

/** The same JSON with a space after its first brace: never on the compact path. */
function spaced(frame: string): string {
  return frame.startsWith("{") ? `{ ${frame.slice(1)}` : frame;
}

/** What parsing `frame` gives: the parsed frame, or the error class and message. */
function outcome(frame: string): unknown {
  try {
    return parseBinanceFrame(frame, RX, SYMBOLS);
  } catch (error) {
    return error instanceof MalformedFrameError ? `MalformedFrameError: ${error.message}` : error;
  }
}

/** Combined-stream frames the compact path reads: trades, depth diffs, book tickers. */
const COMPACT_SEEDS = [
  ...SESSION,
  ...NKN.slice(1),
  ...lines("nautilus_ws_spot_trade_2021-12-12.jsonl"),
  ...lines("docs_web_socket_streams_examples.jsonl")
    .filter((l) => l.includes('"e":"trade"'))
    .map((data) => JSON.stringify({ stream: "bnbbtc@trade", data: JSON.parse(data) })),
].filter((f) =>
  f.includes('"e":"depthUpdate"') || f.includes("@bookTicker") || f.includes('"e":"trade"')
);

Deno.test("trades, depth diffs and book tickers read the same on the compact path and the general one", () => {
  const frames = COMPACT_SEEDS;
  assert.ok(frames.length > 300, `${frames.length} frames`);
  assert.ok(frames.some((f) => f.includes('"e":"trade"')));
  for (const frame of frames) {
    const compact = parseBinanceCompactFrame(frame, RX, SYMBOLS);
    assert.notEqual(compact, null, frame);
    assert.deepEqual(compact, outcome(spaced(frame)), frame);
  }
  const diff = (fields: string, symbol = "NKNUSDT") =>
    `{"stream":"nknusdt@depth@100ms","data":{"e":"depthUpdate","E":1633998512068,"s":"${symbol}",${fields}}}`;
  const trade = (fields: string, symbol = "NKNUSDT") =>
    `{"stream":"nknusdt@trade","data":{"e":"trade","E":1639351062244,"s":"${symbol}",${fields}}}`;
  const ticker = (fields: string, symbol = "NKNUSDT") =>
    `{"stream":"nknusdt@bookTicker","data":{"u":499869768,"s":"${symbol}",${fields}}}`;
  const edges = [
    diff('"U":1,"u":2,"b":[],"a":[]'),
    diff('"U":0,"u":0,"b":[["0","0"]],"a":[["12","3.5"],["13.25","0.00000001"]]'),
    diff('"U":3,"u":2,"b":[],"a":[]'), // first id above final: refused
    diff('"U":1,"u":2,"b":[],"a":[]', "XYZUSDT"), // unknown symbol: refused
    diff('"U":1,"u":9007199254740993,"b":[],"a":[]'), // beyond a safe integer
    diff('"U":01,"u":2,"b":[],"a":[]'), // not JSON
    diff('"U":1,"u":2,"b":[["1.","2"]],"a":[]'),
    diff('"U":1,"u":2,"b":[[".5","2"]],"a":[]'),
    diff('"U":1,"u":2,"b":[["-1","2"]],"a":[]'),
    diff('"U":1,"u":2,"b":[["1","2","3"]],"a":[]'), // a legacy third element is cut
    diff('"U":1,"u":2,"b":[["1","2"],],"a":[]'),
    diff('"U":1,"u":2,"b":[["1","2"]],"a":[],"x":1'),
    diff('"U":1,"u":2,"b":[["1e3","2"]],"a":[]'),
    diff('"U":1,"u":2,"b":[["1","2"]],"a":[]', "NKN\\u0055SDT"),
    ticker('"b":"0.35210000","B":"672.00000000","a":"0.35260000","A":"3199.00000000"'),
    ticker('"b":"0.35210000","B":"672","a":"0.3526","A":"0"', "XYZUSDT"),
    ticker('"b":"0.35210000","B":"672","a":"0.3526","A":"1.e2"'),
    ticker('"b":"0.35210000","B":"672","a":"0.3526","A":"1","E":1633998512068'),
    `{"stream":"nknusdt@bookTicker","data":{"u":-1,"s":"NKNUSDT","b":"1","B":"1","a":"1","A":"1"}}`,
    trade('"t":7,"p":"4149.74","q":"0.4387","T":1639351062243,"m":true,"M":true'),
    trade('"t":7,"p":"4149.74","q":"0.4387","b":1,"a":2,"T":1639351062243,"m":false,"M":true'),
    trade('"t":7,"p":"4149.74","q":"0.4387","T":1639351062243,"m":true,"M":true', "XYZUSDT"),
    trade('"t":7,"p":"4149.74","q":"0.4387","T":1639351062243,"m":1,"M":true'),
    trade('"t":9007199254740993,"p":"1","q":"1","T":1,"m":true,"M":true'),
    trade('"t":7,"p":"1","q":"1","T":1,"m":true,"M":true,"X":"NEW"'),
    trade('"t":7,"p":"1","q":"1","b":1,"T":1,"m":true,"M":true'),
  ];
  let compactEdges = 0;
  for (const frame of edges) {
    assert.deepEqual(outcome(frame), outcome(spaced(frame)), frame);
    if (parseBinanceCompactFrame(frame, RX, SYMBOLS) !== null) compactEdges++;
  }
  assert.equal(compactEdges, 5); // the first two diffs, the first ticker, the first two trades
  const [compact] = [diffOf(diff('"U":1,"u":2,"b":[["1","2","3"]],"a":[["0.10","5"]]'))];
  assert.deepEqual([compact.bids, compact.asks], [[["1", "2"]], [["0.10", "5"]]]);
});

Deno.test("mutated trades, depth diffs and book tickers read the same on both paths", () => {
  const random = prng(20211013);
  const seeds = COMPACT_SEEDS;
  let parsed = 0;
  for (let round = 0; round < 5_000; round++) {
    const frame = mutateFrame(seeds[Math.floor(random() * seeds.length)]!, random);
    const general = outcome(spaced(frame));
    assert.deepEqual(outcome(frame), general, frame);
    const compact = parseBinanceCompactFrame(frame, RX, SYMBOLS);
    if (compact !== null) {
      assert.deepEqual(compact, general, frame);
      parsed++;
    }
  }
  assert.ok(parsed > 500, `${parsed} mutated frames read on the compact path`);
});

/** Every decimal of a parsed event is a plain decimal string: garbage never gets through. */
function assertSane(event: MarketEvent): void {
  const decimal = /^\d+(?:\.\d+)?$/;
  const values = event.kind === "trade"
    ? [event.price, event.qty]
    : event.kind === "top"
    ? [event.bid_price, event.bid_qty, event.ask_price, event.ask_qty]
    : event.kind === "book"
    ? [...event.bids, ...event.asks].flat()
    : event.kind === "bar"
    ? [event.open, event.high, event.low, event.close, event.volume]
    : [];
  for (const value of values) assert.match(value, decimal);
  assert.ok(Number.isSafeInteger(event.ts_exchange));
}

// --- Book sync ---------------------------------------------------------------------

const NKN_SNAPSHOT = parseBinanceDepthSnapshot(NKN[0]!);
const NKN_DIFFS = NKN.slice(1).map((frame, i) => diffOf(frame, RX + i));

/** The reference book after the snapshot and every diff with u > lastUpdateId. */
function referenceAfter(snapshot: BinanceDepthSnapshot, diffs: BinanceDepthDiff[]): ReferenceBook {
  const book = new ReferenceBook(snapshot.bids, snapshot.asks);
  for (const diff of diffs) {
    if (diff.finalUpdateId > snapshot.lastUpdateId) book.apply(diff.bids, diff.asks);
  }
  return book;
}

Deno.test("NKNUSDT: snapshot then 150 diffs, the first dropped, the rest applied, no resync", () => {
  assert.equal(NKN_DIFFS.length, 150);
  const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT");
  assert.equal(sync.state, "waiting_snapshot");
  const first = sync.onSnapshot(NKN_SNAPSHOT, RX);
  assert.equal(first.status, "ok");
  assert.equal(first.events.length, 1);
  assert.equal(first.events[0]!.action, "snapshot");
  assert.equal(first.events[0]!.sequence, 499869752);
  assert.equal(first.events[0]!.bids.length, NKN_SNAPSHOT.bids.length);
  const deltas = [];
  for (const [i, diff] of NKN_DIFFS.entries()) {
    const result = sync.onDiff(diff);
    assert.equal(result.status, "ok", `diff ${i}: ${result.reason}`);
    if (i === 0) assert.deepEqual(result.events, [], "u <= lastUpdateId is dropped");
    else deltas.push(...result.events);
  }
  assert.equal(deltas.length, 149);
  assert.ok(deltas.every((e) => e.action === "delta" && e.symbol === "NKN-USDT"));
  assert.deepEqual(deltas.map((e) => e.sequence), NKN_DIFFS.slice(1).map((d) => d.finalUpdateId));
  assert.equal(deltas[0]!.ts_exchange, NKN_DIFFS[1]!.eventTimeUs);
  assert.equal(sync.lastUpdateId, NKN_DIFFS.at(-1)!.finalUpdateId);

  const reference = referenceAfter(NKN_SNAPSHOT, NKN_DIFFS);
  assert.deepEqual(bookTop(sync, 20), reference.top(20));
  assert.deepEqual(sync.book.size(), { bids: reference.bids.size, asks: reference.asks.size });
  assert.equal(sync.book.crossed(), false);
  // Worked out separately (Python decimal.Decimal over the raw lines): the final best levels.
  assert.deepEqual(sync.book.levels("bid", 3), [
    ["0.35270000", "9602.00000000"],
    ["0.35260000", "2829.00000000"],
    ["0.35250000", "1850.00000000"],
  ]);
  assert.deepEqual(sync.book.levels("ask", 3), [
    ["0.35310000", "152.00000000"],
    ["0.35320000", "949.00000000"],
    ["0.35330000", "2713.00000000"],
  ]);
  assert.deepEqual(sync.book.size(), { bids: 614, asks: 994 });
});

Deno.test("NKNUSDT: diffs buffered before the snapshot are applied into one snapshot event", () => {
  const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT");
  for (const diff of NKN_DIFFS) {
    const result = sync.onDiff(diff);
    assert.equal(result.status, "waiting_snapshot");
    assert.deepEqual(result.events, []);
  }
  assert.equal(sync.bufferedDiffs, 150);
  const result = sync.onSnapshot(NKN_SNAPSHOT, RX);
  assert.equal(result.status, "ok");
  assert.equal(result.events.length, 1);
  const snapshot = result.events[0]!;
  assert.equal(snapshot.action, "snapshot");
  assert.equal(snapshot.sequence, NKN_DIFFS.at(-1)!.finalUpdateId);
  assert.equal(snapshot.ts_exchange, NKN_DIFFS.at(-1)!.eventTimeUs);
  assert.equal(snapshot.ts_local, RX);
  const reference = referenceAfter(NKN_SNAPSHOT, NKN_DIFFS).top(Infinity);
  assert.deepEqual(snapshot.bids.map(([p, s]) => [Number(p), s]), reference.bids);
  assert.deepEqual(snapshot.asks.map(([p, s]) => [Number(p), s]), reference.asks);
  assert.equal(sync.bufferedDiffs, 0);
});

/** Replays the cryptofeed envelope (real interleaving of REST snapshots and stream frames). */
function replayEnvelope() {
  const syncs = new Map(SESSION_SYMBOLS.map((s) => [s, new BinanceBookSync(s, binanceSymbol(s))]));
  const diffs = new Map<string, BinanceDepthDiff[]>(SESSION_SYMBOLS.map((s) => [s, []]));
  const snapshots = new Map<string, BinanceDepthSnapshot>();
  /** Top of book after each applied update id, per symbol. */
  const tops = new Map<string, Map<number, { bid: Level | null; ask: Level | null }>>(
    SESSION_SYMBOLS.map((s) => [s, new Map()]),
  );
  const tickers: { symbol: string; u: number; bid: Level; ask: Level }[] = [];
  const results: BinanceSyncResult[] = [];
  for (const line of ENVELOPE) {
    const record = JSON.parse(line);
    const receivedUs = Math.round(record.ts * 1e6);
    if (record.t === "http") {
      const symbol = SYMBOLS.canonical(new URL(record.url).searchParams.get("symbol")!)!;
      const snapshot = parseBinanceDepthSnapshot(record.data);
      snapshots.set(symbol, snapshot);
      const sync = syncs.get(symbol)!;
      results.push(sync.onSnapshot(snapshot, receivedUs));
      tops.get(symbol)!.set(sync.lastUpdateId!, sync.book.top());
    } else if (record.t === "recv") {
      const { events, control } = parseBinanceFrame(record.data, receivedUs, SYMBOLS);
      if (control?.type === "depth_diff") {
        diffs.get(control.symbol)!.push(control);
        const sync = syncs.get(control.symbol)!;
        results.push(sync.onDiff(control));
        if (sync.state === "synced") {
          tops.get(control.symbol)!.set(sync.lastUpdateId!, sync.book.top());
        }
      }
      for (const event of events) {
        if (event.kind === "top") {
          const u = JSON.parse(record.data).data.u;
          tickers.push({
            symbol: event.symbol,
            u,
            bid: [event.bid_price, event.bid_qty],
            ask: [event.ask_price, event.ask_qty],
          });
        }
      }
    }
  }
  return { syncs, diffs, snapshots, tops, tickers, results };
}

Deno.test("all four session symbols sync without resync in the real arrival order", () => {
  const { syncs, diffs, snapshots, results } = replayEnvelope();
  for (const [i, result] of results.entries()) assertOk(result, `input ${i}`);
  for (const symbol of SESSION_SYMBOLS) {
    const sync = syncs.get(symbol)!;
    assert.equal(sync.state, "synced", symbol);
    const reference = referenceAfter(snapshots.get(symbol)!, diffs.get(symbol)!);
    assert.deepEqual(bookTop(sync, 25), reference.top(25), symbol);
    assert.equal(sync.lastUpdateId, diffs.get(symbol)!.at(-1)!.finalUpdateId, symbol);
  }
});

Deno.test("the synced book's top matches bookTicker at the same update id", () => {
  const { tops, tickers } = replayEnvelope();
  let compared = 0;
  for (const ticker of tickers) {
    const top = tops.get(ticker.symbol)!.get(ticker.u);
    if (top === undefined) continue;
    assert.deepEqual(top, { bid: ticker.bid, ask: ticker.ask }, `${ticker.symbol} u=${ticker.u}`);
    compared++;
  }
  assert.ok(compared >= 20, `only ${compared} bookTicker frames matched an update id`);
});

Deno.test("all four session symbols sync when every diff arrives before the snapshot", () => {
  const snapshots = new Map(
    SNAPSHOTS.map((body) => {
      const snapshot = parseBinanceDepthSnapshot(body);
      return [snapshot.lastUpdateId, snapshot];
    }),
  );
  const bySymbol = new Map<string, BinanceDepthDiff[]>();
  for (const frame of SESSION) {
    const { control } = parseBinanceFrame(frame, RX, SYMBOLS);
    if (control?.type !== "depth_diff") continue;
    bySymbol.set(control.symbol, [...(bySymbol.get(control.symbol) ?? []), control]);
  }
  const lastIds: Record<string, number> = {
    "NKN-USDT": 499869752,
    "BLZ-ETH": 281916627,
    "LRC-BTC": 259345543,
    "RUNE-EUR": 15602511,
  };
  for (const symbol of SESSION_SYMBOLS) {
    const sync = new BinanceBookSync(symbol, binanceSymbol(symbol));
    const diffs = bySymbol.get(symbol)!;
    for (const diff of diffs) assert.equal(sync.onDiff(diff).status, "waiting_snapshot");
    const snapshot = snapshots.get(lastIds[symbol]!)!;
    const result = sync.onSnapshot(snapshot, RX);
    assert.equal(result.status, "ok", `${symbol}: ${result.reason}`);
    assert.deepEqual(bookTop(sync, 25), referenceAfter(snapshot, diffs).top(25), symbol);
  }
});

Deno.test("a missing diff is a gap: resync, then a fresh snapshot recovers", () => {
  const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT");
  sync.onSnapshot(NKN_SNAPSHOT, RX);
  const gapAt = 60;
  for (const diff of NKN_DIFFS.slice(0, gapAt)) assertOk(sync.onDiff(diff), "before gap");
  const result = sync.onDiff(NKN_DIFFS[gapAt + 1]!);
  assert.equal(result.status, "resync");
  assert.match(result.reason!, /^Gap: diff U=\d+ does not follow the previous u=\d+$/);
  assert.deepEqual(result.events, []);
  assert.equal(sync.state, "waiting_snapshot");
  assert.equal(sync.lastUpdateId, null);
  assert.deepEqual(sync.book.size(), { bids: 0, asks: 0 }, "the corrupt book is dropped");
  assert.equal(sync.bufferedDiffs, 1, "buffering restarts from the diff after the gap");

  // Recover: the rest of the stream, then a snapshot as of the diff after the gap.
  for (const diff of NKN_DIFFS.slice(gapAt + 2, gapAt + 10)) {
    assert.equal(sync.onDiff(diff).status, "waiting_snapshot");
  }
  const upTo = NKN_DIFFS.slice(0, gapAt + 2);
  const reference = referenceAfter(NKN_SNAPSHOT, upTo).top(Infinity);
  const fresh: BinanceDepthSnapshot = {
    lastUpdateId: upTo.at(-1)!.finalUpdateId,
    bids: reference.bids.map(([p, s]) => [String(p), s]),
    asks: reference.asks.map(([p, s]) => [String(p), s]),
  };
  const recovered = sync.onSnapshot(fresh, RX);
  assert.equal(recovered.status, "ok", recovered.reason);
  assert.equal(recovered.events[0]!.sequence, NKN_DIFFS[gapAt + 9]!.finalUpdateId);
  for (const diff of NKN_DIFFS.slice(gapAt + 10)) assertOk(sync.onDiff(diff), "after recovery");
  assert.deepEqual(bookTop(sync, 20), referenceAfter(NKN_SNAPSHOT, NKN_DIFFS).top(20));
});

Deno.test("a stale snapshot is refused with resync and the buffer is kept", () => {
  const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT");
  const later = NKN_DIFFS.slice(10);
  for (const diff of later) sync.onDiff(diff);
  const result = sync.onSnapshot(NKN_SNAPSHOT, RX);
  assert.equal(result.status, "resync");
  assert.match(result.reason!, /older than the first buffered diff/);
  assert.equal(sync.state, "waiting_snapshot");
  assert.equal(sync.bufferedDiffs, later.length);
  // A snapshot as of just before the buffered diffs is accepted.
  const reference = referenceAfter(NKN_SNAPSHOT, NKN_DIFFS.slice(0, 10)).top(Infinity);
  const ok = sync.onSnapshot({
    lastUpdateId: NKN_DIFFS[9]!.finalUpdateId,
    bids: reference.bids.map(([p, s]) => [String(p), s]),
    asks: reference.asks.map(([p, s]) => [String(p), s]),
  }, RX);
  assert.equal(ok.status, "ok", ok.reason);
  assert.deepEqual(bookTop(sync, 20), referenceAfter(NKN_SNAPSHOT, NKN_DIFFS).top(20));
});

Deno.test("BinanceBookSync publishes a snapshot no diff has reached yet (the session holds it until one confirms it), and the next diff must bridge it", () => {
  const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT");
  const early = { ...NKN_SNAPSHOT, lastUpdateId: NKN_DIFFS[5]!.finalUpdateId };
  assert.equal(sync.onSnapshot(early, RX).status, "ok");
  assert.deepEqual(sync.onDiff(NKN_DIFFS[3]!), { status: "ok", events: [] }, "old diff dropped");
  const gap = sync.onDiff(NKN_DIFFS[7]!);
  assert.equal(gap.status, "resync");
  assert.match(gap.reason!, /does not bridge the snapshot/);
});

function syntheticDiff(
  first: number,
  last: number,
  bids: Level[],
  asks: Level[],
): BinanceDepthDiff {
  return {
    type: "depth_diff",
    symbol: "BTC-USDT",
    venueSymbol: "BTCUSDT",
    firstUpdateId: first,
    finalUpdateId: last,
    bids,
    asks,
    eventTimeUs: RX,
    receivedUs: RX,
  };
}

Deno.test("a crossed book after a diff is detected and resynced", () => {
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT");
  sync.onSnapshot({ lastUpdateId: 10, bids: [["100.0", "1"]], asks: [["101.0", "1"]] }, RX);
  assert.equal(sync.onDiff(syntheticDiff(11, 11, [["100.5", "2"]], [])).status, "ok");
  const crossed = sync.onDiff(syntheticDiff(12, 12, [["101", "1"]], []));
  assert.equal(crossed.status, "resync");
  assert.match(crossed.reason!, /^Book crossed at update 12: bid 101 >= ask 101.0$/);
  assert.equal(sync.state, "waiting_snapshot");

  const lenient = new BinanceBookSync("BTC-USDT", "BTCUSDT", { resyncOnCrossed: false });
  lenient.onSnapshot({ lastUpdateId: 10, bids: [["100", "1"]], asks: [["101", "1"]] }, RX);
  assert.equal(lenient.onDiff(syntheticDiff(11, 11, [["102", "1"]], [])).status, "ok");
  assert.equal(lenient.book.crossed(), true);

  const crossedSnapshot = new BinanceBookSync("BTC-USDT", "BTCUSDT");
  const result = crossedSnapshot.onSnapshot(
    { lastUpdateId: 1, bids: [["5", "1"]], asks: [["4", "1"]] },
    RX,
  );
  assert.equal(result.status, "resync");
  assert.match(result.reason!, /crossed/);
});

Deno.test("the diff buffer is bounded: overflow is resync", () => {
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT", { maxBufferedDiffs: 3 });
  for (let u = 1; u <= 3; u++) {
    assert.equal(sync.onDiff(syntheticDiff(u, u, [], [])).status, "waiting_snapshot");
  }
  const overflow = sync.onDiff(syntheticDiff(4, 4, [], []));
  assert.equal(overflow.status, "resync");
  assert.match(overflow.reason!, /More than 3 diffs/);
  assert.equal(sync.bufferedDiffs, 1);
  assert.throws(() => new BinanceBookSync("A-B", "AB", { maxBufferedDiffs: 0 }), RangeError);
});

Deno.test("a broken chain while buffering keeps only the diffs after the break", () => {
  const sync = new BinanceBookSync("BTC-USDT", "BTCUSDT");
  sync.onDiff(syntheticDiff(1, 2, [["1", "1"]], []));
  sync.onDiff(syntheticDiff(3, 4, [], []));
  sync.onDiff(syntheticDiff(9, 10, [], []));
  assert.equal(sync.bufferedDiffs, 1);
  const result = sync.onSnapshot({ lastUpdateId: 8, bids: [], asks: [["2", "1"]] }, RX);
  assert.equal(result.status, "ok");
  assert.equal(result.events[0]!.sequence, 10);
});

Deno.test("the sync ignores a second snapshot, rejects other symbols, and resets", () => {
  const sync = new BinanceBookSync("NKN-USDT", "NKNUSDT");
  sync.onSnapshot(NKN_SNAPSHOT, RX);
  const again = sync.onSnapshot(NKN_SNAPSHOT, RX);
  assert.deepEqual(again, { status: "ok", events: [], reason: "Already synced; snapshot ignored" });
  assert.throws(() => sync.onDiff(syntheticDiff(1, 1, [], [])), TypeError);
  sync.reset();
  assert.equal(sync.state, "waiting_snapshot");
  assert.deepEqual(sync.book.size(), { bids: 0, asks: 0 });
});
