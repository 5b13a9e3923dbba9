/**
 * Stopping actors while their NATS connection is down (reconnecting): a
 * subscription's drain needs the server's answer, so an actor stopped then
 * unsubscribes instead, handles what it already received, runs its stop hook
 * and exits well within its shutdown time (a private nats-server that the
 * test stops); a drain the server does not confirm in time ends in an
 * unsubscribe too (no services).
 *
 * @module
 */

import assert from "node:assert/strict";
import { connectNats } from "../adapters/nats.ts";
import type { NatsConnection, Subscription } from "@nats-io/nats-core";
import { actor, drainSubscription } from "../actors/actor.ts";
import { startRoot } from "../actors/supervisor.ts";
import { RecordingClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";

Deno.test("an actor stopped while NATS is down stops promptly instead of overrunning its shutdown time", async () => {
  await using server = await startNatsServer({ jetstream: false });
  // Reconnects forever, as the engine's connection does.
  const nats = await connectNats({
    url: server.url,
    name: "actor-disconnected-stop",
    user: "",
    password: "",
    token: "",
    connect_timeout_ms: 5_000, // the default
    reconnect_wait_ms: 250,
    reconnect_max_wait_ms: 5_000,
    reconnect_jitter_ms: 100,
  });
  let disconnected = false;
  (async () => {
    for await (const status of nats.status()) {
      if (status.type === "disconnect") disconnected = true;
    }
  })();
  const { log, lines } = memoryLogger();
  let stopHookRan = false;
  const cache = actor({
    name: "cache",
    subjects: ["test.actor.disconnected.>"],
    mailbox: { overflow: "conflate" },
    handle: () => {},
    stop: () => {
      stopHookRan = true;
    },
  }, { nats, log });
  const root = await deadline(startRoot({ name: "root", log }, [cache]), 10_000, "start");
  try {
    await server.stop();
    await waitFor(() => disconnected, 10_000, "client noticed the server is gone");
    const startedAt = Date.now();
    await deadline(root.stop(), 10_000, "root stop");
    const tookMs = Date.now() - startedAt;
    const abandoned = lines.some((line) => String(line.message).startsWith("child killed"));
    assert.ok(
      !abandoned && stopHookRan && tookMs < 1_500,
      `stop took ${tookMs} ms (shutdown time 5000 ms), abandoned: ${abandoned}, ` +
        `stop hook ran: ${stopHookRan}: draining a subscription waits for the server`,
    );
  } finally {
    await nats.close().catch(() => {});
  }
});

Deno.test("drainSubscription unsubscribes when the server does not confirm the drain within its timeout", async () => {
  const clock = new RecordingClock();
  let unsubscribed = false;
  // A connection that looks up but whose server never answers: the drain never settles.
  const nats = { isClosed: () => false } as unknown as NatsConnection;
  const subscription = {
    isClosed: () => unsubscribed,
    getSubject: () => "test.actor.stalled",
    drain: () => new Promise<void>(() => {}),
    unsubscribe: () => {
      unsubscribed = true;
    },
  } as unknown as Subscription;
  const { log, lines } = memoryLogger();
  await deadline(drainSubscription(nats, subscription, { timeoutMs: 250, clock, log }), 5_000);
  assert.equal(unsubscribed, true);
  assert.deepEqual(clock.sleeps, [250]);
  assert.ok(lines.some((line) => String(line.message).includes("drain timed out")));
});
