import assert from "node:assert/strict";
import { crc32 as zlibCrc32 } from "node:zlib";
import { isDecimal } from "../market/decimal.ts";
import {
  type BookEvent,
  isoToUs,
  type Level,
  MalformedFrameError,
  type TopEvent,
} from "../market/events.ts";
import { OrderBook } from "../market/order_book.ts";
import { KrakenBookSync } from "../venues/kraken/book_sync.ts";
import { crc32, krakenChecksum, krakenChecksumInput } from "../venues/kraken/checksum.ts";
import {
  type KrakenBookControl,
  krakenSymbol,
  type ParsedFrame,
  parseKrakenFrame,
  pingMessage,
  subscribeMessage,
  toKrakenSymbol,
  unsubscribeMessage,
} from "../venues/kraken/parse.ts";
import { fixtureLines, prng } from "./_helpers.ts";

const V2_RAW = "v2_book_minagbp_d25_2026-08-16.raw.jsonl";
const V2_CAPTURE = "v2_book_minagbp_d25_2026-08-16.capture.ndjson";
const V1_BOOK = "v1_book1000_2021-04-17.raw.jsonl";
const RECEIVED_US = 1_786_000_000_000_000;

function lines(file: string): string[] {
  return fixtureLines("kraken", file);
}

/** The v2 session's frames, without line 1: the subscribe request this client sent. */
function receivedV2(): string[] {
  return lines(V2_RAW).slice(1);
}

function bookControl(frame: string): KrakenBookControl {
  const { control } = parseKrakenFrame(frame, RECEIVED_US);
  assert.equal(control?.type, "book");
  return control as KrakenBookControl;
}

// ---- parsing ------------------------------------------------------------

