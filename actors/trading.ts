/**
 * The trading subtree: brokers, the position tracker and the execution
 * engine, under one `rest_for_one` supervisor named `trading`.
 *
 * Children, started in this order and stopped in reverse:
 *
 * 1. `brokers` — creates the broker adapters (`paper` always, `alpaca` when
 *    `brokers.alpaca.enabled`), puts them in the map the engine routes by,
 *    and starts them, each on its own (Alpaca's `trade_updates` stream
 *    connects in the background; a broker that cannot start — Alpaca
 *    unreachable, keys refused — is tried again with backoff while the others
 *    serve, and health shows its stream problem). Each time Alpaca's stream
 *    listens — its first time after a start too — the engine reconciles its
 *    open Alpaca orders: what filled before (also after the engine's startup
 *    reconciliation, while the stream was still connecting) is not replayed.
 *    On stop it disposes them.
 * 2. `position_tracker` — fills from `FILLS` into positions and the portfolio
 *    (`actors/position_tracker.ts`); keeps the shared {@linkcode PortfolioState}.
 *    The engine stores new fills with their positions when the tracker is
 *    idle (a reservation), and otherwise hands it each fill in process as it
 *    publishes it (`FillHandoff`), so a position follows its fill without
 *    waiting for the stream; the stream's message then finds the fill applied.
 * 3. `execution` — the {@linkcode ExecutionEngine} fed from `SIGNALS`
 *    (`actors/execution.ts`): reconciles open orders with the brokers at
 *    start, then consumes signals. Started only with `execution.enabled`.
 *
 * `rest_for_one`: when the brokers are restarted, the tracker and the engine
 * are too (the engine subscribes to the new adapters' events); when the
 * engine crashes, only it is.
 *
 * The returned spec carries the engine and the state for the HTTP API: the
 * engine takes work once the `execution` child has started
 * (`engine.running`); before that its methods reject with
 * `ExecutionNotReadyError`.
 *
 * @example
 * ```ts
 * const trading = tradingSupervisor({ config, nats, sql, cache, log });
 * // engine.ts: after the market subtree
 * const routes = tradingRoutes({ engine: trading.engine, state: trading.state, sql });
 * ```
 *
 * @module
 */

import { createInbox, headers, type Msg, type NatsConnection } from "@nats-io/nats-core";
import type { Sql } from "postgres";
import { encodeJson } from "../adapters/codec.ts";
import { alpacaBroker } from "../brokers/alpaca.ts";
import type { Broker } from "../brokers/broker.ts";
import { paperBroker } from "../brokers/paper.ts";
import type { Config } from "../config/mod.ts";
import { backoffDelay, type BackoffOptions } from "../lib/backoff.ts";
import type { Clock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine, type ExecutionEngineOptions } from "../trading/execution.ts";
import { fillsStream, fillSubject } from "../trading/fills_stream.ts";
import { type RiskConfig, riskLimitsFromConfig } from "../trading/risk.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { actor } from "./actor.ts";
import { executionActor, type ExecutionActorOptions } from "./execution.ts";
import {
  FillHandoff,
  positionTrackerActor,
  type PositionTrackerOptions,
} from "./position_tracker.ts";
import { restartLimits, supervisor } from "./supervisor.ts";
import type { ChildSpec } from "./types.ts";

/** Name of the trading supervisor in the tree. */
export const TRADING_SUPERVISOR_NAME = "trading";
/** Name of the child that owns the broker adapters. */
export const BROKERS_CHILD_NAME = "brokers";

/** Names that tests change to run next to a live engine on the same NATS server. */
export interface TradingNames {
  /** Prepended to every subject of the subtree (signals, orders, fills, positions, market data the paper broker follows). @default {""} */
  subject_prefix?: string | undefined;
  /** The signals stream. @default {"SIGNALS"} */
  signals_stream?: string | undefined;
  /** The execution engine's durable consumer. @default {"execution"} */
  execution_consumer?: string | undefined;
  /** The fills stream. @default {"FILLS"} */
  fills_stream?: string | undefined;
  /** The position tracker's durable consumer. @default {"position_tracker"} */
  tracker_consumer?: string | undefined;
}

