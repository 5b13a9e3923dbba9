/**
 * The validator actor: reads every raw market-data message (`md.>`, in the
 * queue group `validator` so several engines share the work), applies the
 * pure rules of {@linkcode Validator}, republishes the accepted events of each
 * message as ONE JSON array on `clean.` + the original subject, and
 * dead-letters each refused event on `dlq.md.<exchange>`.
 *
 * Wiring (done by the engine): one child in the market-data supervisor, after
 * the feeds' NATS connection exists and before or after the feeds (it only
 * subscribes):
 *
 * ```ts ignore
 * validatorActor({ nats, status, options: config.validator, log, clock });
 * ```
 *
 * Decisions:
 * - No mailbox: messages are validated synchronously in the subscription loop.
 *   Validation is CPU-only and publishing is buffered, so a mailbox would only
 *   add a copy and a promise per message, and its drop policy could lose data.
 *   While the loop is busy the NATS client queues messages for the
 *   subscription (a warning is logged when more than
 *   {@linkcode DEFAULT_BACKLOG_WARN} wait); if the process falls behind for
 *   long, the server's slow-consumer protection may drop messages for this
 *   connection — core NATS is at-most-once, which is why the clean side is a
 *   JetStream stream and the raw side is kept small by batching.
 * - A message whose events are all accepted is republished byte for byte (no
 *   re-encoding); otherwise the accepted subset is encoded; nothing is
 *   published when every event is refused.
 * - A payload that is not JSON, not an array, empty, or has a subject that is
 *   not `md.<kind>.<exchange>.<symbol>` gives `schema` dead letters. A malformed
 *   item carries its JSON text in `frame` (whole), not in `event`, which
 *   is reserved for well-formed events. When the exchange cannot be told from
 *   the subject, the message is logged and skipped.
 * - Every dead letter is fitted to the server's payload limit
 *   (`nats.info.max_payload`) by {@linkcode fitLetter}: a letter is larger than
 *   what it carries, so one whose frame or event fitted a message may not fit.
 *   A frame is cut, and an event too large is given as its JSON text in
 *   `frame`, cut; its `detail` then says so (`frame cut to N of M characters`).
 *   A dead letter NATS still refuses (e.g. the connection is closing) is
 *   logged as an error with the number lost so far, never thrown: the
 *   rejection is counted in `status.validator` all the same, and the
 *   validator and its per-symbol state go on.
 * - The per-symbol state (reference price, trade ids, book sequence) lives in
 *   this process and starts empty after a restart. With several engines in the
 *   queue group, each sees a share of each symbol's messages, so duplicates
 *   and sequence regressions are caught within each share only.
 *
 * @module
 */

