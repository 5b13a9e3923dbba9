/**
 * A recording that fails leaves no capture holding nothing to replay (README:
 * "it exits 1 and removes the file, which would hold nothing to replay"), and
 * a venue whose URL cannot be made (Alpaca without credentials) does not stop
 * the other venues' recording — the engine keeps them running too.
 *
 * @module
 */

import assert from "node:assert/strict";
import { recordCapture } from "../scripts/record.ts";
import { MarketStatus } from "../market/status.ts";
import { alpacaSession } from "../venues/alpaca/session.ts";
import { coinbaseSession } from "../venues/coinbase/session.ts";
import { parseCaptureLine } from "../venues/replay.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startCoinbaseServer } from "./fakes/coinbase_server.ts";

const RECORD = new URL("../scripts/record.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

const noKeys = alpacaSession({
  ws_url: "wss://stream.data.alpaca.markets/v2",
  feed: "iex",
  key_id: "",
  secret_key: "",
  symbols: ["AAPL"],
  channels: ["trades"],
});

Deno.test("record of Alpaca without keys and an unreachable Coinbase exits 1 and removes its capture (about 3 s)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw-record-failures-" });
  const out = `${dir}/failed.ndjson`;
  try {
    const output = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        RECORD,
        "--seconds",
        "2",
        "--out",
        out,
        "--exchanges.binance.enabled=false",
        "--exchanges.kraken.enabled=false",
        "--exchanges.coinbase.ws_url=ws://127.0.0.1:1",
        "--exchanges.alpaca.enabled=true",
        "--exchanges.alpaca.key_id=",
        "--exchanges.alpaca.secret_key=",
      ],
      cwd: ROOT,
      env: { ALPACA_API_KEY_ID: "", ALPACA_API_SECRET_KEY: "" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(output.stderr);
    assert.equal(output.code, 1, stderr.slice(-400));
    const left = await Deno.readTextFile(out).catch(() => null);
    assert.equal(
      left,
      null,
      `a failed recording left ${out} behind (${left?.length} bytes); stderr: ${
        stderr.trim().split("\n").at(-1)
      }`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("recordCapture that fails before any frame rejects and removes its capture", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw-record-failures-" });
  const out = `${dir}/failed.ndjson`;
  try {
    const session = coinbaseSession({
      ws_url: "ws://127.0.0.1:1",
      symbols: ["BTC-USD"],
      channels: ["trades"],
    });
    // Feed timing the runtime refuses: the feed cannot start.
    await assert.rejects(
      recordCapture([session], { out, feedOptions: { coinbase: { stale_after_ms: -1 } } }),
      RangeError,
    );
    assert.equal(await Deno.stat(out).then(() => "kept", () => "removed"), "removed");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("record goes on with the other venues when one's URL cannot be made (Alpaca without keys)", async () => {
  await using venue = await startCoinbaseServer({ products: ["BTC-USD"], heartbeatMs: 20 });
  const dir = await Deno.makeTempDir({ prefix: "tw-record-failures-" });
  const out = `${dir}/capture.ndjson`;
  try {
    const status = new MarketStatus();
    const controller = new AbortController();
    const session = coinbaseSession({
      ws_url: venue.url,
      symbols: ["BTC-USD"],
      channels: ["trades"],
    });
    const recording = recordCapture([noKeys, session], {
      out,
      signal: controller.signal,
      status,
      flushIntervalMs: 10,
    });
    await waitFor(() => status.feed("coinbase").frames >= 3, 5_000, "coinbase frames");
    controller.abort();
    const result = await deadline(recording, 5_000, "record stop");
    assert.ok((result.framesByExchange.coinbase ?? 0) >= 3, JSON.stringify(result));
    assert.equal(result.framesByExchange.alpaca, undefined);
    assert.match(status.feed("alpaca").last_error ?? "", /Alpaca credentials are not configured/);
    const [meta] = (await Deno.readTextFile(out)).trimEnd().split("\n").map(parseCaptureLine);
    assert.deepEqual((meta as { meta: { venues: unknown } }).meta.venues, {
      alpaca: { error: "Alpaca credentials are not configured" },
      coinbase: { url: venue.url },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