Deno.test("every frame received in the Kraken v2 capture parses", () => {
  const raw = lines(V2_RAW);
  // Line 1 is the subscribe request this client sent (the capture marks it "dir": "tx"),
  // not a server frame: the parser rejects it, and the builder reproduces it exactly.
  const capture = lines(V2_CAPTURE);
  assert.match(capture[1]!, /"dir": "tx"/);
  assert.throws(() => parseKrakenFrame(raw[0]!, RECEIVED_US), MalformedFrameError);
  assert.equal(subscribeMessage("book", ["MINA/GBP"], { depth: 25, snapshot: true }), raw[0]);

  const counts: Record<string, number> = {};
  for (const frame of receivedV2()) {
    const { events, control } = parseKrakenFrame(frame, RECEIVED_US);
    assert.deepEqual(events, []);
    assert.ok(control);
    const key = control.type === "book" ? `book ${control.action}` : control.type;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  assert.deepEqual(counts, {
    status: 1,
    ack: 1,
    "book snapshot": 1,
    "book update": 29,
    heartbeat: 60,
  });
});

Deno.test("Kraken status and subscribe ack become controls, the connection id exact", () => {
  const [status, ack] = receivedV2();
  assert.deepEqual(parseKrakenFrame(status!, RECEIVED_US).control, {
    type: "status",
    system: "online",
    version: "2.0.10",
    api_version: "v2",
    connection_id: "3007355780899554854",
  });
  assert.deepEqual(parseKrakenFrame(ack!, RECEIVED_US).control, {
    type: "ack",
    method: "subscribe",
    success: true,
    channel: "book",
    venue_symbol: "MINA/GBP",
    error: null,
    req_id: null,
  });
  const failed = '{"error":"Currency pair not supported","method":"subscribe","req_id":7,' +
    '"success":false,"symbol":"ABC/XYZ","time_in":"2026-08-16T23:37:04.849274Z",' +
    '"time_out":"2026-08-16T23:37:04.849309Z"}';
  assert.deepEqual(parseKrakenFrame(failed, RECEIVED_US).control, {
    type: "ack",
    method: "subscribe",
    success: false,
    channel: null,
    venue_symbol: "ABC/XYZ",
    error: "Currency pair not supported",
    req_id: 7,
  });
  const pong = '{"method":"pong","req_id":101,"time_in":"2026-08-16T23:37:04.849274Z",' +
    '"time_out":"2026-08-16T23:37:04.849309Z"}';
  assert.deepEqual(parseKrakenFrame(pong, RECEIVED_US), {
    events: [],
    control: { type: "pong", req_id: 101 },
  });
  assert.deepEqual(parseKrakenFrame('{"channel":"heartbeat"}', RECEIVED_US), {
    events: [],
    control: { type: "heartbeat" },
  });
});

Deno.test("Kraken book frames keep prices and sizes as the exact text sent", () => {
  const frames = receivedV2();
  const snapshot = bookControl(frames[2]!);
  assert.equal(snapshot.action, "snapshot");
  assert.equal(snapshot.symbol, "MINA-GBP");
  assert.equal(snapshot.venue_symbol, "MINA/GBP");
  assert.equal(snapshot.bids.length, 25);
  assert.equal(snapshot.asks.length, 25);
  assert.deepEqual(snapshot.bids[0], ["0.0286", "74198.19125726"]);
  assert.deepEqual(snapshot.bids[2], ["0.0280", "12925.63811394"]);
  assert.deepEqual(snapshot.bids[4], ["0.0276", "4207.74770000"]);
  assert.deepEqual(snapshot.asks[0], ["0.0288", "32416.38964164"]);
  assert.equal(snapshot.checksum, 2570005138);
  assert.equal(snapshot.timestamp, isoToUs("2026-08-16T23:37:04.190019Z"));
  const update = bookControl(
    frames.find((f) => f.startsWith('{"channel":"book","type":"update"'))!,
  );
  assert.deepEqual(update.bids, [
    ["0.0279", "0.00000000"],
    ["0.0020", "5220.00000000"],
    ["0.0277", "1486.59884909"],
  ]);
  assert.deepEqual(update.asks, []);
  assert.equal(update.checksum, 222201382);
});

/**
 * The frame with a space after its opening brace: the same JSON, but not as
 * Kraken writes it, so it takes the general parser instead of the compact
 * book path.
 */
function spaced(frame: string): string {
  return frame.startsWith("{") ? `{ ${frame.slice(1)}` : frame;
}

/** What parsing `frame` gives: the parsed frame, or the class of the error thrown. */
function outcome(frame: string): ParsedFrame | string {
  try {
    return parseKrakenFrame(frame, RECEIVED_US);
  } catch (error) {
    return error instanceof MalformedFrameError ? "MalformedFrameError" : String(error);
  }
}

Deno.test("Kraken book frames read the same on the compact path and the general parser", () => {
  const books = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  assert.equal(books.length, 30);
  for (const frame of books) {
    assert.deepEqual(
      parseKrakenFrame(frame, RECEIVED_US),
      parseKrakenFrame(spaced(frame), RECEIVED_US),
    );
  }
  const entry = (levels: string, rest = '"checksum":7,"timestamp":"2026-08-16T23:37:05Z"') =>
    `{"channel":"book","type":"update","data":[{"symbol":"XBT/USD","bids":[${levels}],` +
    `"asks":[],${rest}}]}`;
  const frames = [
    entry('{"price":0,"qty":0}'),
    entry('{"price":0.0,"qty":10}'),
    entry('{"price":65000.10,"qty":0.00005100},{"price":1,"qty":2}'),
    entry('{"price":01,"qty":1}'),
    entry('{"price":1.,"qty":1}'),
    entry('{"price":1e3,"qty":1}'),
    entry('{"price":-1,"qty":1}'),
    entry('{"price":1,"qty":1},'),
    entry('{"qty":1,"price":1}'),
    entry("", '"checksum":4294967295,"timestamp":"2026-08-16T23:37:05Z"'),
    entry("", '"checksum":4294967296,"timestamp":"2026-08-16T23:37:05Z"'),
    entry("", '"checksum":01,"timestamp":"2026-08-16T23:37:05Z"'),
    entry("", '"checksum":7,"timestamp":"yesterday"'),
    entry("", '"checksum":7,"timestamp":"2026-08-16T23:37:05.Z"'),
    entry("", '"checksum":7,"timestamp":"2026-08-16T23:37:05Z","extra":1'),
  ];
  for (const frame of frames) assert.deepEqual(outcome(frame), outcome(spaced(frame)), frame);
  assert.equal(
    bookControl(entry('{"price":65000.10,"qty":0.00005100}')).bids[0]![0],
    "65000.10",
  );
  assert.equal(bookControl(entry("")).symbol, "BTC-USD");
});

Deno.test("a Kraken book frame too long for the compact path is read by the general parser", () => {
  const level = '{"price":0.0286,"qty":74198.19125726}';
  const levels = Array.from({ length: 20_000 }, () => level).join(",");
  const frame = '{"channel":"book","type":"snapshot","data":[{"symbol":"MINA/GBP",' +
    `"bids":[${levels}],"asks":[${levels}],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}`;
  assert.ok(frame.length > 1 << 20);
  const book = bookControl(frame);
  assert.equal(book.bids.length, 20_000);
  assert.deepEqual(book.asks[19_999], ["0.0286", "74198.19125726"]);
});

Deno.test("mutated Kraken book frames read the same on both paths", () => {
  const random = prng(20260816);
  const seeds = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  const alphabet = '{}[]",:.-+eE0123456789 \\abXZ/T';
  let compact = 0;
  for (let i = 0; i < 5_000; i++) {
    let frame = seeds[Math.floor(random() * seeds.length)]!;
    const at = Math.floor(random() * frame.length);
    const choice = random();
    if (choice < 0.3) frame = frame.slice(0, at) + frame.slice(at + 1);
    else {
      const c = alphabet[Math.floor(random() * alphabet.length)];
      frame = frame.slice(0, at) + c + frame.slice(at + (choice < 0.65 ? 1 : 0));
    }
    const result = outcome(frame);
    assert.deepEqual(result, outcome(spaced(frame)), frame);
    if (typeof result !== "string") compact++;
  }
  assert.ok(compact > 500, `${compact} mutated frames parsed`);
});

Deno.test("Kraken trade frames become trades with the taker side, BTC for XBT", () => {
  const frame = '{"channel":"trade","type":"update","data":[' +
    '{"symbol":"BTC/USD","side":"buy","price":65083.10,"qty":0.00005100,"ord_type":"market",' +
    '"trade_id":4665906,"timestamp":"2026-08-16T23:37:04.708706Z"},' +
    '{"symbol":"ETH/XBT","side":"sell","price":0.02948,"qty":1.5,"ord_type":"limit",' +
    '"trade_id":4665907,"timestamp":"2026-08-16T23:37:04.7Z"}]}';
  const { events, control } = parseKrakenFrame(frame, RECEIVED_US);
  assert.equal(control, null);
  assert.deepEqual(events, [
    {
      exchange: "kraken",
      symbol: "BTC-USD",
      venue_symbol: "BTC/USD",
      ts_exchange: isoToUs("2026-08-16T23:37:04.708706Z"),
      ts_local: RECEIVED_US,
      kind: "trade",
      trade_id: "4665906",
      price: "65083.10",
      qty: "0.00005100",
      side: "buy",
    },
    {
      exchange: "kraken",
      symbol: "ETH-BTC",
      venue_symbol: "ETH/XBT",
      ts_exchange: isoToUs("2026-08-16T23:37:04.700000Z"),
      ts_local: RECEIVED_US,
      kind: "trade",
      trade_id: "4665907",
      price: "0.02948",
      qty: "1.5",
      side: "sell",
    },
  ]);
  const snapshot = frame.replace('"type":"update"', '"type":"snapshot"');
  assert.equal(parseKrakenFrame(snapshot, RECEIVED_US).events.length, 2);
});

Deno.test("Kraken timestamps match isoToUs for every form", () => {
  const random = prng(7);
  for (let i = 0; i < 2_000; i++) {
    const ms = Math.floor(random() * 4_102_444_800_000); // 1970..2100
    const digits = Math.floor(random() * 10);
    const fraction = digits === 0
      ? ""
      : "." + String(Math.floor(random() * 1e9)).padStart(9, "0").slice(0, digits);
    const iso = new Date(ms).toISOString().slice(0, 19) + fraction + "Z";
    const frame = '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",' +
      `"price":1,"qty":1,"ord_type":"market","trade_id":1,"timestamp":"${iso}"}]}`;
    assert.equal(parseKrakenFrame(frame, 0).events[0]!.ts_exchange, isoToUs(iso), iso);
  }
  for (
    const iso of [
      "2024-02-29T23:59:59.999999Z",
      "2026-08-16T23:37:04+02:00",
    ]
  ) {
    const frame = '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",' +
      `"price":1,"qty":1,"ord_type":"market","trade_id":1,"timestamp":"${iso}"}]}`;
    assert.equal(parseKrakenFrame(frame, 0).events[0]!.ts_exchange, isoToUs(iso), iso);
  }
  const tradeAt = (iso: string) =>
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy",' +
    `"price":1,"qty":1,"ord_type":"market","trade_id":1,"timestamp":"${iso}"}]}`;
  // A day past the month's end names no instant (Date.parse would roll it over); nor does a
  // time before 1970.
  for (
    const iso of [
      "2026-02-30T23:37:04Z",
      "1969-12-31T23:59:59.5Z",
      "2026-08-16T23:37:04.Z",
      "2026-13-16T23:37:04Z",
      "2026-08-16T24:37:04Z",
      "2026-08-16T23:37:04.12a456Z",
    ]
  ) {
    assert.throws(() => isoToUs(iso), MalformedFrameError, iso);
    assert.throws(() => parseKrakenFrame(tradeAt(iso), 0), MalformedFrameError, iso);
  }
});

Deno.test("Kraken symbols map both ways", () => {
  assert.equal(krakenSymbol("BTC/USD"), "BTC-USD");
  assert.equal(krakenSymbol("XBT/USD"), "BTC-USD");
  assert.equal(krakenSymbol("ETH/XBT"), "ETH-BTC");
  assert.equal(krakenSymbol("MINA/GBP"), "MINA-GBP");
  assert.equal(toKrakenSymbol("MINA-GBP"), "MINA/GBP");
  for (const bad of ["BTCUSD", "/USD", "BTC/", "A/B/C", ""]) {
    assert.throws(() => krakenSymbol(bad), MalformedFrameError);
  }
  assert.throws(() => toKrakenSymbol("BTCUSD"), TypeError);
});

Deno.test("Kraken request builders write the documented requests", () => {
  assert.equal(
    subscribeMessage("trade", ["BTC/USD", "ETH/USD"], { snapshot: false, reqId: 3 }),
    '{"method":"subscribe","params":{"channel":"trade","symbol":["BTC/USD","ETH/USD"],' +
      '"snapshot":false},"req_id":3}',
  );
  assert.equal(
    unsubscribeMessage("book", ["MINA/GBP"], { depth: 25 }),
    '{"method":"unsubscribe","params":{"channel":"book","symbol":["MINA/GBP"],"depth":25}}',
  );
  assert.equal(pingMessage(), '{"method":"ping"}');
  assert.equal(pingMessage(9), '{"method":"ping","req_id":9}');
  assert.throws(() => subscribeMessage("book", []), RangeError);
});

Deno.test("malformed Kraken frames throw MalformedFrameError with a reason", () => {
  const cases: [string, RegExp][] = [
    ["", /not valid JSON/],
    ["garbage", /not valid JSON/],
    ['{"channel":"book"', /not valid JSON/],
    ["[]", /not a JSON object/],
    ["42", /not a JSON object/],
    ["{}", /neither a channel nor a method/],
    ['{"channel":7}', /channel is not a string/],
    ['{"channel":"ticker","type":"update","data":[]}', /Unknown channel "ticker"/],
    ['{"channel":"book","type":"delta","data":[]}', /type is not snapshot or update/],
    ['{"channel":"book","type":"update","data":{}}', /data is not an array/],
    ['{"channel":"book","type":"update","data":[]}', /carries 0 entries/],
    ['{"channel":"book","type":"update","data":[1]}', /entry is not an object/],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /has no bids/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[{"price":"abc","qty":1}],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /price of the book level is not a decimal: "abc"/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[{"price":-1,"qty":1}],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /not a decimal: "-1"/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[{"price":1e3,"qty":1}],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /not a decimal: "1e3"/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[{"price":1,"qty":true}],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /qty of the book level is not a number/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[{"price":1}],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /book level has no qty/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[],"asks":[],"checksum":4294967296,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /not an unsigned 32-bit integer/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[],"asks":[],"checksum":"1","timestamp":"2026-08-16T23:37:05Z"}]}',
      /checksum of a book entry is not a number/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[],"asks":[],"checksum":1,"timestamp":"yesterday"}]}',
      /Invalid timestamp/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"AB","bids":[],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /not BASE\/QUOTE/,
    ],
    [
      '{"channel":"book","type":"update","data":[{"symbol":"A/B","bids":[],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"},{"symbol":"C/D","bids":[],"asks":[],"checksum":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /carries 2 entries/,
    ],
    [
      '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"up","price":1,"qty":1,"trade_id":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /side of a trade is not buy or sell/,
    ],
    [
      '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":"abc","qty":1,"trade_id":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /price of the trade is not a decimal/,
    ],
    [
      '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":1,"qty":1,"timestamp":"2026-08-16T23:37:05Z"}]}',
      /trade has no trade_id/,
    ],
    ['{"channel":"status","type":"update","data":[]}', /Status frame has no data/],
    ['{"method":"subscribe","success":"yes"}', /no boolean success/],
    ['{"method":"subscribe","success":false}', /no error text/],
    ['{"method":"pong","req_id":1.5}', /req_id is not an integer/],
  ];
  for (const [frame, reason] of cases) {
    assert.throws(() => parseKrakenFrame(frame, RECEIVED_US), (error: unknown) => {
      assert.ok(error instanceof MalformedFrameError, `${frame}: ${error}`);
      assert.equal(error.name, "MalformedFrameError");
      assert.match(error.message, reason, frame);
      assert.match(error.message, /^[A-Z]/);
      return true;
    });
  }
  assert.throws(() => parseKrakenFrame(null as unknown as string, 0), MalformedFrameError);
});

