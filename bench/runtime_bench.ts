/**
 * Runtime benchmarks, each beside its floor (marked `baseline`): the bounded
 * mailbox against a bare array queue, a request answered by a supervised
 * actor against a bare NATS request/reply on the same server, and a bounded
 * memory of 100,000 ids (orders closed lately, fills handed over) forgetting
 * its oldest through `InsertionOrderedSet` against a bare `Set`'s
 * `keys().next()` (which walks the holes its deletes left) and against a
 * bare array ring; and `redactUrl` of 64 KiB of text repeating `a://u:` (a
 * logged request path, an attacker's) against a bare scan of the same text
 * for `://` with the same regular expression `redactUrl` starts from.
 *
 * Run with `deno task bench` (needs NATS on 127.0.0.1:4222).
 */

import { connect } from "@nats-io/transport-node";
import { Mailbox } from "../actors/mailbox.ts";
import { InsertionOrderedSet } from "../lib/insertion_map.ts";
import { actor } from "../actors/actor.ts";
import { Supervisor } from "../actors/supervisor.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { redactUrl } from "../lib/redact.ts";

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

// A memory held at 100,000 ids, as the paper broker's closed orders and the tracker's handed-over
// fills are in a long run: each iteration adds 1,000 ids and forgets the 1,000 oldest.
const MEMORY = 100_000;
let nextId = 0;
const bareSet = new Set<string>();
const orderedSet = new InsertionOrderedSet<string>();
const ring: string[] = new Array(MEMORY);
for (; nextId < MEMORY; nextId++) {
  bareSet.add(`coid-${nextId}`);
  orderedSet.add(`coid-${nextId}`);
  ring[nextId] = `coid-${nextId}`;
}
let ringHead = 0;
Deno.bench("bare array ring, 1k ids added, oldest forgotten", {
  group: "forget oldest of 100k",
  baseline: true,
}, () => {
  for (let i = 0; i < BATCH; i++) {
    ring[ringHead] = `coid-${nextId++}`;
    ringHead = (ringHead + 1) % MEMORY;
  }
});
Deno.bench("InsertionOrderedSet, 1k ids added, oldest forgotten", {
  group: "forget oldest of 100k",
}, () => {
  for (let i = 0; i < BATCH; i++) {
    orderedSet.add(`coid-${nextId++}`);
    if (orderedSet.size > MEMORY) orderedSet.deleteOldest();
  }
});
Deno.bench("bare Set, 1k ids added, oldest forgotten by keys().next()", {
  group: "forget oldest of 100k",
}, () => {
  for (let i = 0; i < BATCH; i++) {
    bareSet.add(`coid-${nextId++}`);
    if (bareSet.size > MEMORY) bareSet.delete(bareSet.keys().next().value!);
  }
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

const SCHEMES = "a://u:".repeat(Math.floor(65_536 / 6));
Deno.bench("bare scan for x:// (floor), 64 KiB of a://u:", {
  group: "redact 64 KiB of a://u:",
  baseline: true,
}, () => {
  let found = 0;
  for (const _ of SCHEMES.matchAll(/\b([a-z][a-z0-9+.-]*):\/\//gi)) found++;
  if (found === 0) throw new Error("no scheme found");
});
Deno.bench("redactUrl, 64 KiB of a://u:", { group: "redact 64 KiB of a://u:" }, () => {
  redactUrl(SCHEMES);
});

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
