/**
 * With `replay.retime`, every event carries the time it is played, the
 * Binance books built on REST snapshots too: each event is moved once from
 * its recorded time. A snapshot that arrives before the symbol's first diff is
 * held and returned with that diff from `onFrame` (it used to be stamped with
 * the clock's now and then moved again with the diff's frame, ~30 days ahead
 * for a capture that old, dragging the symbol's later book events with it);
 * one that follows buffered diffs is published from the fetch with the
 * diffs' exchange time (which used to stay recorded while `ts_local` was now).
 *
 * @module
 */

import assert from "node:assert/strict";
import { configSchema } from "../config/mod.ts";
import type { BookEvent, MarketEvent } from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import { Validator } from "../market/validation.ts";
import { createSessions } from "../venues/mod.ts";
import { type CaptureRecord, formatCaptureLine, replayActor } from "../venues/replay.ts";
import { deadline } from "./_helpers.ts";

const DAY_US = 86_400_000_000;
const URL_BTC = "https://api.binance.com/api/v3/depth?symbol=BTCUSDT&limit=1000";

function config() {
  return configSchema.parse({
    exchanges: {
      binance: { symbols: ["BTC-USDT"], channels: ["book"] },
      coinbase: { enabled: false },
      kraken: { enabled: false },
      alpaca: { enabled: false },
    },
  });
}

function snapshot(t: number): CaptureRecord {
  return {
    t,
    x: "binance",
    rest: URL_BTC,
    f: JSON.stringify({ lastUpdateId: 1000, bids: [["100.00", "1.0"]], asks: [["101.00", "1.0"]] }),
  };
}

function diff(t: number, id: number): CaptureRecord {
  return {
    t,
    x: "binance",
    f: JSON.stringify({
      stream: "btcusdt@depth@100ms",
      data: {
        e: "depthUpdate",
        E: Math.floor(t / 1000) - 10,
        s: "BTCUSDT",
        U: id,
        u: id,
        b: [["100.00", `${id - 999}.0`]],
        a: [],
      },
    }),
  };
}

/** The book events of a retimed replay of `records`, and the time (µs) it ended. */
async function replayRetimed(records: CaptureRecord[]): Promise<[BookEvent[], number]> {
  const file = await Deno.makeTempFile({ prefix: "tw-retime-", suffix: ".ndjson" });
  const lines = [{ meta: { format: 1 } }, ...records].map((r) => formatCaptureLine(r));
  await Deno.writeTextFile(file, lines.join("\n") + "\n");
  try {
    const events: MarketEvent[] = [];
    const running = replayActor(file, createSessions(config()), {
      status: new MarketStatus(),
      sink: (_subject, batch) => void events.push(...batch),
      deadLetters: () => {},
      publish_batch_ms: 0,
      retime: true,
    }).start(new AbortController().signal);
    await deadline(running.done, 10_000, "replay");
    return [events.filter((e): e is BookEvent => e.kind === "book"), Date.now() * 1000];
  } finally {
    await Deno.remove(file);
  }
}

function assertPlayedNow(books: BookEvent[], nowUs: number): void {
  const describe = books.map((b) =>
    `${b.action}: ts_local ${((b.ts_local - nowUs) / DAY_US).toFixed(2)} days from now, ` +
    `ts_exchange ${((b.ts_exchange - nowUs) / DAY_US).toFixed(2)}`
  ).join("; ");
  for (const book of books) {
    assert.ok(Math.abs(book.ts_local - nowUs) < 10_000_000, `ts_local retimed to now? ${describe}`);
    assert.ok(
      Math.abs(book.ts_exchange - nowUs) < 10_000_000,
      `ts_exchange retimed to now? ${describe}`,
    );
  }
  // The live validator (retime keeps its time windows) takes them all.
  const rejected = new Validator(config().validator).validate(books, nowUs).rejected;
  assert.deepEqual(rejected.map((r) => r.reason), [], describe);
}

Deno.test("retime moves a Binance snapshot held for its first diff once, with the diff", async () => {
  // Recorded 30 days ago: the snapshot came before the first diff (a quiet symbol).
  const t0 = (Date.now() - 30 * 86_400_000) * 1000;
  const [books, nowUs] = await replayRetimed([snapshot(t0), diff(t0 + 100_000, 1001)]);
  assert.deepEqual(books.map((b) => b.action), ["snapshot", "delta"]);
  assertPlayedNow(books, nowUs);
  // The snapshot keeps its recorded distance to the diff that confirmed it.
  assert.equal(books[1]!.ts_local - books[0]!.ts_local, 100_000);
});

Deno.test("retime moves a Binance snapshot published on buffered diffs, exchange time included", async () => {
  const t0 = (Date.now() - 30 * 86_400_000) * 1000;
  const [books, nowUs] = await replayRetimed([
    diff(t0, 1001),
    snapshot(t0 + 50_000),
    diff(t0 + 100_000, 1002),
  ]);
  assert.deepEqual(books.map((b) => b.action), ["snapshot", "delta"]);
  assertPlayedNow(books, nowUs);
});