Deno.test("random truncations and mutations of Kraken frames never throw anything but MalformedFrameError", () => {
  const random = prng(1618678133);
  const seeds = [
    ...receivedV2().filter((f) => !f.includes("heartbeat")),
    '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD","side":"buy","price":65083.10,' +
    '"qty":0.00005100,"ord_type":"market","trade_id":4665906,"timestamp":"2026-08-16T23:37:04.708706Z"}]}',
    '{"method":"pong","req_id":101,"time_in":"2026-08-16T23:37:04.849274Z","time_out":"2026-08-16T23:37:04.849309Z"}',
  ];
  const alphabet = '{}[]",:.-+eE0123456789 \\abXZ/T';
  let parsed = 0;
  let rejected = 0;
  for (let i = 0; i < 20_000; i++) {
    let frame = seeds[Math.floor(random() * seeds.length)]!;
    const edits = 1 + Math.floor(random() * 2);
    for (let e = 0; e < edits; e++) {
      const at = Math.floor(random() * (frame.length + 1));
      const choice = random();
      if (choice < 0.3) frame = frame.slice(0, at);
      else if (choice < 0.55) frame = frame.slice(0, at) + frame.slice(at + 1);
      else {
        const c = alphabet[Math.floor(random() * alphabet.length)];
        frame = frame.slice(0, at) + c + frame.slice(at + (choice < 0.8 ? 1 : 0));
      }
    }
    let result: ParsedFrame;
    try {
      result = parseKrakenFrame(frame, RECEIVED_US);
    } catch (error) {
      assert.ok(error instanceof MalformedFrameError, `${error} on ${frame}`);
      rejected++;
      continue;
    }
    parsed++;
    // What does parse is well-formed: exact decimals, integer timestamps.
    for (const event of result.events) {
      assert.ok(event.kind === "trade" && isDecimal(event.price) && isDecimal(event.qty));
      assert.ok(Number.isInteger(event.ts_exchange));
    }
    if (result.control?.type === "book") {
      for (const [price, qty] of [...result.control.bids, ...result.control.asks]) {
        assert.ok(isDecimal(price) && isDecimal(qty), frame);
      }
      assert.ok(Number.isInteger(result.control.timestamp));
    }
  }
  assert.ok(parsed > 1_000 && rejected > 1_000, `parsed ${parsed}, rejected ${rejected}`);
});

