// deno-lint-ignore-file no-console -- a command-line tool prints its results
/**
 * Builds `captures/sample.ndjson`, a replay capture (format: see
 * `venues/replay.ts`) made of real venue messages from the shared fixtures
 * (`../shared/fixtures` next to the repository):
 *
 * ```sh
 * deno run -A scripts/build_sample_capture.ts [--fixtures DIR] [--out FILE]
 * ```
 *
 * | venue | fixture | what goes in | receive times |
 * | --- | --- | --- | --- |
 * | binance | `cryptofeed_session_2021-10-12.envelope.jsonl` | every received WS frame (`recv`) and every REST depth snapshot (`http`, as `rest` records with their URL, e.g. `https://api.binance.com/api/v3/depth?symbol=NKNUSDT&limit=1000` — what the Binance session asks for with the default `rest_url` and `snapshot_limit`) | recorded (`ts`) |
 * | coinbase | `advanced_trade_session_2026-08-09.envelope.jsonl` | every received frame; the two `l2_data` snapshots are cut to their best {@linkcode COINBASE_SNAPSHOT_LEVELS} levels a side (the rest of the ~46,000 levels weigh 8.7 MB), the only frames not kept byte for byte | recorded (`ts`) |
 * | kraken | `v2_book_minagbp_d25_2026-08-16.capture.ndjson` | every received frame, text as sent (number tokens kept) | recorded `rx_ns` gaps, placed on the epoch so that no frame arrives before its own `timestamp` (+1 ms): the capture's clock is `perf_counter_ns`, which has no epoch |
 * | alpaca | `docs_stream_data_v2_messages.jsonl` (documentation examples) | the server lines of one coherent session — connected, authenticated, the first subscription ack — then the data points t, q, b, d, s, each wrapped in an array as on the wire; the client requests and the error examples are left out | made up: each line 5 ms after its own time (a bar: after its minute closes), at least 1 ms after the previous line |
 *
 * Each venue keeps its recorded timing; the venues were recorded on
 * different days, so the capture plays them one after the other (a replay
 * at speed 1 shortens the long gaps between them to its `max_gap_ms`).
 * The first line is a `meta` record naming, per venue, the symbols and
 * settings a replay needs (e.g. Kraken `book_depth: 25`).
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { dirname, join } from "node:path";
import { isoToUs } from "../market/events.ts";
import {
  CAPTURE_FORMAT,
  type CaptureFrame,
  type CaptureRest,
  formatCaptureLine,
} from "../venues/replay.ts";

/** Levels kept on each side of a Coinbase `l2_data` snapshot. */
export const COINBASE_SNAPSHOT_LEVELS = 100;

const HERE = dirname(fileURLToPath(import.meta.url));
/** The shared fixtures, next to the repository. */
export const DEFAULT_FIXTURES_DIR: string = join(HERE, "..", "..", "shared", "fixtures");
/** Where the sample capture goes. */
export const DEFAULT_SAMPLE_PATH: string = join(HERE, "..", "captures", "sample.ndjson");

/** A capture record that has a receive time. */
export type Timed = CaptureFrame | CaptureRest;

/** The per-venue settings a replay of the sample needs (written in the meta line). */
export const SAMPLE_VENUES = {
  binance: {
    symbols: ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"],
    rest_url: "https://api.binance.com",
    snapshot_limit: 1000,
    fixture: "binance/cryptofeed_session_2021-10-12.envelope.jsonl",
    note: "streams depth@100ms, bookTicker, aggTrade, kline_1m (no @trade stream in the capture)",
  },
  coinbase: {
    symbols: ["BTC-USD", "ETH-USD"],
    fixture: "coinbase/advanced_trade_session_2026-08-09.envelope.jsonl",
    note:
      `l2_data snapshots cut to the best ${COINBASE_SNAPSHOT_LEVELS} levels a side; all other frames verbatim`,
  },
  kraken: {
    symbols: ["MINA-GBP"],
    book_depth: 25,
    fixture: "kraken/v2_book_minagbp_d25_2026-08-16.capture.ndjson",
    note: "receive times aligned on the epoch (the capture clock is perf_counter_ns)",
  },
  alpaca: {
    symbols: ["AAPL", "AMD", "CLDR", "SPY", "VOO"],
    fixture: "alpaca/docs_stream_data_v2_messages.jsonl",
    note: "documentation examples, receive times made up",
  },
} as const;

