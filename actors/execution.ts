/**
 * The execution actor: feeds the {@linkcode ExecutionEngine} from the durable
 * JetStream stream `SIGNALS` and answers kill-switch requests.
 *
 * On start it makes sure `SIGNALS` (and `FILLS`, which the engine publishes
 * to) and its durable pull consumer `execution` exist, starts the engine,
 * waits (at most `warmup_ms`) for market data to reach the cache and the
 * open orders' symbols to have fresh prices and, with
 * `execution.reconcile_on_start`, reconciles open orders with the brokers;
 * only then is it ready. So that signals queued while the engine was down
 * are not refused for want of a price, during the first `warmup_ms` after
 * the start each batch first waits, for at most what remains of it (or
 * until the actor stops), until every valid signal of it has a fresh price
 * of its symbol (on its `exchange` when it names one): venues connect one
 * after the other, and the first venue's first event says nothing of the
 * others'. After `warmup_ms` nothing waits. Then:
 *
 * - Signals are pulled continuously into a buffer; whenever the engine has
 *   decided the previous batch, everything buffered (up to
 *   `execution.batch_max`) goes in as ONE batch: one transaction, one commit
 *   ({@linkcode ExecutionEngine.enqueueSignals}). Signals that arrive while a
 *   batch is decided make the next batch, which is decided while the previous
 *   one commits; so a lone signal waits for nothing and a flood shares commits.
 * - Each message becomes a {@linkcode SignalInput}: its strategy is the
 *   subject's second token, its key (used when the body has no `id`)
 *   `js-<stream sequence>` or `js-<stream created, epoch ms>-<stream
 *   sequence>` (below), its time the stream's timestamp. A body that is not
 *   JSON is recorded as `{ raw }` and rejected, and so is one nested deeper
 *   than `MAX_SIGNAL_BODY_DEPTH` (trading/signal.ts `decodeSignalBody`, which
 *   also keeps numbers' exact text) and one that is not UTF-8 (`raw` then
 *   holds its bytes in base64, never text with U+FFFD). `signals.rejected` (reject events) is
 *   acknowledged and skipped.
 * - The batch's messages are acknowledged only after the engine's
 *   transaction committed. A crash before that means redelivery after the ack
 *   wait; the engine finds the signals stored and returns their outcomes, so
 *   every signal is processed exactly once. When the transaction fails for
 *   want of the database (unreachable, timed out, a serialization conflict,
 *   or refusing work for now: read-only — a standby, as during a failover —
 *   out of disk or memory) the messages are negatively acknowledged with a
 *   delay and come back, and the next batch waits for that delay; from such
 *   a failure until a batch commits, {@linkcode ExecutionChildSpec.problems}
 *   (and {@linkcode executionProblems}) says since when and how many signals
 *   are held, for health. When a batch of several fails for
 *   any other reason, which may be one message's, its messages come back at
 *   once and are each handed in alone until acknowledged: a message that
 *   fails every time comes back with a growing delay (by its delivery count)
 *   and holds back no other signal; after `execution.max_signal_attempts`
 *   failures of its own (alone, not for want of the database: counted here,
 *   not by its delivery count) it is handed in once more as a `failure`,
 *   recorded as rejected (`processing_failed`, with a critical alert) and
 *   acknowledged.
 * - After a NATS outage the backlog arrives at once, while the cache still
 *   holds the prices of before it (market data comes over NATS too): from
 *   the disconnect on, signals are held until every symbol that had a fresh
 *   price when the connection dropped has one again, or `warmup_ms` after
 *   the reconnect — logged either way — so the backlog is not refused as
 *   `no_market_price`. Stopping meanwhile never lets them go on: the held
 *   batches are refused (their messages come back) and the next start
 *   decides them after its own warm-up.
 * - Keys name the stream's life. When `SIGNALS` starts over (NATS moved, its
 *   JetStream store lost, the stream deleted) with the same database, its
 *   sequences restart at 1; a key of the sequence alone would make a new
 *   signal a duplicate of an old one, answered with the old outcome. At
 *   start, once the consumer is ensured, the actor reads the stream's
 *   `created` time and the marker stored in the `config` table
 *   (`signal_keys:<stream>`, db/config.ts `plainSignalKeys`) of the one life
 *   keyed `js-<seq>`: none stored (the first start since keys name lives),
 *   it stores this life — so messages stored before the upgrade with
 *   `js-<seq>` keys are still recognised when redelivered — unless a NATS
 *   signal keyed `js-<digits>` received before this stream was created is
 *   stored (an earlier life was keyed so: no life is from then on); the
 *   marker's life keeps `js-<seq>`, any other is keyed
 *   `js-<created epoch ms>-<seq>`. Races: the marker is inserted only when
 *   absent and read back, first writer wins, and never changed, so two
 *   starts at once (or a start after a crash anywhere in this) agree on it;
 *   a start that saw another life than the stored one keys its own. The
 *   `created` time is read after the consumer is ensured: were the stream
 *   created again in between, the consumer went with the old one and
 *   delivers nothing, and the restart that ensures both again reads the new
 *   time. The keys of one life differ from every other's as long as no two
 *   lives were created in the same millisecond.
 * - A consumer or stream that is gone ends the actor: when nats.js finds the
 *   durable consumer or `SIGNALS` missing (checked after each reconnect and
 *   when heartbeats stop, or told by the server that the consumer was
 *   deleted) — NATS came back without its JetStream store, `nats consumer
 *   rm`, `nats stream rm` — the consume loop hands in what it had received
 *   and fails with a {@linkcode SignalsConsumerGoneError}, and the restart
 *   by its supervisor sets up the streams and the consumer again and reads
 *   the new stream's life (above). A NATS that is only away (same store)
 *   restarts nothing. At start the set-up is tried again with backoff while
 *   NATS or JetStream say no (not for a {@linkcode ConsumerMismatchError}),
 *   the actor showing as starting meanwhile, so that a JetStream slow to
 *   answer after a restart does not spend the supervisor's restarts.
 * - `control.kill_switch` requests (`{ active, cancel_open?, reason? }`) are
 *   answered with the kill switch's state ({@linkcode KillSwitchReply}).
 *
 * On stop it stops pulling, waits for the batches in progress (acknowledging
 * them) but not for one held after a NATS outage (refused, its messages
 * negatively acknowledged), negatively acknowledges what it buffered (the next
 * consumer gets it at once) and stops the engine.
 *
 * @example
 * ```ts
 * const spec = executionActor({ nats, engine, config, log });
 * // a child of the trading supervisor, after the brokers and the position tracker
 * ```
 *
 * @module
 */

