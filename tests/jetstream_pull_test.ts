import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import {
  JetStreamPuller,
  parseAckSubject,
  type PulledMessage,
} from "../adapters/jetstream_pull.ts";
import { waitFor } from "./_helpers.ts";

const NATS_URL = "nats://127.0.0.1:4222";
const decoder = new TextDecoder();

/**
 * A connection and a fresh stream `<name>` on `<name>.>` with a durable pull
 * consumer `c`; dispose deletes the stream and closes the connection.
 */
async function streamWithConsumer(ackWaitMs = 30_000) {
  const nc: NatsConnection = await connect({ servers: NATS_URL });
  const name = `PULL_TEST_${crypto.randomUUID().slice(0, 8)}`;
  const jsm = await jetstreamManager(nc);
  await jsm.streams.add({ name, subjects: [`${name}.>`] });
  await jsm.consumers.add(name, {
    durable_name: "c",
    ack_policy: AckPolicy.Explicit,
    ack_wait: ackWaitMs * 1_000_000,
  });
  return {
    nc,
    name,
    jsm,
    async publish(count: number) {
      for (let i = 0; i < count; i++) nc.publish(`${name}.x`, String(i));
      await nc.flush();
    },
    async [Symbol.asyncDispose]() {
      try {
        await jsm.streams.delete(name);
      } finally {
        await nc.close();
      }
    },
  };
}

Deno.test("parseAckSubject reads both reply forms and refuses other subjects", () => {
  const ts = "1795322339675282990"; // nanoseconds: beyond a safe integer
  assert.deepEqual(parseAckSubject(`$JS.ACK.S.c.2.17.5.${ts}.9`), {
    stream: "S",
    consumer: "c",
    deliveryCount: 2,
    streamSequence: 17,
    deliverySequence: 5,
    pending: 9,
  });
  assert.deepEqual(parseAckSubject(`$JS.ACK.hub.ACCHASH.S.c.1.3.3.${ts}.0.abc`), {
    stream: "S",
    consumer: "c",
    deliveryCount: 1,
    streamSequence: 3,
    deliverySequence: 3,
    pending: 0,
  });
  for (
    const bad of [
      "_INBOX.x",
      "$JS.ACK.S.c.1.2",
      `$JS.ACK.S.c.one.2.3.${ts}.0`,
      `$JS.NAK.S.c.1.2.3.${ts}.0`,
      "",
    ]
  ) {
    assert.equal(parseAckSubject(bad), null, bad);
  }
});

Deno.test("a pull delivers up to its batch in order and the server's 408 ends a short one", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  await stream.publish(5);
  const got: string[] = [];
  const puller = new JetStreamPuller(nc, stream.name, "c", (msg) => {
    got.push(decoder.decode(msg.data));
    msg.ack();
  });
  const first = await puller.pull(3, { expiresMs: 1_000 });
  assert.deepEqual(first, { received: 3, status: null, timedOut: false });
  const second = await puller.pull(10, { expiresMs: 1_000 });
  assert.equal(second.received, 2);
  assert.equal(second.status?.code, 408);
  assert.deepEqual(got, ["0", "1", "2", "3", "4"]);
  await puller.close();
  const info = await stream.jsm.consumers.info(stream.name, "c");
  await waitFor(async () =>
    (await stream.jsm.consumers.info(stream.name, "c")).num_ack_pending === 0
  );
  assert.equal(info.num_pending, 0);
});

Deno.test("nak hands a message back at once and it comes again as redelivered", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  await stream.publish(1);
  const got: PulledMessage[] = [];
  const puller = new JetStreamPuller(nc, stream.name, "c", (msg) => got.push(msg));
  await puller.pull(1, { expiresMs: 1_000 });
  assert.equal(got[0]!.redelivered, false);
  got[0]!.nak();
  got[0]!.ack(); // settled already: ignored
  await puller.pull(1, { expiresMs: 1_000 });
  assert.equal(got.length, 2);
  assert.equal(got[1]!.seq, 1);
  assert.equal(got[1]!.redelivered, true);
  assert.equal(got[1]!.info.deliveryCount, 2);
  got[1]!.ack();
  await puller.close();
});

