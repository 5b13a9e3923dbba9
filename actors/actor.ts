/**
 * Actors: named units of work that talk to each other only through NATS
 * subjects. Messages received on an actor's subjects are queued in its bounded
 * {@linkcode Mailbox}, decoded (JSON by default) into {@linkcode Envelope}s and handled
 * one at a time. An actor is a {@linkcode ChildSpec}, so a supervisor starts,
 * restarts and stops it; an exception in its handler crashes only that actor.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { actor } from "./actor.ts";
 * import { startRoot } from "./supervisor.ts";
 *
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * const echo = actor<{ text: string }>({
 *   name: "echo",
 *   subjects: [{ subject: "echo.in", queue: "echo" }],
 *   handle: (message, ctx) => ctx.publish("echo.out", message.data),
 * }, { nats });
 * const root = await startRoot({ name: "root" }, [echo]);
 * await root.stop();
 * await nats.close();
 * ```
 *
 * @module
 */

import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import {
  ConflatingMailbox,
  DEFAULT_OVERFLOW,
  Mailbox,
  MailboxClosedError,
  type MailboxPolicy,
} from "./mailbox.ts";
import type { ChildSpec, ChildStats, MailboxStats, RestartType, Running } from "./types.ts";
import { assertPositiveInteger } from "../lib/assert.ts";
import { DEFAULT_SHUTDOWN_MS } from "./supervisor.ts";

/** Default mailbox capacity of an actor. */
export const DEFAULT_MAILBOX_CAPACITY = 1024;
/** Default timeout of {@linkcode ActorContext.request}, in milliseconds. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 5_000;
/**
 * Default longest wait for a subscription's drain, in milliseconds: the
 * server's confirmation takes one round trip on a live connection. A stopping
 * actor waits at most this or a quarter of its shutdown time, whichever is
 * shorter (see {@linkcode drainSubscription}).
 */
export const DEFAULT_DRAIN_TIMEOUT_MS = 1_000;

/** A NATS message as an actor's handler sees it. */
export interface Envelope<M = unknown> {
  /** Subject it was published to. */
  subject: string;
  /** Its JSON payload, decoded but not validated. */
  data: M;
  /** Subject to reply to, for requests. */
  reply: string | null;
  /** Its NATS headers; empty when it has none. */
  headers: Record<string, string[]>;
}

/** A subject to subscribe to, optionally in a queue group (load-balanced). */
export type SubjectSpec = string | { subject: string; queue?: string };

/** Mailbox settings of an actor. */
export interface ActorMailboxOptions {
  /** Most queued messages. @default {DEFAULT_MAILBOX_CAPACITY} */
  capacity?: number;
  /**
   * What happens when it is full, or `"conflate"`: only the newest message
   * per subject waits (then `capacity` counts subjects), for actors that need
   * only the latest values. @default {DEFAULT_OVERFLOW}
   */
  overflow?: MailboxPolicy;
  /**
   * With `overflow: "conflate"` only (ignored otherwise): whether the message
   * waiting for a subject stays when another arrives for it. Returning true
   * keeps `waiting` and drops `incoming` (counted as dropped); returning false
   * (or leaving `keep` out) replaces `waiting` with `incoming`, the newest
   * message. For a cache that must not let a late message replace a newer
   * one. @default {always replace}
   */
  keep?: (waiting: Msg, incoming: Msg) => boolean;
}

/** What an actor's hooks receive. */
export interface ActorContext {
  /** The actor's name. */
  readonly name: string;
  /** Aborts when the actor is asked to stop. */
  readonly signal: AbortSignal;
  /** Logger whose lines carry `actor: name`. */
  readonly log: Logger;
  /** The clock to use for time and delays. */
  readonly clock: Clock;
  /** The raw NATS connection, for what the helpers do not cover (e.g. JetStream). */
  readonly nats: NatsConnection;
  /** Publishes `data` as JSON on `subject`. */
  publish(subject: string, data: unknown): void;
  /** Sends `data` as JSON on `subject` and resolves with the decoded JSON reply. */
  request<R = unknown>(subject: string, data: unknown, timeoutMs?: number): Promise<R>;
}

/**
 * An actor: either it handles messages from `subjects` with `handle`, or it
 * does its work in a `run` loop (then it has no subjects).
 */