import type { Msg, NatsConnection, Status, Subscription } from "@nats-io/nats-core";
import {
  type Consumer,
  type ConsumerMessages,
  jetstream,
  jetstreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { base64 } from "../lib/base64.ts";
import {
  ConsumerMismatchError,
  ensureConsumer,
  ensureStreams,
  NATS_SILENCE_DETECTION_MS,
  type StreamSpec,
  watchConsumer,
} from "../adapters/nats.ts";
import { isTemporaryRefusal } from "../adapters/postgres.ts";
import type { Config } from "../config/mod.ts";
import { DbConnectionError, DbTimeoutError, SerializationError } from "../db/mod.ts";
import { backoffDelay } from "../lib/backoff.ts";
import type { Clock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import {
  type ExecutionEngine,
  ExecutionNotReadyError,
  pricesOfSignals,
  type SignalInput,
  type SignalOutcome,
} from "../trading/execution.ts";
import {
  decodeKillSwitchRequest,
  DEFAULT_EXECUTION_CONSUMER,
  DEFAULT_SIGNALS_ACK_WAIT_MS,
  DEFAULT_SIGNALS_STREAM,
  executionConsumer,
  type KillSwitchReply,
  killSwitchSubject,
  type SignalRejectEvent,
  signalsRejectedSubject,
  signalsStream,
  type SignalsStreamNames,
  strategyOfSubject,
} from "../trading/signals_stream.ts";
import {
  decodeSignalBody,
  keyReusedMessage,
  sameSignalBody,
  UnreadSignalBody,
} from "../trading/signal.ts";
import { actor, drainSubscription } from "./actor.ts";
import type { ChildSpec } from "./types.ts";
import { Wakeup } from "../lib/wakeup.ts";

/** Name of the actor in the supervision tree. */
export const EXECUTION_ACTOR_NAME = "execution";
/**
 * Longest wait at start for market data (the first cache update, fresh prices
 * of the open orders' symbols) before reconciling and consuming, in ms; for
 * as long after the start, batches wait for their signals' prices.
 */
export const DEFAULT_WARMUP_MS = 3_000;
/** First delay before a failed batch is handed in again, in ms. */
export const DEFAULT_BATCH_RETRY_INITIAL_MS = 200;
/** Longest delay before a failed batch is handed in again, in ms. */
export const DEFAULT_BATCH_RETRY_MAX_MS = 10_000;
/** First delay before setting up the stream and consumer again at start, in ms. */
export const DEFAULT_SETUP_RETRY_INITIAL_MS = 250;
/** Longest delay before setting up the stream and consumer again at start, in ms. */
export const DEFAULT_SETUP_RETRY_MAX_MS = 10_000;

/**
 * The durable consumer, or its stream, is gone while the actor consumes
 * (NATS came back without its JetStream store, `nats consumer rm`, `nats
 * stream rm`): the actor ends with it, so that its supervisor starts it again
 * and its start sets both up again (and reads the stream's new life).
 */
export class SignalsConsumerGoneError extends Error {
  /** Creates the error for `consumer` of `stream`; `cause` is nats.js's reason, if any. */
  constructor(stream: string, consumer: string, options?: ErrorOptions) {
    const reason = options?.cause instanceof Error ? `: ${options.cause.message}` : "";
    super(
      `JetStream consumer ${consumer} of stream ${stream} stopped delivering${reason}`,
      options,
    );
    this.name = "SignalsConsumerGoneError";
  }
}

/** Names and tuning of the execution actor; tests give their own stream, consumer and prefix. */
export interface ExecutionActorOptions extends SignalsStreamNames {
  /** Durable consumer name. @default {DEFAULT_EXECUTION_CONSUMER} */
  consumer?: string | undefined;
  /** Redelivery delay of unacknowledged signals, in ms. @default {DEFAULT_SIGNALS_ACK_WAIT_MS} */
  ack_wait_ms?: number | undefined;
  /** Most delivered, unacknowledged signals. @default {max(4 × batch_max, 1000)} */
  max_ack_pending?: number | undefined;
  /** Extra streams to ensure at start, e.g. `fillsStream(...)` (the engine publishes to it). @default {[]} */
  streams?: readonly StreamSpec[] | undefined;
  /** Whether the actor creates or updates `SIGNALS` itself. @default {true} */
  ensure_stream?: boolean | undefined;
  /**
   * Longest wait for market data at start, in ms, and how long after the start
   * batches wait for their signals' prices; 0 skips both. @default {DEFAULT_WARMUP_MS}
   */
  warmup_ms?: number | undefined;
  /** Name in the supervision tree. @default {EXECUTION_ACTOR_NAME} */
  name?: string | undefined;
  /** Backoff jitter source. @default {Math.random} */
  random?: (() => number) | undefined;
}

/** What {@linkcode executionActor} needs. */
export interface ExecutionActorDeps {
  /** The NATS connection (JetStream and the kill-switch subject). */
  nats: NatsConnection;
  /** The engine it feeds; started and stopped by the actor. */
  engine: ExecutionEngine;
  /** `execution.batch_max`, `signals_max_age_s` and `reconcile_on_start` are read. */
  config: Pick<Config, "execution">;
  /** @default {nullLogger} */
  log?: Logger | undefined;
  /** @default {systemClock} */
  clock?: Clock | undefined;
  /** Names and tuning. */
  options?: ExecutionActorOptions | undefined;
}

/** Counters of the execution actor, kept across its restarts. */
export interface ExecutionActorCounters {
  /** Messages pulled (redeliveries included). */
  messages: number;
  /** Messages that were redeliveries. */
  redelivered: number;
  /** Messages acknowledged. */
  acked: number;
  /** Batches handed to the engine. */
  batches: number;
  /** Batches whose transaction failed (their messages were negatively acknowledged). */
  failed_batches: number;
  /** Kill-switch requests answered. */
  kill_switch_requests: number;
}

/** The actor's {@linkcode ChildSpec}, with its counters and its problems for health. */
export interface ExecutionChildSpec extends ChildSpec {
  /** Figures kept across restarts. */
  readonly counters: ExecutionActorCounters;
  /**
   * Why signals are not being recorded, for health (empty while they are):
   * from a signal batch failing for want of the database until one commits,
   * since when, how many signals received are held, and the last error.
   */
  problems(): string[];
}

/** Signal batches failing for want of the database, as the consume loop sees them. */
interface DatabaseOutage {
  /** Since when (the clock's ms) batches have failed so; null once one commits. */
  since: number | null;
  /** The last such failure, as text. */
  error: string;
  /** Stream sequences of the messages received and not yet acknowledged by the running loop. */
  held: Set<number>;
}

/** Longest error text in a health problem, in UTF-16 code units. */
const MAX_PROBLEM_ERROR_TEXT = 200;

// The problems of the actor feeding each engine: health reaches the engine, not the actor.
const problemsOfEngine = new WeakMap<ExecutionEngine, () => string[]>();

/**
 * The problems ({@linkcode ExecutionChildSpec.problems}) of the execution
 * actor last created for `engine`; none when there is none.
 *
 * @example
 * ```ts
 * health.degraded = () => [...executionProblems(trading.engine)];
 * ```
 */
export function executionProblems(engine: ExecutionEngine): string[] {
  return problemsOfEngine.get(engine)?.() ?? [];
}

/**
 * Creates the execution actor: a `run` actor, permanent. See the module doc.
 *
 * @example
 * ```ts
 * const execution = executionActor({ nats, engine, config, log, options: { streams: [fillsStream()] } });
 * ```
 */
export function executionActor(deps: ExecutionActorDeps): ExecutionChildSpec {
  const counters: ExecutionActorCounters = {
    messages: 0,
    redelivered: 0,
    acked: 0,
    batches: 0,
    failed_batches: 0,
    kill_switch_requests: 0,
  };
  // Kept across restarts: an outage outlives a restart of the actor.
  const outage: DatabaseOutage = { since: null, error: "", held: new Set() };
  let consumer: Consumer | null = null;
  // Of the life of the stream the consumer reads: "js-", or "js-<created ms>-".
  let keyPrefix = "js-";
  let killSwitch: Subscription | null = null;
  // Until then (warmup_ms after the start) a batch waits for its signals' prices.
  let warmUntil = 0;
  const spec = actor({
    name: deps.options?.name ?? EXECUTION_ACTOR_NAME,
    shutdownMs: 15_000,
    async start(ctx) {
      const warmupMs = deps.options?.warmup_ms ?? DEFAULT_WARMUP_MS;
      warmUntil = ctx.clock.now() + warmupMs;
      const ready = await setUpWithRetry(deps, ctx);
      consumer = ready.consumer;
      try {
        await deps.engine.start();
        keyPrefix = await deps.engine.natsKeyPrefix(ready.stream, ready.created);
        if (keyPrefix !== "js-") {
          ctx.log.info("signal stream created again: signals without id keyed by its life", {
            stream: ready.stream,
            key_prefix: keyPrefix,
          });
        }
        if (warmupMs > 0) await deps.engine.warmUp(warmupMs, { signal: ctx.signal });
        if (deps.config.execution.reconcile_on_start) await deps.engine.reconcile();
        killSwitch = serveKillSwitch(deps, counters, ctx.log);
      } catch (error) {
        await deps.engine.stop();
        throw error;
      }
    },
    run: (ctx) =>
      consumeLoop(deps, consumer!, counters, {
        log: ctx.log,
        clock: ctx.clock,
        signal: ctx.signal,
        warm_until: warmUntil,
        key_prefix: keyPrefix,
        outage,
      }),
    async stop(ctx) {
      if (killSwitch !== null) {
        // Bounded, and skipped while NATS is down: a drain would wait for the server.
        await drainSubscription(deps.nats, killSwitch, { clock: ctx.clock, log: ctx.log });
        killSwitch = null;
      }
      await deps.engine.stop();
    },
  }, {
    nats: deps.nats,
    ...(deps.log ? { log: deps.log } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
  const problems = () => {
    if (outage.since === null) return [];
    const error = outage.error.length > MAX_PROBLEM_ERROR_TEXT
      ? `${outage.error.slice(0, MAX_PROBLEM_ERROR_TEXT - 1)}…`
      : outage.error;
    return [
      `execution cannot record signals since ${new Date(outage.since).toISOString()} ` +
      `(${outage.held.size} held, the database unavailable): ${error}`,
    ];
  };
  problemsOfEngine.set(deps.engine, problems);
  return Object.assign(spec, { counters, problems });
}

/**
 * {@linkcode setUp}, tried again with backoff (logged) while NATS or
 * JetStream say no: after NATS came back without its store, JetStream may not
 * answer at once, and a start that failed every time would spend the
 * supervisor's restart intensity. A consumer that cannot be used
 * ({@linkcode ConsumerMismatchError}) fails at once; so does a closed
 * connection. Rejects with the abort reason when the actor is stopped first.
 */
async function setUpWithRetry(
  deps: ExecutionActorDeps,
  ctx: { log: Logger; clock: Clock; signal: AbortSignal },
): Promise<{ consumer: Consumer; stream: string; created: Date }> {
  for (let attempt = 0;; attempt++) {
    ctx.signal.throwIfAborted();
    try {
      return await setUp(deps, ctx.log);
    } catch (error) {
      if (error instanceof ConsumerMismatchError || deps.nats.isClosed()) throw error;
      ctx.signal.throwIfAborted();
      const delayMs = backoffDelay(Math.min(attempt, 30), {
        initialMs: DEFAULT_SETUP_RETRY_INITIAL_MS,
        maxMs: DEFAULT_SETUP_RETRY_MAX_MS,
        random: deps.options?.random ?? Math.random,
      });
      ctx.log.warn("execution cannot set up its JetStream stream and consumer, retrying", {
        stream: deps.options?.stream ?? DEFAULT_SIGNALS_STREAM,
        consumer: deps.options?.consumer ?? DEFAULT_EXECUTION_CONSUMER,
        attempt: attempt + 1,
        retry_in_ms: delayMs,
        error,
      });
      await ctx.clock.sleep(delayMs, ctx.signal);
    }
  }
}

/** Ensures the streams and the durable consumer; returns it with the stream's creation time. */
async function setUp(
  deps: ExecutionActorDeps,
  log: Logger,
): Promise<{ consumer: Consumer; stream: string; created: Date }> {
  const o = deps.options ?? {};
  const stream = o.stream ?? DEFAULT_SIGNALS_STREAM;
  const names = { stream, subject_prefix: o.subject_prefix };
  const streams: StreamSpec[] = [...(o.streams ?? [])];
  if (o.ensure_stream ?? true) {
    streams.unshift(
      signalsStream({ ...names, max_age_s: deps.config.execution.signals_max_age_s }),
    );
  }
  if (streams.length > 0) await ensureStreams(deps.nats, streams, log);
  const batchMax = deps.config.execution.batch_max;
  const config = executionConsumer({
    ...names,
    consumer: o.consumer ?? DEFAULT_EXECUTION_CONSUMER,
    ack_wait_ms: o.ack_wait_ms,
    max_ack_pending: o.max_ack_pending ?? Math.max(4 * batchMax, 1_000),
  });
  // Generic despite its name: creates the durable consumer or updates its settings.
  const jsm = await jetstreamManager(deps.nats);
  await ensureConsumer(jsm, stream, config, log);
  const consumer = await jetstream(deps.nats).consumers.get(stream, config.durable_name!);
  // After the consumer: its messages are of the stream life created then (module doc).
  const created = new Date((await jsm.streams.info(stream)).created);
  return { consumer, stream, created };
}

/** Options of {@linkcode signalInput}. */
export interface SignalInputOptions extends SignalsStreamNames {
  /**
   * Prefix of the key of a signal without `id`, before the stream sequence:
   * the stream life's ({@linkcode ExecutionEngine.natsKeyPrefix}). @default {"js-"}
   */
  key_prefix?: string | undefined;
}

const decoder = new TextDecoder("utf-8", { fatal: true });

/** The reason of a signal whose body is not UTF-8 (its `raw` holds the bytes in base64). */
export const NOT_UTF8_SIGNAL_MESSAGE =
  "signal body is not valid UTF-8 (raw holds its bytes in base64)";

/**
 * The body of a signal message: read by `decodeSignalBody`, its text for a
 * body that is not JSON, or an {@linkcode UnreadSignalBody} for one that is
 * not UTF-8 — its bytes in base64, never text with U+FFFD in their place.
 */
function signalBody(data: Uint8Array): unknown {
  let text: string;
  try {
    text = decoder.decode(data);
  } catch {
    // Recorded as { raw } and rejected with its reason, like a body that is not JSON.
    return new UnreadSignalBody(base64(data), { path: "", message: NOT_UTF8_SIGNAL_MESSAGE });
  }
  try {
    // Numbers exactly as sent; a body nested too deeply is rejected unread.
    return decodeSignalBody(text);
  } catch {
    // Recorded and rejected ("signal must be a JSON object"), never dropped.
    return text;
  }
}

/** The engine's input for a signal message, or null for one to acknowledge and skip. */
export function signalInput(msg: JsMsg, names: SignalInputOptions = {}): SignalInput | null {
  const strategy = strategyOfSubject(msg.subject, names);
  if (strategy === null) return null;
  const body = signalBody(msg.data);
  return {
    body,
    strategy,
    key: `${names.key_prefix ?? "js-"}${msg.seq}`,
    source: "nats",
    receivedAt: msg.time,
    redelivered: msg.redelivered,
  };
}

/** What the consume loop runs with. */
interface ConsumeLoopContext {
  log: Logger;
  clock: Clock;
  /** Ends the loop. */
  signal: AbortSignal;
  /** Until then (the clock's ms) a batch first waits for its signals' fresh prices. */
  warm_until: number;
  /** Of the stream life's signal keys ({@linkcode SignalInputOptions.key_prefix}). */
  key_prefix: string;
  /** Batches failing for want of the database: updated by the loop, read by health. */
  outage: DatabaseOutage;
}

/**
 * Publishes on `signals.rejected` a reject event for each signal of `items`
 * whose key was stored before for another body (its outcome a duplicate's,
 * `sameSignalBody` false): over REST such a signal is answered 422
 * `idempotency_key_reused`, over NATS it would be acknowledged in silence. A
 * redelivery (the same body again) is not one. The event names the stored
 * signal; nothing is stored for this one.
 */
function rejectReusedKeys(
  nats: NatsConnection,
  names: SignalsStreamNames,
  items: readonly SignalInput[],
  outcomes: readonly SignalOutcome[],
  log: Logger,
): void {
  outcomes.forEach((outcome, i) => {
    const body = items[i]?.body;
    if (!outcome.duplicate || sameSignalBody(body, outcome.signal.payload)) return;
    const stored = outcome.signal;
    const bodyId = typeof body === "object" && body !== null ? (body as { id?: unknown }).id : null;
    const key = bodyId === stored.client_signal_id
      ? `id ${JSON.stringify(bodyId)}`
      : `key ${JSON.stringify(stored.client_signal_id)}`;
    const message = keyReusedMessage(stored, key);
    log.warn("a signal reused the key of another: refused", {
      signal_id: stored.id,
      strategy: stored.strategy,
      client_signal_id: stored.client_signal_id,
    });
    const event: SignalRejectEvent = {
      signal_id: stored.id,
      strategy: stored.strategy,
      client_signal_id: stored.client_signal_id,
      reasons: [{ rule: "idempotency_key_reused", message }],
      received_at: (items[i]?.receivedAt ?? new Date()).toISOString(),
    };
    try {
      nats.publish(signalsRejectedSubject(names), encodeJson(event));
    } catch (error) {
      log.warn("could not publish a reject event", { error });
    }
  });
}

async function consumeLoop(
  deps: ExecutionActorDeps,
  consumer: Consumer,
  counters: ExecutionActorCounters,
  context: ConsumeLoopContext,
): Promise<void> {
  const { log, clock, signal, outage } = context;
  const unacked = new Set<number>();
  outage.held = unacked;
  const o = deps.options ?? {};
  const names = { subject_prefix: o.subject_prefix, key_prefix: context.key_prefix };
  const batchMax = deps.config.execution.batch_max;
  const random = o.random ?? Math.random;
  const keepAliveMs = Math.max(250, Math.floor((o.ack_wait_ms ?? DEFAULT_SIGNALS_ACK_WAIT_MS) / 3));
  const buffer: JsMsg[] = [];
  const wake = new Wakeup();
  let onStopped = () => {};
  const stopped = new Promise<"stopped">((resolve) => onStopped = () => resolve("stopped"));
  const onAbort = () => {
    wake.notify();
    onStopped();
  };
  signal.addEventListener("abort", onAbort, { once: true });
  if (signal.aborted) onAbort();
  let messages: ConsumerMessages | null = null;
  const inFlight = new Set<Promise<void>>();
  const held = holdAfterOutage(deps, log, clock, signal, () => wake.notify());
  const watch = new AbortController();
  try {
    messages = await consumer.consume({
      max_messages: Math.max(2 * batchMax, 100),
      // The consumer or its stream found missing (checked after each reconnect and when
      // heartbeats stop, or told by the server): consume ends instead of waiting for them forever.
      abort_on_missing_resource: true,
      callback: (msg) => {
        buffer.push(msg);
        unacked.add(msg.seq);
        counters.messages++;
        if (msg.redelivered) counters.redelivered++;
        wake.notify();
      },
    });
    // Only this loop closes it (below): ended by itself, the consumer or its stream is gone.
    const ended: { error: unknown } = { error: null };
    // Found missing by our own checks too: consume ends as when nats.js finds it so.
    const watched = messages;
    void watchConsumer(
      deps.nats,
      o.stream ?? DEFAULT_SIGNALS_STREAM,
      o.consumer ?? DEFAULT_EXECUTION_CONSUMER,
      { signal: watch.signal, clock },
    ).then((gone) => {
      if (gone !== null) watched.stop(gone);
    });
    void messages.closed().then((error) => {
      ended.error = new SignalsConsumerGoneError(
        o.stream ?? DEFAULT_SIGNALS_STREAM,
        o.consumer ?? DEFAULT_EXECUTION_CONSUMER,
        error instanceof Error ? { cause: error } : {},
      );
      wake.notify();
    });
    let failures = 0;
    let stopping = false;
    // After a batch failed for want of the database, the next one waits until then.
    let retryAt = 0;
    // Stream sequences of the messages of a batch that failed for a reason of its own (not the
    // database's): each is handed in alone until it is acknowledged, so one message that fails
    // every time fails only itself.
    const alone = new Set<number>();
    // Stream sequences of messages that failed alone max_signal_attempts times, with the error:
    // handed in once more to be recorded as rejected (processing_failed), not processed.
    const failedFor = new Map<number, string>();
    // How often each message failed alone, not for want of the database: its own failures. (Its
    // delivery count also counts deliveries that failed for the database or in a batch.)
    const ownFailures = new Map<number, number>();
    const maxAttempts = deps.config.execution.max_signal_attempts;
    while (!signal.aborted && !stopping) {
      if (buffer.length === 0) {
        // What was delivered is handed in first; then a restart sets the consumer up again.
        if (ended.error !== null) throw ended.error;
        await wake.wait();
        continue;
      }
      const wait = retryAt - clock.now();
      if (wait > 0) {
        await clock.sleep(wait, signal).catch(() => {});
        continue;
      }
      const hold = held.hold();
      if (hold !== null) {
        // After a NATS outage: the backlog waits for fresh market data (at most warmup_ms).
        await Promise.race([hold, wake.wait()]);
        continue;
      }
      // A message marked alone goes alone; the others in batches of up to batch_max that stop
      // before the next one marked alone.
      let take = 1;
      if (!alone.has(buffer[0]!.seq)) {
        while (take < batchMax && take < buffer.length && !alone.has(buffer[take]!.seq)) take++;
      }
      const batch = buffer.splice(0, take);
      const items: SignalInput[] = [];
      for (const msg of batch) {
        const input = signalInput(msg, names);
        if (input === null) continue;
        const failure = failedFor.get(msg.seq);
        items.push(failure === undefined ? input : { ...input, failure });
      }
      // A slow commit (a database under load) must not make JetStream redeliver the batch.
      const keepAlive = setInterval(() => {
        for (const msg of batch) msg.working();
      }, keepAliveMs);
      const warming = context.warm_until - clock.now();
      if (warming > 0 && items.length > 0) {
        // Within warmup_ms of the start (a backlog queued while the engine was down): the batch
        // waits for its signals' prices — venues connect one after the other.
        await deps.engine.warmUp(warming, { signal, symbols: pricesOfSignals(items) });
        if (signal.aborted) {
          clearInterval(keepAlive);
          // Back in the buffer: negatively acknowledged below, for the next consumer.
          buffer.unshift(...batch);
          break;
        }
      }
      const handed = items.length > 0
        // Held also at its turn to be decided: it may wait behind commits into an outage.
        ? deps.engine.enqueueSignals(items, { gate: held.hold, signal })
        : { decided: Promise.resolve(), outcomes: Promise.resolve([]) };
      const settled: Promise<void> = handed.outcomes.then((outcomes) => {
        rejectReusedKeys(deps.nats, names, items, outcomes, log);
        counters.batches++;
        failures = 0;
        outage.since = null;
        for (const msg of batch) {
          msg.ack();
          unacked.delete(msg.seq);
          alone.delete(msg.seq);
          failedFor.delete(msg.seq);
          ownFailures.delete(msg.seq);
        }
        counters.acked += batch.length;
      }, (error) => {
        counters.failed_batches++;
        const stop = error instanceof ExecutionNotReadyError || signal.aborted;
        const databaseDown = isDatabaseUnavailable(error);
        if (databaseDown && !stop) {
          outage.since ??= clock.now();
          outage.error = errorText(error);
        }
        if (!stop && !databaseDown && batch.length > 1) {
          // Not the database's fault: maybe one message's. Each comes back at once, to go alone.
          for (const msg of batch) {
            alone.add(msg.seq);
            msg.nak();
          }
          log.warn("signal batch failed; its messages are handed in again one by one", {
            messages: batch.length,
            error,
          });
          return;
        }
        const only = batch.length === 1 ? batch[0]! : null;
        const own = only === null || stop || databaseDown
          ? 0
          : (ownFailures.get(only.seq) ?? 0) + 1;
        if (only !== null && own > 0) ownFailures.set(only.seq, own);
        if (only !== null && maxAttempts > 0 && own >= maxAttempts && !failedFor.has(only.seq)) {
          // It failed alone every time: once more, to be recorded as rejected and acknowledged.
          const failure = storableFailure(
            `signal could not be processed in ${own} attempts: ${errorText(error)}`,
          );
          failedFor.set(only.seq, failure);
          ownFailures.delete(only.seq);
          only.nak();
          log.error("a signal failed every attempt; it is recorded as rejected", {
            seq: only.seq,
            error,
          });
          return;
        }
        // The database's failure holds every batch back; a message's own only that message.
        const attempt = databaseDown || stop
          ? failures++
          : Math.max(0, (batch[0]?.info.deliveryCount ?? 1) - 1);
        const delayMs = backoffDelay(Math.min(attempt, 30), {
          initialMs: DEFAULT_BATCH_RETRY_INITIAL_MS,
          maxMs: DEFAULT_BATCH_RETRY_MAX_MS,
          random,
        });
        for (const msg of batch) msg.nak(delayMs);
        if (stop) {
          stopping = true;
          wake.notify();
          return;
        }
        log.error("signal batch failed; its messages come back later", {
          messages: batch.length,
          retry_in_ms: delayMs,
          error,
        });
        if (databaseDown) retryAt = clock.now() + delayMs;
      }).finally(() => {
        clearInterval(keepAlive);
        inFlight.delete(settled);
      });
      inFlight.add(settled);
      // The next batch forms while this one commits; it is handed in once this one is decided.
      // Stopping does not wait for that: a batch held at its gate (after a NATS outage) is refused
      // when the actor stops, or when the finally closes the hold.
      const decided = await Promise.race([handed.decided.then(() => true, () => false), stopped]);
      if (decided === false) await settled;
    }
  } finally {
    watch.abort();
    signal.removeEventListener("abort", onAbort);
    await held.close();
    // The batches handed in are acknowledged (or not) when they are done.
    await Promise.all([...inFlight]);
    await messages?.close().catch(() => {});
    // What was pulled but not handed in goes back at once, to this or the next consumer.
    for (const msg of buffer.splice(0)) msg.nak();
    unacked.clear();
  }
}

/** Longest text of a `processing_failed` reason, in UTF-16 code units. */
const MAX_FAILURE_TEXT = 400;

function errorText(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

/**
 * `text` as a `processing_failed` reason PostgreSQL's jsonb can store: at
 * most {@linkcode MAX_FAILURE_TEXT} long, U+0000 written `\u0000` and
 * unpaired surrogates (a pair the cut split included) replaced — or the
 * message that is the point of it would fail to store on every attempt.
 */
function storableFailure(text: string): string {
  const cut = text.length > MAX_FAILURE_TEXT ? `${text.slice(0, MAX_FAILURE_TEXT - 1)}…` : text;
  return cut.replaceAll("\u0000", "\\u0000").toWellFormed();
}

/**
 * Whether a failed batch failed for want of the database (unreachable, too
 * slow, a serialization conflict, or refusing work for now: read-only, out of
 * disk or memory — `isTemporaryRefusal`): every batch would fail alike for a
 * while, and none of its signals is to blame.
 */
function isDatabaseUnavailable(error: unknown): boolean {
  return error instanceof DbConnectionError || error instanceof DbTimeoutError ||
    error instanceof SerializationError || isTemporaryRefusal(error);
}

/** What {@linkcode holdAfterOutage} returns to the consume loop. */
interface OutageHold {
  /**
   * Resolves when signals may be handed in again, rejects (with an
   * {@linkcode ExecutionNotReadyError}) when the hold was closed before;
   * null while they may.
   */
  hold(): Promise<void> | null;
  /**
   * Stops watching the connection. A hold in progress is not released but
   * closed: what waits for it is refused, and so is what asks for it later.
   */
  close(): Promise<void>;
}

/**
 * Holds signals back after a NATS outage until market data flows again.
 * Prices reach the cache over NATS too: when the connection comes back, the
 * consumer's backlog arrives at once while the cache still holds the prices
 * of before the outage, and every market order of the backlog would be
 * refused as `no_market_price`. From a `disconnect` on, `hold()` returns a
 * promise; after the `reconnect` it resolves once every symbol that had a
 * fresh price when the connection dropped has one again
 * ({@linkcode ExecutionEngine.warmUp}), or after `warmup_ms` (logged
 * either way). A `warmup_ms` of 0 holds nothing. Stopping (`signal`) never
 * releases a hold: its signals are refused, to be decided after the next
 * start's own warm-up, not on the prices of before the outage.
 */
function holdAfterOutage(
  deps: ExecutionActorDeps,
  log: Logger,
  clock: Clock,
  signal: AbortSignal,
  released: () => void,
): OutageHold {
  const warmupMs = deps.options?.warmup_ms ?? DEFAULT_WARMUP_MS;
  if (warmupMs <= 0) return { hold: () => null, close: () => Promise.resolve() };
  let outage: {
    done: Promise<void>;
    release: () => void;
    refuse: (error: Error) => void;
    symbols: string[];
  } | null = null;
  // The hold in progress when closed: refuses for good.
  let closed: Promise<void> | null = null;
  // Bumped by every disconnect and reconnect: a warm-up outdated by a new one ends unheard.
  let generation = 0;
  const onStatus = async (status: Status) => {
    if (status.type === "disconnect") {
      generation++;
      if (outage !== null || closed !== null) return;
      let release!: () => void;
      let refuse!: (error: Error) => void;
      const done = new Promise<void>((resolve, reject) => {
        release = resolve;
        refuse = reject;
      });
      done.catch(() => {}); // observed by those that wait for it
      // Fresh when the connection went silent, which may be noticed only a while later.
      const withinMs = deps.config.execution.max_price_age_ms + NATS_SILENCE_DETECTION_MS;
      outage = { done, release, refuse, symbols: deps.engine.freshSymbols(withinMs) };
      log.warn("NATS disconnected: signals wait for market data once it is back", {
        fresh_symbols: outage.symbols.length,
      });
      return;
    }
    if (status.type !== "reconnect" || outage === null) return;
    const current = outage;
    const mine = ++generation;
    const started = clock.now();
    const fresh = await deps.engine.warmUp(warmupMs, { signal, symbols: current.symbols });
    // Stopping ended the warm-up, not market data: close() refuses what the hold holds.
    if (mine !== generation || outage !== current || signal.aborted) return;
    outage = null;
    current.release();
    released();
    const fields = { waited_ms: clock.now() - started, symbols: current.symbols.length };
    if (fresh) log.info("market data is back after the NATS outage; signals go on", fields);
    else log.warn("market data not all back after the NATS outage; signals go on", fields);
  };
  const statuses = deps.nats.status() as AsyncIterable<Status> & { stop?: () => void };
  const watching = (async () => {
    for await (const status of statuses) {
      onStatus(status).catch((error) => log.warn("NATS status not followed", { error }));
    }
  })().catch((error) => log.warn("NATS status watch ended", { error }));
  return {
    hold: () => closed ?? outage?.done ?? null,
    async close() {
      statuses.stop?.();
      if (outage !== null) {
        outage.refuse(
          new ExecutionNotReadyError("Execution stopped while signals waited for market data"),
        );
        closed = outage.done;
        outage = null;
      }
      await watching;
    },
  };
}

/** Subscribes `control.kill_switch` and answers each request with the switch's state. */
function serveKillSwitch(
  deps: ExecutionActorDeps,
  counters: ExecutionActorCounters,
  log: Logger,
): Subscription {
  const names = { subject_prefix: deps.options?.subject_prefix };
  const answer = async (msg: Msg) => {
    let reply: KillSwitchReply;
    // Read as REST reads its body: UTF-8, and a key given twice refused, not read as its last value.
    const parsed = decodeKillSwitchRequest(msg.data);
    if (!parsed.ok) {
      reply = { ok: false, error: parsed.problems.join("; ") };
    } else {
      try {
        const state = await deps.engine.setKillSwitch({ ...parsed.request, by: "nats" });
        reply = {
          ok: true,
          active: state.active,
          reason: state.reason,
          changed_at: state.changed_at?.toISOString() ?? null,
          changed_by: state.changed_by,
          cancel_requested: state.cancel_requested,
          not_cancelled: state.not_cancelled,
        };
      } catch (error) {
        log.error("kill-switch request failed", { error });
        reply = { ok: false, error: error instanceof Error ? error.message : String(error) };
      }
    }
    counters.kill_switch_requests++;
    if (msg.reply) msg.respond(encodeJson(reply));
  };
  return deps.nats.subscribe(killSwitchSubject(names), {
    callback: (error, msg) => {
      if (error) {
        log.warn("kill-switch subscription error", { error });
        return;
      }
      void answer(msg);
    },
  });
}
