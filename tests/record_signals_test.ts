/**
 * `deno task record` stopped by a signal while frames keep coming (a venue
 * sending every 2 ms) leaves a complete capture: the frames received before
 * the signal are in the file, as many as it reports, newline-terminated —
 * for Ctrl-C (SIGINT) and for SIGTERM (`docker stop`, systemd, `timeout`)
 * alike. A recorder process each (about 3 s).
 *
 * @module
 */

import assert from "node:assert/strict";
import { parseCaptureLine } from "../venues/replay.ts";
import { waitFor } from "./_helpers.ts";
import { startWsServer } from "./fakes/ws_server.ts";

const RECORD = new URL("../scripts/record.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

async function recordUntil(signal: Deno.Signal) {
  let counter = 0;
  const timers: ReturnType<typeof setInterval>[] = [];
  await using server = await startWsServer({
    onMessage: (socket, text) => {
      if (!text.includes('"subscribe"') || timers.length > 0) return;
      // A busy venue: a frame every 2 ms until the socket closes.
      timers.push(setInterval(() => {
        if (socket.open) socket.send(JSON.stringify({ channel: "busy", n: counter++ }));
      }, 2));
    },
  });
  const dir = await Deno.makeTempDir({ prefix: "tw-record-signals-" });
  const out = `${dir}/rec.ndjson`;
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-all",
        RECORD,
        "--out",
        out,
        "--exchanges.binance.enabled=false",
        "--exchanges.kraken.enabled=false",
        "--exchanges.alpaca.enabled=false",
        "--exchanges.coinbase.enabled=true",
        `--exchanges.coinbase.ws_url=${server.url}`,
        "--exchanges.coinbase.symbols=BTC-USD",
      ],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Catch a periodic flush (every 1 s) as it lands, then let ~400 ms of frames come: they
    // are received but not yet on disk when the signal arrives.
    await waitFor(() => counter >= 200, 15_000, "200 frames sent");
    const size = async () => (await Deno.stat(out).catch(() => ({ size: 0 }))).size;
    const before = await size();
    await waitFor(async () => (await size()) > before, 5_000, "a periodic flush");
    const c0 = counter;
    await waitFor(() => counter >= c0 + 200, 5_000, "200 more frames");
    const atSignal = counter - 10; // frames sent at least ~20 ms before the signal
    child.kill(signal);
    const output = await child.output();
    for (const timer of timers) clearInterval(timer);
    const stdout = new TextDecoder().decode(output.stdout);
    const stderr = new TextDecoder().decode(output.stderr);
    const text = await Deno.readTextFile(out);
    return { code: output.code, stdout, stderr, text, sent: counter, atSignal };
  } finally {
    for (const timer of timers) clearInterval(timer);
    await Deno.remove(dir, { recursive: true });
  }
}

function frameLines(text: string): number {
  return text.split("\n").filter((line) => line !== "").map(parseCaptureLine)
    .filter((record) => "f" in record && !("rest" in record)).length;
}

async function assertCompleteCapture(signal: Deno.Signal): Promise<void> {
  const run = await recordUntil(signal);
  assert.equal(run.code, 0, `exit code after ${signal}; stderr: ${run.stderr.slice(-500)}`);
  const reported = /Recorded (\d+) frames/.exec(run.stdout);
  assert.ok(reported, `no summary line after ${signal}: ${JSON.stringify(run.stdout)}`);
  assert.ok(run.text.endsWith("\n"), "capture ends with a newline");
  assert.equal(frameLines(run.text), Number(reported[1]), "frames in the file vs reported");
  // Frames received before the signal (up to a second of them still buffered) are kept.
  assert.ok(
    frameLines(run.text) >= run.atSignal,
    `${frameLines(run.text)} frames in the file, ${run.atSignal} sent before ${signal}`,
  );
}

Deno.test("record stopped by Ctrl-C (SIGINT) writes every frame it received and reports them", async () => {
  await assertCompleteCapture("SIGINT");
});

Deno.test({
  name: "record stopped by SIGTERM writes every frame it received and reports them, as for Ctrl-C",
  ignore: Deno.build.os === "windows",
  fn: async () => {
    await assertCompleteCapture("SIGTERM");
  },
});
