// deno-lint-ignore-file no-console -- the tests capture a command-line tool's output
/**
 * `deno task signal`: publishes a signal on `signals.<strategy>` through
 * JetStream (a private nats-server) and prints the stream's acknowledgement;
 * a bad strategy is a usage error, and a signal no stream captures is an
 * error rather than silently lost.
 */

import assert from "node:assert/strict";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect } from "@nats-io/transport-node";
import { ensureStreams } from "../adapters/nats.ts";
import { main, signalMsgId } from "../scripts/signal.ts";
import { signalsStream } from "../trading/signals_stream.ts";
import { startNatsServer } from "./_nats_server.ts";

/** Runs `main` with console output captured. */
async function run(argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const { log, error } = console;
  console.log = (...parts: unknown[]) => out.push(parts.join(" "));
  console.error = (...parts: unknown[]) => err.push(parts.join(" "));
  try {
    return { code: await main(argv), out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("deno task signal stores the signal in SIGNALS and prints its sequence", async () => {
  await using nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  try {
    await ensureStreams(nc, [signalsStream()]);
    const body = '{"id":"m-1","symbol":"BTC-USDT","side":"buy","qty":"0.5"}';
    const stored = await run(["momentum", body, `--nats.url=${nats.url}`]);
    assert.equal(stored.code, 0, stored.err);
    assert.deepEqual(JSON.parse(stored.out), { stream: "SIGNALS", seq: 1, duplicate: false });
    const jsm = await jetstreamManager(nc);
    const message = await jsm.streams.getMessage("SIGNALS", { seq: 1 });
    assert.equal(message?.subject, "signals.momentum");
    assert.equal(message?.string(), body);

    for (const strategy of ["rejected", "a.b", "", "x".repeat(65)]) {
      const refused = await run([strategy, body, `--nats.url=${nats.url}`]);
      assert.equal(refused.code, 2, strategy);
      assert.match(refused.err, /usage: deno task signal STRATEGY/);
    }
    await jsm.streams.delete("SIGNALS");
    const lost = await run(["momentum", body, `--nats.url=${nats.url}`]);
    assert.equal(lost.code, 1);
    assert.match(lost.err, /^not published: /);
  } finally {
    await nc.close();
  }
});

Deno.test("deno task signal run twice with one id stores it once: JetStream drops the second as a duplicate", async () => {
  await using nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  try {
    await ensureStreams(nc, [signalsStream()]);
    const body = '{"id":"m-2","symbol":"BTC-USDT","side":"buy","qty":"0.5"}';
    const first = await run(["momentum", body, `--nats.url=${nats.url}`]);
    assert.deepEqual(JSON.parse(first.out), { stream: "SIGNALS", seq: 1, duplicate: false });
    const again = await run(["momentum", body, `--nats.url=${nats.url}`]);
    assert.equal(again.code, 0, again.err);
    assert.deepEqual(JSON.parse(again.out), { stream: "SIGNALS", seq: 1, duplicate: true });
    // Another strategy's signal with the same id is another signal; so is one without an id.
    const other = await run(["meanrev", body, `--nats.url=${nats.url}`]);
    assert.deepEqual(JSON.parse(other.out), { stream: "SIGNALS", seq: 2, duplicate: false });
    const noId = '{"symbol":"BTC-USDT","side":"buy","qty":"0.5"}';
    for (const seq of [3, 4]) {
      const plain = await run(["momentum", noId, `--nats.url=${nats.url}`]);
      assert.deepEqual(JSON.parse(plain.out), { stream: "SIGNALS", seq, duplicate: false });
    }
    const info = await (await jetstreamManager(nc)).streams.info("SIGNALS");
    assert.equal(info.state.messages, 4);
  } finally {
    await nc.close();
  }
});

Deno.test("signalMsgId is the engine's idempotency key, the body's strategy winning; null without a valid id", () => {
  assert.equal(signalMsgId("momentum", '{"id":"m-1"}'), "momentum:m-1");
  assert.equal(signalMsgId("momentum", '{"id":"m-1","strategy":"meanrev"}'), "meanrev:m-1");
  assert.equal(signalMsgId("momentum", '{"id":"m-1","strategy":"a.b"}'), "momentum:m-1");
  for (
    const text of ['{"symbol":"X"}', '{"id":""}', '{"id":"a b"}', '{"id":7}', "[1]", "null", "{"]
  ) {
    assert.equal(signalMsgId("momentum", text), null, text);
  }
});