function secondsToUs(seconds: number): number {
  return Math.round(seconds * 1_000_000);
}

function jsonLines(text: string): Array<Record<string, unknown>> {
  return text.split("\n").filter((line) => line.trim() !== "").map((line) => JSON.parse(line));
}

/** Binance: `recv` frames and `http` snapshots of the cryptofeed envelope. */
export function binanceRecords(envelope: string): Timed[] {
  const records: Timed[] = [];
  for (const line of jsonLines(envelope)) {
    if (line.t === "recv") {
      records.push({ t: secondsToUs(line.ts as number), x: "binance", f: line.data as string });
    } else if (line.t === "http") {
      records.push({
        t: secondsToUs(line.ts as number),
        x: "binance",
        rest: line.url as string,
        f: line.data as string,
      });
    }
  }
  return records;
}

/** Coinbase: `recv` frames of the cryptofeed envelope, snapshots cut to `levels` a side. */
export function coinbaseRecords(envelope: string, levels = COINBASE_SNAPSHOT_LEVELS): Timed[] {
  const records: Timed[] = [];
  for (const line of jsonLines(envelope)) {
    if (line.t !== "recv") continue;
    let frame = line.data as string;
    if (frame.startsWith('{"channel":"l2_data"') && frame.includes('"type":"snapshot"')) {
      frame = cutCoinbaseSnapshot(frame, levels);
    }
    records.push({ t: secondsToUs(line.ts as number), x: "coinbase", f: frame });
  }
  return records;
}

interface CoinbaseLevel {
  side: string;
}

/** Keeps the first (best) `levels` bids and offers of each snapshot event. */
export function cutCoinbaseSnapshot(frame: string, levels: number): string {
  const data = JSON.parse(frame) as {
    events: Array<{ type: string; updates?: CoinbaseLevel[] }>;
  };
  for (const event of data.events) {
    if (event.type !== "snapshot" || !event.updates) continue;
    const kept: Record<string, number> = {};
    event.updates = event.updates.filter((update) =>
      (kept[update.side] = (kept[update.side] ?? 0) + 1) <= levels
    );
  }
  return JSON.stringify(data);
}

/**
 * Kraken: the frames of the DepthCharge capture, text sliced out of each
 * line (no re-serialization, so number tokens stay as sent).
 */
export function krakenRecords(capture: string): Timed[] {
  const lines = capture.split("\n").filter((line) => line.trim() !== "");
  const frames: Array<{ rxNs: number; frame: string }> = [];
  for (const line of lines.slice(1)) {
    const head = JSON.parse(line.slice(0, line.indexOf(', "frame": ')) + "}") as {
      rx_ns: number;
      dir?: string;
    };
    if (head.dir === "tx") continue;
    const marker = '"frame": ';
    frames.push({ rxNs: head.rx_ns, frame: line.slice(line.indexOf(marker) + marker.length, -1) });
  }
  if (frames.length === 0) return [];
  const originNs = frames[0]!.rxNs;
  const relativeUs = (rxNs: number) => Math.round((rxNs - originNs) / 1000);
  // Put the monotonic clock on the epoch: no frame may arrive before its own timestamp.
  let baseUs = -Infinity;
  for (const { rxNs, frame } of frames) {
    const match = /"timestamp":"([^"]+)"/.exec(frame);
    if (match) baseUs = Math.max(baseUs, isoToUs(match[1]!) - relativeUs(rxNs) + 1_000);
  }
  if (!Number.isFinite(baseUs)) throw new TypeError("Kraken capture has no timestamped frame");
  return frames.map(({ rxNs, frame }) => ({
    t: baseUs + relativeUs(rxNs),
    x: "kraken" as const,
    f: frame,
  }));
}