// ---- checksum -----------------------------------------------------------

Deno.test("crc32 matches zlib's crc32", () => {
  assert.equal(crc32("123456789"), 0xcbf43926);
  assert.equal(crc32(""), 0);
  const random = prng(42);
  for (let i = 0; i < 500; i++) {
    let text = "";
    const length = Math.floor(random() * 64);
    for (let j = 0; j < length; j++) {
      text += String.fromCharCode(
        random() < 0.9 ? 32 + Math.floor(random() * 95) : 0xa0 + Math.floor(random() * 0x2000),
      );
    }
    assert.equal(crc32(text), zlibCrc32(text), JSON.stringify(text));
  }
});

Deno.test("krakenChecksum is the CRC32 of Kraken's documented string", () => {
  const asks: Level[] = [["0.0288", "32416.38964164"], ["0.0289", "18831.49589194"]];
  const bids: Level[] = [["0.0286", "74198.19125726"], ["0.0280", "12925.63811394"]];
  const input = krakenChecksumInput(asks, bids);
  assert.equal(input, "2883241638964164289188314958919428674198191257262801292563811394");
  assert.equal(krakenChecksum(asks, bids), crc32(input));
  // Levels beyond the 10th of a side do not count.
  const many: Level[] = Array.from({ length: 15 }, (_, i) => [`${100 + i}.5`, "1.0"]);
  assert.equal(krakenChecksum(many, many), krakenChecksum(many.slice(0, 10), many.slice(0, 10)));
  assert.equal(krakenChecksumInput(many, []), krakenChecksumInput(many.slice(0, 10), []));
});

