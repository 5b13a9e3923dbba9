/**
 * Actor integration tests against the NATS server at 127.0.0.1:4222 (set
 * NATS_URL to use another); every test uses its own random subjects.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { headers, type NatsConnection } from "@nats-io/nats-core";
import { actor, type Envelope } from "../actors/actor.ts";
import { startRoot, type Supervisor } from "../actors/supervisor.ts";
import type { ActorInfo } from "../actors/types.ts";
import { encodeJson } from "../adapters/codec.ts";
import { memoryLogger } from "../lib/log.ts";
import { deadline, isSettled, waitFor } from "./_helpers.ts";

const NATS_URL = Deno.env.get("NATS_URL") ?? "127.0.0.1:4222";

/** Runs `body` with a fresh connection and closes it afterwards. */
async function withNats(body: (nats: NatsConnection) => Promise<void>): Promise<void> {
  const nats = await connect({ servers: NATS_URL });
  try {
    await body(nats);
  } finally {
    await nats.close();
  }
}

function subject(name: string): string {
  return `test.actor.${crypto.randomUUID()}.${name}`;
}

function row(root: Supervisor, name: string): ActorInfo {
  const found = root.inspect().find((info) => info.name === name);
  if (!found) throw new Error(`No row ${name}`);
  return found;
}

const fastRestarts = { backoff: { initialMs: 5, maxMs: 50, jitter: 0 } };

Deno.test("actor handles messages in publish order, one at a time", async () => {
  await withNats(async (nats) => {
    const orders = subject("orders");
    const seen: number[] = [];
    let inFlight = 0;
    let maxInFlight = 0;
    const spec = actor<{ n: number }>({
      name: "counter",
      subjects: [orders],
      mailbox: { capacity: 8 },
      handle: async (message) => {
        maxInFlight = Math.max(maxInFlight, ++inFlight);
        await Promise.resolve();
        seen.push(message.data.n);
        inFlight--;
      },
    }, { nats });
    await using root = await startRoot({ name: "root" }, [spec]);
    for (let n = 0; n < 200; n++) nats.publish(orders, encodeJson({ n }));
    await waitFor(() => seen.length === 200);
    assert.deepEqual(seen, Array.from({ length: 200 }, (_, n) => n));
    assert.equal(maxInFlight, 1);
    assert.deepEqual(row(root, "root/counter"), {
      name: "root/counter",
      kind: "actor",
      status: "running",
      restarts: 0,
      mailbox: { depth: 0, capacity: 8, dropped: 0 },
      last_error: null,
    });
  });
});

Deno.test("actor envelope carries subject, data, reply and headers", async () => {
  await withNats(async (nats) => {
    const quotes = subject("quotes");
    const received: Envelope[] = [];
    const spec = actor({
      name: "quoter",
      subjects: [{ subject: `${quotes}.*`, queue: "quoters" }],
      handle: (message, ctx) => {
        received.push(message);
        if (message.reply) ctx.publish(message.reply, { echoed: message.data });
      },
    }, { nats });
    await using _root = await startRoot({ name: "root" }, [spec]);
    const reply = await nats.request(`${quotes}.btc`, encodeJson({ px: 1 }), { timeout: 2_000 });
    assert.deepEqual(reply.json(), { echoed: { px: 1 } });
    assert.equal(received[0]?.subject, `${quotes}.btc`);
    assert.deepEqual(received[0]?.data, { px: 1 });
    assert.equal(typeof received[0]?.reply, "string");
    assert.deepEqual(received[0]?.headers, {});
    const traced = headers();
    traced.append("trace-id", "t-1");
    nats.publish(`${quotes}.eth`, encodeJson({ px: 2 }), { headers: traced });
    await waitFor(() => received.length === 2);
    assert.deepEqual(received[1]?.headers, { "trace-id": ["t-1"] });
    assert.equal(received[1]?.reply, null);
  });
});