const ALPACA_CONTROL = [
  '[{"T":"success","msg":"connected"}]',
  '[{"T":"success","msg":"authenticated"}]',
];

/**
 * Alpaca: connected, authenticated, the first subscription ack and every
 * data point (wrapped in an array, text untouched), with made-up receive
 * times 5 ms after each message's own time.
 */
export function alpacaRecords(examples: string): Timed[] {
  const lines = examples.split("\n").map((line) => line.trim()).filter((line) => line !== "");
  const subscription = lines.find((line) => line.startsWith('[{"T":"subscription"'));
  const points = lines.filter((line) => /^\{"T":"[tqbds]"/.test(line));
  if (!subscription || points.length === 0) {
    throw new TypeError("Alpaca examples lack a subscription ack or data points");
  }
  const pointTime = (line: string): number => {
    const data = JSON.parse(line) as { T: string; t: string };
    const us = isoToUs(data.t);
    return data.T === "b" ? us + 60_000_000 : us; // a minute bar is sent once its minute closes
  };
  const firstUs = pointTime(points[0]!);
  const frames: Array<{ us: number; frame: string }> = [
    ...[...ALPACA_CONTROL, subscription].map((frame, i) => ({
      us: firstUs - 300_000 + i * 100_000,
      frame,
    })),
    ...points.map((line) => ({ us: pointTime(line) + 5_000, frame: `[${line}]` })),
  ];
  const records: Timed[] = [];
  let previous = -Infinity;
  for (const { us, frame } of frames) {
    const t = Math.max(us, previous + 1_000);
    previous = t;
    records.push({ t, x: "alpaca", f: frame });
  }
  return records;
}

/** Every venue's records, merged by receive time (stable), after the meta line. */
export function buildSampleLines(fixtures: {
  binance: string;
  coinbase: string;
  kraken: string;
  alpaca: string;
}): string[] {
  const records = [
    ...binanceRecords(fixtures.binance),
    ...coinbaseRecords(fixtures.coinbase),
    ...krakenRecords(fixtures.kraken),
    ...alpacaRecords(fixtures.alpaca),
  ].sort((a, b) => a.t - b.t);
  const meta = {
    format: CAPTURE_FORMAT,
    source: "scripts/build_sample_capture.ts",
    description:
      "Real venue messages from the shared fixtures, each venue with its recorded timing; venues play one after the other",
    venues: SAMPLE_VENUES,
  };
  return [formatCaptureLine({ meta }), ...records.map((record) => formatCaptureLine(record))];
}

async function main(args: readonly string[]): Promise<number> {
  let fixturesDir = DEFAULT_FIXTURES_DIR;
  let out = DEFAULT_SAMPLE_PATH;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    const value = args[i + 1];
    if ((arg === "--fixtures" || arg === "--out") && value !== undefined) {
      if (arg === "--fixtures") fixturesDir = value;
      else out = value;
      i++;
    } else {
      console.error(
        "Usage: deno run -A scripts/build_sample_capture.ts [--fixtures DIR] [--out FILE]",
      );
      return 2;
    }
  }
  const read = (path: string) => Deno.readTextFile(join(fixturesDir, path));
  const lines = buildSampleLines({
    binance: await read(SAMPLE_VENUES.binance.fixture),
    coinbase: await read(SAMPLE_VENUES.coinbase.fixture),
    kraken: await read(SAMPLE_VENUES.kraken.fixture),
    alpaca: await read(SAMPLE_VENUES.alpaca.fixture),
  });
  await Deno.mkdir(dirname(out), { recursive: true });
  const text = lines.join("\n") + "\n";
  await Deno.writeTextFile(out, text);
  console.log(`Wrote ${lines.length - 1} records (${text.length} bytes) to ${out}`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
