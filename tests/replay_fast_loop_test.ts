/**
 * A replay builds every Binance book its capture holds snapshots for, however
 * many and however fast: the session's REST request-weight budget (3,000 a
 * minute: 60 snapshots of 1,000 levels) guards the real api.binance.com and
 * does not apply when the snapshots come from the capture. The shipped sample,
 * looped as fast as possible (`replay.speed: 0`, `replay.loop: true`), gives
 * every pass the same books — README: "from its second pass on, the validator
 * refuses its trades as duplicates … while books and quotes go on". About 1 s.
 *
 * @module
 */

import assert from "node:assert/strict";
import { configSchema } from "../config/mod.ts";
import type { BookEvent, MarketEvent } from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import { createSessions } from "../venues/mod.ts";
import { formatCaptureLine, replayActor, type ReplayStats } from "../venues/replay.ts";
import { deadline, waitFor } from "./_helpers.ts";

const SAMPLE = new URL("../captures/sample.ndjson", import.meta.url).pathname;

function sampleConfig() {
  return configSchema.parse({
    exchanges: {
      binance: { symbols: ["NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"] },
      coinbase: { symbols: ["BTC-USD", "ETH-USD"] },
      kraken: { symbols: ["MINA-GBP"], book_depth: 25 },
      alpaca: {
        enabled: true,
        key_id: "key",
        secret_key: "secret",
        symbols: ["AAPL", "AMD", "CLDR", "SPY", "VOO"],
      },
    },
  });
}

Deno.test("a fast looped replay of the sample keeps building the Binance books on every pass", async () => {
  const events: MarketEvent[] = [];
  const controller = new AbortController();
  const running = replayActor(SAMPLE, createSessions(sampleConfig()), {
    status: new MarketStatus(),
    sink: (_subject, batch) => void events.push(...batch),
    deadLetters: () => {},
    publish_batch_ms: 0,
    speed: 0,
    loop: true,
  }).start(controller.signal);
  const passes = () => (running.stats() as ReplayStats).passes;
  await waitFor(() => passes() >= 25, 60_000, "25 passes");
  controller.abort();
  await deadline(running.done, 10_000, "replay stop");
  const completed = passes() - 1;
  const snapshots = (exchange: string) =>
    events.filter((e): e is BookEvent =>
      e.kind === "book" && e.exchange === exchange && e.action === "snapshot"
    ).length;
  // One pass publishes one snapshot per Binance symbol (4) and per Coinbase product (2).
  assert.ok(
    snapshots("coinbase") >= 2 * completed,
    `coinbase: ${snapshots("coinbase")} snapshots over ${completed} passes`,
  );
  assert.ok(
    snapshots("binance") >= 4 * completed,
    `binance: only ${snapshots("binance")} book snapshots over ${completed} complete passes ` +
      `(coinbase ${snapshots("coinbase")}): later passes build no Binance book`,
  );
});

Deno.test("a capture with more snapshots than a minute's Binance request weight replays them all", async () => {
  // 70 symbols: A-USDT … (base-26 letters), each a diff then the snapshot it bridges.
  const names = Array.from(
    { length: 70 },
    (_, i) => String.fromCharCode(65 + Math.floor(i / 26), 65 + (i % 26)),
  );
  const symbols = names.map((name) => `${name}-USDT`);
  const config = configSchema.parse({
    exchanges: {
      binance: { symbols, channels: ["book"] },
      coinbase: { enabled: false },
      kraken: { enabled: false },
      alpaca: { enabled: false },
    },
  });
  const t0 = Date.UTC(2026, 0, 5) * 1000;
  const lines = [formatCaptureLine({ meta: { format: 1 } })];
  names.forEach((name, i) =>
    lines.push(formatCaptureLine({
      t: t0 + i,
      x: "binance",
      f: JSON.stringify({
        stream: `${name.toLowerCase()}usdt@depth@100ms`,
        data: {
          e: "depthUpdate",
          E: Math.floor(t0 / 1000),
          s: `${name}USDT`,
          U: 1001,
          u: 1001,
          b: [["100.00", "2.0"]],
          a: [],
        },
      }),
    }))
  );
  names.forEach((name, i) =>
    lines.push(formatCaptureLine({
      t: t0 + 1_000 + i,
      x: "binance",
      rest: `https://api.binance.com/api/v3/depth?symbol=${name}USDT&limit=1000`,
      f: JSON.stringify({
        lastUpdateId: 1000,
        bids: [["100.00", "1.0"]],
        asks: [["101.00", "1.0"]],
      }),
    }))
  );
  const file = await Deno.makeTempFile({ prefix: "tw-replay-weight-", suffix: ".ndjson" });
  await Deno.writeTextFile(file, lines.join("\n") + "\n");
  try {
    const events: MarketEvent[] = [];
    const sessions = createSessions(config);
    const running = replayActor(file, sessions, {
      status: new MarketStatus(),
      sink: (_subject, batch) => void events.push(...batch),
      deadLetters: () => {},
      publish_batch_ms: 0,
    }).start(new AbortController().signal);
    await deadline(running.done, 10_000, "replay");
    const booked = new Set(
      events.filter((e) => e.kind === "book" && e.action === "snapshot").map((e) => e.symbol),
    );
    assert.equal(booked.size, 70, `books built for ${booked.size} of 70 symbols`);
    assert.equal(sessions[0]!.status().snapshot_weight_1m, 0, "no weight spent on Binance");
  } finally {
    await Deno.remove(file);
  }
});
