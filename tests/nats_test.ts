import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { AckPolicy, jetstreamManager } from "@nats-io/jetstream";
import {
  connectNats,
  ConsumerMismatchError,
  DEFAULT_DUPLICATE_WINDOW_MS,
  ensureConsumer,
  ensureStreams,
  limitsStream,
  NANOS_PER_MS,
  NATS_MAX_PINGS_OUT,
  NATS_PING_INTERVAL_MS,
  NATS_SILENCE_DETECTION_MS,
  natsConnectionOptions,
  type NatsOptions,
  pingNats,
  reconnectDelay,
  subject,
  workConsumer,
} from "../adapters/nats.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { mdCleanStream } from "../market/md_stream.ts";
import { memoryLogger } from "../lib/log.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";
import { waitFor } from "./_helpers.ts";

const OPTIONS: NatsOptions = {
  url: "nats://127.0.0.1:4222",
  name: "tradewire-test",
  user: "",
  password: "",
  token: "",
  connect_timeout_ms: 1000,
  reconnect_wait_ms: 20,
  reconnect_max_wait_ms: 200,
  reconnect_jitter_ms: 10,
};

Deno.test("reconnect delay grows exponentially, is capped and jittered", () => {
  const noJitter = () => 0;
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((n) => reconnectDelay(n, OPTIONS, noJitter)),
    [20, 40, 80, 160, 200, 200],
  );
  assert.equal(reconnectDelay(0, OPTIONS, () => 0.5), 25);
});

Deno.test("credentials in the NATS URLs become the connection's user and password or token", () => {
  const pick = (options: Partial<NatsOptions>) => {
    const { servers, user, pass, token } = natsConnectionOptions({ ...OPTIONS, ...options });
    return { servers, user, pass, token };
  };
  // nats.js ignores a URL's userinfo: it is taken out of the server list, percent-decoded.
  assert.deepEqual(pick({ url: "nats://tw:p%40ss%2Fw0rd@n1:4222, nats://n2:4222" }), {
    servers: ["nats://n1:4222", "nats://n2:4222"],
    user: "tw",
    pass: "p@ss/w0rd",
    token: undefined,
  });
  assert.deepEqual(pick({ url: "tls://s3cr%3Dt@n1:4443" }), {
    servers: ["tls://n1:4443"],
    user: undefined,
    pass: undefined,
    token: "s3cr=t",
  });
  assert.deepEqual(pick({ url: "nats://tw:@n1:4222" }).pass, "");
  // The settings beat the URL.
  assert.deepEqual(pick({ url: "nats://tw:x@n1", user: "u", password: "p" }), {
    servers: ["nats://n1"],
    user: "u",
    pass: "p",
    token: undefined,
  });
  assert.deepEqual(pick({ url: "nats://tw:x@n1", token: "t" }), {
    servers: ["nats://n1"],
    user: undefined,
    pass: undefined,
    token: "t",
  });
  assert.deepEqual(pick({ url: "nats://127.0.0.1:4222" }), {
    servers: ["nats://127.0.0.1:4222"],
    user: undefined,
    pass: undefined,
    token: undefined,
  });
});

Deno.test("subject joins tokens and refuses ones that would change its shape", () => {
  assert.equal(subject("md", "trade", "binance", "BTC-USDT"), "md.trade.binance.BTC-USDT");
  for (const bad of ["", "a.b", "*", ">", "a b", "x\n"]) {
    assert.throws(() => subject("md", bad), TypeError, JSON.stringify(bad));
  }
});

Deno.test("JSON codec round-trips and refuses malformed bytes", () => {
  const value = { price: "42000.10", qty: "0.5", n: 3, nested: [true, null] };
  assert.deepEqual(decodeJson(encodeJson(value)), value);
  assert.throws(() => decodeJson(new TextEncoder().encode("{nope")), SyntaxError);
});

Deno.test("connectNats waits while NATS is down, logging each retry, then connects", async () => {
  const port = freePort();
  const { log, lines } = memoryLogger();
  const connecting = connectNats({ ...OPTIONS, url: `nats://127.0.0.1:${port}` }, { log });
  await waitFor(() => lines.filter((l) => l.message === "NATS unreachable, retrying").length >= 2);
  await using server = await startNatsServer({ port, jetstream: false });
  const nc = await connecting;
  try {
    assert.ok(await pingNats(nc) >= 0);
    assert.ok(lines.some((l) => l.message === "NATS connected"));
    const retry = lines.find((l) => l.message === "NATS unreachable, retrying");
    assert.equal(retry?.level, "warn");
    assert.equal(typeof retry?.retry_in_ms, "number");
  } finally {
    await nc.close();
  }
  assert.equal(server.port, port);
});

Deno.test("connectNats gives up waiting when its signal aborts", async () => {
  const controller = new AbortController();
  const connecting = connectNats({ ...OPTIONS, url: `nats://127.0.0.1:${freePort()}` }, {
    signal: controller.signal,
  });
  controller.abort(new Error("shutting down"));
  await assert.rejects(connecting, /shutting down/);
});