Deno.test("handler exception restarts only that actor while the other keeps processing", async () => {
  await withNats(async (nats) => {
    const fragileIn = subject("fragile");
    const steadyIn = subject("steady");
    const fragileSeen: string[] = [];
    const steadySeen: number[] = [];
    let steadyStarts = 0;
    const fragile = actor<string>({
      name: "fragile",
      subjects: [fragileIn],
      handle: (message) => {
        if (message.data === "boom") throw new Error("bad tick");
        fragileSeen.push(message.data);
      },
    }, { nats });
    const steady = actor<number>({
      name: "steady",
      subjects: [steadyIn],
      start: () => void steadyStarts++,
      handle: (message) => void steadySeen.push(message.data),
    }, { nats });
    await using root = await startRoot({ name: "root", intensity: 3, ...fastRestarts }, [
      fragile,
      steady,
    ]);
    nats.publish(fragileIn, encodeJson("one"));
    nats.publish(fragileIn, encodeJson("boom"));
    nats.publish(steadyIn, encodeJson(1));
    await waitFor(() =>
      row(root, "root/fragile").restarts === 1 && row(root, "root/fragile").status === "running"
    );
    nats.publish(fragileIn, encodeJson("two"));
    nats.publish(steadyIn, encodeJson(2));
    await waitFor(() => fragileSeen.length === 2 && steadySeen.length === 2);
    assert.deepEqual(fragileSeen, ["one", "two"]);
    assert.deepEqual(steadySeen, [1, 2]);
    assert.equal(row(root, "root/fragile").last_error, "bad tick");
    assert.equal(row(root, "root/steady").restarts, 0);
    assert.equal(steadyStarts, 1);
  });
});

Deno.test("actor counts and logs malformed JSON without crashing", async () => {
  await withNats(async (nats) => {
    const ticks = subject("ticks");
    const { log, lines } = memoryLogger();
    const seen: unknown[] = [];
    const spec = actor(
      { name: "ticker", subjects: [ticks], handle: (m) => void seen.push(m.data) },
      {
        nats,
        log,
      },
    );
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await deadline(running.ready);
    nats.publish(ticks, new TextEncoder().encode("{not json"));
    nats.publish(ticks, new Uint8Array());
    nats.publish(ticks, encodeJson({ px: 2 }));
    await waitFor(() => seen.length === 1);
    assert.deepEqual(seen, [{ px: 2 }]);
    assert.equal(await isSettled(running.done), false);
    assert.deepEqual(running.stats(), {
      kind: "actor",
      mailbox: { depth: 0, capacity: 1024, dropped: 0 },
      malformed: 2,
      processed: 1,
    });
    const warning = lines.find((line) => line.message === "malformed message dropped");
    assert.equal(warning?.actor, "ticker");
    assert.equal(warning?.subject, ticks);
    controller.abort();
    await deadline(running.done);
  });
});

Deno.test("actor stop drains the in-flight and queued messages, then runs the stop hook", async () => {
  await withNats(async (nats) => {
    const jobs = subject("jobs");
    const events: string[] = [];
    const gate = Promise.withResolvers<void>();
    const spec = actor<number>({
      name: "worker",
      subjects: [jobs],
      handle: async (message) => {
        events.push(`begin:${message.data}`);
        if (message.data === 1) await gate.promise;
        events.push(`end:${message.data}`);
      },
      stop: () => void events.push("stop"),
    }, { nats });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await deadline(running.ready);
    const publisher = await connect({ servers: NATS_URL });
    try {
      for (let n = 1; n <= 5; n++) publisher.publish(jobs, encodeJson(n));
      await publisher.flush();
    } finally {
      await publisher.close();
    }
    await waitFor(() => events.includes("begin:1"));
    // Still on their way back from the server when the actor is told to stop.
    for (let n = 6; n <= 50; n++) nats.publish(jobs, encodeJson(n));
    controller.abort();
    assert.equal(await isSettled(running.done), false);
    gate.resolve();
    await deadline(running.done);
    const all = Array.from({ length: 50 }, (_, i) => i + 1);
    assert.deepEqual(events, [...all.flatMap((n) => [`begin:${n}`, `end:${n}`]), "stop"]);
    nats.publish(jobs, encodeJson(51));
    await nats.flush();
    assert.equal(events.includes("begin:51"), false);
  });
});

Deno.test("actor with a drop_oldest mailbox drops and counts messages it cannot keep up with", async () => {
  await withNats(async (nats) => {
    const book = subject("book");
    const gate = Promise.withResolvers<void>();
    const seen: number[] = [];
    const spec = actor<number>({
      name: "book",
      subjects: [book],
      mailbox: { capacity: 2, overflow: "drop_oldest" },
      handle: async (message) => {
        if (message.data === 0) await gate.promise;
        seen.push(message.data);
      },
    }, { nats });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await deadline(running.ready);
    for (let n = 0; n < 10; n++) nats.publish(book, encodeJson(n));
    await waitFor(() => running.stats().mailbox?.dropped === 7);
    gate.resolve();
    await waitFor(() => seen.length === 3);
    assert.deepEqual(seen, [0, 8, 9]);
    controller.abort();
    await deadline(running.done);
  });
});

