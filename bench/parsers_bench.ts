/**
 * Venue parsers: what the feed does with each real captured frame in
 * `../shared/fixtures` — parse, then, for a book frame, the book sync that
 * turns it into book and top events (Kraken's with its checksum) — each
 * beside its floor: bare `JSON.parse` of the same frames (marked `baseline`).
 * Aim: within 1.3× of the floor.
 *
 * Each timed pass starts from fresh book syncs, as a new connection does:
 * Kraken's from the capture's own snapshot frame; Binance's from the REST
 * snapshots of the same session and Coinbase's from the session's own level2
 * snapshots, applied before the pass and not timed (a snapshot comes once per
 * connection, the diffs all the time). Kraken's
 * heartbeats (two thirds of its capture, answered by a string comparison) are
 * left out of its book case and timed on their own.
 *
 * Run with `deno task bench`.
 *
 * @module
 */

import { parseBinanceDepthSnapshot, parseBinanceFrame } from "../venues/binance/parse.ts";
import { BinanceBookSync } from "../venues/binance/book_sync.ts";
import { binanceSymbolMap } from "../venues/binance/symbols.ts";
import { parseCoinbaseFrame } from "../venues/coinbase/parse.ts";
import { CoinbaseBookSync } from "../venues/coinbase/book_sync.ts";
import { parseKrakenFrame } from "../venues/kraken/parse.ts";
import { KrakenBookSync } from "../venues/kraken/book_sync.ts";
import { parseAlpacaFrame } from "../venues/alpaca/parse.ts";

const FIXTURES = new URL("../../shared/fixtures/", import.meta.url);
const NOW_US = 1_700_000_000_000_000;

function lines(path: string, keep: (line: string) => boolean = () => true): string[] {
  return Deno.readTextFileSync(new URL(path, FIXTURES)).split("\n").filter((l) => l && keep(l));
}

/** Turns one frame into the events the feed would publish; `frames` share its state. */
export type FrameHandler = (frame: string) => number;

/** One benchmark case: captured frames and how the feed handles them. */
export interface ParserCase {
  /** The `deno bench` group. */
  name: string;
  /** The frames, in capture order. */
  frames: string[];
  /** Frames among them that carry trades. */
  tradeFrames: number;
  /** Fresh state for one pass over `frames` (new book syncs, snapshots applied): not timed. */
  start(): FrameHandler;
  /** Whether `start` makes state (book syncs) rather than a bare parser call. */
  stateful: boolean;
}

const isTrade = (frame: string) =>
  /"e":"(agg)?[tT]rade"|"channel":"market_trades"|"T":"t"/.test(frame);

function parserCase(
  name: string,
  frames: string[],
  start: () => FrameHandler,
  stateful = false,
): ParserCase {
  return { name, frames, tradeFrames: frames.filter(isTrade).length, start, stateful };
}

// Binance: the combined session (depth diffs, book tickers, aggregate trades), the diffs
// through one book sync per symbol started from the session's REST snapshots (limit=1000).
const BINANCE_SYMBOLS = ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"];
const binanceSymbols = binanceSymbolMap(BINANCE_SYMBOLS);
const binanceSnapshots = new Map(
  lines("binance/rest_depth_snapshots_2021-10-12.raw.jsonl").map((body, i) => [
    BINANCE_SYMBOLS[i]!,
    body,
  ]),
);
function binanceFeed(): FrameHandler {
  const syncs = new Map<string, BinanceBookSync>();
  for (const symbol of BINANCE_SYMBOLS) {
    const venueSymbol = binanceSymbols.venue(symbol)!;
    const sync = new BinanceBookSync(symbol, venueSymbol, { snapshotLimit: 1000 });
    sync.onSnapshot(parseBinanceDepthSnapshot(binanceSnapshots.get(symbol)!), NOW_US);
    syncs.set(venueSymbol, sync);
  }
  return (frame) => {
    const { events, control } = parseBinanceFrame(frame, NOW_US, binanceSymbols);
    if (control?.type !== "depth_diff") return events.length;
    return syncs.get(control.venueSymbol)!.onDiff(control).events.length;
  };
}

// Binance trades: every real trade and aggregate trade frame in the fixtures, as the
// combined stream carries them.
const binanceTrades = [
  ...lines("binance/docs_web_socket_streams_examples.jsonl", (l) => /"e":"(agg)?[tT]rade"/.test(l))
    .map((data) => {
      const payload = JSON.parse(data) as { e: string; s: string };
      const stream = payload.e === "trade" ? "trade" : "aggTrade";
      return JSON.stringify({ stream: `${payload.s.toLowerCase()}@${stream}`, data: payload });
    }),
  ...lines("binance/nautilus_ws_spot_trade_2021-12-12.jsonl"),
  ...lines("binance/ws_combined_session_2021-10-12.raw.jsonl", (l) => l.includes("@aggTrade")),
];
const binanceTradeSymbols = binanceSymbolMap(["BNB-BTC", "ETH-USDT", "NKN-USDT", "LRC-BTC"]);