Deno.test("the connection reconnects after NATS restarts and subscriptions resume", async () => {
  const port = freePort();
  let server = await startNatsServer({ port, jetstream: false });
  const { log, lines } = memoryLogger();
  const nc = await connectNats({ ...OPTIONS, url: `nats://127.0.0.1:${port}` }, { log });
  try {
    const topic = `test.reconnect.${crypto.randomUUID()}`;
    const received: unknown[] = [];
    const sub = nc.subscribe(topic);
    (async () => {
      for await (const msg of sub) received.push(decodeJson(msg.data));
    })();
    nc.publish(topic, encodeJson({ n: 1 }));
    await waitFor(() => received.length === 1);

    await server.stop();
    await waitFor(() => lines.some((l) => l.message === "NATS disconnected"));
    server = await startNatsServer({ port, jetstream: false });
    await waitFor(() => lines.some((l) => l.message === "NATS reconnected"), 10_000);

    nc.publish(topic, encodeJson({ n: 2 }));
    await waitFor(() => received.length === 2);
    assert.deepEqual(received, [{ n: 1 }, { n: 2 }]);
  } finally {
    await nc.close();
    await server.stop();
  }
});

Deno.test("ensureStreams creates missing streams, then leaves them or updates changed ones", async () => {
  const nc = await connect({ servers: OPTIONS.url });
  const name = `TEST_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const spec = { name, subjects: [`test.${name}.>`], max_msgs: 100 };
  try {
    assert.deepEqual(await ensureStreams(nc, [spec]), [{ name, action: "created" }]);
    assert.deepEqual(await ensureStreams(nc, [spec]), [{ name, action: "unchanged" }]);
    assert.deepEqual(await ensureStreams(nc, [{ ...spec, max_msgs: 500 }]), [
      { name, action: "updated" },
    ]);
    const jsm = await jetstreamManager(nc);
    assert.equal((await jsm.streams.info(name)).config.max_msgs, 500);
  } finally {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(name).catch(() => {});
    await nc.close();
  }
});

Deno.test("ensureConsumer creates a durable, updates what can be updated, and refuses one that would lose or skip messages", async () => {
  const nc = await connect({ servers: OPTIONS.url });
  const name = `TEST_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const jsm = await jetstreamManager(nc);
  const wanted = workConsumer({
    durable_name: "worker",
    description: "test",
    filter_subject: `test.${name}.*`,
    ack_wait_ms: 5_000,
    max_ack_pending: 100,
  });
  try {
    await ensureStreams(nc, [{ name, subjects: [`test.${name}.>`] }]);
    assert.equal((await ensureConsumer(jsm, name, wanted)).config.max_deliver, -1);
    // Updatable settings are brought in line (max_deliver 1 would deliver each message once).
    await jsm.consumers.update(name, "worker", { max_deliver: 1, ack_wait: 2_000 * 1e6 });
    const updated = await ensureConsumer(jsm, name, wanted);
    assert.equal(updated.config.max_deliver, -1);
    assert.equal(updated.config.ack_wait, 5_000 * 1e6);
    // Another filter, or no explicit acks: refused, saying what differs and what to do.
    await jsm.consumers.delete(name, "worker");
    await jsm.consumers.add(name, { ...wanted, filter_subject: `test.${name}.one` });
    await assert.rejects(
      () => ensureConsumer(jsm, name, wanted),
      (error: Error) =>
        error instanceof ConsumerMismatchError &&
        error.message.includes(`filter_subject is test.${name}.one, wanted test.${name}.*`) &&
        error.message.includes(`nats consumer rm ${name} worker`),
    );
    await jsm.consumers.delete(name, "worker");
    await jsm.consumers.add(name, { ...wanted, ack_policy: AckPolicy.None });
    await assert.rejects(
      () => ensureConsumer(jsm, name, wanted),
      /ack_policy is none, wanted explicit/,
    );
  } finally {
    await jsm.streams.delete(name).catch(() => {});
    await nc.close();
  }
});

Deno.test("a stream's duplicate window is never longer than its age limit, so a short retention applies to an existing stream", async () => {
  assert.equal(
    limitsStream({ name: "S", subject: "s.>", max_age_s: 604_800, max_bytes: 1 })
      .duplicate_window,
    DEFAULT_DUPLICATE_WINDOW_MS * NANOS_PER_MS,
  );
  assert.equal(
    limitsStream({ name: "S", subject: "s.>", max_age_s: 60, max_bytes: 1 }).duplicate_window,
    60_000 * NANOS_PER_MS,
  );
  await using server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  try {
    // A stream made with a week's retention, then the smallest retention the config accepts.
    await ensureStreams(nc, [
      mdCleanStream({ stream_max_bytes: 1 << 20, stream_max_age_s: 604_800 }),
    ]);
    await ensureStreams(nc, [mdCleanStream({ stream_max_bytes: 1 << 20, stream_max_age_s: 60 })]);
    const info = await (await jetstreamManager(nc)).streams.info("MD_CLEAN");
    assert.equal(info.config.max_age, 60_000 * NANOS_PER_MS);
  } finally {
    await nc.close();
  }
});

Deno.test("the engine's NATS connection notices a silent server within its pings", () => {
  const options = natsConnectionOptions(OPTIONS);
  assert.equal(options.pingInterval, NATS_PING_INTERVAL_MS);
  assert.equal(options.maxPingOut, NATS_MAX_PINGS_OUT);
  assert.ok(NATS_SILENCE_DETECTION_MS <= 60_000);
});