// ---- book sync ----------------------------------------------------------

Deno.test("replaying the Kraken v2 book session verifies all 30 checksums", () => {
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  const mirror = new OrderBook();
  let verified = 0;
  let tops = 0;
  for (const frame of receivedV2()) {
    const { control } = parseKrakenFrame(frame, RECEIVED_US);
    if (control?.type !== "book") continue;
    const result = sync.onBook(control, RECEIVED_US);
    assert.equal(result.status, "ok", "reason" in result ? result.reason : "");
    verified++;
    const [book, ...rest] = result.events as [BookEvent, ...TopEvent[]];
    assert.equal(book.kind, "book");
    assert.equal(book.action, control.action === "snapshot" ? "snapshot" : "delta");
    assert.equal(book.ts_exchange, control.timestamp);
    assert.equal(book.sequence, null);
    // A consumer applying the published deltas holds exactly the synced book.
    if (book.action === "snapshot") mirror.replace(book.bids, book.asks);
    else mirror.applyAll(book.bids, book.asks);
    assert.deepEqual(mirror.levels("bid"), sync.levels("bid"));
    assert.deepEqual(mirror.levels("ask"), sync.levels("ask"));
    assert.ok(sync.levels("bid").length <= 25 && sync.levels("ask").length <= 25);
    for (const top of rest) {
      assert.equal(top.kind, "top");
      assert.deepEqual([top.bid_price, top.bid_qty], sync.top().bid);
      tops++;
    }
  }
  assert.equal(verified, 30);
  assert.ok(sync.live);
  // The MINA/GBP top never moved in this session: one top event, from the snapshot.
  assert.equal(tops, 1);
  assert.deepEqual(sync.top(), {
    bid: ["0.0286", "74198.19125726"],
    ask: ["0.0288", "32416.38964164"],
  });
});

