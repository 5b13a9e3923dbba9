/**
 * `GET /stream_status`'s feed lag against what went through the real pipeline (capture replay → validator → NATS → latest-price
 * cache, writer → ClickHouse), on a private nats-server and a scratch
 * ClickHouse database dropped afterwards.
 */

import assert from "node:assert/strict";
import { line, startReplayPipeline } from "./_replay_pipeline.ts";
import { waitFor } from "./_helpers.ts";

Deno.test("stream_status: an Alpaca feed delivering on time does not report hours of lag because its last message was the running daily bar", async () => {
  const base = 1_614_021_360_000_000; // 2021-02-22T19:16:00Z
  const frames = [
    line(base - 300, "alpaca", [{ T: "success", msg: "connected" }]),
    line(base - 200, "alpaca", [{ T: "success", msg: "authenticated" }]),
    line(base - 100, "alpaca", [{
      T: "subscription",
      trades: ["SPY"],
      quotes: ["SPY"],
      bars: ["SPY"],
      dailyBars: ["SPY"],
    }]),
    // A trade received 5 ms after it happened.
    line(base + 5_000, "alpaca", [{
      T: "t",
      i: 1,
      S: "SPY",
      x: "V",
      p: 389.12,
      s: 100,
      t: "2021-02-22T19:16:00Z",
      c: ["@"],
      z: "B",
    }]),
    // The minute bar of 19:15 at 19:16:00.006, and the running daily bar (start 05:00Z, midnight ET).
    line(base + 6_000, "alpaca", [{
      T: "b",
      S: "SPY",
      o: 388.985,
      h: 389.13,
      l: 388.975,
      c: 389.12,
      v: 49378,
      t: "2021-02-22T19:15:00Z",
    }]),
    line(base + 7_000, "alpaca", [{
      T: "d",
      S: "SPY",
      o: 387.06,
      h: 389.62,
      l: 386.74,
      c: 389.12,
      v: 749378,
      t: "2021-02-22T05:00:00Z",
    }]),
  ];
  await using p = await startReplayPipeline(frames, {
    TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "false",
    TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "false",
    TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "true",
    TRADEWIRE_EXCHANGES__ALPACA__KEY_ID: "replay",
    TRADEWIRE_EXCHANGES__ALPACA__SECRET_KEY: "replay",
    TRADEWIRE_EXCHANGES__ALPACA__SYMBOLS: "SPY",
  });
  await waitFor(() => p.status.validator.accepted >= 3, 15_000, "3 events accepted");
  const st = (await p.get("/stream_status")).body;
  // deno-lint-ignore no-explicit-any -- the API's JSON, read loosely
  const alpaca = st.feeds.find((f: any) => f.exchange === "alpaca");
  assert.equal(alpaca.events, 3);
  assert.ok(
    alpaca.lag_ms !== null && alpaca.lag_ms < 60_000,
    `alpaca lag_ms ${alpaca.lag_ms} (${
      (alpaca.lag_ms / 3_600_000).toFixed(1)
    } h); the trade came 5 ms after it happened`,
  );
});