/** What {@linkcode tradingSupervisor} needs. */
export interface TradingDeps {
  /** The configuration (`risk`, `execution`, `brokers`, `portfolio`, `supervisor` are read). */
  config: Config;
  /** The engine's NATS connection. */
  nats: NatsConnection;
  /** The PostgreSQL pool (from `createPostgres`). */
  sql: Sql;
  /** Latest market data: paper fills, marks, risk prices. */
  cache: LatestCache;
  /** The engine's logger. */
  log: Logger;
  /** The portfolio view shared by the tracker, the engine and the API. @default {a new one with portfolio.starting_cash} */
  state?: PortfolioState | undefined;
  /** @default {systemClock} */
  clock?: Clock | undefined;
  /**
   * Broker factories by name, replacing the configured ones (tests: a broker
   * that fails on demand). Called on every start of the `brokers` child.
   * @default {paper, plus alpaca when enabled}
   */
  brokers?: ReadonlyMap<string, () => Broker> | undefined;
  /** Stream, consumer and subject names. */
  names?: TradingNames | undefined;
  /** Engine settings beyond the configuration. */
  engine?: Omit<ExecutionEngineOptions, "subject_prefix"> | undefined;
  /** Execution actor tuning (e.g. a short `ack_wait_ms` in tests). */
  execution?:
    | Pick<ExecutionActorOptions, "ack_wait_ms" | "max_ack_pending" | "warmup_ms">
    | undefined;
  /** Position tracker tuning. */
  tracker?: Omit<PositionTrackerOptions, "portfolio" | "max_price_age_ms"> | undefined;
}

/** The trading supervisor's spec, with what the HTTP API uses. */
export interface TradingChildSpec extends ChildSpec {
  /** The execution engine (signals, cancels, the kill switch). */
  readonly engine: ExecutionEngine;
  /** The shared portfolio view (positions, cash, P&L). */
  readonly state: PortfolioState;
  /** The broker adapters by name, filled in while the `brokers` child runs. */
  readonly brokers: ReadonlyMap<string, Broker>;
}

/**
 * The broker factories of a configuration: `paper` always (commission,
 * slippage and the US equity session from `brokers.paper`), `alpaca` when
 * `brokers.alpaca.enabled`.
 */
export function configuredBrokers(
  deps: Pick<TradingDeps, "config" | "nats" | "cache" | "log" | "clock" | "names">,
): Map<string, () => Broker> {
  const { config, log } = deps;
  const factories = new Map<string, () => Broker>();
  factories.set("paper", () =>
    paperBroker({
      cache: deps.cache,
      nats: deps.nats,
      options: config.brokers.paper,
      max_price_age_ms: config.execution.max_price_age_ms,
      log: log.child({ broker: "paper" }),
      clock: deps.clock,
      subject_prefix: deps.names?.subject_prefix,
    }));
  const alpaca = config.brokers.alpaca;
  if (alpaca.enabled) {
    factories.set("alpaca", () =>
      alpacaBroker({
        base_url: alpaca.base_url,
        key_id: alpaca.key_id,
        secret_key: alpaca.secret_key,
        request_timeout_ms: alpaca.request_timeout_ms,
      }, {
        log: log.child({ broker: "alpaca" }),
        ...(deps.clock ? { clock: deps.clock } : {}),
      }));
  }
  return factories;
}

/**
 * Creates the trading subtree (see the module doc). The engine and the state
 * exist from here on; the lead passes `engine` and `state` to the trading API.
 *
 * @example
 * ```ts
 * const trading = tradingSupervisor({ config, nats, sql, cache, log });
 * await trading.engine.processSignals([{ body, source: "rest" }]); // once `execution` runs
 * ```
 */