Deno.test("KrakenBookSync publishes a top event when the best bid or ask changes", () => {
  const frames = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  sync.onBook(bookControl(frames[0]!), RECEIVED_US);
  // A new best bid inside the spread; its checksum computed from the expected book.
  const expected = new OrderBook();
  expected.replace(sync.levels("bid"), sync.levels("ask"));
  expected.apply("bid", "0.0287", "5.00000000");
  expected.truncate(25);
  const checksum = krakenChecksum(expected.levels("ask", 10), expected.levels("bid", 10));
  const frame = '{"channel":"book","type":"update","data":[{"symbol":"MINA/GBP","bids":' +
    `[{"price":0.0287,"qty":5.00000000}],"asks":[],"checksum":${checksum},` +
    '"timestamp":"2026-08-16T23:40:00.000001Z"}]}';
  const result = sync.onBook(bookControl(frame), RECEIVED_US + 1);
  assert.equal(result.status, "ok");
  assert.deepEqual(result.events[1], {
    exchange: "kraken",
    symbol: "MINA-GBP",
    venue_symbol: "MINA/GBP",
    ts_exchange: isoToUs("2026-08-16T23:40:00.000001Z"),
    ts_local: RECEIVED_US + 1,
    kind: "top",
    bid_price: "0.0287",
    bid_qty: "5.00000000",
    ask_price: "0.0288",
    ask_qty: "32416.38964164",
  });
  // An update below the top changes the book but not the top: no top event.
  const deeper = frames[1]!;
  const after = new OrderBook();
  after.replace(sync.levels("bid"), sync.levels("ask"));
  const control = bookControl(deeper);
  after.applyAll(control.bids, control.asks);
  after.truncate(25);
  control.checksum = krakenChecksum(after.levels("ask", 10), after.levels("bid", 10));
  const next = sync.onBook(control, RECEIVED_US + 2);
  assert.equal(next.status, "ok");
  assert.deepEqual(next.events.map((event) => event.kind), ["book"]);
});

