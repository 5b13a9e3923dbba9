// deno-lint-ignore-file no-console -- says what nats.js's own check made of it, for the log
/**
 * `watchConsumer` (adapters/nats.ts) on a private nats-server: it finds a
 * durable consumer gone — NATS back without its store, `nats consumer rm` —
 * within about a second, also after a check that JetStream did not answer
 * (where nats.js's own check waits 15–45 s), and finds nothing while NATS is
 * only away.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { isStreamNotFound, watchConsumer, type WatchConsumerOptions } from "../adapters/nats.ts";
import { freePort, type NatsServer, startNatsServer } from "./_nats_server.ts";
import { deadline, isSettled, waitFor } from "./_helpers.ts";

const STREAM = "WATCHED";
const CONSUMER = "watched";

/** A private server on `port` with the stream and its durable consumer, and a client of it. */
async function world(port = freePort()) {
  const storeDir = await Deno.makeTempDir({ prefix: "tw-watch-" });
  let server: NatsServer = await startNatsServer({ port, storeDir });
  const nc: NatsConnection = await connect({
    servers: server.url,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 50,
    reconnectJitter: 0,
  });
  let reconnects = 0;
  const watches: AbortController[] = [];
  (async () => {
    for await (const status of nc.status()) if (status.type === "reconnect") reconnects++;
  })();
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name: STREAM, subjects: ["watched.>"] });
  await jsm.consumers.add(STREAM, { durable_name: CONSUMER, ack_policy: AckPolicy.Explicit });
  return {
    nc,
    jsm,
    get server() {
      return server;
    },
    /** Stops the server and starts it again on the same port: on its store, a fresh one, or without JetStream. */
    async restart(options: { store: "kept" | "lost" | "no_jetstream" }) {
      const before = reconnects;
      await server.stop();
      if (options.store === "no_jetstream") {
        server = await startNatsServer({ port, jetstream: false });
      } else {
        server = await startNatsServer({
          port,
          storeDir: options.store === "kept" ? storeDir : await Deno.makeTempDir(),
        });
      }
      // A request sent before the client is back is lost (answered by its timeout).
      await waitFor(() => reconnects > before, 10_000, "the client reconnected");
    },
    /** A watch of the consumer (`WatchConsumerOptions` but the signal), aborted at the end. */
    watch(options: Omit<WatchConsumerOptions, "signal"> = {}) {
      const stop = new AbortController();
      watches.push(stop);
      return {
        stop,
        watching: watchConsumer(nc, STREAM, CONSUMER, { ...options, signal: stop.signal }),
      };
    },
    async [Symbol.asyncDispose]() {
      for (const stop of watches) stop.abort();
      await nc.close().catch(() => {});
      await server.stop();
      await Deno.remove(storeDir, { recursive: true }).catch(() => {});
    },
  };
}

Deno.test({
  name: "watchConsumer finds the consumer gone when NATS comes back without its store",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await world();
    const { watching } = w.watch();
    await w.restart({ store: "lost" });
    const gone = await deadline(watching, 5_000, "the watch");
    assert.ok(gone !== null && isStreamNotFound(gone), String(gone));
  },
});

Deno.test({
  name: "watchConsumer finds the consumer removed while connected within check_ms",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await world();
    const { watching } = w.watch({ check_ms: 200 });
    assert.equal(await isSettled(watching), false);
    await w.jsm.consumers.delete(STREAM, CONSUMER);
    const gone = await deadline(watching, 3_000, "the watch");
    assert.match(String(gone), /consumer not found/i);
  },
});

Deno.test({
  name: "watchConsumer finds nothing while NATS is only away, and ends with null when aborted",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await world();
    const { watching, stop } = w.watch({ check_ms: 100, recheck_ms: 50 });
    await w.restart({ store: "kept" });
    // Reconnected and checked a few times over: the consumer is there.
    const info = await w.jsm.consumers.info(STREAM, CONSUMER);
    assert.equal(info.name, CONSUMER);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await isSettled(watching), false);
    stop.abort();
    assert.equal(await deadline(watching, 6_000, "the aborted watch"), null);
  },
});

Deno.test({
  name:
    "watchConsumer asks again soon after JetStream did not answer, and finds the consumer gone once NATS is back without its store",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using w = await world();
    // nats.js's own check, for comparison (logged, not asserted: it is the library's behaviour).
    const consumer = await jetstream(w.nc).consumers.get(STREAM, CONSUMER);
    const messages = await consumer.consume({ abort_on_missing_resource: true, callback() {} });
    const { watching } = w.watch({ recheck_ms: 200 });
    // Back without JetStream first: every check fails without saying the consumer is gone.
    await w.restart({ store: "no_jetstream" });
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(await isSettled(watching), false, "nothing found while JetStream does not answer");
    await w.restart({ store: "lost" });
    const started = Date.now();
    const gone = await deadline(watching, 8_000, "the watch");
    assert.ok(gone !== null && isStreamNotFound(gone), String(gone));
    console.log(
      `found gone ${Date.now() - started} ms after NATS came back; nats.js consume closed by then:`,
      await isSettled(messages.closed()),
    );
    await messages.close();
  },
});