import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import type { Config } from "../config/mod.ts";
import { encodeJson } from "../adapters/codec.ts";
import type { Clock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import type { Exchange } from "../market/events.ts";
import type { MarketStatus } from "../market/status.ts";
import { DEFAULT_MAX_PAYLOAD, fitLetter } from "../market/dead_letters.ts";
import { type DeadLetter, dlqSubject, MD_ALL } from "../market/subjects.ts";
import { isExchange, type Rejection, Validator } from "../market/validation.ts";
import { actor, DEFAULT_DRAIN_TIMEOUT_MS, drainSubscription } from "./actor.ts";
import type { ChildSpec } from "./types.ts";

/** Queue group of the validator's subscription, shared by every engine. */
export const VALIDATOR_QUEUE = "validator";
/** Name of the validator actor in the supervision tree. */
export const VALIDATOR_ACTOR_NAME = "validator";
/** Messages waiting in the client for the validator before it logs a warning. */
export const DEFAULT_BACKLOG_WARN = 10_000;

/** What the validator actor needs. */
export interface ValidatorActorDeps {
  /** Connection to subscribe `md.>` and publish `clean.md.*` and `dlq.md.*` on. */
  nats: NatsConnection;
  /** Shared figures; the actor writes `status.validator`. */
  status: MarketStatus;
  /** The `validator` section of the configuration. */
  options: Config["validator"];
  /** @default {nullLogger} */
  log?: Logger;
  /** Source of "now" for the stale/future rules and `at_us`. @default {systemClock} */
  clock?: Clock;
}

const decoder = new TextDecoder();

/**
 * The validator as a supervised child (restart `permanent`). A restart starts
 * with empty per-symbol state. Stopping drains the subscription (or, while
 * NATS is down, unsubscribes: see {@linkcode drainSubscription}): messages
 * already received are validated and published before it exits.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { DEFAULT_CONFIG } from "../config/mod.ts";
 * import { MarketStatus } from "../market/status.ts";
 * import { startRoot } from "./supervisor.ts";
 * import { validatorActor } from "./validator.ts";
 *
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * const status = new MarketStatus();
 * const spec = validatorActor({ nats, status, options: DEFAULT_CONFIG.validator });
 * const root = await startRoot({ name: "root" }, [spec]);
 * await root.stop();
 * await nats.close();
 * ```
 */
export function validatorActor(deps: ValidatorActorDeps): ChildSpec {
  const { nats, status, options } = deps;
  let subscription: Subscription | null = null;
  let validator = new Validator(options); // Throws here, at wiring time, on bad options.
  let lostLetters = 0; // Dead letters NATS refused, since the actor was made.

  const frameOf = (value: unknown): string => {
    let text: string;
    try {
      text = typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
    } catch {
      text = String(value);
    }
    return text;
  };

  const deadLetter = (exchange: Exchange, rejection: Rejection, atUs: number): DeadLetter =>
    rejection.reason === "schema"
      ? {
        exchange,
        stage: "validator",
        reason: "schema",
        detail: rejection.detail,
        frame: frameOf(rejection.event),
        at_us: atUs,
      }
      : {
        exchange,
        stage: "validator",
        reason: rejection.reason,
        detail: rejection.detail,
        event: rejection.event,
        at_us: atUs,
      };

  return actor({
    name: VALIDATOR_ACTOR_NAME,
    start: async () => {
      validator = new Validator(options);
      const sub = nats.subscribe(MD_ALL, { queue: VALIDATOR_QUEUE });
      subscription = sub;
      try {
        await nats.flush();
      } catch (error) {
        sub.unsubscribe();
        subscription = null;
        throw error;
      }
    },
    run: async (ctx) => {
      const sub = subscription;
      if (sub === null) throw new Error("Validator started without a subscription");
      const log = ctx.log;

      /** Publishes `letter` fitted to the server's payload limit; a failure is logged, never thrown. */
      const publishLetter = (letter: DeadLetter): void => {
        try {
          const limit = nats.info?.max_payload ?? DEFAULT_MAX_PAYLOAD;
          nats.publish(dlqSubject(letter.exchange), fitLetter(letter, limit));
        } catch (error) {
          lostLetters++;
          log.error("dead letter not published", {
            exchange: letter.exchange,
            reason: letter.reason,
            detail: letter.detail.slice(0, 256),
            error: error instanceof Error ? error.message : String(error),
            lost: lostLetters,
          });
        }
      };

      const handleMessage = (msg: Msg): void => {
        const atUs = ctx.clock.now() * 1000;
        const exchangeToken = msg.subject.split(".", 3)[2];
        const subjectExchange = isExchange(exchangeToken) ? exchangeToken : null;
        let batch: unknown;
        try {
          batch = JSON.parse(decoder.decode(msg.data));
        } catch (error) {
          if (subjectExchange === null) {
            log.warn("undecodable message on an unknown exchange skipped", {
              subject: msg.subject,
            });
            return;
          }
          status.reject(subjectExchange, "schema");
          publishLetter({
            exchange: subjectExchange,
            stage: "validator",
            reason: "schema",
            detail: `message is not JSON: ${(error as Error).message}`,
            frame: frameOf(decoder.decode(msg.data)),
            at_us: atUs,
          });
          return;
        }
        const { accepted, rejected } = validator.validate(batch, atUs, { subject: msg.subject });
        if (accepted.length > 0) {
          status.validator.accepted += accepted.length;
          nats.publish(
            `clean.${msg.subject}`,
            rejected.length === 0 ? msg.data : encodeJson(accepted),
          );
        }
        for (const rejection of rejected) {
          const exchange = rejection.reason === "schema"
            ? subjectExchange
            : rejection.event.exchange;
          if (exchange === null) {
            log.warn("refused event on an unknown exchange skipped", {
              subject: msg.subject,
              reason: rejection.reason,
              detail: rejection.detail,
            });
            continue;
          }
          status.reject(exchange, rejection.reason);
          publishLetter(deadLetter(exchange, rejection, atUs));
        }
      };

      // While NATS is down it unsubscribes instead: a drain would wait for the server.
      const onAbort = () =>
        void drainSubscription(nats, sub, {
          timeoutMs: DEFAULT_DRAIN_TIMEOUT_MS,
          clock: ctx.clock,
          log,
        });
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      if (ctx.signal.aborted) onAbort();
      let backlogWarned = false;
      try {
        for await (const msg of sub) {
          handleMessage(msg);
          const pending = sub.getPending();
          if (pending > DEFAULT_BACKLOG_WARN && !backlogWarned) {
            backlogWarned = true;
            log.warn("validator is falling behind", { pending });
          } else if (backlogWarned && pending < DEFAULT_BACKLOG_WARN / 2) {
            backlogWarned = false;
          }
        }
      } finally {
        ctx.signal.removeEventListener("abort", onAbort);
      }
      const closed = await sub.closed;
      if (closed instanceof Error) throw closed;
      if (!ctx.signal.aborted) throw new Error(`Subscription to ${MD_ALL} closed unexpectedly`);
    },
    stop: () => {
      if (subscription !== null && !subscription.isClosed()) subscription.unsubscribe();
      subscription = null;
    },
  }, {
    nats,
    ...(deps.log ? { log: deps.log } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
}