// Coinbase: the session's frames, its level2 updates through one book sync per product started
// from the session's own snapshots — its two very large frames, parsed once and applied before
// each pass (not timed, as Binance's REST snapshots).
const coinbaseSession = lines("coinbase/advanced_trade_session_2026-08-09.raw.jsonl");
const coinbaseSnapshots = coinbaseSession.filter((l) => l.length >= 100_000).map((l) => {
  const { control } = parseCoinbaseFrame(l, NOW_US);
  if (control?.type !== "book") throw new Error("Coinbase: a large frame is not a book snapshot");
  return control;
});
const coinbase = coinbaseSession.filter((l) => l.length < 100_000);
function coinbaseFeed(): FrameHandler {
  const syncs = new Map<string, CoinbaseBookSync>();
  for (const snapshot of coinbaseSnapshots) {
    const sync = new CoinbaseBookSync(snapshot.venue_symbol);
    sync.onBook(snapshot, NOW_US);
    syncs.set(snapshot.venue_symbol, sync);
  }
  return (frame) => {
    const { events, control } = parseCoinbaseFrame(frame, NOW_US);
    if (control?.type !== "book") return events.length;
    const result = syncs.get(control.venue_symbol)?.onBook(control, NOW_US);
    if (result?.status !== "ok") throw new Error(`Coinbase book sync: ${result?.status}`);
    return events.length + result.events.length;
  };
}

// Kraken: the v2 book capture (a snapshot and 29 checksummed updates), through one book sync
// as the session keeps; its heartbeats apart.
const krakenHeartbeat = (l: string) => l.includes('"channel":"heartbeat"');
const krakenAll = lines(
  "kraken/v2_book_minagbp_d25_2026-08-16.raw.jsonl",
  (l) => !l.startsWith('{"method":"subscribe","params"'),
);
const kraken = krakenAll.filter((l) => !krakenHeartbeat(l));
const krakenHeartbeats = krakenAll.filter(krakenHeartbeat);
function krakenFeed(): FrameHandler {
  const sync = new KrakenBookSync("MINA-GBP", "MINA/GBP", 25);
  return (frame) => {
    const { events, control } = parseKrakenFrame(frame, NOW_US);
    if (control?.type !== "book") return events.length;
    const result = sync.onBook(control, NOW_US);
    if (result.status !== "ok") throw new Error(`Kraken book sync: ${result.status}`);
    return result.events.length;
  };
}
/** Heartbeats make no events: the handler counts the frames it recognised. */
function krakenHeartbeatFeed(): FrameHandler {
  return (frame) => parseKrakenFrame(frame, NOW_US).control?.type === "heartbeat" ? 1 : 0;
}

const alpaca = lines("alpaca/docs_stream_data_v2_messages.jsonl", (l) => /"T":"[tqb]"/.test(l)).map(
  (l) => l.startsWith("[") ? l : `[${l}]`,
);

/** The cases `deno bench` times, each in its own group beside its `JSON.parse` floor. */
export const PARSER_CASES: readonly ParserCase[] = [
  parserCase(
    "binance session",
    lines("binance/ws_combined_session_2021-10-12.raw.jsonl"),
    binanceFeed,
    true,
  ),
  parserCase(
    "binance trades",
    binanceTrades,
    () => (f) => parseBinanceFrame(f, NOW_US, binanceTradeSymbols).events.length,
  ),
  parserCase("coinbase session", coinbase, coinbaseFeed, true),
  parserCase("kraken v2 book", kraken, krakenFeed, true),
  parserCase("kraken v2 heartbeats", krakenHeartbeats, krakenHeartbeatFeed),
  parserCase("alpaca data", alpaca, () => (f) => parseAlpacaFrame(f, NOW_US).events.length),
];

/** One pass of `parserCase` from fresh state: the events made (heartbeats: frames recognised). */
export function runPass(parserCase: ParserCase): number {
  const handle = parserCase.start();
  let events = 0;
  for (const frame of parserCase.frames) events += handle(frame);
  return events;
}

function floor(frames: string[]): void {
  for (const frame of frames) JSON.parse(frame);
}

// Each case must make events: a pass that makes none times no normalization.
for (const parserCase of PARSER_CASES) {
  if (runPass(parserCase) === 0) throw new Error(`${parserCase.name}: a pass made no events`);
}

// Warm-up. `deno bench` warms a case for 10 ms; in 10 ms V8 is still compiling a parser, and
// the two sides of a group would be timed in different states. Running every case first puts
// both sides in their steady state.
const WARM_UP_MS = 200;
for (const parserCase of PARSER_CASES) {
  const until = performance.now() + WARM_UP_MS;
  while (performance.now() < until) {
    floor(parserCase.frames);
    runPass(parserCase);
  }
}

// A case with book syncs times one pass per iteration between b.start() and b.end(), its
// floor too, so the fresh state a pass needs (not timed) leaves the two measured alike. The
// others (a few µs a pass, where `deno bench` ignores b.start()) time the parser calls alone.
for (const parserCase of PARSER_CASES) {
  const { name, frames } = parserCase;
  const group = { group: name };
  if (parserCase.stateful) {
    Deno.bench(`JSON.parse (floor), ${frames.length} frames`, { ...group, baseline: true }, (b) => {
      b.start();
      floor(frames);
      b.end();
    });
    Deno.bench(`parse + book sync, ${frames.length} frames`, group, (b) => {
      const handle = parserCase.start();
      b.start();
      for (const frame of frames) handle(frame);
      b.end();
    });
  } else {
    const handle = parserCase.start();
    Deno.bench(`JSON.parse (floor), ${frames.length} frames`, { ...group, baseline: true }, () => {
      floor(frames);
    });
    Deno.bench(`parse + normalize, ${frames.length} frames`, group, () => {
      for (const frame of frames) handle(frame);
    });
  }
}
