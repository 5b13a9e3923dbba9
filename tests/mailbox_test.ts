import assert from "node:assert/strict";
import {
  ConflatingMailbox,
  Mailbox,
  MailboxClosedError,
  MailboxFullError,
} from "../actors/mailbox.ts";
import { isSettled, waitFor } from "./_helpers.ts";

Deno.test("mailbox delivers messages in FIFO order across ring wrap-around", async () => {
  const mailbox = new Mailbox<number>(3);
  const taken: number[] = [];
  for (let i = 0; i < 10; i++) {
    await mailbox.put(i);
    if (i % 2 === 1) taken.push(await mailbox.take(), await mailbox.take());
  }
  assert.deepEqual(taken, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(mailbox.stats(), { depth: 0, capacity: 3, dropped: 0 });
});

Deno.test("mailbox take waits for the next message", async () => {
  const mailbox = new Mailbox<string>(2);
  const next = mailbox.take();
  assert.equal(await isSettled(next), false);
  await mailbox.put("hello");
  assert.equal(await next, "hello");
});

Deno.test("mailbox block policy blocks the producer until there is room", async () => {
  const mailbox = new Mailbox<number>(2, { overflow: "block" });
  await mailbox.put(1);
  await mailbox.put(2);
  const blocked = mailbox.put(3);
  assert.equal(await isSettled(blocked), false);
  assert.equal(mailbox.blocked, 1);
  assert.deepEqual(mailbox.stats(), { depth: 2, capacity: 2, dropped: 0 });
  assert.equal(await mailbox.take(), 1);
  await blocked;
  assert.deepEqual(mailbox.stats(), { depth: 2, capacity: 2, dropped: 0 });
  assert.deepEqual([await mailbox.take(), await mailbox.take()], [2, 3]);
});

Deno.test("mailbox drop_oldest never blocks, drops the oldest and counts it", async () => {
  const mailbox = new Mailbox<number>(3, { overflow: "drop_oldest" });
  for (let i = 1; i <= 5; i++) await mailbox.put(i);
  assert.deepEqual(mailbox.stats(), { depth: 3, capacity: 3, dropped: 2 });
  assert.deepEqual([await mailbox.take(), await mailbox.take(), await mailbox.take()], [3, 4, 5]);
});

Deno.test("mailbox bounds the number of blocked producers", async () => {
  const mailbox = new Mailbox<number>(1, { maxBlockedPuts: 2 });
  await mailbox.put(0);
  const first = mailbox.put(1);
  const second = mailbox.put(2);
  await assert.rejects(mailbox.put(3), MailboxFullError);
  assert.equal(mailbox.blocked, 2);
  assert.deepEqual([await mailbox.take(), await mailbox.take(), await mailbox.take()], [0, 1, 2]);
  await Promise.all([first, second]);
});

Deno.test("mailbox close wakes takers and blocked producers but keeps queued messages", async () => {
  const empty = new Mailbox<number>(1);
  const taker = empty.take();
  empty.close();
  await assert.rejects(taker, MailboxClosedError);

  const full = new Mailbox<number>(1);
  await full.put(1);
  const producer = full.put(2);
  full.close();
  await assert.rejects(producer, MailboxClosedError);
  await assert.rejects(full.put(3), MailboxClosedError);
  assert.equal(await full.take(), 1);
  await assert.rejects(full.take(), MailboxClosedError);
});

Deno.test("mailbox iteration drains queued messages and ends when closed", async () => {
  const mailbox = new Mailbox<number>(4);
  const seen: number[] = [];
  const consumer = (async () => {
    for await (const message of mailbox) seen.push(message);
  })();
  await mailbox.put(1);
  await mailbox.put(2);
  await waitFor(() => seen.length === 2, 1_000);
  await mailbox.put(3);
  mailbox.close();
  await consumer;
  assert.deepEqual(seen, [1, 2, 3]);
});

Deno.test("mailbox take and put give up when their signal aborts", async () => {
  const mailbox = new Mailbox<number>(1);
  const controller = new AbortController();
  const taker = mailbox.take(controller.signal);
  controller.abort(new Error("stop"));
  await assert.rejects(taker, { message: "stop" });
  await mailbox.put(1);
  assert.equal(await mailbox.take(), 1, "the aborted taker must not swallow a message");

  await mailbox.put(2);
  const producer = new AbortController();
  const blocked = mailbox.put(3, producer.signal);
  producer.abort(new Error("gave up"));
  await assert.rejects(blocked, { message: "gave up" });
  assert.equal(mailbox.blocked, 0);
  assert.deepEqual(mailbox.stats(), { depth: 1, capacity: 1, dropped: 0 });
});

Deno.test("mailbox rejects invalid capacity and policy", () => {
  assert.throws(() => new Mailbox(0), RangeError);
  assert.throws(() => new Mailbox(1.5), RangeError);
  // @ts-expect-error: an unknown policy from untyped config
  assert.throws(() => new Mailbox(1, { overflow: "drop_newest" }), TypeError);
});

interface Tick {
  subject: string;
  n: number;
}

Deno.test("conflating mailbox keeps the newest message per key, in first-arrival order", async () => {
  const box = new ConflatingMailbox<Tick>(8, (tick) => tick.subject);
  for (let n = 1; n <= 3; n++) {
    await box.put({ subject: "a", n });
    await box.put({ subject: "b", n });
  }
  await box.put({ subject: "c", n: 1 });
  assert.deepEqual(box.stats(), { depth: 3, capacity: 8, dropped: 4 });
  assert.deepEqual(await box.take(), { subject: "a", n: 3 });
  assert.deepEqual(await box.take(), { subject: "b", n: 3 });
  assert.deepEqual(await box.take(), { subject: "c", n: 1 });
  assert.equal(box.size, 0);
});

Deno.test("conflating mailbox with keep leaves the waiting message when keep says so", async () => {
  // Keeps whichever of the two has the larger n: a late, lower n never replaces a higher one.
  const box = new ConflatingMailbox<Tick>(8, (tick) => tick.subject, {
    keep: (waiting, incoming) => waiting.n > incoming.n,
  });
  for (const n of [1, 5, 3]) await box.put({ subject: "a", n });
  await box.put({ subject: "b", n: 2 });
  await box.put({ subject: "b", n: 2 }); // a tie: the incoming replaces it
  assert.deepEqual(box.stats(), { depth: 2, capacity: 8, dropped: 3 });
  assert.deepEqual(await box.take(), { subject: "a", n: 5 });
  assert.deepEqual(await box.take(), { subject: "b", n: 2 });
});

Deno.test("conflating mailbox hands a message straight to a waiting taker", async () => {
  const box = new ConflatingMailbox<Tick>(1, (tick) => tick.subject);
  const taken = box.take();
  assert.equal(await isSettled(taken), false);
  await box.put({ subject: "a", n: 1 });
  assert.deepEqual(await taken, { subject: "a", n: 1 });
  assert.deepEqual(box.stats(), { depth: 0, capacity: 1, dropped: 0 });
});

Deno.test("conflating mailbox beyond capacity drops the key that waited longest", async () => {
  const box = new ConflatingMailbox<Tick>(2, (tick) => tick.subject);
  await box.put({ subject: "a", n: 1 });
  await box.put({ subject: "b", n: 1 });
  await box.put({ subject: "c", n: 1 });
  assert.deepEqual(box.stats(), { depth: 2, capacity: 2, dropped: 1 });
  assert.deepEqual(await box.take(), { subject: "b", n: 1 });
  assert.deepEqual(await box.take(), { subject: "c", n: 1 });
});

Deno.test("conflating mailbox close keeps waiting messages and ends iteration", async () => {
  const box = new ConflatingMailbox<Tick>(4, (tick) => tick.subject);
  await box.put({ subject: "a", n: 1 });
  box.close();
  await assert.rejects(box.put({ subject: "b", n: 1 }), MailboxClosedError);
  const seen: Tick[] = [];
  for await (const tick of box) seen.push(tick);
  assert.deepEqual(seen, [{ subject: "a", n: 1 }]);
  await assert.rejects(box.take(), MailboxClosedError);
  const empty = new ConflatingMailbox<Tick>(4, (tick) => tick.subject);
  const waiting = empty.take();
  empty.close();
  await assert.rejects(waiting, MailboxClosedError);
  assert.throws(() => new ConflatingMailbox<Tick>(0, (tick) => tick.subject), RangeError);
});
