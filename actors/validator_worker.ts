/**
 * The validator in a thread of its own: a child of the market supervisor that
 * runs {@linkcode validatorActor} in a Web Worker (`_validator_thread.ts`)
 * with its own NATS connection. The feeds read and parse frames on the main
 * thread; with the validator beside them, a burst of frames held the
 * validator back, and nats-server then held back the connection's publishes
 * too, so the stages ran one after another instead of together. In a thread
 * of its own the validator reads `md.>` while the feeds work. Same rules,
 * same subjects, same queue group: the validator code is the one that runs
 * in-thread.
 *
 * The thread's life is that of any {@linkcode startThreadChild} child. Its
 * figures (`status.validator`: accepted, and rejected by reason and by
 * exchange) are refreshed every `statusIntervalMs`, and its log lines are
 * written by `log`. Its per-symbol state lives in the thread and starts
 * empty after a restart, as in-thread.
 *
 * @example
 * ```ts ignore
 * validatorWorker({ nats: config.nats, options: config.validator, status, log });
 * ```
 *
 * @module
 */

import type { NatsOptions } from "../adapters/nats.ts";
import type { Config } from "../config/mod.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import type { MarketStatus, ValidatorStatus } from "../market/status.ts";
import { Validator } from "../market/validation.ts";
import { startThreadChild } from "./thread_child.ts";
import type { ChildSpec } from "./types.ts";
import { VALIDATOR_ACTOR_NAME } from "./validator.ts";
import { addCounts } from "../lib/counts.ts";

/** How often the validator's thread reports its figures by default, in ms. */
export const DEFAULT_VALIDATOR_STATUS_INTERVAL_MS = 100;

/** What the validator's thread is started with. */
export interface ValidatorThreadStart {
  /** The `nats` section: the thread opens its own connection. */
  nats: NatsOptions;
  /** The `validator` section (as the engine passes it, e.g. with replay's lifted time window). */
  options: Config["validator"];
}

/** What {@linkcode validatorWorker} needs. */
export interface ValidatorWorkerDeps extends ValidatorThreadStart {
  /** Shared pipeline figures; `status.validator` is refreshed from the thread. */
  status: MarketStatus;
  /** Writes the thread's log lines. @default {nullLogger} */
  log?: Logger;
  /** How often the thread reports its figures, in ms. @default {DEFAULT_VALIDATOR_STATUS_INTERVAL_MS} */
  statusIntervalMs?: number;
}

/**
 * The validator as a supervised child running in a Web Worker (restart
 * `permanent`). Throws here, at wiring time, on bad options, as
 * {@linkcode validatorActor} does.
 */
export function validatorWorker(deps: ValidatorWorkerDeps): ChildSpec {
  new Validator(deps.options);
  return {
    name: VALIDATOR_ACTOR_NAME,
    start: (signal) => {
      // Each thread counts from zero: its figures are added to those of the threads before it.
      const base = structuredClone(deps.status.validator);
      return startThreadChild<ValidatorThreadStart, ValidatorStatus>({
        module: new URL("./_validator_thread.ts", import.meta.url),
        name: VALIDATOR_ACTOR_NAME,
        start: { nats: deps.nats, options: deps.options },
        statusIntervalMs: deps.statusIntervalMs ?? DEFAULT_VALIDATOR_STATUS_INTERVAL_MS,
        onStatus: (status) =>
          Object.assign(deps.status.validator, addValidatorStatus(base, status)),
        log: deps.log ?? nullLogger,
      }, signal);
    },
  };
}

/**
 * The figures of a validator thread (`life`, counted from its start) added to
 * those of the threads before it (`base`), so that they count since the
 * engine started, as the in-thread validator's do.
 */
export function addValidatorStatus(base: ValidatorStatus, life: ValidatorStatus): ValidatorStatus {
  return {
    accepted: base.accepted + life.accepted,
    rejected: addCounts(base.rejected, life.rejected) as Record<string, number>,
    rejected_by_exchange: addCounts(base.rejected_by_exchange, life.rejected_by_exchange),
  };
}