export interface ActorDefinition<M = unknown> {
  /** Unique among its siblings. */
  name: string;
  /** Subjects it subscribes to; required with `handle`. @default {[]} */
  subjects?: readonly SubjectSpec[];
  /** Its mailbox. @default {{ capacity: DEFAULT_MAILBOX_CAPACITY, overflow: DEFAULT_OVERFLOW }} */
  mailbox?: ActorMailboxOptions;
  /** Restart type. @default {"permanent"} */
  restart?: RestartType;
  /**
   * Time it has to stop (drain included: a drain waits at most a quarter of
   * it, and at most {@linkcode DEFAULT_DRAIN_TIMEOUT_MS}). @default {5000}
   */
  shutdownMs?: number;
  /** Runs before it subscribes; a rejection is a start failure. */
  start?(ctx: ActorContext): void | Promise<void>;
  /** Runs once after it stopped handling messages, whether it stopped or crashed. */
  stop?(ctx: ActorContext): void | Promise<void>;
  /**
   * Turns a message's payload into `Envelope.data` when the handler takes
   * it; a throw counts the message as malformed and drops it.
   * @default {decodeJson}
   */
  decode?(data: Uint8Array): M;
  /** Handles one message; a rejection crashes the actor. */
  handle?(message: Envelope<M>, ctx: ActorContext): void | Promise<void>;
  /** Its work, for an actor without subjects: resolving is a normal exit, rejecting an abnormal one. */
  run?(ctx: ActorContext): Promise<void>;
}

/** What actors need from the engine. */
export interface ActorDeps {
  /** The NATS connection they subscribe and publish on. */
  nats: NatsConnection;
  /** Parent logger. @default {nullLogger} */
  log?: Logger;
  /** Clock handed to the hooks. @default {systemClock} */
  clock?: Clock;
}

/** What a running actor reports. */
export interface ActorStats extends ChildStats {
  /** Always `"actor"`. */
  kind: "actor";
  /** Its mailbox; absent for `run` actors. */
  mailbox?: MailboxStats;
  /** Messages that failed to decode and were dropped. */
  malformed: number;
  /** Messages handled. */
  processed: number;
}

/**
 * Creates the child spec of an actor. On start it runs `start`, subscribes
 * and flushes (then it is ready). On stop (signal aborted) it drains its
 * subscriptions (see {@linkcode drainSubscription}: while NATS is down it
 * unsubscribes instead of waiting for the server), handles the messages
 * already received, runs `stop` and exits normally. A handler exception
 * unsubscribes, discards the queued messages, runs `stop` and exits
 * abnormally with that exception. Under the `"block"` policy a full mailbox
 * holds messages back in the NATS client; use `"drop_oldest"` for feeds where
 * only the latest values matter.
 */
export function actor<M = unknown>(definition: ActorDefinition<M>, deps: ActorDeps): ChildSpec {
  const { name, subjects = [], handle, run, mailbox = {} } = definition;
  if (!name || name.includes("/")) throw new TypeError(`Invalid actor name: "${name}"`);
  if (handle && run) throw new TypeError(`Actor ${name} has both handle and run`);
  if (handle && subjects.length === 0) throw new TypeError(`Actor ${name} has no subjects`);
  if (run && subjects.length > 0) throw new TypeError(`Actor ${name} has run and subjects`);
  if (!handle && !run) throw new TypeError(`Actor ${name} has neither handle nor run`);
  const capacity = mailbox.capacity ?? DEFAULT_MAILBOX_CAPACITY;
  assertPositiveInteger(capacity, `Actor ${name} mailbox capacity`);
  return {
    name,
    ...(definition.restart ? { restart: definition.restart } : {}),
    ...(definition.shutdownMs !== undefined ? { shutdownMs: definition.shutdownMs } : {}),
    start: (signal) => startActor(definition, deps, signal),
  };
}