export function tradingSupervisor(deps: TradingDeps): TradingChildSpec {
  const { config, nats, sql, cache, log } = deps;
  const names = deps.names ?? {};
  const prefix = names.subject_prefix ?? "";
  const state = deps.state ?? new PortfolioState({
    starting_cash: config.portfolio.starting_cash,
    clock: deps.clock,
  });
  const factories = deps.brokers ?? configuredBrokers(deps);
  const brokers = new Map<string, Broker>();
  const fillNames = { stream: names.fills_stream, subject_prefix: prefix };
  const publisher = new JetStreamPublisher(nats);
  // The tracker of this process applies fills as the engine stores them, or lends the engine its
  // positions to store with them; FILLS stays the durable path.
  const handoff = new FillHandoff();
  const engine = new ExecutionEngine({
    sql,
    brokers,
    cache,
    state,
    config: { risk: config.risk, execution: config.execution },
    publish: (subject, data) => nats.publish(subject, encodeJson(data)),
    publishFill: (fill) => {
      handoff.offer(fill);
      return publisher.publish(
        fillSubject(fill.symbol, fillNames),
        encodeJson(fill),
        `fill-${fill.id}`,
      );
    },
    positions: handoff,
    clock: deps.clock,
    log: log.child({ component: "execution" }),
    options: { ...deps.engine, subject_prefix: prefix },
  });
  const children: ChildSpec[] = [
    brokersChild(factories, brokers, nats, log, deps.clock),
    positionTrackerActor({
      nats,
      sql,
      cache,
      state,
      log,
      clock: deps.clock,
      options: {
        ...deps.tracker,
        portfolio: config.portfolio,
        max_price_age_ms: config.execution.max_price_age_ms,
        limits: riskLimitsFromConfig(config.risk as RiskConfig),
      },
      stream: names.fills_stream,
      consumer: names.tracker_consumer,
      subject_prefix: prefix,
      handoff,
    }),
  ];
  if (config.execution.enabled) {
    children.push(executionActor({
      nats,
      engine,
      config,
      log,
      clock: deps.clock,
      options: {
        ...deps.execution,
        stream: names.signals_stream,
        consumer: names.execution_consumer,
        subject_prefix: prefix,
        streams: [fillsStream(fillNames)],
      },
    }));
  } else {
    log.info("execution is disabled: signals are not consumed");
  }
  const spec = supervisor({
    name: TRADING_SUPERVISOR_NAME,
    strategy: "rest_for_one",
    ...restartLimits(config.supervisor),
    log: log.child({ component: "supervisor" }),
  }, children);
  return Object.assign(spec, { engine, state, brokers: brokers as ReadonlyMap<string, Broker> });
}

/** The child owning the broker adapters: fresh ones on every start, disposed on stop. */
function brokersChild(
  factories: ReadonlyMap<string, () => Broker>,
  brokers: Map<string, Broker>,
  nats: NatsConnection,
  log: Logger,
  clock: Clock | undefined,
): ChildSpec {
  const dispose = async (ctxLog: Logger) => {
    const current = [...brokers.values()];
    brokers.clear();
    await Promise.all(current.map(async (broker) => {
      try {
        await broker[Symbol.asyncDispose]();
      } catch (error) {
        ctxLog.warn("broker dispose failed", { broker: broker.name, error });
      }
    }));
  };
  return actor({
    name: BROKERS_CHILD_NAME,
    shutdownMs: 10_000,
    start(ctx) {
      brokers.clear();
      for (const [name, create] of factories) brokers.set(name, create());
      ctx.log.info("brokers created", { brokers: [...brokers.keys()] });
    },
    async run(ctx) {
      // Adapters connect in the background (Alpaca's stream may take a while), each on its
      // own: one that cannot start is tried again with backoff while the others serve — a
      // crash here would take every broker away (paper too) and restart what follows.
      await Promise.all(
        [...brokers.values()].map((broker) => startBroker(broker, ctx.log, ctx.clock, ctx.signal)),
      );
      if (!ctx.signal.aborted) {
        await new Promise<void>((resolve) =>
          ctx.signal.addEventListener("abort", () => resolve(), { once: true })
        );
      }
    },
    stop: (ctx) => dispose(ctx.log),
  }, { nats, log, ...(clock ? { clock } : {}) });
}

/** Backoff between attempts to start a broker that could not start (Alpaca unreachable, keys refused). */
export const BROKER_START_RETRY: Readonly<BackoffOptions> = {
  initialMs: 1_000,
  maxMs: 60_000,
  jitter: 0.2,
};

/**
 * Starts `broker`, trying again with {@linkcode BROKER_START_RETRY} backoff
 * until it starts or `signal` aborts; each failure is logged (health shows
 * the broker's stream problem meanwhile).
 */
async function startBroker(
  broker: Broker,
  log: Logger,
  clock: Clock,
  signal: AbortSignal,
): Promise<void> {
  for (let attempt = 0; !signal.aborted; attempt++) {
    try {
      await broker.start(signal);
      log.info("broker started", { broker: broker.name, attempts: attempt + 1 });
      return;
    } catch (error) {
      if (signal.aborted) return;
      const delayMs = backoffDelay(Math.min(attempt, 30), BROKER_START_RETRY);
      log.warn("broker could not start; trying again", {
        broker: broker.name,
        attempt: attempt + 1,
        retry_in_ms: delayMs,
        error,
      });
      await clock.sleep(delayMs, signal).catch(() => {});
    }
  }
}

/** How long {@linkcode JetStreamPublisher} waits for a stream's ack, in ms. */
export const DEFAULT_PUBLISH_ACK_TIMEOUT_MS = 5_000;

