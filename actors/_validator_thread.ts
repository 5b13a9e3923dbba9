/**
 * Entry point of the validator's own thread (a Web Worker started by
 * {@linkcode validatorWorker}). It opens its own NATS connection from the
 * settings it is sent, runs {@linkcode validatorActor} exactly as the main
 * thread would, and reports `status.validator` to the main thread.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import type { NatsConnection } from "@nats-io/nats-core";
import { connectNats } from "../adapters/nats.ts";
import { MarketStatus, type ValidatorStatus } from "../market/status.ts";
import { serveThread } from "./thread_child.ts";
import { validatorActor } from "./validator.ts";
import type { ValidatorThreadStart } from "./validator_worker.ts";

serveThread<ValidatorThreadStart, ValidatorStatus>(async (start, thread) => {
  const { log } = thread;
  let nats: NatsConnection | null = null;
  const status = new MarketStatus();
  thread.reportStatus(() => status.validator);
  try {
    nats = await connectNats(start.nats, {
      log: log.child({ component: "nats" }),
      signal: thread.signal,
    });
    await thread.runChild(validatorActor({
      nats,
      status,
      options: start.options,
      log: log.child({ actor: "validator" }),
    }));
  } finally {
    // Drained by the actor on stop; close flushes what it published.
    await nats?.close().catch(() => {});
  }
});
