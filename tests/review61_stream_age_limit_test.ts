/**
 * `execution.signals_max_age_s` and `writer.stream_max_age_s` become a
 * JetStream stream's `max_age`, which NATS holds in nanoseconds as a signed
 * 64-bit integer: at most 9223372036 s (about 292 years). A larger value
 * ("keep forever": 99999999999) was accepted, and NATS then refused to make
 * the stream ("invalid JSON"), so the engine failed to start (exit 1) with an
 * error naming no setting. It is now an invalid configuration naming the key.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { ensureStreams, limitsStream } from "../adapters/nats.ts";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { startNatsServer } from "./_nats_server.ts";

/** The longest age NATS takes: int64 nanoseconds, in whole seconds. */
const MAX_AGE_S = 9_223_372_036;

Deno.test("a stream age beyond what NATS holds in int64 nanoseconds is refused at load, naming each key", async () => {
  let error: unknown;
  try {
    await loadConfig({
      args: [`--execution.signals_max_age_s=${MAX_AGE_S + 1}`, "--http.port=abc"],
      env: { TRADEWIRE_WRITER__STREAM_MAX_AGE_S: "99999999999" },
    });
  } catch (caught) {
    error = caught;
  }
  assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${error}`);
  assert.deepEqual(error.problems.map((p) => p.key).sort(), [
    "execution.signals_max_age_s",
    "http.port",
    "writer.stream_max_age_s",
  ]);
  assert.match(error.message, /signals_max_age_s: expected an integer from 60 to 9223372036/);
  const config = await loadConfig({
    args: [`--execution.signals_max_age_s=${MAX_AGE_S}`],
    env: { TRADEWIRE_WRITER__STREAM_MAX_AGE_S: String(MAX_AGE_S) },
  });
  assert.equal(config.execution.signals_max_age_s, MAX_AGE_S);
  assert.equal(config.writer.stream_max_age_s, MAX_AGE_S);
});

Deno.test("NATS makes a stream with the longest age the configuration takes, and refuses one second more", async () => {
  await using server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  try {
    const stream = (name: string, age: number) =>
      limitsStream({
        name,
        subject: `${name.toLowerCase()}.>`,
        max_age_s: age,
        max_bytes: 1 << 20,
      });
    await ensureStreams(nc, [stream("LONGEST", MAX_AGE_S)]);
    await assert.rejects(ensureStreams(nc, [stream("TOO_LONG", MAX_AGE_S + 1)]));
  } finally {
    await nc.close();
  }
});