function startActor<M>(
  definition: ActorDefinition<M>,
  deps: ActorDeps,
  signal: AbortSignal,
): Running {
  const { nats } = deps;
  // Known before any stop: whether a drain can be answered.
  watchConnection(nats);
  const log = (deps.log ?? nullLogger).child({ actor: definition.name });
  const clock = deps.clock ?? systemClock;
  const drainTimeoutMs = Math.min(
    DEFAULT_DRAIN_TIMEOUT_MS,
    (definition.shutdownMs ?? DEFAULT_SHUTDOWN_MS) / 4,
  );
  const ctx: ActorContext = {
    name: definition.name,
    signal,
    log,
    clock,
    nats,
    publish: (subject, data) => nats.publish(subject, encodeJson(data)),
    request: async <R>(subject: string, data: unknown, timeoutMs = DEFAULT_REQUEST_TIMEOUT_MS) => {
      const reply = await nats.request(subject, encodeJson(data), { timeout: timeoutMs });
      return decodeJson<R>(reply.data);
    },
  };
  const counters = { malformed: 0, processed: 0 };
  const decode = definition.decode ?? ((data: Uint8Array) => decodeJson<M>(data));
  const { handle } = definition;
  // Messages wait raw and are decoded when taken: a message a drop_oldest or
  // conflating mailbox discards is never decoded.
  const capacity = definition.mailbox?.capacity ?? DEFAULT_MAILBOX_CAPACITY;
  const policy = definition.mailbox?.overflow ?? DEFAULT_OVERFLOW;
  const conflating = policy === "conflate";
  const mailbox: Mailbox<Msg> | ConflatingMailbox<Msg> | null = !handle
    ? null
    : policy === "conflate"
    ? new ConflatingMailbox<Msg>(
      capacity,
      (msg) => msg.subject,
      definition.mailbox?.keep ? { keep: definition.mailbox.keep } : {},
    )
    : new Mailbox<Msg>(capacity, { overflow: policy });
  const subscriptions: Subscription[] = [];

  const stopAfterCrash = async () => {
    try {
      await definition.stop?.(ctx);
    } catch (error) {
      log.error("stop hook failed", { error });
    }
  };

  const ready = (async () => {
    await definition.start?.(ctx);
    try {
      for (const spec of definition.subjects ?? []) {
        const { subject, queue } = typeof spec === "string" ? { subject: spec } : spec;
        // A conflating mailbox is filled from the client's callback, so that a
        // burst read from the socket is conflated before the handler runs.
        subscriptions.push(nats.subscribe(subject, {
          ...(queue ? { queue } : {}),
          ...(conflating && mailbox
            ? { callback: (_error: unknown, msg: Msg) => void mailbox.put(msg).catch(() => {}) }
            : {}),
        }));
      }
      await nats.flush();
    } catch (error) {
      unsubscribeAll(subscriptions);
      await stopAfterCrash();
      throw error;
    }
    log.debug("started");
  })();

  const pump = async (subscription: Subscription, box: Mailbox<Msg> | ConflatingMailbox<Msg>) => {
    if (!conflating) {
      for await (const msg of subscription) {
        try {
          await box.put(msg);
        } catch (error) {
          if (error instanceof MailboxClosedError) return;
          throw error;
        }
      }
    }
    const closed = await subscription.closed;
    if (closed instanceof Error) throw closed;
    if (!signal.aborted && !box.closed) {
      throw new Error(`Subscription to ${subscription.getSubject()} closed unexpectedly`);
    }
  };

  const serve = async (
    box: Mailbox<Msg> | ConflatingMailbox<Msg>,
    handler: NonNullable<typeof handle>,
  ) => {
    let pumpError: unknown;
    const pumps = subscriptions.map((subscription) =>
      pump(subscription, box).catch((error) => {
        pumpError ??= error;
        box.close();
      })
    );
    const drain = async () => {
      await Promise.all(
        subscriptions.map((subscription) =>
          drainSubscription(nats, subscription, { timeoutMs: drainTimeoutMs, clock, log })
        ),
      );
      await Promise.all(pumps);
    };
    const onAbort = () => void drain().finally(() => box.close());
    signal.addEventListener("abort", onAbort, { once: true });
    if (signal.aborted) onAbort();
    try {
      for await (const msg of box) {
        let envelope: Envelope<M>;
        try {
          envelope = toEnvelope<M>(msg, decode);
        } catch (error) {
          counters.malformed++;
          log.warn("malformed message dropped", { subject: msg.subject, error });
          continue;
        }
        await handler(envelope, ctx);
        counters.processed++;
      }
      if (pumpError !== undefined) throw pumpError;
    } catch (error) {
      signal.removeEventListener("abort", onAbort);
      unsubscribeAll(subscriptions);
      box.close();
      await Promise.all(pumps);
      await stopAfterCrash();
      throw error;
    }
    signal.removeEventListener("abort", onAbort);
    await definition.stop?.(ctx);
  };

  const work = async (body: NonNullable<ActorDefinition<M>["run"]>) => {
    try {
      await body(ctx);
    } catch (error) {
      await stopAfterCrash();
      throw error;
    }
    await definition.stop?.(ctx);
  };

  const done = ready.then(async () => {
    if (mailbox && handle) await serve(mailbox, handle);
    else if (definition.run) await work(definition.run);
    log.debug("stopped");
  });
  ready.catch(() => {});
  done.catch(() => {});

  return {
    ready,
    done,
    stats: (): ActorStats => ({
      kind: "actor",
      ...(mailbox ? { mailbox: mailbox.stats() } : {}),
      ...counters,
    }),
  };
}

