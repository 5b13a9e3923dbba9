/**
 * Runtime benchmarks, each beside its floor (marked `baseline`): the bounded
 * mailbox against a bare array queue, and a request answered by a supervised
 * actor against a bare NATS request/reply on the same server.
 *
 * Run with `deno task bench` (needs NATS on 127.0.0.1:4222).
 */

import { connect } from "@nats-io/transport-node";
import { Mailbox } from "../actors/mailbox.ts";
import { actor } from "../actors/actor.ts";
import { Supervisor } from "../actors/supervisor.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";

const BATCH = 1_000;

Deno.bench("bare array push + shift, 1k messages", { group: "mailbox", baseline: true }, () => {
  const queue: number[] = [];
  for (let i = 0; i < BATCH; i++) queue.push(i);
  while (queue.length > 0) queue.shift();
});

const mailbox = new Mailbox<number>(BATCH);
Deno.bench("Mailbox put + take, 1k messages", { group: "mailbox" }, async () => {
  for (let i = 0; i < BATCH; i++) await mailbox.put(i);
  for (let i = 0; i < BATCH; i++) await mailbox.take();
});

const nc = await connect({ servers: Deno.env.get("NATS_URL") ?? "127.0.0.1:4222" });
const prefix = `bench.${crypto.randomUUID().slice(0, 8)}`;
const payload = { symbol: "BTC-USDT", side: "buy", qty: "0.5", price: "42000.10" };

const raw = nc.subscribe(`${prefix}.raw`);
(async () => {
  for await (const msg of raw) msg.respond(msg.data);
})();

const root = new Supervisor({ name: "bench" }, [
  actor<typeof payload>({
    name: "echo",
    subjects: [`${prefix}.actor`],
    handle: (message, ctx) => {
      if (message.reply) ctx.publish(message.reply, message.data);
    },
  }, { nats: nc }),
]);
await root.ready;

Deno.bench("bare NATS request/reply", { group: "request", baseline: true }, async () => {
  decodeJson((await nc.request(`${prefix}.raw`, encodeJson(payload))).data);
});

Deno.bench("request answered by a supervised actor", { group: "request" }, async () => {
  decodeJson((await nc.request(`${prefix}.actor`, encodeJson(payload))).data);
});

globalThis.addEventListener("unload", () => {
  root.stop();
  nc.close();
});