Deno.test("messages sent while the event loop is blocked past the pull's expiry are all received", async () => {
  // The request expires on the server while this process cannot read: the
  // messages it carried and the 408 are read afterwards, and nothing is given up.
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  const got: number[] = [];
  const puller = new JetStreamPuller(nc, stream.name, "c", (msg) => {
    got.push(msg.seq);
    msg.ack();
  });
  const pulling = puller.pull(100, { expiresMs: 1_000 });
  await nc.flush(); // the request has reached the server
  // Another process publishes while this one is blocked; it leaves a file once its messages
  // are on the server. This one stays blocked until then and past the pull's expiry (1 s), so
  // that both the messages and the server's 408 wait for it however slowly the other starts.
  const published = await Deno.makeTempFile({ prefix: "tw_pull_published_" });
  await Deno.remove(published);
  const publisher = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `import { connect } from "@nats-io/transport-node";
       const nc = await connect({ servers: "${NATS_URL}" });
       for (let i = 0; i < 20; i++) nc.publish("${stream.name}.x", String(i));
       await nc.flush();
       await nc.close();
       Deno.writeTextFileSync(${JSON.stringify(published)}, "done");`,
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const blockedFrom = Date.now();
  const exists = () => {
    try {
      Deno.statSync(published);
      return true;
    } catch {
      return false;
    }
  };
  // Blocked (no await) until the publisher is done and the pull has expired on the server, at
  // most 60 s.
  while (!(exists() && Date.now() - blockedFrom > 1_500) && Date.now() - blockedFrom < 60_000) {
    // spin
  }
  assert.ok(exists(), "the publisher published within 60 s");
  await Deno.remove(published);
  assert.equal((await publisher.status).code, 0);
  const result = await pulling;
  assert.equal(result.received, 20);
  assert.equal(result.timedOut, false);
  assert.deepEqual(got, Array.from({ length: 20 }, (_, i) => i + 1));
  await puller.close();
});

Deno.test("an answer already received when the local deadline fires still ends the pull normally", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  const puller = new JetStreamPuller(nc, stream.name, "c", () => {});
  // No grace: the local deadline falls when the server's 408 is sent; this process is
  // blocked past both, so the timer and the 408 are due together when it wakes.
  const pulling = puller.pull(5, { expiresMs: 1_000, graceMs: 0 });
  await nc.flush();
  const blockedUntil = Date.now() + 2_000;
  let spins = 0;
  while (Date.now() < blockedUntil) spins++;
  assert.ok(spins > 0);
  const result = await pulling;
  assert.equal(result.timedOut, false);
  assert.equal(result.status?.code, 408);
  await puller.close();
});

Deno.test("a pull on a missing consumer is given up after its expiry and grace", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  const puller = new JetStreamPuller(nc, stream.name, "missing", () => {});
  const started = Date.now();
  const result = await puller.pull(1, { expiresMs: 1_000, graceMs: 200 });
  assert.deepEqual(result, { received: 0, status: null, timedOut: true });
  assert.ok(Date.now() - started >= 1_200);
  await puller.close();
});

Deno.test("a consumer deleted during a pull ends it with the server's 409", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  const puller = new JetStreamPuller(nc, stream.name, "c", () => {});
  const pulling = puller.pull(1, { expiresMs: 5_000 });
  await nc.flush();
  await stream.jsm.consumers.delete(stream.name, "c");
  const result = await pulling;
  assert.equal(result.status?.code, 409);
  assert.match(result.status?.description ?? "", /deleted/i);
  await puller.close();
});

Deno.test("an error thrown by onMessage fails the pull and every later one", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  await stream.publish(2);
  const puller = new JetStreamPuller(nc, stream.name, "c", () => {
    throw new Error("handler broke");
  });
  await assert.rejects(puller.pull(2, { expiresMs: 1_000 }), /handler broke/);
  await assert.rejects(puller.pull(2, { expiresMs: 1_000 }), /handler broke/);
  await puller.close();
});

Deno.test("pull refuses a bad batch, a second pull in flight and a closed puller", async () => {
  await using stream = await streamWithConsumer();
  const { nc } = stream;
  const puller = new JetStreamPuller(nc, stream.name, "c", () => {});
  assert.throws(() => puller.pull(0, { expiresMs: 1_000 }), RangeError);
  const first = puller.pull(1, { expiresMs: 1_000 });
  assert.throws(() => puller.pull(1, { expiresMs: 1_000 }), /already in flight/);
  await puller.close();
  assert.equal((await first).received, 0);
  assert.throws(() => puller.pull(1, { expiresMs: 1_000 }), /closed/);
});