Deno.test("Kraken deltas carry the levels truncation drops, with size 0", () => {
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  const frames = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  sync.onBook(bookControl(frames[0]!), RECEIVED_US);
  // The first update inserts a bid at 0.0277 in a full 25-level side: 0.0030 falls out.
  const result = sync.onBook(bookControl(frames[1]!), RECEIVED_US);
  assert.equal(result.status, "ok");
  const delta = result.events[0] as BookEvent;
  assert.deepEqual(delta.bids, [
    ["0.0279", "0.00000000"],
    ["0.0020", "5220.00000000"],
    ["0.0277", "1486.59884909"],
    ["0.0020", "0"],
  ]);
});

Deno.test("a tampered Kraken update fails its checksum and asks for a resync", () => {
  const frames = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  assert.equal(sync.onBook(bookControl(frames[0]!), RECEIVED_US).status, "ok");
  // Change one digit of a qty in the top 10: 1486.59884909 → 1486.59884919.
  assert.ok(frames[1]!.includes('"qty":1486.59884909'));
  const tampered = frames[1]!.replace('"qty":1486.59884909', '"qty":1486.59884919');
  const result = sync.onBook(bookControl(tampered), RECEIVED_US);
  assert.equal(result.status, "resync");
  assert.match(
    (result as { reason: string }).reason,
    /^Checksum mismatch after update .*Kraken sent 222201382, the local book gives \d+$/,
  );
  assert.deepEqual(result.events, []);
  assert.equal(sync.live, false);
  // Until a snapshot comes, updates are dropped, not resynced again.
  assert.deepEqual(sync.onBook(bookControl(frames[2]!), RECEIVED_US), {
    status: "waiting",
    events: [],
  });
  // The fresh snapshot of a resubscribe brings it back.
  assert.equal(sync.onBook(bookControl(frames[0]!), RECEIVED_US).status, "ok");
  assert.equal(sync.onBook(bookControl(frames[1]!), RECEIVED_US).status, "ok");
  assert.ok(sync.live);
});