Deno.test("actor with a conflating mailbox and keep keeps the waiting message when keep says so", async () => {
  await withNats(async (nats) => {
    const prices = subject("prices");
    const gate = Promise.withResolvers<void>();
    const seen: number[] = [];
    const decoder = new TextDecoder();
    const value = (msg: { data: Uint8Array }) => Number(decoder.decode(msg.data));
    const spec = actor<number>({
      name: "prices",
      subjects: [`${prices}.*`],
      // The waiting message stays when the incoming one carries a smaller number (it is late).
      mailbox: {
        overflow: "conflate",
        keep: (waiting, incoming) => value(waiting) > value(incoming),
      },
      handle: async (message) => {
        if (message.data === 0) await gate.promise;
        seen.push(message.data);
      },
    }, { nats });
    const controller = new AbortController();
    const running = spec.start(controller.signal);
    await deadline(running.ready);
    nats.publish(`${prices}.busy`, encodeJson(0));
    await waitFor(() => running.stats().mailbox?.depth === 0);
    // While the handler is busy: 5 waits, 3 arrives late (kept out), 7 replaces 5.
    for (const n of [5, 3, 7]) nats.publish(`${prices}.a`, encodeJson(n));
    await nats.flush();
    await waitFor(() => running.stats().mailbox?.dropped === 2);
    gate.resolve();
    await waitFor(() => seen.length === 2);
    assert.deepEqual(seen, [0, 7]);
    controller.abort();
    await deadline(running.done);
  });
});

Deno.test("run actor: run resolving is a normal exit, rejecting an abnormal one", async () => {
  await withNats(async (nats) => {
    const stops: string[] = [];
    const looping = actor({
      name: "looper",
      run: (ctx) =>
        new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve())),
      stop: (ctx) => void stops.push(ctx.name),
    }, { nats });
    const controller = new AbortController();
    const running = looping.start(controller.signal);
    await deadline(running.ready);
    assert.deepEqual(running.stats(), { kind: "actor", malformed: 0, processed: 0 });
    controller.abort();
    await deadline(running.done);

    const failing = actor({
      name: "failing",
      run: () => Promise.reject(new Error("lost feed")),
      stop: (ctx) => void stops.push(ctx.name),
    }, { nats });
    await assert.rejects(failing.start(new AbortController().signal).done, {
      message: "lost feed",
    });
    assert.deepEqual(stops, ["looper", "failing"]);
  });
});

Deno.test("actor context request decodes the JSON reply", async () => {
  await withNats(async (nats) => {
    const prices = subject("prices");
    const answers: unknown[] = [];
    const pricer = actor<{ symbol: string }>({
      name: "pricer",
      subjects: [prices],
      handle: (message, ctx) => {
        if (message.reply) ctx.publish(message.reply, { symbol: message.data.symbol, px: 42 });
      },
    }, { nats });
    const asker = actor({
      name: "asker",
      run: async (ctx) => {
        answers.push(await ctx.request(prices, { symbol: "ETH" }, 2_000));
      },
      restart: "transient",
    }, { nats });
    await using root = await startRoot({ name: "root" }, [pricer, asker]);
    await waitFor(() => row(root, "root/asker").status === "exited");
    assert.deepEqual(answers, [{ symbol: "ETH", px: 42 }]);
  });
});

Deno.test("actor start hook failure is a start failure of its supervisor", async () => {
  await withNats(async (nats) => {
    const spec = actor({
      name: "needs-db",
      subjects: [subject("x")],
      start: () => Promise.reject(new Error("no database")),
      handle: () => {},
    }, { nats });
    await assert.rejects(startRoot({ name: "root" }, [spec]), { name: "SupervisorStartError" });
  });
});

Deno.test("actor rejects inconsistent definitions", async () => {
  await withNats((nats) => {
    assert.throws(() => actor({ name: "a" }, { nats }), TypeError);
    assert.throws(() => actor({ name: "a", handle: () => {} }, { nats }), TypeError);
    assert.throws(
      () => actor({ name: "a", subjects: ["x"], run: () => Promise.resolve() }, { nats }),
      TypeError,
    );
    assert.throws(
      () =>
        actor({ name: "a", subjects: ["x"], handle: () => {}, mailbox: { capacity: 0 } }, {
          nats,
        }),
      RangeError,
    );
    return Promise.resolve();
  });
});