/** JetStream refused or did not acknowledge a publish. */
export class PublishAckError extends Error {
  /** Creates the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PublishAckError";
  }
}

/**
 * Publishes to JetStream streams and waits for their acks, like
 * `jetstream(nc).publish(subject, data, { msgID })` but lighter per message —
 * one inbox subscription for every ack and one sweep timer for timeouts,
 * instead of a request (a timer and error objects) per message — which
 * matters at thousands of fills per second. A publish resolves once the stream
 * stored the message (or found it a duplicate of `msgId` within its window),
 * and rejects with {@linkcode PublishAckError} when no stream takes the subject,
 * the stream refuses it, or no ack comes within `timeoutMs`.
 *
 * @example
 * ```ts
 * const publisher = new JetStreamPublisher(nc);
 * await publisher.publish("fills.BTC-USDT", encodeJson(fill), `fill-${fill.id}`);
 * ```
 */
export class JetStreamPublisher {
  readonly #nc: NatsConnection;
  readonly #timeoutMs: number;
  readonly #inbox: string;
  readonly #pending = new Map<
    number,
    { resolve: () => void; reject: (error: Error) => void; at: number }
  >();
  #subscribed = false;
  #next = 0;
  #sweep: ReturnType<typeof setInterval> | null = null;

  /** Creates the publisher; it subscribes its inbox on first use. */
  constructor(nc: NatsConnection, timeoutMs: number = DEFAULT_PUBLISH_ACK_TIMEOUT_MS) {
    this.#nc = nc;
    this.#timeoutMs = timeoutMs;
    this.#inbox = createInbox();
  }

  /** Publishes `data` on `subject` with `Nats-Msg-Id: msgId`; resolves once a stream acknowledged it. */
  publish(subject: string, data: Uint8Array, msgId: string): Promise<void> {
    if (!this.#subscribed) this.#subscribe();
    const token = this.#next++;
    const h = headers();
    h.set("Nats-Msg-Id", msgId);
    return new Promise<void>((resolve, reject) => {
      this.#pending.set(token, { resolve, reject, at: Date.now() });
      this.#sweep ??= setInterval(() => this.#expire(), Math.max(100, this.#timeoutMs / 5));
      try {
        this.#nc.publish(subject, data, { reply: `${this.#inbox}.${token}`, headers: h });
      } catch (error) {
        this.#settle(token, new PublishAckError(`Publish to ${subject} failed`, { cause: error }));
      }
    });
  }

  #subscribe(): void {
    this.#subscribed = true;
    this.#nc.subscribe(`${this.#inbox}.*`, {
      callback: (error, msg) => {
        if (error) return;
        const token = Number(msg.subject.slice(this.#inbox.length + 1));
        this.#settle(token, ackError(msg));
      },
    });
  }

  #settle(token: number, error: Error | null): void {
    const waiter = this.#pending.get(token);
    if (waiter === undefined) return;
    this.#pending.delete(token);
    if (error === null) waiter.resolve();
    else waiter.reject(error);
    if (this.#pending.size === 0 && this.#sweep !== null) {
      clearInterval(this.#sweep);
      this.#sweep = null;
    }
  }

  #expire(): void {
    const oldest = Date.now() - this.#timeoutMs;
    for (const [token, waiter] of this.#pending) {
      if (waiter.at > oldest) break; // insertion order is age order
      this.#settle(token, new PublishAckError(`No JetStream ack within ${this.#timeoutMs} ms`));
    }
    if (this.#nc.isClosed()) {
      for (const token of [...this.#pending.keys()]) {
        this.#settle(token, new PublishAckError("The NATS connection is closed"));
      }
    }
  }
}

const decoder = new TextDecoder();

/** Null for a JetStream ack, else why the publish was not stored. */
function ackError(msg: Msg): Error | null {
  if (msg.headers?.hasError) {
    return new PublishAckError(
      msg.headers.code === 503
        ? "No stream takes this subject (no responders)"
        : `JetStream answered ${msg.headers.code} ${msg.headers.description}`,
    );
  }
  try {
    const ack = JSON.parse(decoder.decode(msg.data)) as {
      error?: { code?: number; description?: string };
      stream?: string;
    };
    if (ack.error) {
      return new PublishAckError(
        `JetStream refused the message: ${ack.error.description ?? ack.error.code}`,
      );
    }
    return typeof ack.stream === "string" ? null : new PublishAckError("Unexpected JetStream ack");
  } catch (error) {
    return new PublishAckError("Unreadable JetStream ack", { cause: error });
  }
}