Deno.test("a Kraken snapshot whose checksum does not match is not published", () => {
  const frames = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  const tampered = frames[0]!.replace('"qty":74198.19125726', '"qty":74198.19125727');
  const result = sync.onBook(bookControl(tampered), RECEIVED_US);
  assert.equal(result.status, "resync");
  assert.deepEqual(result.events, []);
});

Deno.test("a Kraken update before any snapshot asks for a resync", () => {
  const frames = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  const result = sync.onBook(bookControl(frames[1]!), RECEIVED_US);
  assert.deepEqual(result, {
    status: "resync",
    reason: "Book update arrived before a snapshot",
    events: [],
  });
  assert.throws(() => new KrakenBookSync("MINA-GBP", "MINA/GBP", 0), RangeError);
  const other = new KrakenBookSync("BTC-USD", "BTC/USD", 10);
  assert.throws(() => other.onBook(bookControl(frames[0]!), RECEIVED_US), TypeError);
});

Deno.test("KrakenBookSync without top events publishes only book events", () => {
  const frames = receivedV2().filter((f) => f.startsWith('{"channel":"book"'));
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25, { emitTop: false });
  for (const frame of frames) {
    const result = sync.onBook(bookControl(frame), RECEIVED_US);
    assert.equal(result.status, "ok");
    assert.ok(result.events.every((event) => event.kind === "book"));
  }
});

Deno.test("krakenChecksum verifies every checksum of the v1 depth-1000 session", () => {
  // Kraken v1 is another protocol (arrays, prices as strings), but its checksum is the
  // same CRC32 over the same price/volume text: replay all 10 pairs and check each "c".
  const books = new Map<number, { pair: string; book: OrderBook }>();
  const verifiedByPair: Record<string, number> = {};
  let verified = 0;
  for (const line of lines(V1_BOOK)) {
    const message = JSON.parse(line);
    if (!Array.isArray(message)) continue;
    const channelId = message[0] as number;
    const pair = message[message.length - 1] as string;
    assert.equal(message[message.length - 2], "book-1000");
    let entry = books.get(channelId);
    if (!entry) books.set(channelId, entry = { pair, book: new OrderBook() });
    let checksum: string | undefined;
    for (const part of message.slice(1, -2) as Record<string, string[][] | string>[]) {
      const level = (l: string[]): Level => [l[0]!, l[1]!];
      if (part.as || part.bs) {
        entry.book.replace(
          ((part.bs ?? []) as string[][]).map(level),
          ((part.as ?? []) as string[][]).map(level),
        );
      }
      for (const l of (part.a ?? []) as string[][]) entry.book.apply("ask", l[0]!, l[1]!);
      for (const l of (part.b ?? []) as string[][]) entry.book.apply("bid", l[0]!, l[1]!);
      if (typeof part.c === "string") checksum = part.c;
    }
    entry.book.truncate(1000);
    if (checksum === undefined) continue;
    const computed = krakenChecksum(entry.book.levels("ask", 10), entry.book.levels("bid", 10));
    assert.equal(computed, Number(checksum), `${pair}: ${line.slice(0, 120)}`);
    verifiedByPair[pair] = (verifiedByPair[pair] ?? 0) + 1;
    verified++;
  }
  assert.equal(verified, 4269);
  assert.equal(Object.keys(verifiedByPair).length, 10);
});