function toEnvelope<M>(msg: Msg, decode: (data: Uint8Array) => M): Envelope<M> {
  const headers: Record<string, string[]> = {};
  if (msg.headers) { for (const [key, values] of msg.headers) headers[key] = values; }
  return { subject: msg.subject, data: decode(msg.data), reply: msg.reply || null, headers };
}

function unsubscribeAll(subscriptions: readonly Subscription[]): void {
  for (const subscription of subscriptions) {
    try {
      if (!subscription.isClosed()) subscription.unsubscribe();
    } catch {
      // The connection is closed: nothing left to unsubscribe from.
    }
  }
}

/** Options for {@linkcode drainSubscription}. */
export interface DrainSubscriptionOptions {
  /** Longest wait for the server to confirm the drain. @default {DEFAULT_DRAIN_TIMEOUT_MS} */
  timeoutMs?: number;
  /** Clock of that wait. @default {systemClock} */
  clock?: Clock;
  /** Where a drain that failed or timed out is logged. @default {nullLogger} */
  log?: Logger;
}

/**
 * Ends `subscription` of `nats`, keeping what it has received. While the
 * connection is up it drains (the server stops sending, and the messages on
 * their way are still delivered), waiting at most `timeoutMs` for the server
 * to confirm; while the connection is down (reconnecting), closed, or the
 * drain takes longer or fails, it unsubscribes at once instead — a drain
 * cannot finish until the server is back. Either way, messages the client has
 * already received are still delivered to the subscription's iterator or
 * callback. Resolves once the subscription is closed; never rejects.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { drainSubscription } from "./actor.ts";
 *
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * const subscription = nats.subscribe("jobs");
 * await drainSubscription(nats, subscription, { timeoutMs: 500 });
 * await nats.close();
 * ```
 */
export async function drainSubscription(
  nats: NatsConnection,
  subscription: Subscription,
  options: DrainSubscriptionOptions = {},
): Promise<void> {
  const {
    timeoutMs = DEFAULT_DRAIN_TIMEOUT_MS,
    clock = systemClock,
    log = nullLogger,
  } = options;
  if (subscription.isClosed()) return;
  if (!isConnected(nats)) {
    log.warn("NATS is down: unsubscribed without draining", {
      subject: subscription.getSubject(),
    });
    unsubscribeAll([subscription]);
    return;
  }
  const timer = new AbortController();
  try {
    const drained = await Promise.race([
      subscription.drain().then(() => true),
      clock.sleep(timeoutMs, timer.signal).then(() => false, () => false),
    ]);
    if (!drained) {
      log.warn("subscription drain timed out: unsubscribed", {
        subject: subscription.getSubject(),
        timeoutMs,
      });
    }
  } catch (error) {
    log.warn("subscription drain failed", { subject: subscription.getSubject(), error });
  } finally {
    timer.abort();
    unsubscribeAll([subscription]);
  }
}

/** Whether each watched connection is connected, as its status events tell. */
const connectionStates = new WeakMap<NatsConnection, { connected: boolean }>();

/**
 * Follows whether `nats` is connected from its status events, once per
 * connection (taken as connected until it reports a disconnect).
 */
function watchConnection(nats: NatsConnection): { connected: boolean } {
  let state = connectionStates.get(nats);
  if (state) return state;
  const watched = { connected: !nats.isClosed() };
  connectionStates.set(nats, watched);
  state = watched;
  // A stand-in connection (tests) may have no status stream: then it counts as connected.
  if (typeof nats.status !== "function") return state;
  (async () => {
    for await (const status of nats.status()) {
      if (status.type === "disconnect" || status.type === "close") watched.connected = false;
      else if (status.type === "reconnect") watched.connected = true;
    }
    watched.connected = false;
  })().catch(() => {});
  return state;
}

/**
 * Whether `nats` is connected: not closed, and, if it is followed (every
 * connection an actor runs on is), its last status event was not a
 * disconnect. A connection no actor runs on is followed from this call on.
 *
 * @example
 * ```ts
 * import { connect } from "@nats-io/transport-node";
 * import { isConnected } from "./actor.ts";
 *
 * const nats = await connect({ servers: "127.0.0.1:4222" });
 * isConnected(nats); // true
 * await nats.close();
 * isConnected(nats); // false
 * ```
 */
export function isConnected(nats: NatsConnection): boolean {
  return !nats.isClosed() && watchConnection(nats).connected;
}
