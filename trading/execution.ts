/**
 * The execution engine: signals in, risk-checked orders out to brokers, broker
 * events back into PostgreSQL — exactly once. It does no NATS consuming of its
 * own (`actors/execution.ts` feeds it from JetStream, the REST API calls it
 * directly), so it is tested with a database and brokers only.
 *
 * How a batch of signals goes ({@linkcode ExecutionEngine.processSignals}):
 *
 * 1. Batches are decided one at a time, in the order they come (NATS batches
 *    and REST calls never interleave), and the next batch is decided while
 *    the previous one commits — at most `signal_batches_in_flight` commit at
 *    once ({@linkcode ExecutionEngine.enqueueSignals}); a kill-switch change
 *    waits for the batches committing.
 * 2. Each body is parsed (`parseSignal`: every reason of an invalid one) and
 *    keyed by `(strategy, client_signal_id)` — the body's `id`, else the
 *    caller's `key` (`js-<stream sequence>` for NATS), else a fresh UUID.
 * 3. Valid signals are risk-checked (`checkRisk`) against the position,
 *    gross exposure and realized P&L today of the {@linkcode PortfolioState}
 *    (marked with its `markPrice`), the open orders the engine tracks (it
 *    mirrors them into the state), the last market price from the
 *    {@linkcode LatestCache} (the newest fresh trade or bid/ask mid) and the
 *    kill switch. Accepted orders of the batch — and of the batches still
 *    committing — count as open for the signals after them, so signals cannot
 *    jointly exceed a limit.
 * 4. ONE transaction records every signal with its outcome and creates the
 *    `pending` orders (`insertSignalsAndOrders`, a single statement — run
 *    without an explicit transaction unless symbols must be created or stored
 *    keys checked first — then the batches committing are waited for and the
 *    batch is decided inside its transaction); a signal stored before comes back with its stored
 *    outcome and creates nothing (an open order of it the engine does not
 *    track — a commit whose answer was lost — is taken over and submitted).
 *    A stored signal must not take risk room from the new ones: a batch
 *    holding a redelivery reads the stored keys before deciding, and one
 *    where a signal was refused for a rule counting open orders after an
 *    order that may be a duplicate (`#roomTaken`) is decided again with them,
 *    after the batches committing — the usual batch reads nothing more.
 *    Only then does the call resolve — the caller acknowledges JetStream
 *    messages after that. When the statement (or the commit) loses its
 *    answer — the connection dropped, it may have committed — the batch's
 *    keys are read back once the database answers: all stored, the call
 *    resolves with what was stored and its new orders are submitted; else it
 *    rejects. The caller waits at most `unknown_outcome_wait_ms`; the reading
 *    goes on after that and submits what it finds stored (cancels it, when a
 *    kill switch's `cancel_open` ran meanwhile: it could not see it).
 * 5. New orders are submitted to their brokers with their `client_order_id`;
 *    a broker that cannot be reached is retried with backoff under the same id
 *    while the order stays `pending`; a refusal makes the order `rejected`.
 *    A cancel asked for while a submit retries cancels the order here only
 *    when no attempt can have reached the broker, or the broker says it does
 *    not have the order (`getOrder`); else it is cancelled at the broker and
 *    the broker's events tell what became of it. A cancel the broker could not
 *    answer then is asked again with backoff; one it refused is alerted. (A
 *    fill for an order held as cancelled or expired is an illegal transition
 *    — terminal states take no event — refused with an alert; the engine so
 *    never cancels here an order a broker may have.) A day order is never
 *    sent after its session: once it is over, the retries stop and the
 *    order closes the same way — asked for at the broker first when an
 *    attempt may have reached it, caught up from its answer (and cancelled
 *    there if still open), else a `pending` one cancelled here and the
 *    remainder of a partly filled one expired.
 *
 * Broker events and submit results go through the writer queue — one lane
 * per order (by client order id), `event_lanes` transactions at once —
 * where whatever arrived while the previous transaction ran is applied in
 * the next one: orders moved along the state machine (`order_state.ts`) and
 * stored with their expected status and filled quantity, fills inserted
 * idempotently. Usually every fill is new and every order as tracked: then
 * ONE statement stores them all, all or nothing (`insertFillsWithOrders`) —
 * with what the fills do to positions and cash when the position tracker of
 * the process lends them (`deps.positions`, {@linkcode PositionsPartner}),
 * so that a fill and its position take one commit. When it finds a
 * position changed it writes nothing and runs again without the positions
 * (the tracker then applies the fills itself); when it finds a fill stored
 * before or an order moved it writes nothing, and a transaction does the
 * same work step by step (`insertFills`, then `updateOrderStatuses`),
 * skipping the old fills and reloading the moved orders — held as stored
 * from then on (a commit whose answer was lost may have moved them: one
 * closed is untracked) — and sending on to the position tracker the old
 * fills not applied to positions yet. After the commit
 * every transition is published on `orders.<status>.<symbol>` and every NEW
 * fill on the FILLS stream. An event that would be an illegal transition is
 * logged and raises an alert row; it never crashes the engine.
 *
 * Crash recovery ({@linkcode ExecutionEngine.reconcile}): every open order in
 * PostgreSQL is looked up at its broker by client order id — unknown ones are
 * submitted (again), except a day order whose session has ended (closed:
 * cancelled when `pending`, else expired), an ioc/fok order stored past `pending` (it had its one chance at
 * the broker: closed as cancelled) and any order while the kill switch is on
 * (closed as cancelled); known ones brought up to date (missed fills inserted
 * idempotently, dated when the broker filled them, final statuses applied) — and fills not yet applied to
 * positions (`realized_pnl IS NULL`) are published again (FILLS deduplicates
 * by `fill-<id>` and the position tracker applies each fill once).
 *
 * @example
 * ```ts
 * const engine = new ExecutionEngine({ sql, brokers, cache, state, config, publish, publishFill });
 * await engine.start();
 * await engine.reconcile();
 * const [outcome] = await engine.processSignals([{ body, source: "rest" }]);
 * if (outcome.status === "rejected") respond(422, outcome.reasons);
 * await engine.stop();
 * ```
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { Sql, TransactionSql } from "postgres";
import {
  type Broker,
  type BrokerEvent,
  type BrokerOrderRequest,
  type BrokerOrderState,
  BrokerRejectedError,
  DEFAULT_FILL_COST_BOUND,
} from "../brokers/broker.ts";
import type { Config } from "../config/mod.ts";
import { dayOrderExpiry, defaultAssetClass } from "../brokers/paper.ts";
import {
  ConflictError,
  DbConnectionError,
  DbTimeoutError,
  type Fill,
  filledNotionals,
  type FillsPositions,
  type FillsWithOrders,
  findOrderByClientOrderId,
  findSignalsByKeys,
  getKillSwitch,
  getOrder,
  getSymbol,
  insertFills,
  insertFillsWithOrders,
  insertSignalsAndOrders,
  type KillSwitch,
  listOpenOrders,
  listSymbols,
  mayHaveCommitted,
  type NewFill,
  NotFoundError,
  type Order,
  type OrderStatusUpdate,
  plainSignalKeys,
  raiseAlert,
  SerializationError,
  setKillSwitch as storeKillSwitch,
  type Signal as SignalRow,
  type SignalBatchItem,
  type SignalInsertResult,
  signalKeyOf,
  type SignalWithOrder,
  storedSignalKeys,
  unitOfWork,
  updateOrderStatuses,
  upsertSymbols,
} from "../db/mod.ts";
import { backoffDelay } from "../lib/backoff.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { type Exchange, EXCHANGES } from "../market/events.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { type FillMessage, fillMessage } from "./fills_stream.ts";
import {
  DEFAULT_RISK_MARK_MAX_AGE_MS,
  markPrice,
  type PortfolioState,
  unappliedFillOf,
} from "./portfolio_state.ts";
import type { UsEquityMarketClock } from "./market_hours.ts";
import {
  type Decimal,
  fromDb,
  parseDecimal,
  plainNumeric,
  safeParseDecimal,
  toDb,
  toJson,
  ZERO,
} from "./money.ts";
import {
  IllegalTransitionError,
  isOpen,
  type OrderEvent,
  type OrderState,
  OverfillError,
  transition,
} from "./order_state.ts";
import {
  cashPrice,
  checkRisk,
  type FillCostBound,
  fillsAtTouch,
  limitsFor,
  openExposureQty,
  referencePrice,
  type RiskConfig,
  type RiskContext,
  type RiskLimits,
  riskLimitsFromConfig,
} from "./risk.ts";
import {
  DEFAULT_SIGNAL_STRATEGY,
  parseSignal,
  type Side,
  type Signal,
  SIGNAL_ID_PATTERN,
  storableText,
  STRATEGY_PATTERN,
} from "./signal.ts";
import {
  type KillSwitchRequest,
  orderSubject,
  type RejectReason,
  type SignalRejectEvent,
  signalsRejectedSubject,
} from "./signals_stream.ts";
import { assertPositiveInteger } from "../lib/assert.ts";
import { InsertionOrderedMap, InsertionOrderedSet } from "../lib/insertion_map.ts";
import { takeKeyedBatch } from "../lib/keyed_batch.ts";

/** Who the engine writes rows as (`created_by` / `updated_by`). */
export const DEFAULT_EXECUTION_ACTOR = "execution";
/** First delay before a submit is retried after the broker could not be reached, in ms. */
export const DEFAULT_SUBMIT_RETRY_INITIAL_MS = 200;
/** Longest delay between submit retries, in ms. */
export const DEFAULT_SUBMIT_RETRY_MAX_MS = 10_000;
/** Most broker calls in flight per broker (submits, lookups, cancels). */
export const DEFAULT_BROKER_CONCURRENCY = 64;
/**
 * First delay before a reconciliation lookup or a kill switch's cancel that
 * the broker did not answer (unreachable, rate limited) is tried again, in ms.
 */
export const DEFAULT_BROKER_RETRY_INITIAL_MS = 1_000;
/** Longest delay between those retries, in ms. */
export const DEFAULT_BROKER_RETRY_MAX_MS = 30_000;
/**
 * Lookups in flight at once when failed reconciliation lookups are retried:
 * few, and a retry round stops at its first failure (Alpaca allows 200
 * requests a minute per account; a 429 asks to slow down, not to push on).
 */
export const DEFAULT_RECONCILE_RETRY_CONCURRENCY = 4;
/**
 * Broker events and submit results applied in one transaction, plus the
 * other queued updates of their orders (`takeKeyedBatch`).
 */
export const DEFAULT_EVENT_BATCH_MAX = 2_000;
/**
 * Writer-queue lanes: transactions storing broker updates at once (each order
 * stays in one lane). One by default: the position tracker lends its
 * positions to one fill statement at a time, so a second lane's fills were
 * stored without them and then applied by a third transaction, the
 * tracker's own (bursts of the trading bench: PostgreSQL CPU per signal
 * 191–195 µs with two lanes, 146–154 µs with one). While a transaction runs
 * the next batch gathers the updates that arrive.
 */
export const DEFAULT_EVENT_LANES = 1;
/** Signal batches committing at once (see {@linkcode ExecutionEngineOptions}). */
export const DEFAULT_SIGNAL_BATCHES_IN_FLIGHT = 2;
/** How long a broker's market clock (Alpaca's `/v2/clock`) is reused, in ms. */
export const DEFAULT_MARKET_CLOCK_TTL_MS = 30_000;
/**
 * How long a signal batch waits for a broker's market clock being fetched,
 * in ms: after that the built-in NYSE calendar decides for it, and the fetch
 * goes on in the background to fill the cache.
 */
export const DEFAULT_MARKET_CLOCK_WAIT_MS = 500;
/** How long after a failed market clock fetch the broker's clock is not asked again, in ms. */
export const DEFAULT_MARKET_CLOCK_RETRY_MS = 5_000;
/** How long {@linkcode ExecutionEngine.start} waits for the position tracker to load the portfolio state, in ms. */
export const DEFAULT_STATE_WAIT_MS = 30_000;
/**
 * How long a caller waits for the outcome of a write whose answer was lost
 * (the connection dropped: a signal batch's statement or commit, a kill
 * switch change) to be read back from PostgreSQL before it gets the
 * connection error, in ms. A signal batch's outcome is read on after that,
 * until the database answers or the engine stops.
 */
export const DEFAULT_UNKNOWN_OUTCOME_WAIT_MS = 10_000;
/** Most orders remembered as caught up by a reconciliation (see `#settle`). */
const MAX_CAUGHT_UP = 10_000;
/** The risk rules that count open orders: a duplicate counted as new could take their room. */
const ROOM_RULES: ReadonlySet<string> = new Set([
  "max_open_orders",
  "max_position",
  "max_gross_exposure",
  "numeric_range",
]);
/** Source of alerts raised by the engine. */
export const EXECUTION_ALERT_SOURCE = "execution";

/** One signal handed to {@linkcode ExecutionEngine.processSignals}. */
export interface SignalInput {
  /** The body as received (decoded JSON, or `{ raw }` for what was not JSON). */
  body: unknown;
  /** Strategy from the subject (`signals.<strategy>`); the body's `strategy` wins. */
  strategy?: string | undefined;
  /**
   * Idempotency key when the body has no `id`: for NATS `js-<stream
   * sequence>`, or `js-<stream created, epoch ms>-<stream sequence>` once the
   * stream was created again ({@linkcode ExecutionEngine.natsKeyPrefix}).
   * Without either, a fresh UUID is used (REST clients that retry must send
   * an `id`).
   */
  key?: string | undefined;
  /** How it arrived. */
  source: "nats" | "rest";
  /** When it arrived. @default {now} */
  receivedAt?: Date | undefined;
  /**
   * Whether it may have been handled before (a JetStream redelivery): then a
   * batch checks stored keys before its risk checks, so a stored duplicate
   * never takes risk room from the new signals of the batch. @default {false}
   */
  redelivered?: boolean | undefined;
  /**
   * Why this signal could not be processed, given by a caller that has tried
   * it alone often enough (a poison message, not the database's fault): it is
   * recorded as rejected, unchecked, for the rule `processing_failed` with
   * this message, and a critical alert is raised. A signal stored before keeps
   * its stored outcome. @default {undefined: processed as usual}
   */
  failure?: string | undefined;
}

/** What became of one signal. */
export type SignalOutcome =
  | {
    /** An order was created for it. */
    status: "accepted";
    /** True when the signal was stored before: `order` is the order created then. */
    duplicate: boolean;
    /** The stored signal. */
    signal: SignalRow;
    /** Its order (as stored when the batch committed, or now for a duplicate). */
    order: Order;
  }
  | {
    /** It was refused. */
    status: "rejected";
    /** True when the signal was stored before with this outcome. */
    duplicate: boolean;
    /** The stored signal. */
    signal: SignalRow;
    /** Every reason, each naming its field (`path`) or risk rule (`rule`). */
    reasons: RejectReason[];
  }
  | {
    /** Stored before without a decision (not by this engine); nothing was done. */
    status: "received";
    /** Always true. */
    duplicate: true;
    /** The stored signal. */
    signal: SignalRow;
  };

/**
 * How many closed orders the engine remembers, so that a stored outcome read
 * before an order's close committed (a redelivered batch racing its fill)
 * does not have the order taken over and submitted again.
 */
const CLOSED_RECENTLY_MAX = 10_000;

/** Options of {@linkcode ExecutionEngine.enqueueSignals}. */
export interface EnqueueSignalsOptions {
  /**
   * Asked when the batch's turn to be decided comes: a promise defers it
   * until it resolves (the batches behind it go on meanwhile), then it is
   * asked again; null decides it now. The execution actor holds NATS
   * signals with it while market data is not back after a NATS outage, so
   * they are not refused as `no_market_price` on prices from before it. A
   * gate that rejects refuses the batch with {@linkcode ExecutionNotReadyError}
   * (nothing recorded: hand it in again later).
   * @default {decide at once}
   */
  gate?: () => Promise<void> | null;
  /**
   * The caller stopping: aborted while the batch waits at its gate, the batch
   * is refused with {@linkcode ExecutionNotReadyError} (nothing recorded)
   * instead of waiting for the gate to open.
   */
  signal?: AbortSignal | undefined;
}

/** A batch of signals handed to {@linkcode ExecutionEngine.enqueueSignals}. */
export interface SignalBatch {
  /** Resolves once the batch is decided and its commit has started: hand in the next one then. */
  decided: Promise<void>;
  /** One outcome per input once the batch committed; rejects when it did not (nothing recorded). */
  outcomes: Promise<SignalOutcome[]>;
}

/** The kill switch as the engine holds it, with what a request did. */
export interface KillSwitchState extends KillSwitch {
  /** Open orders whose cancellation the request asked brokers for. */
  cancel_requested: number;
  /**
   * Open orders whose cancellation could not be asked for (yet); an alert
   * names them too. Empty when every open order was asked for.
   */
  not_cancelled: NotCancelledOrder[];
}

/** An open order a kill switch's `cancel_open` could not (yet) ask its broker to cancel. */
export interface NotCancelledOrder {
  /** The order's row id. */
  order_id: string;
  /** Its client order id. */
  client_order_id: string;
  /** Its broker. */
  broker: string;
  /** Why the cancel was not sent. */
  reason: string;
  /**
   * True when the broker could not answer (unreachable, rate limited): the
   * cancel is retried with backoff until it is sent or the order is closed.
   */
  retrying: boolean;
}

/** What {@linkcode ExecutionEngine.reconcile} did. */
export interface ReconcileReport {
  /** Open orders looked up at their brokers. */
  checked: number;
  /** Orders the broker did not know, submitted (again). */
  submitted: number;
  /** Orders whose status or fills were behind the broker's. */
  updated: number;
  /**
   * Orders whose broker is not configured, or whose lookup failed (left as
   * they are; a failed lookup is retried in the background with backoff).
   */
  failed: number;
  /** Fills not yet applied to positions, published again on FILLS. */
  republished_fills: number;
}

/** Counters of an {@linkcode ExecutionEngine}, kept for its lifetime. */
export interface ExecutionStats {
  /** Signals handed in (duplicates included). */
  signals: number;
  /** Signals accepted (an order created). */
  accepted: number;
  /** Signals rejected. */
  rejected: number;
  /** Signals stored before (redeliveries, retried requests). */
  duplicates: number;
  /** Signal batches committed. */
  batches: number;
  /** Orders acknowledged by a broker. */
  submitted: number;
  /** Submit attempts that failed because the broker could not be reached. */
  submit_retries: number;
  /** Fills recorded (new ones only). */
  fills: number;
  /** Of those, fills stored with what they did to positions (a tracker's reservation). */
  fills_with_positions: number;
  /** Broker events refused as illegal transitions (alerts raised). */
  illegal_events: number;
  /**
   * Broker fills (wholly or partly) counted before: their cumulative quantity
   * was reached by earlier fills — a reconciliation's catch-up, or a redelivery.
   */
  fills_counted_before: number;
  /** Fill publishes that failed and were retried. */
  fill_publish_retries: number;
  /** Broker updates that could not be stored (bad data) and were dropped with an alert. */
  dropped_updates: number;
  /** Orders open now. */
  open_orders: number;
}

/** The engine's settings that are not in the configuration; tests and benchmarks change them. */
export interface ExecutionEngineOptions {
  /** Prepended to `orders.…` and `signals.rejected`. @default {""} */
  subject_prefix?: string | undefined;
  /** Written as `created_by`/`updated_by`. @default {DEFAULT_EXECUTION_ACTOR} */
  actor?: string | undefined;
  /** First submit retry delay, in ms. @default {DEFAULT_SUBMIT_RETRY_INITIAL_MS} */
  submit_retry_initial_ms?: number | undefined;
  /** Longest submit retry delay, in ms. @default {DEFAULT_SUBMIT_RETRY_MAX_MS} */
  submit_retry_max_ms?: number | undefined;
  /** Most broker calls in flight per broker. @default {DEFAULT_BROKER_CONCURRENCY} */
  broker_concurrency?: number | undefined;
  /**
   * First delay before a failed reconciliation lookup or kill-switch cancel
   * is tried again, in ms. @default {DEFAULT_BROKER_RETRY_INITIAL_MS}
   */
  broker_retry_initial_ms?: number | undefined;
  /** Longest delay between those retries, in ms. @default {DEFAULT_BROKER_RETRY_MAX_MS} */
  broker_retry_max_ms?: number | undefined;
  /**
   * Lookups in flight at once when failed reconciliation lookups are
   * retried. @default {DEFAULT_RECONCILE_RETRY_CONCURRENCY}
   */
  reconcile_retry_concurrency?: number | undefined;
  /**
   * Updates applied in one transaction: this many, plus the other queued
   * updates of their orders (an order is not cut apart). @default {DEFAULT_EVENT_BATCH_MAX}
   */
  event_batch_max?: number | undefined;
  /**
   * Writer-queue lanes: updates of different orders (by client order id)
   * are stored by this many transactions at once. @default {DEFAULT_EVENT_LANES}
   */
  event_lanes?: number | undefined;
  /** How long a broker's market clock is reused, in ms. @default {DEFAULT_MARKET_CLOCK_TTL_MS} */
  market_clock_ttl_ms?: number | undefined;
  /**
   * How long a signal batch waits for a broker's market clock being fetched,
   * in ms (then the built-in calendar decides). @default {DEFAULT_MARKET_CLOCK_WAIT_MS}
   */
  market_clock_wait_ms?: number | undefined;
  /**
   * How long after a failed market clock fetch the broker's clock is not
   * asked again, in ms. @default {DEFAULT_MARKET_CLOCK_RETRY_MS}
   */
  market_clock_retry_ms?: number | undefined;
  /** Backoff jitter source, uniform in [0, 1). @default {Math.random} */
  random?: (() => number) | undefined;
  /**
   * How long `start` waits for the {@linkcode PortfolioState} to be loaded
   * (by the position tracker), in ms. @default {DEFAULT_STATE_WAIT_MS}
   */
  state_wait_ms?: number | undefined;
  /**
   * How long a caller waits for the outcome of a write whose answer was lost
   * to be read back, in ms. @default {DEFAULT_UNKNOWN_OUTCOME_WAIT_MS}
   */
  unknown_outcome_wait_ms?: number | undefined;
  /**
   * Signal batches committing at once: the next batch is decided while the
   * previous ones commit; 1 makes each batch wait for the one before.
   * @default {DEFAULT_SIGNAL_BATCHES_IN_FLIGHT}
   */
  signal_batches_in_flight?: number | undefined;
}

/** A new fill as the position tracker needs it: a {@linkcode FillMessage} before it has ids. */
export type PendingFill = Pick<
  FillMessage,
  "portfolio_id" | "symbol" | "side" | "qty" | "price" | "fee" | "filled_at"
>;

/**
 * The position tracker of the engine's process, lending the engine its
 * positions: with a {@linkcode PositionsReservation} the statement that stores
 * new fills stores what they do to positions and cash as well — one commit
 * where the tracker would need its own after the engine's.
 */
export interface PositionsPartner {
  /**
   * Computes what `fills` (in order) do to the tracked positions and cash,
   * and holds the tracker's own writes until the reservation is committed or
   * released. Null when that cannot be done now (the tracker is busy or not
   * running, a fill is of another portfolio): the tracker then applies the
   * fills itself, from their messages.
   */
  reserve(fills: readonly PendingFill[]): PositionsReservation | null;
}

/** Positions reserved for new fills ({@linkcode PositionsPartner.reserve}); ends once, either way. */
export interface PositionsReservation {
  /** Each fill's realized P&L (net of its fee), in order: stored with the fill, marking it applied. */
  readonly realized: readonly Decimal[];
  /** What to store with the fills (`insertFillsWithOrders`' `positions`). */
  readonly positions: FillsPositions;
  /** The statement committed: the fills' ids, in order. The tracker records and publishes the positions. */
  commit(fillIds: readonly string[]): void;
  /** The statement did not commit: the tracker applies the fills from their messages, as usual. */
  release(): void;
  /**
   * The statement's answer was lost (the connection dropped): it may have
   * committed. The tracker reads its positions and cash back from PostgreSQL
   * before it writes or reserves again.
   */
  unknown(): void;
}

/** What an {@linkcode ExecutionEngine} needs. */
export interface ExecutionEngineDeps {
  /** The PostgreSQL pool (a `createPostgres` pool: NUMERIC as text). */
  sql: Sql;
  /** Brokers by name (`paper`, `alpaca`); orders are routed by `broker` or `execution.default_broker`. */
  brokers: ReadonlyMap<string, Broker>;
  /** Last market prices, for the price collar, notional and market-order checks. */
  cache: LatestCache;
  /**
   * Positions, exposure and today's realized P&L, kept by the position
   * tracker; the engine registers its open orders there too.
   */
  state: PortfolioState;
  /** The `risk` and `execution` sections of the configuration. */
  config: { risk: Config["risk"]; execution: Config["execution"] };
  /** Publishes JSON on a core NATS subject (order transitions, reject events). */
  publish(subject: string, data: unknown): void;
  /** Publishes a persisted fill on FILLS and resolves once JetStream stored it. */
  publishFill(fill: FillMessage): Promise<unknown>;
  /**
   * The position tracker of this process, to store what new fills do to
   * positions in the statement storing the fills. @default {none: the
   * tracker applies every fill itself}
   */
  positions?: PositionsPartner | undefined;
  /** Time, retry delays. @default {systemClock} */
  clock?: Clock | undefined;
  /** @default {nullLogger} */
  log?: Logger | undefined;
  /** Settings beyond the configuration. */
  options?: ExecutionEngineOptions | undefined;
}

/** A price {@linkcode ExecutionEngine.warmUp} waits for: a symbol's, on one venue or any. */
export interface WantedPrice {
  /** Canonical symbol. */
  symbol: string;
  /** The venue whose price is wanted (a signal's `exchange`). @default {any venue} */
  exchange?: Exchange | undefined;
}

/** Options of {@linkcode ExecutionEngine.warmUp}. */
export interface WarmUpOptions {
  /** Ends the wait early. @default {none} */
  signal?: AbortSignal | undefined;
  /**
   * The symbols (on any venue, or on the one named) that need a fresh price.
   * @default {the open orders' symbols}
   */
  symbols?: Iterable<string | WantedPrice> | undefined;
}

/**
 * The prices that deciding `items` needs: the symbol (and `exchange`, when
 * named) of each valid signal, once each. Signals that will be refused for
 * their body, or recorded as failed, need none.
 *
 * @example
 * ```ts
 * await engine.warmUp(remainingMs, { symbols: pricesOfSignals(batch) });
 * ```
 */
export function pricesOfSignals(items: readonly SignalInput[]): WantedPrice[] {
  const wanted = new Map<string, WantedPrice>();
  for (const item of items) {
    if (item.failure !== undefined) continue;
    const parsed = parseSignal(
      item.body,
      item.strategy === undefined ? {} : { strategy: item.strategy },
    );
    if (!parsed.ok) continue;
    const { symbol, exchange } = parsed.signal;
    wanted.set(
      `${symbol}\u0000${exchange ?? ""}`,
      exchange === undefined ? { symbol } : { symbol, exchange },
    );
  }
  return [...wanted.values()];
}

/** The engine was asked to work before {@linkcode ExecutionEngine.start} (or after stop). */
export class ExecutionNotReadyError extends Error {
  /** Creates the error. */
  constructor(message = "The execution engine is not running", options?: ErrorOptions) {
    super(message, options);
    this.name = "ExecutionNotReadyError";
  }
}

// ---------------------------------------------------------------------------
// Internal shapes
// ---------------------------------------------------------------------------

/** An open order as the engine tracks it: the stored row and its parsed figures. */
interface Tracked {
  row: Order;
  qty: Decimal;
  filled: Decimal;
  /**
   * Σ qty × price of its stored fills, exact: the next fill's average and a
   * reconciliation's catch-up are derived from it, never from the stored
   * (rounded) `avg_fill_price`.
   */
  notional: Decimal;
  /**
   * Venue whose prices the paper broker uses: the signal's, or null when it names none (the
   * paper broker then uses any venue's — not the one risk priced it on).
   */
  exchange: string | null;
  /** Cancellation asked for while a submit was in flight or retrying. */
  cancelRequested: boolean;
  /** Why that cancellation was asked for (its retries and alerts say it); null when none was. */
  cancelReason: string | null;
  /** A submit loop is running for it. */
  submitting: boolean;
  /**
   * A submit may have reached the broker without its answer (the broker
   * could not be reached, or a submit of an earlier run): before cancelling
   * it here, the broker is asked whether it has the order.
   */
  maybeAtBroker: boolean;
}

/** Work for the writer queue. */
type Update =
  | { kind: "submitted"; coid: string; broker_order_id: string }
  | { kind: "refused"; coid: string; reason: string }
  | { kind: "local_cancel"; coid: string; reason: string }
  | { kind: "event"; broker: string; event: BrokerEvent }
  /** The broker's view of an order, read by reconciliation: resolved where the lane applies it. */
  | { kind: "catch_up"; broker: string; coid: string; state: BrokerOrderState; at_ms: number };

/** The client order id an update is for. */
function coidOf(update: Update): string {
  return update.kind === "event" ? update.event.client_order_id : update.coid;
}

/** A broker fill event. */
type FillEvent = Extract<BrokerEvent, { type: "fill" }>;

/**
 * Whether `update` is checked against what its order's fills count (see
 * `#settle`): a catch-up, a fill saying the order's cumulative quantity
 * (`cum_qty`) or whose quantity the broker did not say, a final status
 * saying something was filled.
 */
function needsCount(update: Update): boolean {
  if (update.kind === "catch_up") return true;
  if (update.kind !== "event") return false;
  const event = update.event;
  if (event.type === "fill") return event.qty_derived === true || event.cum_qty !== undefined;
  return event.type !== "accepted" && event.filled_qty !== undefined && event.filled_qty.gt(0);
}

/** A signal after parsing and keying. */
interface Prepared {
  input: SignalInput;
  strategy: string;
  clientSignalId: string;
  symbol: string | null;
  payload: unknown;
  receivedAt: Date;
  parsed: ReturnType<typeof parseSignal>;
}

/** A decision on one prepared signal, before it is stored. */
interface Decision {
  item: SignalBatchItem;
  /** `SignalInput.failure`: recorded as rejected for it, with an alert. */
  failure?: string;
  /** The venue the signal names, given to its broker (null: none). */
  exchange: string | null;
  /** An accepted order counted as open for the signals after it (not a duplicate). */
  counted: boolean;
}

/** An alert to raise about a broker update (stored with the batch that refused it). */
interface Alert {
  message: string;
  details: Record<string, unknown>;
}

/** An order's state while a batch of updates is applied to it. */
interface Draft {
  row: Order;
  state: OrderState;
  /** The states after each transition, in order, to publish. */
  steps: OrderState[];
}

/** Why a cancellation could not be asked for; `retryable` when the broker could not be reached. */
interface CancelRefusal {
  reason: string;
  retryable: boolean;
}

/** The refusal a failed lookup or cancel at a broker means: retryable unless the broker refused. */
function refusalOf(error: unknown): CancelRefusal {
  return { reason: errorMessage(error), retryable: !(error instanceof BrokerRejectedError) };
}

/**
 * {@linkcode ExecutionEngine.cancelOrder} could not ask the broker to cancel
 * the order, which is still open: the broker refused (`retryable` false), or
 * could not be reached (true: ask again later).
 */
export class CancelNotSentError extends Error {
  /** The order, as stored now. */
  readonly order: Order;
  /** Whether asking again later may work. */
  readonly retryable: boolean;

  /** Makes the error for `order`, refused with `refusal`. */
  constructor(order: Order, refusal: CancelRefusal) {
    super(
      `Order ${order.id} is still ${order.status}: ${
        refusal.retryable ? "the broker could not be reached" : "the broker refused to cancel it"
      } (${refusal.reason})`,
    );
    this.name = "CancelNotSentError";
    this.order = order;
    this.retryable = refusal.retryable;
  }
}

/** Reruns a batch of updates without the fills that turned out illegal. */
class RedoWithout extends Error {
  constructor(readonly keys: ReadonlySet<string>) {
    super("Batch has illegal fills");
    this.name = "RedoWithout";
  }
}

/** Reruns a batch of updates after reloading orders whose stored state moved. */
class StaleOrders extends Error {
  constructor(readonly orders: readonly Order[]) {
    super("Orders changed under the engine");
    this.name = "StaleOrders";
  }
}

const decoderless = (value: unknown): unknown =>
  value === undefined || value === null || typeof value !== "object"
    ? { raw: value ?? null }
    : value;

/** Whether every string and key in `value` (parsed JSON) is {@linkcode storableText}. */
function storableJson(value: unknown): boolean {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    if (typeof item === "string") {
      if (!storableText(item)) return false;
    } else if (Array.isArray(item)) {
      // One by one: spreading a long array into push overflows the call stack.
      for (const child of item) stack.push(child);
    } else if (typeof item === "object" && item !== null) {
      for (const key in item) {
        if (!storableText(key)) return false;
        stack.push((item as Record<string, unknown>)[key]);
      }
    }
  }
  return true;
}

/**
 * A signal body as the `signals.payload` column can hold it: PostgreSQL's
 * jsonb refuses U+0000 and unpaired surrogates in any string or key, and one
 * such body would fail the statement storing its whole batch. Such a body is
 * kept as its JSON text (`{ raw: "…\\u0000…" }`, which escapes both), exact;
 * any other as it came.
 */
function storablePayload(body: unknown): unknown {
  return storableJson(body) ? decoderless(body) : { raw: JSON.stringify(body ?? null) };
}

/** {@linkcode storablePayload}, or `{ raw: null }` when even that throws (for a signal that failed). */
function failedPayload(body: unknown): unknown {
  try {
    return storablePayload(body);
  } catch {
    return { raw: null };
  }
}

function fillKey(orderId: string, fillId: string): string {
  return `${orderId}\u0000${fillId}`;
}

/** The lane of a client order id: a string hash modulo `lanes`. */
function laneOf(coid: string, lanes: number): number {
  if (lanes === 1) return 0;
  let hash = 0;
  for (let i = 0; i < coid.length; i++) hash = (hash * 31 + coid.charCodeAt(i)) | 0;
  return (hash >>> 0) % lanes;
}

/** Whether running the same work again later may succeed: the database unreachable, slow or busy. */
function isTransient(error: unknown): boolean {
  return error instanceof DbConnectionError || error instanceof DbTimeoutError ||
    error instanceof SerializationError;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * `error` saying `message` instead: the same error (its class tells callers
 * how to answer it, a database outage with 503), or an `Error` when it is none.
 */
function withMessage(error: unknown, message: string): Error {
  if (!(error instanceof Error)) return new Error(message, { cause: error });
  error.message = message;
  return error;
}

/**
 * What a kill switch's `cancel_open` did while the switch could not be
 * stored: the orders whose cancel was asked for, and those whose was not.
 */
function cancelsSent(asked: readonly Order[], notCancelled: readonly NotCancelledOrder[]): string {
  let text = `the kill switch is on in the engine until PostgreSQL answers; cancel_open asked ` +
    `to cancel ${asked.length} open order(s)${
      asked.length > 0 ? `: ${asked.map((o) => o.id).join(", ")}` : ""
    }`;
  if (notCancelled.length > 0) {
    text += `; not cancelled (${notCancelled.length}): ${
      notCancelled.map((o) => `${o.order_id} (${o.reason}${o.retrying ? ", retrying" : ""})`)
        .join(", ")
    }`;
  }
  return text;
}

/** A FIFO semaphore bounding calls in flight. */
class Limiter {
  #free: number;
  readonly #waiting: Array<() => void> = [];

  constructor(size: number) {
    this.#free = size;
  }

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.#free > 0) this.#free--;
    else await new Promise<void>((resolve) => this.#waiting.push(resolve));
    try {
      return await fn();
    } finally {
      const next = this.#waiting.shift();
      if (next) next();
      else this.#free++;
    }
  }
}

// ---------------------------------------------------------------------------
// The engine
// ---------------------------------------------------------------------------

/**
 * The execution engine (see the module doc). Public methods used by the API:
 * {@linkcode ExecutionEngine.processSignals},
 * {@linkcode ExecutionEngine.cancelOrder},
 * {@linkcode ExecutionEngine.setKillSwitch},
 * {@linkcode ExecutionEngine.killSwitch}.
 */
export class ExecutionEngine {
  readonly #sql: Sql;
  readonly #brokers: ReadonlyMap<string, Broker>;
  readonly #cache: LatestCache;
  readonly #state: PortfolioState;
  readonly #execution: Config["execution"];
  readonly #limits: RiskLimits;
  readonly #publish: (subject: string, data: unknown) => void;
  readonly #publishFill: (fill: FillMessage) => Promise<unknown>;
  readonly #positions: PositionsPartner | null;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #names: { subject_prefix: string };
  readonly #by: string;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;
  readonly #eventBatchMax: number;
  readonly #clockTtlMs: number;
  readonly #clockWaitMs: number;
  readonly #clockRetryMs: number;
  readonly #random: () => number;
  readonly #stateWaitMs: number;
  readonly #outcomeWaitMs: number;
  readonly #concurrency: number;
  readonly #brokerRetryInitialMs: number;
  readonly #brokerRetryMaxMs: number;
  readonly #reconcileRetryConcurrency: number;
  readonly #limiters = new Map<string, Limiter>();

  /** Open orders by client order id. */
  readonly #open = new Map<string, Tracked>();
  /** Client order id of open orders by row id. */
  readonly #openById = new Map<string, string>();
  /** Unfilled quantity of open orders per symbol and side. */
  readonly #openQty = new Map<string, { buy: Decimal; sell: Decimal }>();
  /**
   * The highest reference price of the orders seen per symbol (a market or
   * stop buy's or a sell's at the touch when above it, as max_notional and
   * numeric_range checked it):
   * prices their open orders for numeric_range's cash after, and their
   * exposure when the symbol has no mark (an order resting in a symbol
   * without market data).
   */
  readonly #refPrices = new Map<string, Decimal>();
  /** Symbols known to exist in the `symbols` table. */
  readonly #symbols = new Set<string>();
  /**
   * Client order ids of the orders a reconciliation gave a fill it could not
   * know the id of (`reconcile-…`), oldest first, at most MAX_CAUGHT_UP: the
   * broker's own fills for them are checked against what is counted.
   */
  readonly #caughtUp = new InsertionOrderedSet<string>();
  /**
   * The cumulative quantity a broker's fill showed for an order whose fills
   * counted less before it (executions the engine never saw; its order is
   * looked up), by client order id, oldest first, at most MAX_CAUGHT_UP,
   * until its fills count that much: a reconciliation answer below it is
   * older than that fill (see `#settle`).
   */
  readonly #shownFilled = new InsertionOrderedMap<string, Decimal>();
  /**
   * Fills (`fillKey`) of broker-update writes whose answer was lost, oldest
   * first, at most MAX_CAUGHT_UP: found stored when run again, they are sent
   * on to the position tracker (see `#noteUnknownFills`).
   */
  readonly #unknownFills = new InsertionOrderedSet<string>();
  /** Per broker: a reconciliation after a reconnect is running; another is asked for. */
  readonly #reconnects = new Map<string, { running: boolean; again: boolean }>();
  /**
   * Per broker: client order ids of open orders whose reconciliation lookup
   * failed, looked up again with backoff while `running`.
   */
  readonly #lookupRetries = new Map<string, { coids: Set<string>; running: boolean }>();
  /** Client order ids of orders whose refused cancel (retryable) is being retried. */
  readonly #cancelRetries = new Set<string>();
  readonly #marketClocks = new Map<string, { at: number; clock: UsEquityMarketClock }>();
  /**
   * Market clock fetches by broker: the one in flight (with when it started),
   * or when the last one failed (not asked again for `market_clock_retry_ms`).
   */
  readonly #clockFetches = new Map<
    string,
    { fetching: Promise<void>; since: number } | { failedAt: number }
  >();
  #kill: KillSwitch = { active: false, reason: null, changed_at: null, changed_by: null };
  /** Kill switch requests so far: a request's outcome is held only while it is the latest. */
  #killRequests = 0;
  /** Reading the kill switch after a request that could not be confirmed; null when known. */
  #killFollow: Promise<void> | null = null;
  /**
   * Kill switch `cancel_open` scans so far, and the reason of the last: a
   * batch read back after they ran (`#takeOver`) has its orders cancelled.
   */
  #cancelOpenScans = 0;
  #cancelOpenReason = "kill switch";
  /**
   * The reason of a `cancel_open` scan made since the kill switch last went
   * on (null once it goes off): an order taken over meanwhile, which the scan
   * could not see, is cancelled rather than submitted (`#recorded`).
   */
  #cancelOpenHeld: string | null = null;

  /** Serializes the decisions on signal batches and kill-switch changes. */
  #serial: Promise<unknown> = Promise.resolve();
  /** Signal batches committing (settled, never rejecting). */
  readonly #committing = new Set<Promise<void>>();
  /** Orders of committing batches, counted as open by the decisions on the next batches. */
  readonly #flyingQty = new Map<string, { buy: Decimal; sell: Decimal }>();
  #flyingOrders = 0;
  readonly #batchesInFlight: number;
  /** The writer queue, in lanes by client order id: an order's updates stay in order in its lane. */
  readonly #lanes: Array<{ updates: Update[]; draining: Promise<void> | null }>;
  /** Background work (submits, fill publishes) awaited on stop. */
  readonly #background = new Set<Promise<unknown>>();
  #running = false;
  #halt = new AbortController();
  /** Aborted when stop begins: ends the reading back of unknown outcomes. */
  #stopping = new AbortController();
  /** Client order ids this engine closed lately, oldest first (at most CLOSED_RECENTLY_MAX). */
  readonly #closedRecently = new InsertionOrderedSet<string>();
  #unsubscribe: Array<() => void> = [];
  readonly #stats: Omit<ExecutionStats, "open_orders"> = {
    signals: 0,
    accepted: 0,
    rejected: 0,
    duplicates: 0,
    batches: 0,
    submitted: 0,
    submit_retries: 0,
    fills: 0,
    fills_with_positions: 0,
    illegal_events: 0,
    fills_counted_before: 0,
    fill_publish_retries: 0,
    dropped_updates: 0,
  };

  /** Creates the engine; nothing happens until {@linkcode ExecutionEngine.start}. */
  constructor(deps: ExecutionEngineDeps) {
    const options = deps.options ?? {};
    this.#sql = deps.sql;
    this.#brokers = deps.brokers;
    this.#cache = deps.cache;
    this.#state = deps.state;
    this.#execution = deps.config.execution;
    this.#limits = riskLimitsFromConfig(deps.config.risk as RiskConfig);
    this.#publish = deps.publish;
    this.#publishFill = deps.publishFill;
    this.#positions = deps.positions ?? null;
    this.#clock = deps.clock ?? systemClock;
    this.#log = deps.log ?? nullLogger;
    this.#names = { subject_prefix: options.subject_prefix ?? "" };
    this.#by = options.actor ?? DEFAULT_EXECUTION_ACTOR;
    this.#retryInitialMs = options.submit_retry_initial_ms ?? DEFAULT_SUBMIT_RETRY_INITIAL_MS;
    this.#retryMaxMs = Math.max(
      this.#retryInitialMs,
      options.submit_retry_max_ms ?? DEFAULT_SUBMIT_RETRY_MAX_MS,
    );
    this.#eventBatchMax = options.event_batch_max ?? DEFAULT_EVENT_BATCH_MAX;
    const lanes = options.event_lanes ?? DEFAULT_EVENT_LANES;
    assertPositiveInteger(lanes, "event_lanes");
    this.#lanes = Array.from({ length: lanes }, () => ({ updates: [], draining: null }));
    this.#clockTtlMs = options.market_clock_ttl_ms ?? DEFAULT_MARKET_CLOCK_TTL_MS;
    this.#clockWaitMs = options.market_clock_wait_ms ?? DEFAULT_MARKET_CLOCK_WAIT_MS;
    this.#clockRetryMs = options.market_clock_retry_ms ?? DEFAULT_MARKET_CLOCK_RETRY_MS;
    this.#random = options.random ?? Math.random;
    this.#stateWaitMs = options.state_wait_ms ?? DEFAULT_STATE_WAIT_MS;
    this.#outcomeWaitMs = options.unknown_outcome_wait_ms ?? DEFAULT_UNKNOWN_OUTCOME_WAIT_MS;
    const inFlight = options.signal_batches_in_flight ?? DEFAULT_SIGNAL_BATCHES_IN_FLIGHT;
    assertPositiveInteger(inFlight, "signal_batches_in_flight");
    this.#batchesInFlight = inFlight;
    const concurrency = options.broker_concurrency ?? DEFAULT_BROKER_CONCURRENCY;
    this.#concurrency = concurrency;
    this.#brokerRetryInitialMs = options.broker_retry_initial_ms ??
      DEFAULT_BROKER_RETRY_INITIAL_MS;
    this.#brokerRetryMaxMs = Math.max(
      this.#brokerRetryInitialMs,
      options.broker_retry_max_ms ?? DEFAULT_BROKER_RETRY_MAX_MS,
    );
    const retryConcurrency = options.reconcile_retry_concurrency ??
      DEFAULT_RECONCILE_RETRY_CONCURRENCY;
    assertPositiveInteger(retryConcurrency, "reconcile_retry_concurrency");
    this.#reconcileRetryConcurrency = retryConcurrency;
  }

  /** Whether {@linkcode ExecutionEngine.start} completed and the engine was not stopped since. */
  get running(): boolean {
    return this.#running;
  }

  /** The engine's counters. */
  stats(): ExecutionStats {
    return { ...this.#stats, open_orders: this.#open.size };
  }

  /** The kill switch as the engine holds it (loaded at start, changed by {@linkcode setKillSwitch}). */
  killSwitch(): KillSwitch {
    return { ...this.#kill };
  }

  /**
   * Waits for the portfolio state to be loaded (by the position tracker;
   * rejects with {@linkcode ExecutionNotReadyError} after `state_wait_ms`),
   * loads what the engine keeps in memory — the kill switch, known symbols,
   * open orders — and subscribes to every broker's events. Call
   * {@linkcode ExecutionEngine.reconcile} next when recovering from a
   * restart. Can be called again after {@linkcode ExecutionEngine.stop}.
   */
  async start(): Promise<void> {
    if (this.#running) return;
    const until = this.#clock.now() + this.#stateWaitMs;
    while (!this.#state.loaded) {
      if (this.#clock.now() >= until) {
        throw new ExecutionNotReadyError(
          `The portfolio state was not loaded within ${this.#stateWaitMs} ms`,
        );
      }
      await this.#clock.sleep(20);
    }
    this.#halt = new AbortController();
    this.#stopping = new AbortController();
    this.#holdKill(await getKillSwitch(this.#sql));
    this.#symbols.clear();
    for (const symbol of await listSymbols(this.#sql)) this.#symbols.add(symbol.symbol);
    this.#open.clear();
    this.#openById.clear();
    this.#openQty.clear();
    const open = await listOpenOrders(this.#sql);
    const exchanges = await this.#signalExchanges(open);
    const notionals = await this.#notionalsOf(open);
    for (const row of open) {
      this.#track(row, exchanges.get(row.id) ?? null, notionals.get(row.client_order_id) ?? null);
    }
    for (const [name, broker] of this.#brokers) {
      this.#unsubscribe.push(
        broker.onEvent((event) => this.#enqueue({ kind: "event", broker: name, event })),
      );
      if (broker.onReconnect !== undefined) {
        this.#unsubscribe.push(broker.onReconnect(() => this.#reconcileAfterReconnect(name)));
      }
    }
    if (!this.#brokers.has(this.#execution.default_broker)) {
      this.#log.warn("the default broker is not configured; signals naming no broker are refused", {
        default_broker: this.#execution.default_broker,
      });
    }
    this.#running = true;
    this.#log.info("execution engine started", {
      open_orders: this.#open.size,
      kill_switch: this.#kill.active,
      brokers: [...this.#brokers.keys()],
    });
  }

  /**
   * Stops taking work: unsubscribes from brokers, waits for the signal batch
   * and the updates in progress, stops submit retries (their orders stay
   * `pending`, to be submitted by the next start's reconciliation) and waits
   * for fill publishes in flight.
   */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    this.#stopping.abort(new ExecutionNotReadyError("The execution engine is stopping"));
    await this.#serial.catch(() => {});
    await this.#drainBatches();
    this.#halt.abort(new ExecutionNotReadyError("The execution engine stopped"));
    await Promise.allSettled([...this.#background]);
    await this.idle().catch(() => {});
    for (const unsubscribe of this.#unsubscribe) unsubscribe();
    this.#unsubscribe = [];
    await this.idle().catch(() => {});
    await Promise.allSettled([...this.#background]);
    this.#log.info("execution engine stopped", { open_orders: this.#open.size });
  }

  /**
   * Waits — at most `timeoutMs` — until market data is there: the cache has
   * taken at least one event and every symbol of `options.symbols` (by
   * default, every open order's) has a fresh price (`max_price_age_ms`), on
   * the venue named where one is.
   * A freshly started engine has an empty cache, and one whose NATS
   * connection came back has stale prices until the market data flows
   * again; deciding signals before that would refuse market orders for want
   * of a price. Returns whether the data came in time (the caller goes on
   * either way; the symbols still without a fresh price are logged);
   * `options.signal` ends the wait early.
   *
   * @example
   * ```ts
   * const fresh = engine.freshSymbols(); // before the connection dropped
   * await engine.warmUp(3_000, { symbols: fresh }); // after it came back
   * ```
   */
  async warmUp(timeoutMs: number, options: WarmUpOptions = {}): Promise<boolean> {
    const stop = options.signal === undefined
      ? this.#halt.signal
      : AbortSignal.any([options.signal, this.#halt.signal]);
    const wanted = options.symbols === undefined
      ? null
      : [...options.symbols].map((w) => typeof w === "string" ? { symbol: w } : w);
    const until = this.#clock.now() + timeoutMs;
    for (;;) {
      const now = this.#clock.now();
      const prices: WantedPrice[] = wanted ??
        [...new Set([...this.#open.values()].map((t) => t.row.symbol))].map((symbol) => ({
          symbol,
        }));
      const stale = this.#cache.stats().applied === 0
        ? prices
        : prices.filter((w) => this.#lastPrice(w.symbol, w.exchange, now) === null);
      if (this.#cache.stats().applied > 0 && stale.length === 0) return true;
      if (now >= until || stop.aborted) {
        this.#log.warn("no fresh market data yet; going on without", {
          waited_ms: timeoutMs,
          symbols_without_price: stale.length,
          symbols: stale.slice(0, 20).map((w) =>
            w.exchange === undefined ? w.symbol : `${w.symbol}@${w.exchange}`
          ),
        });
        return false;
      }
      await this.#clock.sleep(Math.min(50, Math.max(1, until - now)), stop).catch(() => {});
    }
  }

  /**
   * The prefix of the keys of signals without `id` delivered by the life of
   * JetStream stream `stream` created at `created` (its stream info's
   * `created`): `js-` for the life whose signals have been keyed
   * `js-<sequence>` all along — so that a message redelivered across an
   * upgrade is still recognised — and `js-<created, epoch ms>-` for any later
   * life, whose sequences start over at 1 ({@linkcode plainSignalKeys}).
   *
   * @example
   * ```ts
   * const prefix = await engine.natsKeyPrefix("SIGNALS", new Date(info.created));
   * const key = `${prefix}${msg.seq}`;
   * ```
   */
  async natsKeyPrefix(stream: string, created: Date): Promise<string> {
    return await plainSignalKeys(this.#sql, stream, created, { by: this.#by })
      ? "js-"
      : `js-${created.getTime()}-`;
  }

  /**
   * The symbols of the latest-price cache that have a price received within
   * `withinMs` (a trade or a quote, on any venue; by default those fresh now,
   * no older than `execution.max_price_age_ms`): what
   * {@linkcode ExecutionEngine.warmUp} waits for after market data stopped
   * for a while. A longer `withinMs` covers the time it took to notice.
   */
  freshSymbols(withinMs: number = this.#execution.max_price_age_ms): string[] {
    const oldestUs = (this.#clock.now() - withinMs) * 1000;
    const symbols = new Set<string>();
    for (const names of this.#cache.symbols().values()) {
      for (const symbol of names) symbols.add(symbol);
    }
    return [...symbols].filter((symbol) =>
      this.#cache.latest(symbol)?.exchanges.some((entry) =>
        (entry.trade !== null && entry.trade.ts_local >= oldestUs) ||
        (entry.quote !== null && entry.quote.ts_local >= oldestUs)
      ) === true
    );
  }

  /**
   * Resolves once the writer queue is empty: every broker event and submit
   * result received so far is stored and published. Tests wait on it.
   */
  async idle(): Promise<void> {
    for (;;) {
      const busy = this.#lanes.find((lane) => lane.draining !== null);
      if (busy === undefined) return;
      await busy.draining;
    }
  }

  /**
   * Resolves once nothing is in progress: no submit loop or fill publish in
   * the background and the writer queue empty. Note that a submit retrying
   * against a broker that cannot be reached keeps it pending.
   */
  async settled(): Promise<void> {
    while (this.#background.size > 0 || this.#lanes.some((lane) => lane.draining !== null)) {
      await Promise.allSettled([...this.#background]);
      await this.idle();
    }
  }

  // -- signals ----------------------------------------------------------------

  /**
   * Records a batch of signals with their outcomes and creates the orders of
   * the accepted ones, in one transaction; resolves once it committed, with
   * one outcome per input in order (accepted with the order, rejected with
   * every reason, or a duplicate's stored outcome). Then submits the new
   * orders in the background. Batches are decided one at a time, in order
   * (see {@linkcode ExecutionEngine.enqueueSignals}). Rejects with
   * {@linkcode ExecutionNotReadyError} before start, and with the database
   * error when the transaction failed (nothing was recorded: hand the same
   * signals in again).
   *
   * @example
   * ```ts
   * const [outcome] = await engine.processSignals([{
   *   body: { id: "s-1", symbol: "BTC-USDT", side: "buy", qty: "0.5" },
   *   strategy: "momentum",
   *   source: "rest",
   * }]);
   * ```
   */
  processSignals(items: readonly SignalInput[]): Promise<SignalOutcome[]> {
    return this.enqueueSignals(items).outcomes;
  }

  /**
   * {@linkcode ExecutionEngine.processSignals} for a caller that pipelines:
   * `decided` resolves once the batch is decided and its commit has started —
   * the next batch can be handed in then, and is decided while this one
   * commits (at most `signal_batches_in_flight` commit at once). Batches are
   * decided in the order they are handed in, each counting the accepted
   * orders of the batches still committing as open, so no risk limit is
   * exceeded jointly. `outcomes` is as for `processSignals`.
   *
   * @example
   * ```ts
   * const batch = engine.enqueueSignals(items);
   * void batch.outcomes.then(ack, nak);
   * await batch.decided; // then hand in the next batch
   * ```
   */
  enqueueSignals(
    items: readonly SignalInput[],
    options: EnqueueSignalsOptions = {},
  ): SignalBatch {
    if (!this.#running) {
      const refused = Promise.reject(new ExecutionNotReadyError());
      refused.catch(() => {});
      return { decided: refused, outcomes: refused };
    }
    let commit: Promise<SignalOutcome[]> | null = null;
    const decided = (async () => {
      for (;;) {
        let gate: Promise<void> | null = null;
        await this.#exclusive(async () => {
          ({ commit, gate } = await this.#startBatch(items, options.gate));
        });
        if (gate === null) return;
        // Deferred without holding up the batches behind it (REST signals decide meanwhile),
        // until the gate opens, or is closed, or the engine or the caller stops.
        const stops = [this.#stopping.signal, ...(options.signal ? [options.signal] : [])];
        let onStop = () => {};
        try {
          await Promise.race([
            gate,
            new Promise<void>((resolve) => {
              onStop = () => resolve();
              for (const stop of stops) {
                if (stop.aborted) resolve();
                else stop.addEventListener("abort", onStop, { once: true });
              }
            }),
          ]);
        } catch (error) {
          throw error instanceof ExecutionNotReadyError
            ? error
            : new ExecutionNotReadyError("The batch's gate closed", { cause: error });
        } finally {
          for (const stop of stops) stop.removeEventListener("abort", onStop);
        }
        if (!this.#running) throw new ExecutionNotReadyError("The execution engine stopped");
        if (options.signal?.aborted) {
          throw new ExecutionNotReadyError("The batch was held back when its sender stopped", {
            cause: options.signal.reason,
          });
        }
      }
    })();
    decided.catch(() => {});
    const outcomes = decided.then(() => commit!);
    outcomes.catch(() => {}); // the caller's to observe; never an unhandled rejection
    return { decided, outcomes };
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#serial.then(fn, fn);
    this.#serial = run.catch(() => {});
    return run;
  }

  /** Resolves once no signal batch is committing. */
  async #drainBatches(): Promise<void> {
    while (this.#committing.size > 0) await Promise.allSettled([...this.#committing]);
  }

  /**
   * Decides a batch (in the exclusive section) and starts its commit; returns
   * the commit's outcomes. A batch that must read stored keys or create
   * symbols first waits for the batches committing and is decided inside its
   * own transaction, before the next batch is decided.
   */
  async #startBatch(
    items: readonly SignalInput[],
    gateOf?: () => Promise<void> | null,
  ): Promise<
    { commit: Promise<SignalOutcome[]>; gate: null } | { commit: null; gate: Promise<void> }
  > {
    if (items.length === 0) return { commit: Promise.resolve([]), gate: null };
    if (this.#killFollow !== null) await this.#killSwitchKnown(this.#killFollow);
    while (this.#committing.size >= this.#batchesInFlight) {
      await Promise.race([...this.#committing]);
    }
    // Asked just before deciding: a batch handed in before an outage may have waited until now.
    const gate = gateOf?.() ?? null;
    if (gate !== null) return { commit: null, gate };
    const prepared = items.map((item) => this.#prepare(item));
    await this.#refreshMarketClocks(prepared);
    const checkStored = items.length > 1 && items.some((item) => item.redelivered === true);
    const decisions = checkStored ? null : this.#decide(prepared, new Set());
    // A signal stored before and sent again (not a redelivery) is counted as a new order until
    // the insert says otherwise. Only when that can have cost another signal its room — one is
    // refused for a rule counting open orders, after an accepted one of the batch or beside
    // batches committing — is the batch decided again, after those commits, with stored keys.
    const redecide = decisions !== null && this.#roomTaken(decisions);
    const locked = decisions === null || redecide || this.#needsSymbols(decisions);
    let commit: Promise<SignalOutcome[]>;
    if (!locked) {
      const flying = this.#fly(decisions);
      commit = (async () => {
        try {
          // One statement records the whole batch: atomic without an explicit transaction.
          let results: readonly SignalInsertResult[];
          try {
            results = await insertSignalsAndOrders(
              this.#sql,
              decisions.map((d) => d.item),
              { by: this.#by },
            );
          } catch (error) {
            if (!mayHaveCommitted(error)) throw error;
            results = await this.#readBackBatch(decisions, error);
          }
          return this.#recorded(results, decisions);
        } finally {
          this.#land(flying);
        }
      })();
    } else {
      await this.#drainBatches();
      commit = (async () => {
        // The decisions of the transaction's last run: its commit may lose its answer.
        let attempted = null as Decision[] | null;
        try {
          const { results, decisions, symbols } = await unitOfWork(this.#sql, async (tx) => {
            const stored = checkStored || (redecide && items.length > 1)
              ? await storedSignalKeys(
                tx,
                prepared.map((p) => ({ strategy: p.strategy, id: p.clientSignalId })),
              )
              : new Set<string>();
            const decided = this.#decide(prepared, stored);
            attempted = decided;
            const symbols = await this.#ensureSymbols(tx, decided);
            const results = await insertSignalsAndOrders(tx, decided.map((d) => d.item), {
              by: this.#by,
            });
            return { results, decisions: decided, symbols };
          });
          for (const symbol of symbols) this.#symbols.add(symbol);
          return this.#recorded(results, decisions);
        } catch (error) {
          if (!mayHaveCommitted(error) || attempted === null) throw error;
          const decisions: Decision[] = attempted;
          const results = await this.#readBackBatch(decisions, error);
          // It committed: the symbols its orders name were created with it.
          for (const { item } of decisions) {
            if (item.outcome.status === "accepted") this.#symbols.add(item.outcome.order.symbol);
          }
          return this.#recorded(results, decisions);
        }
      })();
    }
    const settled = commit.then(() => {}, () => {});
    this.#committing.add(settled);
    void settled.finally(() => this.#committing.delete(settled));
    if (locked) await settled;
    return { commit, gate: null };
  }

  /** Counts the new orders of a decided batch as open while it commits; returns what it counted. */
  #fly(decisions: readonly Decision[]): Array<{ symbol: string; side: Side; qty: Decimal }> {
    const flying: Array<{ symbol: string; side: Side; qty: Decimal }> = [];
    for (const decision of decisions) {
      const outcome = decision.item.outcome;
      if (outcome.status !== "accepted" || !decision.counted) continue;
      const { symbol, side } = outcome.order;
      const qty = outcome.order.qty as Decimal;
      flying.push({ symbol, side, qty });
      const sums = this.#flyingQty.get(symbol) ?? { buy: ZERO, sell: ZERO };
      sums[side] = sums[side].plus(qty);
      this.#flyingQty.set(symbol, sums);
    }
    this.#flyingOrders += flying.length;
    return flying;
  }

  /** Stops counting a committed (or failed) batch's new orders as in flight. */
  #land(flying: ReadonlyArray<{ symbol: string; side: Side; qty: Decimal }>): void {
    for (const { symbol, side, qty } of flying) {
      const sums = this.#flyingQty.get(symbol);
      if (sums === undefined) continue;
      sums[side] = sums[side].minus(qty);
      if (sums.buy.isZero() && sums.sell.isZero()) this.#flyingQty.delete(symbol);
    }
    this.#flyingOrders -= flying.length;
  }

  /**
   * The outcome of a batch whose statement or commit lost its answer (the
   * connection dropped: it may have committed), read back from PostgreSQL
   * once it answers (`#readStored`). The caller
   * waits at most `unknown_outcome_wait_ms` for it: then, or when the batch
   * did not commit, it gets `error` (nothing is known to be recorded: the
   * same signals may be handed in again). The reading goes on after the
   * caller gave up, until the database answers or the engine stops, and what
   * it finds stored is taken over then: an order nobody tracks would else
   * stay `pending`, never submitted, until the next start — or cancelled,
   * when a kill switch's `cancel_open` ran meanwhile (it could not see them).
   */
  async #readBackBatch(
    decisions: readonly Decision[],
    error: DbConnectionError,
  ): Promise<SignalInsertResult[]> {
    this.#log.warn("a signal batch lost its commit's answer; reading back what was stored", {
      signals: decisions.length,
      error: errorMessage(error),
    });
    const reading = this.#readStored(decisions);
    const timer = new AbortController();
    const late = this.#clock.sleep(this.#outcomeWaitMs, timer.signal).then(
      () => "late" as const,
      () => "late" as const,
    );
    const answer = await Promise.race([reading, late]);
    timer.abort();
    if (answer === "late") {
      this.#log.error("a signal batch's outcome is still unknown; the caller gets the error", {
        signals: decisions.length,
        waited_ms: this.#outcomeWaitMs,
      });
      // No kill switch scan ran while the batch committed (they wait for commits): one from now
      // on misses its orders.
      const scans = this.#cancelOpenScans;
      this.#background_(reading.then((results) => {
        if (results !== null) this.#takeOver(results, decisions, scans);
      }));
      throw error;
    }
    if (answer === null) throw error;
    this.#log.info("a signal batch whose commit lost its answer was stored", {
      signals: decisions.length,
    });
    return answer;
  }

  /**
   * Reads the keys of `decisions` back, retrying with backoff while the
   * database cannot answer: the batch's results as stored when every key is
   * (the statement is atomic: it committed, or every signal was stored
   * before), null when one is not (it did not commit) or the engine stops.
   */
  async #readStored(decisions: readonly Decision[]): Promise<SignalInsertResult[] | null> {
    const keys = decisions.map(({ item }) => ({
      strategy: item.signal.strategy,
      id: item.signal.client_signal_id,
    }));
    const stopping = this.#stopping.signal;
    for (let attempt = 0; !stopping.aborted; attempt++) {
      try {
        return storedResults(decisions, await findSignalsByKeys(this.#sql, keys));
      } catch (error) {
        if (!isTransient(error)) {
          this.#log.error("could not read a signal batch back", { error: errorMessage(error) });
          return null;
        }
      }
      await this.#clock.sleep(this.#retryDelay(attempt), stopping).catch(() => {});
    }
    return null;
  }

  /**
   * What a batch read back after its caller gave up stored (`#readBackBatch`):
   * recorded as usual, except that an order tracked meanwhile (its signal
   * came again and took it over) or no longer pending is left to the path
   * that holds it. When a kill switch's `cancel_open` ran since `scans` (it
   * could not see these orders), the orders taken over are cancelled instead
   * of submitted.
   */
  #takeOver(
    results: readonly SignalInsertResult[],
    decisions: readonly Decision[],
    scans: number,
  ): void {
    if (!this.#running) return;
    this.#recorded(
      results.map((result) =>
        result.created && result.order !== null &&
          (this.#open.has(result.order.client_order_id) || result.order.status !== "pending")
          ? { ...result, created: false }
          : result
      ),
      decisions,
      scans === this.#cancelOpenScans ? null : this.#cancelOpenReason,
    );
  }

  /**
   * After a batch committed: the outcomes, open orders tracked, events
   * published, submits started — or, with `cancelReason` or while the kill
   * switch is on after a `cancel_open` (which could not see orders not
   * tracked yet), the open orders taken over cancelled instead (a new order
   * never reached a broker: cancelled here; one stored before may have, and
   * its broker is asked).
   */
  #recorded(
    results: readonly SignalInsertResult[],
    decisions: readonly Decision[],
    cancelReason: string | null = null,
  ): SignalOutcome[] {
    this.#stats.batches++;
    cancelReason ??= this.#kill.active ? this.#cancelOpenHeld : null;
    const outcomes: SignalOutcome[] = [];
    const toSubmit: Tracked[] = [];
    for (let i = 0; i < results.length; i++) {
      const result = results[i]!;
      const outcome = toOutcome(result);
      outcomes.push(outcome);
      this.#stats.signals++;
      if (outcome.duplicate) {
        this.#stats.duplicates++;
        // A commit whose answer was lost (the caller redelivers) left an order this engine
        // does not track: take it over; submitting by client order id is safe.
        if (
          outcome.status === "accepted" && isOpen(outcome.order.status) &&
          !this.#open.has(outcome.order.client_order_id) &&
          // Read before its close committed (a fill racing the read): nothing to take over.
          !this.#closedRecently.has(outcome.order.client_order_id)
        ) {
          const payload = outcome.signal.payload as { exchange?: unknown } | null;
          const exchange = typeof payload?.exchange === "string" &&
              (EXCHANGES as readonly string[]).includes(payload.exchange)
            ? payload.exchange
            : null;
          const tracked = this.#track(outcome.order, exchange);
          // Whoever stored it may have submitted it already.
          tracked.maybeAtBroker = true;
          if (outcome.order.status === "pending" || cancelReason !== null) toSubmit.push(tracked);
        }
        continue;
      }
      if (outcome.status === "accepted") {
        this.#stats.accepted++;
        const tracked = this.#track(outcome.order, decisions[i]!.exchange);
        toSubmit.push(tracked);
        this.#publishOrder(outcome.order, null, null);
      } else if (outcome.status === "rejected") {
        this.#stats.rejected++;
        this.#publishReject(outcome.signal, outcome.reasons);
        const failure = decisions[i]!.failure;
        if (failure !== undefined) void this.#alertFailedSignal(outcome.signal, failure);
      }
    }
    for (const tracked of toSubmit) {
      if (cancelReason === null) this.#startSubmit(tracked, false);
      else if (tracked.maybeAtBroker) {
        this.#background_(this.#cancelTakenOver(tracked, cancelReason));
      } else {
        this.#enqueue({
          kind: "local_cancel",
          coid: tracked.row.client_order_id,
          reason: cancelReason,
        });
      }
    }
    return outcomes;
  }

  /** Raises the critical alert of a signal recorded as rejected for `SignalInput.failure`. */
  async #alertFailedSignal(signal: SignalRow, failure: string): Promise<void> {
    const details = {
      signal_id: signal.id,
      strategy: signal.strategy,
      client_signal_id: signal.client_signal_id,
      error: failure,
    };
    this.#log.error("a signal that could not be processed was recorded as rejected", details);
    await this.#raiseCritical(
      "A signal could not be processed and was recorded as rejected (processing_failed)",
      details,
      `processing_failed:${signal.strategy}:${signal.client_signal_id}`,
    );
  }

  /** Raises a critical alert of the engine; one that cannot be stored is logged, never thrown. */
  async #raiseCritical(message: string, details: unknown, dedupeKey?: string): Promise<void> {
    try {
      await raiseAlert(this.#sql, {
        severity: "critical",
        source: EXECUTION_ALERT_SOURCE,
        message,
        details,
        ...(dedupeKey === undefined ? {} : { dedupe_key: dedupeKey }),
      }, { by: this.#by });
    } catch (error) {
      this.#log.error("could not raise an alert", { error: errorMessage(error) });
    }
  }

  #prepare(input: SignalInput): Prepared {
    const body = input.body;
    // A signal that failed every time is not read again (reading it may be what fails).
    const parsed: ReturnType<typeof parseSignal> = input.failure !== undefined
      ? { ok: false, reasons: [] }
      : parseSignal(body, input.strategy === undefined ? {} : { strategy: input.strategy });
    const raw = typeof body === "object" && body !== null && !Array.isArray(body)
      ? body as Record<string, unknown>
      : {};
    let strategy: string;
    let clientSignalId: string | undefined;
    let symbol: string | null = null;
    if (parsed.ok) {
      strategy = parsed.signal.strategy;
      clientSignalId = parsed.signal.id;
      symbol = parsed.signal.symbol;
    } else {
      strategy = typeof raw.strategy === "string" && STRATEGY_PATTERN.test(raw.strategy)
        ? raw.strategy
        : input.strategy !== undefined && STRATEGY_PATTERN.test(input.strategy)
        ? input.strategy
        : DEFAULT_SIGNAL_STRATEGY;
      if (typeof raw.id === "string" && SIGNAL_ID_PATTERN.test(raw.id)) clientSignalId = raw.id;
      if (
        typeof raw.symbol === "string" && raw.symbol.length <= 64 && storableText(raw.symbol)
      ) symbol = raw.symbol;
    }
    return {
      input,
      strategy,
      clientSignalId: clientSignalId ?? input.key ?? crypto.randomUUID(),
      symbol,
      payload: input.failure !== undefined ? failedPayload(body) : storablePayload(body),
      receivedAt: input.receivedAt ?? new Date(this.#clock.now()),
      parsed,
    };
  }

  /** The outcome of each prepared signal, checking risk with the batch's accepted orders counted. */
  #decide(prepared: readonly Prepared[], stored: ReadonlySet<string>): Decision[] {
    const now = this.#clock.now();
    const seen = new Set<string>();
    const extraQty = new Map<string, { buy: Decimal; sell: Decimal }>();
    let extraOpen = 0;
    const positions = new Map<string, Decimal>();
    const prices = new Map<string, { price: Decimal; exchange: Exchange } | null>();
    const maxAgeMs = this.#execution.max_price_age_ms;
    const marks = new Map<string, Decimal | null>();
    const markOf = (symbol: string) => {
      let mark = marks.get(symbol);
      if (mark === undefined) {
        // A position without a fresh price is valued at its newest price up to a few days old
        // (a weekend's close), not at cost.
        marks.set(
          symbol,
          mark = markPrice(this.#cache, symbol, maxAgeMs, now, {
            fallback_max_age_ms: DEFAULT_RISK_MARK_MAX_AGE_MS,
          }),
        );
      }
      return mark;
    };
    const gross = this.#state.exposure(markOf, { unapplied_fills: true }).gross;
    const realized = this.#state.realizedToday(now);
    const cash = this.#state.cashWithUnapplied();
    const positionOf = (symbol: string): Decimal => {
      let position = positions.get(symbol);
      if (position === undefined) {
        // Fills stored but not yet applied by the tracker count as applied.
        position = this.#state.position(symbol).qty.plus(this.#state.unappliedQty(symbol));
        positions.set(symbol, position);
      }
      return position;
    };
    // What the open orders of each symbol add to gross exposure at worst (`openExposureQty` at
    // the symbol's mark); kept current as the batch accepts orders. Per batch, only under a
    // gross exposure limit: one entry per symbol with open orders.
    const openGross = new Map<string, Decimal>();
    let openGrossTotal = ZERO;
    // Unfilled quantity per side: open at a broker, in batches committing, accepted in this one.
    const openOf = (symbol: string) => {
      const base = this.#openQty.get(symbol);
      const flying = this.#flyingQty.get(symbol);
      const extra = extraQty.get(symbol);
      return {
        buy: sum(base?.buy, flying?.buy, extra?.buy),
        sell: sum(base?.sell, flying?.sell, extra?.sell),
      };
    };
    const exposureOf = (symbol: string, fallback: Decimal | null): Decimal => {
      const open = openOf(symbol);
      const qty = openExposureQty(positionOf(symbol), open.buy, open.sell);
      if (qty.isZero()) return ZERO;
      const price = markOf(symbol) ?? this.#refPrices.get(symbol) ?? fallback;
      return price === null ? ZERO : qty.times(price);
    };
    // What each symbol's open orders would pay (buys) and bring in (sells) if all filled, at the
    // highest reference price of its orders (the highest they can fill at: a limit buy's limit, a
    // market buy's ask), else its mark, for numeric_range's cash after; kept current as the batch
    // accepts orders. One entry per symbol with open orders.
    const openCash = new Map<string, { buy: Decimal; sell: Decimal }>();
    let openBuyTotal = ZERO;
    let openSellTotal = ZERO;
    const cashOf = (symbol: string, fallback: Decimal | null) => {
      const open = openOf(symbol);
      const price = this.#refPrices.get(symbol) ?? fallback ?? markOf(symbol);
      return price === null
        ? { buy: ZERO, sell: ZERO }
        : { buy: open.buy.times(price), sell: open.sell.times(price) };
    };
    const noteOpenCash = (symbol: string, fallback: Decimal | null) => {
      const before = openCash.get(symbol);
      const value = cashOf(symbol, fallback);
      openBuyTotal = openBuyTotal.minus(before?.buy ?? ZERO).plus(value.buy);
      openSellTotal = openSellTotal.minus(before?.sell ?? ZERO).plus(value.sell);
      openCash.set(symbol, value);
    };
    const fillCosts = this.#fillCosts();
    const grossLimited = this.#limits.max_gross_exposure !== null;
    for (const symbol of new Set([...this.#openQty.keys(), ...this.#flyingQty.keys()])) {
      noteOpenCash(symbol, null);
      if (!grossLimited) continue;
      const value = exposureOf(symbol, null);
      if (value.isZero()) continue;
      openGross.set(symbol, value);
      openGrossTotal = openGrossTotal.plus(value);
    }
    return prepared.map((p): Decision => {
      const signal = {
        strategy: p.strategy,
        client_signal_id: p.clientSignalId,
        source: p.input.source,
        symbol: p.symbol,
        payload: p.payload,
        received_at: p.receivedAt,
      };
      const key = `${p.strategy}\u0000${p.clientSignalId}`;
      const duplicate = seen.has(key) || stored.has(key);
      seen.add(key);
      const failure = p.input.failure;
      if (failure !== undefined) {
        const reasons = [{ rule: "processing_failed", message: failure }];
        return {
          item: { signal, outcome: { status: "rejected", reasons } },
          exchange: null,
          counted: false,
          failure,
        };
      }
      if (!p.parsed.ok) {
        return {
          item: { signal, outcome: { status: "rejected", reasons: p.parsed.reasons } },
          exchange: null,
          counted: false,
        };
      }
      const s = p.parsed.signal;
      const brokerName = s.broker ?? this.#execution.default_broker;
      const reasons: RejectReason[] = [];
      const broker = this.#brokers.get(brokerName);
      if (broker === undefined) {
        reasons.push({
          path: "broker",
          message: `broker ${brokerName} is not enabled (enabled: ${
            [...this.#brokers.keys()].join(", ") || "none"
          })`,
        });
      } else if (broker.refusals !== undefined) {
        // What the broker would refuse is refused here, before any order exists.
        for (const refusal of broker.refusals(s)) reasons.push(refusal);
      }
      const priceKey = `${s.symbol}\u0000${s.exchange ?? ""}`;
      let priced = prices.get(priceKey);
      if (priced === undefined) {
        priced = this.#lastPrice(s.symbol, s.exchange, now);
        prices.set(priceKey, priced);
      }
      const open = openOf(s.symbol);
      const ownOpenGross = openGross.get(s.symbol);
      const ownOpenCash = openCash.get(s.symbol);
      const context: RiskContext = {
        limits: this.#limits,
        position_qty: positionOf(s.symbol),
        open_buy_qty: open.buy,
        open_sell_qty: open.sell,
        open_orders: this.#open.size + this.#flyingOrders + extraOpen,
        gross_exposure: gross,
        open_gross_exposure: ownOpenGross === undefined
          ? openGrossTotal
          : openGrossTotal.minus(ownOpenGross),
        last_price: priced?.price ?? null,
        realized_pnl_today: realized,
        cash,
        open_buy_notional: openBuyTotal.minus(ownOpenCash?.buy ?? ZERO),
        open_sell_notional: openSellTotal.minus(ownOpenCash?.sell ?? ZERO),
        fill_costs: fillCosts,
        kill_switch: this.#kill.active,
        now,
      };
      // The symbol's open orders at the highest price they can fill at (a buy resting at a
      // higher limit than this order's pays its limit); unknown, at this order's.
      const ownPrice = this.#refPrices.get(s.symbol);
      if (ownPrice !== undefined) {
        context.symbol_open_buy_notional = open.buy.times(ownPrice);
        context.symbol_open_sell_notional = open.sell.times(ownPrice);
      }
      // A market or stop buy fills at the ask, a sell at the bid, which can be above the mid.
      const touch = fillsAtTouch(s) ? this.#touch(s.symbol, s.exchange, now) : undefined;
      if (touch !== undefined) context.touch = touch;
      if (grossLimited) {
        // The symbol's worst position at its mark, as every other symbol's open orders are.
        const mark = markOf(s.symbol);
        if (mark !== null) context.mark_price = mark;
      }
      const marketClock = this.#marketClockFor(brokerName, now);
      if (marketClock !== undefined) context.market_clock = marketClock;
      if (priced === null && s.type === "market") {
        const age = this.#newestPriceAgeMs(s.symbol, s.exchange, now);
        if (age !== null) context.stale_price = { age_ms: age, max_age_ms: maxAgeMs };
      }
      // The exchange overrides apply to the venue pricing the order when the signal names none.
      const exchange = this.#riskExchange(s, priced);
      const order = exchange === undefined || exchange === s.exchange ? s : { ...s, exchange };
      for (const violation of checkRisk(order, context)) reasons.push(violation);
      if (reasons.length > 0) {
        return {
          item: { signal, outcome: { status: "rejected", reasons } },
          exchange: null,
          counted: false,
        };
      }
      if (!duplicate) {
        extraOpen++;
        const sums = extraQty.get(s.symbol) ?? { buy: ZERO, sell: ZERO };
        if (s.side === "buy") sums.buy = sums.buy.plus(s.qty);
        else sums.sell = sums.sell.plus(s.qty);
        extraQty.set(s.symbol, sums);
        const checked = referencePrice(s, priced?.price ?? null);
        // The price its fill was checked at: a market buy's ask, counted so in later checks.
        const reference = checked === null ? null : cashPrice(s, checked, touch);
        if (reference !== null) this.#noteRefPrice(s.symbol, reference);
        noteOpenCash(s.symbol, reference);
        if (grossLimited) {
          const value = exposureOf(s.symbol, reference);
          openGrossTotal = openGrossTotal.minus(ownOpenGross ?? ZERO).plus(value);
          openGross.set(s.symbol, value);
        }
      }
      return {
        item: { signal, outcome: { status: "accepted", order: newOrderOf(s, brokerName) } },
        // The broker gets the venue the signal names, or none (the paper broker then prices it
        // on any venue quoting the side it needs); the venue pricing it served risk only.
        exchange: s.exchange ?? null,
        counted: !duplicate,
      };
    });
  }

  /**
   * The fee and slippage bound numeric_range allows for: the largest over
   * the enabled brokers (an open order may be at any of them), each broker's
   * own or {@linkcode DEFAULT_FILL_COST_BOUND}.
   */
  #fillCosts(): FillCostBound {
    let bps = ZERO;
    let min = ZERO;
    for (const broker of this.#brokers.values()) {
      const costs = broker.fillCosts ?? DEFAULT_FILL_COST_BOUND;
      if (costs.bps.gt(bps)) bps = costs.bps;
      if (costs.min.gt(min)) min = costs.min;
    }
    return { bps, min };
  }

  /**
   * The highest fresh best bid and ask of `symbol` over the venues that may
   * fill an order (`exchange`'s, else every venue's): where the paper broker
   * fills a market or stop order, or a marketable limit. Null sides when none is fresh.
   */
  #touch(
    symbol: string,
    exchange: Exchange | undefined,
    nowMs: number,
  ): { bid: Decimal | null; ask: Decimal | null } {
    let bid: Decimal | null = null;
    let ask: Decimal | null = null;
    const maxAgeMs = this.#execution.max_price_age_ms;
    for (const venue of exchange === undefined ? EXCHANGES : [exchange]) {
      const quote = this.#cache.bestBidAsk(venue, symbol, maxAgeMs, nowMs);
      if (quote === null) continue;
      const b = positiveDecimal(quote.bid_price);
      const a = positiveDecimal(quote.ask_price);
      if (b !== null && (bid === null || b.gt(bid))) bid = b;
      if (a !== null && (ask === null || a.gt(ask))) ask = a;
    }
    return { bid, ask };
  }

  /** Remembers `price` as the symbol's reference price when it is the highest seen. */
  #noteRefPrice(symbol: string, price: Decimal): void {
    const known = this.#refPrices.get(symbol);
    if (known === undefined || price.gt(known)) this.#refPrices.set(symbol, price);
  }

  /**
   * Whether a signal of `decisions` was refused for a rule that counts open
   * orders (max_open_orders, max_position, max_gross_exposure) while orders
   * that may turn out to be duplicates were counted: an accepted order of the
   * batch before it, or orders of batches still committing.
   */
  #roomTaken(decisions: readonly Decision[]): boolean {
    let counted = this.#flyingOrders > 0;
    for (const { item, counted: accepted } of decisions) {
      if (accepted) counted = true;
      else if (counted && item.outcome.status === "rejected") {
        for (const reason of item.outcome.reasons as readonly RejectReason[]) {
          if ("rule" in reason && ROOM_RULES.has(reason.rule)) return true;
        }
      }
    }
    return false;
  }

  /** Whether an accepted order names a symbol not known to be in the `symbols` table. */
  #needsSymbols(decisions: readonly Decision[]): boolean {
    for (const { item } of decisions) {
      if (item.outcome.status === "accepted" && !this.#symbols.has(item.outcome.order.symbol)) {
        return true;
      }
    }
    return false;
  }

  /**
   * Creates, in `tx`, the `symbols` rows the accepted orders of `decisions`
   * need; returns the symbols checked, to remember once `tx` committed (not
   * before: after a rollback a remembered symbol would have no row, and every
   * later order for it would break its foreign key).
   */
  async #ensureSymbols(tx: TransactionSql, decisions: readonly Decision[]): Promise<string[]> {
    const missing = new Map<string, string | null>();
    for (const { item, exchange } of decisions) {
      if (item.outcome.status !== "accepted") continue;
      const symbol = item.outcome.order.symbol;
      if (!this.#symbols.has(symbol)) missing.set(symbol, exchange);
    }
    if (missing.size === 0) return [];
    const create: Array<Parameters<typeof upsertSymbols>[1][number]> = [];
    for (const [symbol, exchange] of missing) {
      try {
        await getSymbol(tx, symbol);
      } catch (error) {
        if (!(error instanceof NotFoundError)) throw error;
        const [base, quote] = symbol.includes("-") ? symbol.split("-") : [null, null];
        create.push({
          symbol,
          asset_class: defaultAssetClass(symbol),
          exchange,
          base_asset: base ?? null,
          quote_asset: quote ?? null,
        });
      }
    }
    if (create.length > 0) await upsertSymbols(tx, create, { by: this.#by });
    return [...missing.keys()];
  }

  /**
   * The exchange whose risk overrides apply to `signal`: the one it names,
   * else the venue of the fresh price that prices it (`priced`, looked up
   * when undefined), else the venue of the newest price seen, fresh or not;
   * undefined when no price of its symbol was ever seen. So an order priced
   * from Alpaca's data keeps to `alpaca`'s overrides (its market hours) whether
   * or not it says so, as the engine records Alpaca as its exchange.
   */
  #riskExchange(
    signal: { symbol: string; exchange?: Exchange | undefined },
    priced: { exchange: Exchange } | null | undefined,
    nowMs: number = this.#clock.now(),
  ): Exchange | undefined {
    if (signal.exchange !== undefined) return signal.exchange;
    if (Object.keys(this.#limits.exchanges).length === 0) return undefined; // no override to pick
    const venue = (priced === undefined ? this.#lastPrice(signal.symbol, undefined, nowMs) : priced)
      ?.exchange;
    if (venue !== undefined) return venue;
    let newest: { ts: number; exchange: Exchange } | undefined;
    for (const entry of this.#cache.latest(signal.symbol)?.exchanges ?? []) {
      const ts = Math.max(entry.trade?.ts_local ?? -Infinity, entry.quote?.ts_local ?? -Infinity);
      if (ts > -Infinity && (newest === undefined || ts > newest.ts)) {
        newest = { ts, exchange: entry.exchange };
      }
    }
    return newest?.exchange;
  }

  /** How old the newest trade or quote of `symbol` is, fresh or not, in ms; null when none was seen. */
  #newestPriceAgeMs(symbol: string, exchange: Exchange | undefined, nowMs: number): number | null {
    const snapshot = this.#cache.latest(symbol, exchange);
    let newestUs = -Infinity;
    for (const entry of snapshot?.exchanges ?? []) {
      newestUs = Math.max(
        newestUs,
        entry.trade?.ts_local ?? -Infinity,
        entry.quote?.ts_local ?? -Infinity,
      );
    }
    return newestUs === -Infinity ? null : Math.max(0, nowMs - newestUs / 1000);
  }

  /** The newest fresh price of `symbol` (trade, or the mid of the best bid/ask) and its venue. */
  #lastPrice(
    symbol: string,
    exchange: Exchange | undefined,
    nowMs: number,
  ): { price: Decimal; exchange: Exchange } | null {
    const snapshot = this.#cache.latest(symbol, exchange);
    if (snapshot === null) return null;
    const oldestUs = (nowMs - this.#execution.max_price_age_ms) * 1000;
    let best: { text: string | [string, string]; ts: number; exchange: Exchange } | null = null;
    for (const entry of snapshot.exchanges) {
      const trade = entry.trade;
      if (
        trade !== null && trade.ts_local >= oldestUs && (best === null || trade.ts_local > best.ts)
      ) {
        best = { text: trade.price, ts: trade.ts_local, exchange: entry.exchange };
      }
      const quote = entry.quote;
      if (
        quote !== null && quote.ts_local >= oldestUs && (best === null || quote.ts_local > best.ts)
      ) {
        best = {
          text: [quote.bid_price, quote.ask_price],
          ts: quote.ts_local,
          exchange: entry.exchange,
        };
      }
    }
    if (best === null) return null;
    try {
      let price: Decimal;
      if (typeof best.text === "string") {
        price = parseDecimal(best.text);
      } else {
        const bid = parseDecimal(best.text[0]);
        const ask = parseDecimal(best.text[1]);
        price = bid.gt(0) && ask.gt(0) ? bid.plus(ask).dividedBy(2) : bid.gt(0) ? bid : ask;
      }
      return price.gt(0) ? { price, exchange: best.exchange } : null;
    } catch {
      return null;
    }
  }

  /**
   * Fetches the market clock of brokers that have one, for batches that need
   * it (an order the us_equity market-hours rule applies to; other batches
   * do not wait). A batch waits for a fetch at most `market_clock_wait_ms`
   * after it started — one in flight already is not started again — and the
   * built-in calendar decides for it after that; the fetch goes on in the
   * background and fills the cache. After a failed fetch the broker's clock
   * is not asked again for `market_clock_retry_ms`.
   */
  async #refreshMarketClocks(prepared: readonly Prepared[]): Promise<void> {
    const now = this.#clock.now();
    const wanted = new Set<string>();
    for (const p of prepared) {
      if (!p.parsed.ok) continue;
      const s = p.parsed.signal;
      const name = s.broker ?? this.#execution.default_broker;
      const exchange = this.#riskExchange(s, undefined, now);
      if (limitsFor(this.#limits, s.symbol, exchange).market_hours !== "us_equity") continue;
      const cached = this.#marketClocks.get(name);
      if (cached !== undefined && now - cached.at < this.#clockTtlMs) continue;
      wanted.add(name);
    }
    const waits: Promise<void>[] = [];
    let waitUntil = now;
    for (const name of wanted) {
      const broker = this.#brokers.get(name) as (Broker & { clock?: unknown }) | undefined;
      if (broker === undefined || typeof broker.clock !== "function") continue;
      let fetch = this.#clockFetches.get(name);
      if (fetch !== undefined && "failedAt" in fetch) {
        if (now - fetch.failedAt < this.#clockRetryMs) continue;
        fetch = undefined;
      }
      if (fetch === undefined) {
        const clock = broker.clock as () => Promise<unknown>;
        fetch = { fetching: this.#fetchMarketClock(name, () => clock.call(broker)), since: now };
        this.#clockFetches.set(name, fetch);
      }
      waitUntil = Math.max(waitUntil, fetch.since + this.#clockWaitMs);
      waits.push(fetch.fetching);
    }
    if (waits.length === 0 || waitUntil <= now) return;
    const timer = new AbortController();
    try {
      await Promise.race([
        Promise.all(waits),
        this.#clock.sleep(waitUntil - now, timer.signal).catch(() => {}),
      ]);
    } finally {
      timer.abort();
    }
  }

  /**
   * Fetches `name`'s market clock with `fetch` into the cache (never
   * rejects); a failure drops the cached answer and is remembered, so that
   * the calendar decides until a fetch succeeds.
   */
  async #fetchMarketClock(name: string, fetch: () => Promise<unknown>): Promise<void> {
    try {
      const clock = await fetch();
      const c = clock as { is_open?: unknown; next_open?: unknown; next_close?: unknown };
      if (
        typeof c.is_open === "boolean" && typeof c.next_open === "number" &&
        typeof c.next_close === "number"
      ) {
        this.#marketClocks.set(name, {
          at: this.#clock.now(),
          clock: { open: c.is_open, next_open: c.next_open, next_close: c.next_close },
        });
      }
      this.#clockFetches.delete(name);
    } catch (error) {
      // An expired answer is not kept: rolled forward past its next transitions it would say
      // "closed" for the whole of a trading day. The calendar decides until a fetch succeeds.
      this.#marketClocks.delete(name);
      this.#clockFetches.set(name, { failedAt: this.#clock.now() });
      this.#log.warn("broker market clock unavailable; using the built-in NYSE calendar", {
        broker: name,
        error: errorMessage(error),
      });
    }
  }

  /**
   * The broker's market clock at `now`, from the cached answer; undefined
   * without one, or once `now` is past both transitions it names (it cannot
   * tell what follows them: the built-in calendar decides).
   */
  #marketClockFor(broker: string, now: number): UsEquityMarketClock | undefined {
    const cached = this.#marketClocks.get(broker);
    if (cached === undefined) return undefined;
    const { open, next_open, next_close } = cached.clock;
    if (next_open === undefined || next_close === undefined) return cached.clock;
    if (now >= Math.max(next_open, next_close)) return undefined;
    // Roll the cached answer forward: open until the close, closed until the next open.
    const isOpen = open ? now < next_close : now >= next_open && now < next_close;
    return isOpen
      ? { open: true, next_close }
      : { open: false, reason: "closed (broker clock)", next_open };
  }

  #publishReject(signal: SignalRow, reasons: RejectReason[]): void {
    const event: SignalRejectEvent = {
      signal_id: signal.id,
      strategy: signal.strategy,
      client_signal_id: signal.client_signal_id,
      reasons,
      received_at: signal.received_at.toISOString(),
    };
    this.#safePublish(signalsRejectedSubject(this.#names), event);
  }

  // -- tracking open orders ---------------------------------------------------

  /**
   * Tracks `row` as open; an order tracked already is updated in place (its
   * submit loop holds it). `notional` is Σ qty × price of its fills when
   * known (else kept while the filled quantity is, or taken from the row).
   */
  #track(row: Order, exchange: string | null, notional: Decimal | null = null): Tracked {
    let tracked = this.#open.get(row.client_order_id);
    if (tracked !== undefined) {
      this.#adjustOpenQty(tracked, -1);
      const filled = fromDb(row.filled_qty);
      tracked.notional = notional ??
        (filled.eq(tracked.filled) ? tracked.notional : rowNotional(row, filled));
      tracked.row = row;
      tracked.qty = fromDb(row.qty);
      tracked.filled = filled;
      if (exchange !== null) tracked.exchange = exchange;
    } else {
      const filled = fromDb(row.filled_qty);
      tracked = {
        row,
        qty: fromDb(row.qty),
        filled,
        notional: notional ?? rowNotional(row, filled),
        exchange,
        cancelRequested: false,
        cancelReason: null,
        submitting: false,
        maybeAtBroker: false,
      };
    }
    this.#open.set(row.client_order_id, tracked);
    this.#openById.set(row.id, row.client_order_id);
    this.#adjustOpenQty(tracked, 1);
    const own = row.limit_price ?? row.stop_price;
    if (own !== null && !this.#refPrices.has(row.symbol)) {
      this.#noteRefPrice(row.symbol, fromDb(own));
    }
    this.#state.setOpenOrder(row.client_order_id, {
      symbol: row.symbol,
      side: row.side,
      remaining_qty: tracked.qty.minus(tracked.filled),
    });
    return tracked;
  }

  #untrack(coid: string): void {
    const tracked = this.#open.get(coid);
    if (tracked === undefined) return;
    this.#adjustOpenQty(tracked, -1);
    this.#open.delete(coid);
    this.#openById.delete(tracked.row.id);
    this.#state.removeOpenOrder(coid);
    // Remembered a while: a batch read back (or redelivered) may still show it open.
    this.#closedRecently.add(coid);
    if (this.#closedRecently.size > CLOSED_RECENTLY_MAX) this.#closedRecently.deleteOldest();
  }

  #adjustOpenQty(tracked: Tracked, sign: 1 | -1): void {
    const symbol = tracked.row.symbol;
    const sums = this.#openQty.get(symbol) ?? { buy: ZERO, sell: ZERO };
    const remaining = tracked.filled.isZero() ? tracked.qty : tracked.qty.minus(tracked.filled);
    if (tracked.row.side === "buy") {
      sums.buy = sign === 1 ? sums.buy.plus(remaining) : sums.buy.minus(remaining);
    } else sums.sell = sign === 1 ? sums.sell.plus(remaining) : sums.sell.minus(remaining);
    if (sums.buy.isZero() && sums.sell.isZero()) this.#openQty.delete(symbol);
    else this.#openQty.set(symbol, sums);
  }

  /** The venue of each order's signal (`payload.exchange`), for orders loaded from the database. */
  async #signalExchanges(orders: readonly Order[]): Promise<Map<string, string>> {
    const ids = orders.map((o) => o.signal_id).filter((id): id is string => id !== null);
    const out = new Map<string, string>();
    if (ids.length === 0) return out;
    const rows = await this.#sql<{ order_id: string; exchange: string | null }[]>`
      SELECT o.id AS order_id, s.payload->>'exchange' AS exchange
      FROM orders o JOIN signals s ON s.id = o.signal_id
      WHERE o.signal_id = ANY (${ids}::bigint[])`;
    for (const row of rows) {
      if (row.exchange !== null && (EXCHANGES as readonly string[]).includes(row.exchange)) {
        out.set(row.order_id, row.exchange);
      }
    }
    return out;
  }

  // -- submitting -------------------------------------------------------------

  #limiter(broker: string): Limiter {
    let limiter = this.#limiters.get(broker);
    if (limiter === undefined) this.#limiters.set(broker, limiter = new Limiter(this.#concurrency));
    return limiter;
  }

  /** Starts the submit loop of `tracked` unless one runs; `remainingOnly` resubmits what is left. */
  #startSubmit(tracked: Tracked, remainingOnly: boolean): void {
    if (tracked.submitting) return;
    tracked.submitting = true;
    this.#background_(this.#submitLoop(tracked, remainingOnly));
  }

  /**
   * Submits `tracked` until the broker took or refused it, the order moved on
   * (the broker's events show it has it) or the engine stops. `submitting`
   * is cleared synchronously with the last look at `cancelRequested`, so a
   * cancel request is either seen here or goes to the broker itself; one
   * seen here is sent once the broker has the order (`#cancelAsked`).
   */
  async #submitLoop(tracked: Tracked, remainingOnly: boolean): Promise<void> {
    const row = tracked.row;
    const coid = row.client_order_id;
    const broker = this.#brokers.get(row.broker);
    if (broker === undefined) {
      tracked.submitting = false;
      this.#enqueue({ kind: "refused", coid, reason: `broker ${row.broker} is not enabled` });
      return;
    }
    const request = this.#request(tracked, remainingOnly);
    const signal = this.#halt.signal;
    const initial = tracked.row;
    for (let attempt = 0;; attempt++) {
      if (signal.aborted || this.#open.get(coid) !== tracked) {
        tracked.submitting = false;
        return;
      }
      if (tracked.row !== initial) {
        // Any stored change came from the broker: it has the order (an answer lost on the way back).
        tracked.submitting = false;
        if (tracked.cancelRequested) await this.#cancelAsked(tracked, broker);
        return;
      }
      // Sent after its session it would be a day order of another session (see dayOrderEnd).
      const dayOver = !tracked.cancelRequested && initial.time_in_force === "day" &&
        this.#clock.now() >= dayOrderEnd(initial);
      if (tracked.cancelRequested || dayOver) {
        let known: BrokerOrderState | null = null;
        if (tracked.maybeAtBroker) {
          // An attempt may have reached the broker (its answer lost): closing it here could drop
          // the broker's fills (a cancelled or expired order takes none). Ask the broker first.
          try {
            known = await this.#limiter(row.broker).run(() => {
              signal.throwIfAborted();
              return broker.getOrder(coid);
            });
          } catch (error) {
            if (signal.aborted) continue;
            this.#log.warn(
              dayOver
                ? "could not look up a day order whose session is over; retrying"
                : "could not look up an order to cancel; retrying",
              { client_order_id: coid, error: errorMessage(error) },
            );
            await this.#clock.sleep(this.#retryDelay(attempt), signal).catch(() => {});
            continue;
          }
          if (this.#open.get(coid) !== tracked || tracked.row !== initial) continue;
        }
        tracked.submitting = false;
        if (dayOver) {
          await this.#closeDayOver(tracked, broker, known);
          return;
        }
        if (known === null) {
          if (tracked.row.status === "pending") {
            this.#enqueue({
              kind: "local_cancel",
              coid,
              reason: "cancelled before it was submitted",
            });
          } else {
            // The remainder of a partly filled order the broker had lost: nothing is left there.
            this.#enqueue({
              kind: "event",
              broker: row.broker,
              event: {
                type: "cancelled",
                client_order_id: coid,
                broker_order_id: tracked.row.broker_order_id,
                reason: "cancelled before its remainder was submitted again",
                at_ms: this.#clock.now(),
              },
            });
          }
          return;
        }
        // The broker has it: record it as submitted and cancel it there; its events tell the rest.
        this.#enqueue({ kind: "submitted", coid, broker_order_id: known.broker_order_id });
        await this.#cancelAsked(tracked, broker);
        return;
      }
      try {
        const { broker_order_id } = await this.#limiter(row.broker).run(() => {
          signal.throwIfAborted();
          return broker.submit(request);
        });
        this.#stats.submitted++;
        tracked.submitting = false;
        this.#enqueue({ kind: "submitted", coid, broker_order_id });
        if (tracked.cancelRequested) await this.#cancelAsked(tracked, broker);
        return;
      } catch (error) {
        if (error instanceof BrokerRejectedError) {
          tracked.submitting = false;
          this.#enqueue({ kind: "refused", coid, reason: error.reason });
          return;
        }
        this.#stats.submit_retries++;
        // Whether the request reached the broker is unknown.
        tracked.maybeAtBroker = true;
        const delayMs = this.#retryDelay(attempt);
        if (attempt === 0 || attempt % 10 === 0) {
          this.#log.warn("broker unavailable; the order stays pending and is retried", {
            client_order_id: coid,
            broker: row.broker,
            attempt: attempt + 1,
            retry_in_ms: delayMs,
            error: errorMessage(error),
          });
        }
        await this.#clock.sleep(delayMs, signal).catch(() => {});
      }
    }
  }

  /**
   * Closes `tracked`, a day order whose session ended before a submit got
   * through, instead of submitting it. When an attempt reached the broker
   * (`known`, its view of the order), that view is caught up as
   * reconciliation does — the broker's fills and status — and an order still
   * open there is cancelled there (taken after the close, it would trade in
   * the next session); else a `pending` order is cancelled here (it never
   * reached a broker) and the remainder of a partly filled one expires.
   */
  async #closeDayOver(
    tracked: Tracked,
    broker: Broker,
    known: BrokerOrderState | null,
  ): Promise<void> {
    const row = tracked.row;
    const coid = row.client_order_id;
    const now = this.#clock.now();
    this.#log.warn("a day order's session ended before it could be submitted: not sent", {
      client_order_id: coid,
      broker: row.broker,
      at_broker: known?.status ?? null,
    });
    if (known !== null) {
      this.#enqueue({ kind: "catch_up", broker: row.broker, coid, state: known, at_ms: now });
      if (known.status === "accepted" || known.status === "partially_filled") {
        tracked.cancelReason = "day order's session ended before its submit was confirmed";
        await this.#cancelAsked(tracked, broker);
      }
    } else if (row.status === "pending") {
      this.#enqueue({
        kind: "local_cancel",
        coid,
        reason: "day order's session ended before it could be submitted: not sent",
      });
    } else {
      this.#enqueue({
        kind: "event",
        broker: row.broker,
        event: {
          type: "expired",
          client_order_id: coid,
          broker_order_id: row.broker_order_id,
          reason: "day order's session ended before its remainder could be submitted again",
          at_ms: now,
        },
      });
    }
  }

  /** The backoff delay before submit retry `attempt` (0-based), in ms. */
  #retryDelay(attempt: number): number {
    return backoffDelay(Math.min(attempt, 30), {
      initialMs: this.#retryInitialMs,
      maxMs: this.#retryMaxMs,
      random: this.#random,
    });
  }

  #request(tracked: Tracked, remainingOnly: boolean): BrokerOrderRequest {
    const row = tracked.row;
    return {
      client_order_id: row.client_order_id,
      symbol: row.symbol,
      side: row.side,
      type: row.type,
      time_in_force: row.time_in_force,
      qty: remainingOnly ? tracked.qty.minus(tracked.filled) : tracked.qty,
      limit_price: row.limit_price === null ? null : fromDb(row.limit_price),
      stop_price: row.stop_price === null ? null : fromDb(row.stop_price),
      exchange: tracked.exchange,
    };
  }

  /**
   * Reconciles `broker`'s open orders after its event stream came back (the
   * events of the gap are not replayed): one run at a time per broker; a
   * reconnect during a run makes one more run after it.
   */
  #reconcileAfterReconnect(broker: string): void {
    let state = this.#reconnects.get(broker);
    if (state === undefined) this.#reconnects.set(broker, state = { running: false, again: false });
    if (state.running) {
      state.again = true;
      return;
    }
    state.running = true;
    const run = state;
    this.#background_((async () => {
      try {
        do {
          run.again = false;
          if (!this.#running) return;
          try {
            const report = await this.reconcile({ broker });
            this.#log.info("reconciled after the broker's stream came back", { broker, ...report });
          } catch (error) {
            if (!this.#running) return;
            this.#log.error("reconciliation after a reconnect failed", {
              broker,
              error: errorMessage(error),
            });
          }
        } while (run.again);
      } finally {
        run.running = false;
      }
    })());
  }

  #background_(work: Promise<unknown>): void {
    const tracked = work.catch((error) => {
      this.#log.error("execution background task failed", { error });
    });
    this.#background.add(tracked);
    tracked.finally(() => this.#background.delete(tracked));
  }

  // -- the writer queue -------------------------------------------------------

  #enqueue(update: Update): void {
    const coid = coidOf(update);
    const lane = this.#lanes[laneOf(coid, this.#lanes.length)]!;
    lane.updates.push(update);
    if (lane.draining === null) {
      lane.draining = this.#drain(lane).finally(() => {
        lane.draining = null;
      });
    }
  }

  async #drain(lane: { updates: Update[] }): Promise<void> {
    while (lane.updates.length > 0) {
      // Before a batch that holds a submit, wait a macrotask: the broker's events for it (the
      // paper broker emits them from a `setImmediate` scheduled before `submit` resolved, so
      // it runs first) then share the transaction that stores the submit, and the order is
      // written once, not as submitted and then again as filled. Also between batches: in a
      // burst, the orders submitted while a statement ran would otherwise go without their
      // fills. `setImmediate`, not `setTimeout(0)`: no timer delay (~1–3 ms). Other updates
      // (a broker's stream) are stored at once.
      if (lane.updates.some((update) => update.kind === "submitted")) {
        await new Promise((resolve) => setImmediate(resolve));
      }
      const batch = takeKeyedBatch(lane.updates, this.#eventBatchMax, coidOf);
      if (!await this.#applyWithRetry(batch)) {
        // Stopping: what is not stored is recovered by the next start's reconciliation.
        lane.updates.length = 0;
        return;
      }
    }
  }

  /**
   * Applies `batch`, retrying with backoff while the database is unreachable
   * or busy. A batch failing for another reason (bad data from a broker) is
   * applied one update at a time, and an update failing alone is dropped
   * with an alert, so one bad event never blocks the others. Returns false
   * when the engine stopped first.
   */
  async #applyWithRetry(batch: readonly Update[]): Promise<boolean> {
    for (let attempt = 1;; attempt++) {
      try {
        await this.#applyUpdates(batch);
        return true;
      } catch (error) {
        if (!isTransient(error)) {
          if (batch.length > 1) {
            for (const update of batch) {
              if (!await this.#applyWithRetry([update])) return false;
            }
            return true;
          }
          await this.#dropUpdate(batch[0]!, error);
          return true;
        }
        const delayMs = backoffDelay(Math.min(attempt - 1, 30), {
          initialMs: this.#retryInitialMs,
          maxMs: this.#retryMaxMs,
          random: this.#random,
        });
        this.#log.error("could not store broker events; retrying", {
          updates: batch.length,
          attempt,
          retry_in_ms: delayMs,
          error,
        });
        try {
          await this.#clock.sleep(delayMs, this.#halt.signal);
        } catch {
          return false;
        }
      }
    }
  }

  async #dropUpdate(update: Update, error: unknown): Promise<void> {
    this.#stats.dropped_updates++;
    const details = { update: describeUpdate(update), error: errorMessage(error) };
    this.#log.error("a broker update cannot be stored; dropped", details);
    await this.#raiseCritical("A broker update could not be stored and was dropped", details);
  }

  /**
   * What the broker's cumulative quantities make of `batch`, in order, order
   * by order, from what each order's stored fills add up to: a
   * reconciliation's catch-up becomes the events that bring the order to the
   * broker's state (a fill for what is still missing); a final status whose
   * `filled_qty` is more than is counted (fills made during a stream gap) is
   * preceded by a fill for the rest, like a catch-up's; a fill whose
   * quantity the broker did not say (`qty_derived`) counts `cum_qty` minus
   * what is counted (priced by {@linkcode derivedPrice}); a fill whose
   * cumulative quantity (`cum_qty`) says it is already counted — a catch-up
   * fill stood in for it, not knowing its id — is dropped, or trimmed to the
   * part not yet counted; one whose `cum_qty` shows executions before it
   * that are not counted is recorded and its order looked up
   * (`#missedBefore`), and a catch-up read before such a fill — its filled
   * quantity above what is counted and below that fill's `cum_qty` — is
   * dropped and the order looked up again, not counted from a view older
   * than the fill. Fills without `cum_qty` pass as they are, and so does
   * every update of an order none of this concerns (the usual case: nothing
   * to do).
   */
  #settle(
    batch: readonly Update[],
    orders: ReadonlyMap<string, Order>,
    notionals: ReadonlyMap<string, Decimal>,
  ): readonly Update[] {
    const caughtUp = this.#caughtUp;
    let checked: Set<string> | null = null;
    for (const update of batch) {
      if (needsCount(update)) (checked ??= new Set()).add(coidOf(update));
    }
    if (checked === null && caughtUp.size === 0) return batch;
    // Orders caught up before, or to count in this batch (looked up, not copied: up to MAX_CAUGHT_UP).
    const watched = (coid: string) => caughtUp.has(coid) || checked?.has(coid) === true;
    const sums = new Map<string, { filled: Decimal; value: Decimal }>();
    const sumOf = (coid: string) => {
      let sum = sums.get(coid);
      if (sum === undefined) {
        const row = orders.get(coid);
        if (row === undefined) return null;
        sums.set(coid, sum = counted(row, notionals.get(coid)));
      }
      return sum;
    };
    const settled: Update[] = [];
    for (const update of batch) {
      if (!watched(coidOf(update))) {
        settled.push(update);
        continue;
      }
      if (update.kind === "catch_up") {
        const row = orders.get(update.coid);
        const sum = sumOf(update.coid);
        if (row === undefined || sum === null) continue;
        const shown = this.#shownFilled.get(update.coid);
        if (
          shown !== undefined && update.state.filled_qty.lt(shown) &&
          update.state.filled_qty.gt(sum.filled)
        ) {
          // Read before a fill counted since: the fills it would add are partly that fill's.
          this.#log.warn(
            "a reconciliation answer is older than a fill counted since; looked up again",
            {
              client_order_id: update.coid,
              broker_filled_qty: toJson(update.state.filled_qty),
              shown_filled_qty: toJson(shown),
              filled_qty: toJson(sum.filled),
            },
          );
          this.#lookUpAgain(update.coid);
          continue;
        }
        for (const event of catchUpEvents(row, sum, update.state, update.at_ms)) {
          if (event.type === "fill") this.#caughtUpFill(update.coid, sum, event);
          settled.push({ kind: "event", broker: update.broker, event });
        }
        continue;
      }
      if (update.kind !== "event") {
        settled.push(update);
        continue;
      }
      if (update.event.type !== "fill") {
        const final = update.event;
        const row = orders.get(final.client_order_id);
        const sum = sumOf(final.client_order_id);
        if (
          final.type !== "accepted" && final.filled_qty !== undefined && row !== undefined &&
          sum !== null
        ) {
          const fill = missedFill(row.client_order_id, sum, {
            broker_order_id: final.broker_order_id ?? row.broker_order_id ?? "",
            filled_qty: final.filled_qty,
            avg_fill_price: final.avg_fill_price ?? null,
          }, final.at_ms);
          if (fill !== null) {
            this.#log.warn("a final broker status counts fills the engine missed; recording them", {
              client_order_id: final.client_order_id,
              status: final.type,
              broker_filled_qty: toJson(final.filled_qty),
              filled_qty: toJson(sum.filled),
              fill_id: fill.fill_id,
            });
            this.#caughtUpFill(row.client_order_id, sum, fill);
            settled.push({ kind: "event", broker: update.broker, event: fill });
          }
        }
        settled.push(update);
        continue;
      }
      let event = update.event;
      const sum = sumOf(event.client_order_id);
      if (sum !== null && event.qty_derived === true && event.cum_qty !== undefined) {
        // The broker did not say this execution's quantity: what its cumulative quantity adds.
        const qty = event.cum_qty.minus(sum.filled);
        if (!qty.gt(0)) {
          this.#countedBefore(event, event.cum_qty, sum.filled);
          continue;
        }
        if (!qty.eq(event.qty)) event = { ...event, qty, price: derivedPrice(event, qty, sum) };
      }
      if (sum !== null && event.cum_qty !== undefined) {
        // The part of this fill the order's fills already count.
        const known = sum.filled.minus(event.cum_qty.minus(event.qty));
        if (known.lt(0)) this.#missedBefore(event, known.negated(), sum.filled);
        if (known.gte(event.qty)) {
          this.#countedBefore(event, event.cum_qty, sum.filled);
          continue;
        }
        if (known.gt(0)) {
          this.#stats.fills_counted_before++;
          this.#log.info("a broker fill is partly counted already; the rest is recorded", {
            client_order_id: event.client_order_id,
            fill_id: event.fill_id,
            qty: toJson(event.qty),
            recorded_qty: toJson(event.qty.minus(known)),
          });
          event = { ...event, qty: event.qty.minus(known) };
        }
      }
      if (sum !== null) {
        sum.filled = sum.filled.plus(event.qty);
        sum.value = sum.value.plus(event.qty.times(event.price));
        const shown = this.#shownFilled.get(event.client_order_id);
        if (shown !== undefined && sum.filled.gte(shown)) {
          this.#shownFilled.delete(event.client_order_id);
        }
      }
      settled.push(event === update.event ? update : { ...update, event });
    }
    return settled;
  }

  /**
   * `fill`'s cumulative quantity shows `missed` executed before it that the
   * order's fills (`filled`) do not count — the broker's stream lost them,
   * and the broker's adapter did not say them: the fill is recorded, and its
   * order looked up at its broker, whose answer (the order's filled quantity
   * and average price) records the rest priced from the averages. Until its
   * fills count `cum_qty`, an answer below it is older than this fill.
   */
  #missedBefore(fill: FillEvent, missed: Decimal, filled: Decimal): void {
    const coid = fill.client_order_id;
    const shownFilled = this.#shownFilled;
    shownFilled.delete(coid);
    shownFilled.set(coid, fill.cum_qty!);
    if (shownFilled.size > MAX_CAUGHT_UP) shownFilled.deleteOldest();
    this.#log.warn("a broker fill shows executions the engine never saw; looking its order up", {
      client_order_id: coid,
      fill_id: fill.fill_id,
      cum_qty: toJson(fill.cum_qty!),
      qty: toJson(fill.qty),
      filled_qty: toJson(filled),
      missed_qty: toJson(missed),
    });
    this.#lookUpAgain(coid);
  }

  /**
   * Looks an open order up at its broker again, after a short delay, with
   * the lookups retried (see {@linkcode ExecutionEngine.reconcile}); its
   * answer is queued as a catch-up.
   */
  #lookUpAgain(coid: string): void {
    const tracked = this.#open.get(coid);
    if (tracked !== undefined && this.#running) this.#retryLookup(tracked);
  }

  /**
   * Counts a fill that stands in for broker fills of unknown ids (a
   * catch-up's): added to `sum`, and the order remembered (within
   * MAX_CAUGHT_UP) so that the broker's own fill, if it still comes, is
   * recognised by its cumulative quantity.
   */
  #caughtUpFill(coid: string, sum: { filled: Decimal; value: Decimal }, fill: FillEvent): void {
    sum.filled = sum.filled.plus(fill.qty);
    sum.value = sum.value.plus(fill.qty.times(fill.price));
    const caughtUp = this.#caughtUp;
    caughtUp.delete(coid);
    caughtUp.add(coid);
    if (caughtUp.size > MAX_CAUGHT_UP) caughtUp.deleteOldest();
  }

  /** Applies a batch of updates in one transaction (reruns without illegal fills, after stale reads). */
  async #applyUpdates(updates: readonly Update[]): Promise<void> {
    let batch = updates;
    const orders = new Map<string, Order>();
    const notionals = new Map<string, Decimal>();
    const relevant: Update[] = [];
    const lookedUp: Order[] = [];
    for (const update of batch) {
      const coid = coidOf(update);
      const tracked = this.#open.get(coid);
      if (tracked !== undefined) {
        if (!orders.has(coid)) {
          orders.set(coid, tracked.row);
          notionals.set(coid, tracked.notional);
        }
        relevant.push(update);
        continue;
      }
      // A closed order needs nothing more, but a fill, a final status or a reconciliation's
      // catch-up for it (the order closed while its lookup was in flight) is checked against
      // the stored order: a redelivery, fills the broker counts beyond ours, or an illegal
      // event to report.
      const matters = update.kind === "catch_up" ||
        (update.kind === "event" && update.event.type !== "accepted");
      if (!matters) continue;
      if (!orders.has(coid)) {
        const row = await findOrderByClientOrderId(this.#sql, coid);
        if (row !== null) {
          orders.set(coid, row);
          lookedUp.push(row);
        }
      }
      relevant.push(update);
    }
    if (relevant.length === 0) return;
    if (lookedUp.length > 0) {
      for (const [coid, notional] of await this.#notionalsOf(lookedUp)) {
        notionals.set(coid, notional);
      }
    }
    batch = this.#settle(relevant, orders, notionals);
    if (batch.length === 0) return;
    let excluded = new Set<string>();
    for (let run = 0;; run++) {
      try {
        await this.#applyOnce(batch, orders, notionals, excluded);
        return;
      } catch (error) {
        if (error instanceof RedoWithout && run < 10) {
          excluded = new Set([...excluded, ...error.keys]);
          continue;
        }
        if (error instanceof StaleOrders && run < 10) {
          const reloaded = await this.#notionalsOf(error.orders);
          for (const order of error.orders) {
            const coid = order.client_order_id;
            const notional = reloaded.get(coid) ?? rowNotional(order);
            orders.set(coid, order);
            notionals.set(coid, notional);
            this.#reloaded(order, notional);
          }
          continue;
        }
        throw error;
      }
    }
  }

  /**
   * What the engine holds of an order found moved under it — a commit whose
   * answer was lost stored it (the connection dropped after the commit):
   * the stored row. An order no longer open is untracked (else it stayed
   * open in memory for good: counted by `max_open_orders` and the exposure,
   * cancelled by a kill switch); one still open is tracked as stored. The
   * stored status, whose transitions were never published, is published
   * when it differs from the one held.
   */
  #reloaded(order: Order, notional: Decimal): void {
    const coid = order.client_order_id;
    const tracked = this.#open.get(coid);
    if (tracked === undefined) return;
    const held = tracked.row.status;
    if (isOpen(order.status)) this.#track(order, null, notional);
    else this.#untrack(coid);
    if (order.status === held) return;
    this.#log.warn("an order moved under the engine (a commit whose answer was lost); reloaded", {
      client_order_id: coid,
      held: held,
      stored: order.status,
      filled_qty: order.filled_qty,
    });
    this.#publishOrder(order, null, null);
  }

  /**
   * Σ qty × price of the fills of each of `rows` that has fills (read from
   * them: one query, none when no row has a fill), by client order id.
   */
  async #notionalsOf(rows: readonly Order[]): Promise<Map<string, Decimal>> {
    const out = new Map<string, Decimal>();
    const filled = rows.filter((row) => !fromDb(row.filled_qty).isZero());
    if (filled.length === 0) return out;
    const byId = await filledNotionals(this.#sql, filled.map((row) => row.id));
    for (const row of filled) {
      const notional = byId.get(row.id);
      if (notional !== undefined) out.set(row.client_order_id, fromDb(notional));
    }
    return out;
  }

  async #applyOnce(
    batch: readonly Update[],
    orders: ReadonlyMap<string, Order>,
    notionals: ReadonlyMap<string, Decimal>,
    excluded: ReadonlySet<string>,
  ): Promise<void> {
    const fills: NewFill[] = [];
    const pending: PendingFill[] = [];
    const fillIndex = new Map<Update, number>();
    for (const update of batch) {
      if (update.kind !== "event" || update.event.type !== "fill") continue;
      const row = orders.get(update.event.client_order_id);
      if (row === undefined) continue;
      const event = update.event;
      if (excluded.has(fillKey(row.id, event.fill_id))) continue;
      fillIndex.set(update, fills.length);
      const fill = {
        order_id: row.id,
        broker_fill_id: event.fill_id,
        symbol: row.symbol,
        side: row.side,
        qty: toDb(event.qty),
        price: toDb(event.price),
        commission: toDb(event.fee),
        filled_at: new Date(event.at_ms),
      };
      fills.push(fill);
      pending.push({
        portfolio_id: row.portfolio_id,
        symbol: fill.symbol,
        side: fill.side,
        qty: fill.qty,
        price: fill.price,
        fee: fill.commission,
        filled_at: event.at_ms,
      });
    }
    // Fast path — the usual case: every fill is new and every order as tracked. One statement
    // records the fills and the orders' new states, all or nothing — and, when the tracker of
    // this process lends its positions, what the fills do to them. When a fill turns out to be
    // stored already, an order moved or a position changed, nothing is written: without the
    // positions, then on the locked path below, the batch is stored again.
    if (excluded.size === 0) {
      const plan = this.#plan(batch, orders, notionals, fillIndex, () => true);
      if (plan.illegal.size === 0 && plan.alerts.length === 0) {
        const changes = plan.updates.map((update, i) => ({ order: plan.changed[i]!.row, update }));
        const reservation = fills.length > 0 ? this.#positions?.reserve(pending) ?? null : null;
        for (const lend of reservation === null ? [null] : [reservation, null]) {
          let stored: FillsWithOrders | null = null;
          try {
            stored = await insertFillsWithOrders(
              this.#sql,
              lend === null
                ? fills
                : fills.map((fill, i) => ({ ...fill, realized_pnl: lend.realized[i] })),
              changes,
              { by: this.#by, positions: lend?.positions },
            );
          } catch (error) {
            if (mayHaveCommitted(error)) {
              // The positions may be stored: the tracker reads them back before it goes on.
              lend?.unknown();
              this.#noteUnknownFills(fills);
            } else lend?.release();
            if (!(error instanceof SerializationError)) throw error;
          }
          if (stored === null) continue;
          if (this.#unknownFills.size > 0) this.#knownFills(fills);
          // The positions go out first: their message leaves ahead of the order events and of
          // the fills' JetStream publishes, which the server handles before anything after them.
          // (The tracker ignores the offers of fills it has just been handed.)
          try {
            if (lend !== null) {
              this.#stats.fills_with_positions += stored.fills.length;
              lend.commit(stored.fills.map((fill) => fill.id));
            }
          } finally {
            stored.orders.forEach((row, i) => plan.changed[i]!.row = row);
            this.#committed(
              plan.changed,
              plan.newFills.map(({ index, coid }) => ({ fill: stored.fills[index]!, coid })),
              [],
              orders,
            );
          }
          return;
        }
      }
    }
    const lockedRun = unitOfWork(this.#sql, async (tx) => {
      const inserted = await insertFills(tx, fills, { by: this.#by });
      const plan = this.#plan(
        batch,
        orders,
        notionals,
        fillIndex,
        (index) => inserted[index]!.created,
      );
      const alerts: Alert[] = [];
      for (const key of excluded) {
        const [order_id, fill_id] = key.split("\u0000");
        alerts.push({
          message: "A broker fill was refused as illegal",
          details: { order_id, fill_id },
        });
      }
      alerts.push(...plan.alerts);
      if (plan.illegal.size > 0) throw new RedoWithout(plan.illegal);
      const results = await updateOrderStatuses(tx, plan.updates, { by: this.#by });
      const stale: Order[] = [];
      results.forEach((result, i) => {
        if (result.ok) plan.changed[i]!.row = result.order;
        else if (result.error instanceof ConflictError && result.error.actual) {
          stale.push(result.error.actual as Order);
        } else throw result.error;
      });
      if (stale.length > 0) throw new StaleOrders(stale);
      for (const alert of alerts) {
        await raiseAlert(tx, {
          severity: "warning",
          source: EXECUTION_ALERT_SOURCE,
          message: alert.message,
          details: alert.details,
        }, { by: this.#by });
      }
      const newFills = plan.newFills.map(({ index, coid }) => ({
        fill: inserted[index]!.fill,
        coid,
      }));
      // Fills stored before by a write whose answer was lost (the connection dropped after its
      // commit): nothing sent them on, and unless the positions were stored with them, they are
      // not applied. (A fill the broker sent again was sent on when it was stored.)
      const unapplied: Array<{ fill: Fill; coid: string }> = [];
      if (this.#unknownFills.size > 0) {
        // The orders of those fills moved with them (a fill alone makes no update here, so no
        // conflict tells): read back, one that differs from the order held is held as stored.
        const moved = new Map<string, Order>();
        for (const [update, index] of fillIndex) {
          const { created, fill } = inserted[index]!;
          if (created || update.kind !== "event") continue;
          if (!this.#unknownFills.has(fillKey(fill.order_id, fill.broker_fill_id))) continue;
          if (fill.realized_pnl === null) {
            unapplied.push({ fill, coid: update.event.client_order_id });
          }
          const held = orders.get(update.event.client_order_id);
          if (held !== undefined && !moved.has(held.id)) {
            const stored = await getOrder(tx, held.id);
            if (stored.status !== held.status || stored.filled_qty !== held.filled_qty) {
              moved.set(held.id, stored);
            }
          }
        }
        if (moved.size > 0) throw new StaleOrders([...moved.values()]);
      }
      return { changed: plan.changed, newFills, alerts, unapplied };
    });
    let done: Awaited<typeof lockedRun>;
    try {
      done = await lockedRun;
    } catch (error) {
      if (mayHaveCommitted(error)) this.#noteUnknownFills(fills);
      throw error;
    }
    if (this.#unknownFills.size > 0) this.#knownFills(fills);
    const { changed, newFills, alerts, unapplied } = done;
    this.#committed(changed, newFills, alerts, orders, unapplied);
  }

  /** A broker fill its order's fills already count (by its cumulative quantity): skipped. */
  #countedBefore(
    event: Extract<BrokerEvent, { type: "fill" }>,
    cumQty: Decimal,
    filled: Decimal,
  ): void {
    this.#stats.fills_counted_before++;
    this.#log.info("a broker fill is already counted; skipped", {
      client_order_id: event.client_order_id,
      fill_id: event.fill_id,
      cum_qty: toJson(cumQty),
      filled_qty: toJson(filled),
    });
  }

  /**
   * Remembers `fills` as written by a statement whose answer was lost (the
   * connection dropped): whether they were stored is unknown. Found stored
   * when the batch is run again, they were never sent on (within
   * MAX_CAUGHT_UP fills).
   */
  #noteUnknownFills(fills: readonly NewFill[]): void {
    const unknown = this.#unknownFills;
    for (const fill of fills) {
      const key = fillKey(fill.order_id, fill.broker_fill_id);
      unknown.delete(key);
      unknown.add(key);
      if (unknown.size > MAX_CAUGHT_UP) unknown.deleteOldest();
    }
  }

  /** Forgets `fills` as of unknown outcome: a batch holding them committed. */
  #knownFills(fills: readonly NewFill[]): void {
    for (const fill of fills) {
      this.#unknownFills.delete(fillKey(fill.order_id, fill.broker_fill_id));
    }
  }

  /**
   * Runs `batch` through the order state machine, pure: the drafts of the
   * orders it changes with their status updates (`updates[i]` stores
   * `changed[i]`), the fills it applies (by index into the batch's fills; a
   * fill for which `isNew` says false was stored before and is skipped), the
   * fills that are illegal transitions, and the alerts to raise.
   */
  #plan(
    batch: readonly Update[],
    orders: ReadonlyMap<string, Order>,
    notionals: ReadonlyMap<string, Decimal>,
    fillIndex: ReadonlyMap<Update, number>,
    isNew: (index: number) => boolean,
  ): {
    changed: Draft[];
    updates: Array<OrderStatusUpdate & { id: string }>;
    newFills: Array<{ index: number; coid: string }>;
    illegal: Set<string>;
    alerts: Alert[];
  } {
    const drafts = new Map<string, Draft>();
    const newFills: Array<{ index: number; coid: string }> = [];
    const illegal = new Set<string>();
    const alerts: Alert[] = [];
    const draftOf = (coid: string): Draft | null => {
      let draft = drafts.get(coid);
      if (draft !== undefined) return draft;
      const row = orders.get(coid);
      if (row === undefined) return null;
      draft = { row, state: stateOf(row, notionals.get(coid)), steps: [] };
      drafts.set(coid, draft);
      return draft;
    };
    const step = (draft: Draft, event: OrderEvent, context: Record<string, unknown>): boolean => {
      try {
        draft.state = transition(draft.state, event);
        draft.steps.push(draft.state);
        return true;
      } catch (error) {
        if (!(error instanceof IllegalTransitionError || error instanceof OverfillError)) {
          throw error;
        }
        alerts.push({
          message: `Order ${draft.row.client_order_id}: ${error.message}`,
          details: { ...context, order_id: draft.row.id, status: draft.state.status },
        });
        return false;
      }
    };
    for (const update of batch) {
      const coid = coidOf(update);
      const draft = draftOf(coid);
      if (draft === null) {
        alerts.push({
          message: `Update for an unknown order ${coid}`,
          details: { update: describeUpdate(update) },
        });
        continue;
      }
      const status = draft.state.status;
      switch (update.kind) {
        case "submitted":
          if (status === "pending") {
            step(draft, { type: "submit", broker_order_id: update.broker_order_id }, {});
          } else if (draft.state.broker_order_id === null) {
            draft.state = { ...draft.state, broker_order_id: update.broker_order_id };
          }
          break;
        case "refused":
          if (status === "pending") step(draft, { type: "reject", reason: update.reason }, {});
          else {
            alerts.push({
              message: `Broker refused order ${coid} after reporting it ${status}`,
              details: { reason: update.reason },
            });
          }
          break;
        case "local_cancel":
          if (status === "pending") step(draft, { type: "cancel", reason: update.reason }, {});
          break;
        case "event": {
          const event = update.event;
          if (event.type === "accepted") {
            if (status === "pending") {
              step(draft, { type: "submit", broker_order_id: event.broker_order_id }, {});
            } else if (draft.state.broker_order_id === null) {
              draft.state = { ...draft.state, broker_order_id: event.broker_order_id };
            }
          } else if (event.type === "fill") {
            const index = fillIndex.get(update);
            if (index === undefined || !isNew(index)) break;
            if (draft.state.status === "pending") {
              step(draft, { type: "submit", broker_order_id: event.broker_order_id }, {});
            }
            const applied = step(draft, { type: "fill", qty: event.qty, price: event.price }, {
              fill_id: event.fill_id,
              qty: toJson(event.qty),
            });
            if (applied) newFills.push({ index, coid });
            else illegal.add(fillKey(draft.row.id, event.fill_id));
          } else {
            const type = event.type === "cancelled"
              ? "cancel"
              : event.type === "expired"
              ? "expire"
              : "reject";
            const target = type === "cancel"
              ? "cancelled"
              : type === "expire"
              ? "expired"
              : "rejected";
            if (status === target) break;
            step(draft, { type, reason: event.reason }, { event: event.type });
          }
          break;
        }
      }
    }
    const updates: Array<OrderStatusUpdate & { id: string }> = [];
    const changed: Draft[] = [];
    for (const draft of drafts.values()) {
      const before = draft.row;
      const s = draft.state;
      const filled = toDb(s.filled_qty);
      if (
        s.status === before.status && filled === before.filled_qty &&
        (s.broker_order_id ?? null) === before.broker_order_id
      ) continue;
      const update: OrderStatusUpdate & { id: string } = {
        id: before.id,
        from: before.status,
        to: s.status,
        expected_filled_qty: before.filled_qty,
      };
      if (filled !== before.filled_qty) update.filled_qty = filled;
      if (s.avg_fill_price !== null) update.avg_fill_price = toDb(s.avg_fill_price);
      if (s.broker_order_id !== null) update.broker_order_id = s.broker_order_id;
      if (s.reason !== null && s.reason !== before.status_reason) update.status_reason = s.reason;
      updates.push(update);
      changed.push(draft);
    }
    return { changed, updates, newFills, illegal, alerts };
  }

  /**
   * After a batch of updates committed: memory, then NATS. `unapplied` are
   * fills found stored before whose position is not (`realized_pnl` null):
   * counted and sent on to the position tracker like new ones (FILLS
   * deduplicates `fill-<id>`, the tracker applies a fill once).
   */
  #committed(
    changed: readonly Draft[],
    newFills: ReadonlyArray<{ fill: Fill; coid: string }>,
    alerts: readonly Alert[],
    orders: ReadonlyMap<string, Order>,
    unapplied: ReadonlyArray<{ fill: Fill; coid: string }> = [],
  ): void {
    for (const alert of alerts) {
      this.#stats.illegal_events++;
      this.#log.warn("broker update refused", { alert: alert.message, ...alert.details });
    }
    for (const draft of changed) {
      const row = draft.row;
      if (isOpen(row.status)) this.#track(row, null, draft.state.filled_notional);
      else this.#untrack(row.client_order_id);
      if (draft.steps.length > 0) {
        const base = orderJson(row);
        const last = draft.steps.length - 1;
        draft.steps.forEach((state, i) => this.#publishOrder(row, i === last ? null : state, base));
      }
    }
    const rows = new Map(changed.map((d) => [d.row.client_order_id, d.row]));
    const send = (fill: Fill, coid: string) => {
      const row = rows.get(coid) ?? orders.get(coid)!;
      if (fill.realized_pnl === null && row.portfolio_id === this.#state.portfolio_id) {
        // Stored without its position: counted as one (not as an open order, just untracked)
        // until the tracker records it.
        this.#state.addUnappliedFill(fill.id, unappliedFillOf(fill));
      }
      this.#sendFill(fillMessage(fill, row));
    };
    for (const { fill, coid } of newFills) {
      this.#stats.fills++;
      send(fill, coid);
    }
    if (unapplied.length === 0) return;
    const sent = new Set(newFills.map(({ fill }) => fill.id));
    for (const { fill, coid } of unapplied) {
      if (sent.has(fill.id)) continue;
      sent.add(fill.id);
      this.#log.warn("a fill stored before is not applied to positions; sending it on", {
        client_order_id: coid,
        fill_id: fill.id,
      });
      send(fill, coid);
    }
  }

  /** Publishes a fill on FILLS, retrying in the background until JetStream stores it or the engine stops. */
  #sendFill(message: FillMessage): void {
    this.#background_((async () => {
      for (let attempt = 0;; attempt++) {
        try {
          await this.#publishFill(message);
          return;
        } catch (error) {
          this.#stats.fill_publish_retries++;
          if (this.#halt.signal.aborted) return;
          const delayMs = backoffDelay(Math.min(attempt, 30), {
            initialMs: this.#retryInitialMs,
            maxMs: this.#retryMaxMs,
            random: this.#random,
          });
          this.#log.warn("could not publish a fill; retrying", {
            fill_id: message.id,
            attempt: attempt + 1,
            retry_in_ms: delayMs,
            error: errorMessage(error),
          });
          try {
            await this.#clock.sleep(delayMs, this.#halt.signal);
          } catch {
            return; // republished by the next start's reconciliation
          }
        }
      }
    })());
  }

  /**
   * Publishes the order on `orders.<status>.<symbol>`: as stored, or as it was
   * at an intermediate `state` of the batch (`base` is its JSON, made once).
   */
  #publishOrder(row: Order, state: OrderState | null, base: Record<string, unknown> | null): void {
    let json = base ?? orderJson(row);
    if (state !== null) {
      // The order as it was at that step: amounts as they would be stored, not yet closed.
      json = {
        ...json,
        status: state.status,
        broker_order_id: state.status === "pending"
          ? null
          : state.broker_order_id ?? json.broker_order_id,
        filled_qty: plainNumeric(toDb(state.filled_qty)),
        avg_fill_price: state.avg_fill_price === null
          ? null
          : plainNumeric(toDb(state.avg_fill_price)),
        status_reason: state.reason,
        submitted_at: state.status === "pending" ? null : json.submitted_at,
        closed_at: isOpen(state.status) ? null : json.closed_at,
      };
    }
    this.#safePublish(orderSubject(json.status as Order["status"], row.symbol, this.#names), json);
  }

  #safePublish(subject: string, data: unknown): void {
    try {
      this.#publish(subject, data);
    } catch (error) {
      this.#log.warn("could not publish", { subject, error: errorMessage(error) });
    }
  }

  // -- reconciliation ---------------------------------------------------------

  /**
   * Brings every open order up to date with its broker (see the module doc)
   * and publishes again the fills not yet applied to positions. An order
   * whose lookup failed is left as it is (counted in `failed`) and looked up
   * again in the background, with backoff (`broker_retry_initial_ms` doubling
   * to `broker_retry_max_ms`) and few lookups at once, until it succeeds, the
   * order closes or the engine stops.
   */
  async reconcile(options: { broker?: string } = {}): Promise<ReconcileReport> {
    if (!this.#running) throw new ExecutionNotReadyError();
    await this.idle();
    const report: ReconcileReport = {
      checked: 0,
      submitted: 0,
      updated: 0,
      failed: 0,
      republished_fills: 0,
    };
    const open = [...this.#open.values()].filter((tracked) =>
      options.broker === undefined || tracked.row.broker === options.broker
    );
    const failed: Tracked[] = [];
    await Promise.all(open.map(async (tracked) => {
      const row = tracked.row;
      const outcome = await this.#reconcileOrder(tracked);
      if (outcome.kind === "no_broker") {
        report.failed++;
        this.#log.warn("cannot reconcile an order: its broker is not enabled", {
          client_order_id: row.client_order_id,
          broker: row.broker,
        });
        return;
      }
      report.checked++;
      if (outcome.kind === "failed") {
        report.failed++;
        failed.push(tracked);
        this.#log.warn("reconciliation lookup failed; it is retried", {
          client_order_id: row.client_order_id,
          error: errorMessage(outcome.error),
        });
        return;
      }
      if (outcome.kind === "submitted") report.submitted++;
      else if (outcome.kind === "updated") report.updated++;
      this.#lookupRetries.get(row.broker)?.coids.delete(row.client_order_id);
    }));
    for (const tracked of failed) this.#retryLookup(tracked);
    await this.idle();
    report.republished_fills = await this.republishUnappliedFills();
    this.#log.info("reconciliation done", { ...report });
    return report;
  }

  /**
   * Looks `tracked` up at its broker: a broker that does not know it gets it
   * submitted (again) — unless it is a day order past its session, an
   * ioc/fok order that reached the broker already (not `pending`) or the kill
   * switch is on: then it is closed — else its catch-up is queued in its lane
   * (`#settle`).
   */
  async #reconcileOrder(tracked: Tracked): Promise<
    | { kind: "no_broker" }
    | { kind: "failed"; error: unknown }
    | { kind: "submitted" | "updated" | "current" }
  > {
    const row = tracked.row;
    const broker = this.#brokers.get(row.broker);
    if (broker === undefined) return { kind: "no_broker" };
    let state: BrokerOrderState | null;
    try {
      state = await this.#limiter(row.broker).run(() => broker.getOrder(row.client_order_id));
    } catch (error) {
      if (row.status === "pending" && !this.#kill.active) {
        // Unknown whether it reached the broker: submitting by client order id is safe (not while
        // the kill switch is on: its lookup is retried instead).
        tracked.maybeAtBroker = true;
        this.#startSubmit(tracked, false);
        return { kind: "submitted" };
      }
      return { kind: "failed", error };
    }
    if (state === null) {
      const now = this.#clock.now();
      // Submitting it again would place an order: not once its day is over (it would be a day
      // order of another session), nor an ioc/fok order that reached its broker (its one chance
      // to fill is over: the paper broker forgets its orders, and its cancel's event may not
      // have been stored), nor while the kill switch is on (it may have cancelled it).
      const expired = row.time_in_force === "day" && now >= dayOrderEnd(row);
      const immediate = row.time_in_force === "ioc" || row.time_in_force === "fok";
      const reason = expired
        ? "day order's session ended while the broker did not have it"
        : immediate && row.status !== "pending"
        ? `${row.time_in_force} order not at its broker when reconciled: not submitted again`
        : this.#kill.active
        ? "the kill switch is on and the broker did not have it: not submitted again"
        : null;
      if (reason !== null) {
        if (tracked.submitting) {
          // Its submit is on its way: the submit loop cancels it (locally, or at the broker once
          // it has it), as a cancel request during a submit does.
          tracked.cancelRequested = true;
          tracked.cancelReason = reason;
          return { kind: "updated" };
        }
        if (row.status === "pending") {
          this.#enqueue({ kind: "local_cancel", coid: row.client_order_id, reason });
        } else {
          this.#enqueue({
            kind: "event",
            broker: row.broker,
            event: {
              type: expired ? "expired" : "cancelled",
              client_order_id: row.client_order_id,
              broker_order_id: row.broker_order_id,
              reason,
              at_ms: now,
            },
          });
        }
        return { kind: "updated" };
      }
      const partial = tracked.filled.gt(0);
      if (partial) {
        this.#log.warn("broker lost a partially filled order; submitting what is left", {
          client_order_id: row.client_order_id,
          filled_qty: toJson(tracked.filled),
        });
      }
      this.#startSubmit(tracked, partial);
      return { kind: "submitted" };
    }
    // Resolved where the order's lane applies it, after the events queued before it: a fill
    // the stream delivered meanwhile is then counted once (see #settle).
    const at_ms = this.#clock.now();
    const behind =
      catchUpEvents(row, { filled: tracked.filled, value: tracked.notional }, state, at_ms)
        .length > 0;
    this.#enqueue({
      kind: "catch_up",
      broker: row.broker,
      coid: row.client_order_id,
      state,
      at_ms,
    });
    return { kind: behind ? "updated" : "current" };
  }

  /**
   * Looks `tracked` up again later (its reconciliation lookup failed),
   * together with the other such orders of its broker.
   */
  #retryLookup(tracked: Tracked): void {
    const broker = tracked.row.broker;
    let retry = this.#lookupRetries.get(broker);
    if (retry === undefined) {
      this.#lookupRetries.set(broker, retry = { coids: new Set(), running: false });
    }
    retry.coids.add(tracked.row.client_order_id);
    if (retry.running) return;
    retry.running = true;
    this.#background_(this.#lookupRetryLoop(broker, retry));
  }

  /**
   * Retries the failed lookups of `broker`'s orders until none is left (each
   * looked up, or closed meanwhile) or the engine stops: after a backoff
   * delay, at most `reconcile_retry_concurrency` lookups at once; a round
   * stops sending at its first failure (the broker is down or rate limits),
   * and the orders left wait for the next round, with a longer delay.
   */
  async #lookupRetryLoop(
    broker: string,
    retry: { coids: Set<string>; running: boolean },
  ): Promise<void> {
    const signal = this.#halt.signal;
    let lastError: string | null = null;
    try {
      for (let attempt = 0; retry.coids.size > 0; attempt++) {
        const delayMs = this.#brokerRetryDelay(attempt);
        const message = lastError === null
          ? "looking orders up at their broker again"
          : "reconciliation lookups failed; retrying";
        this.#log.warn(message, {
          broker,
          orders: retry.coids.size,
          attempt: attempt + 1,
          retry_in_ms: delayMs,
          error: lastError,
        });
        try {
          await this.#clock.sleep(delayMs, signal);
        } catch {
          return;
        }
        const due = [...retry.coids];
        let next = 0;
        let done = 0;
        let failed = false;
        const lookUp = async () => {
          while (!failed && next < due.length && !signal.aborted && this.#running) {
            const coid = due[next++]!;
            const tracked = this.#open.get(coid);
            if (tracked === undefined || tracked.row.broker !== broker) {
              retry.coids.delete(coid); // closed meanwhile: nothing to catch up
              continue;
            }
            const outcome = await this.#reconcileOrder(tracked);
            if (outcome.kind === "failed" || outcome.kind === "no_broker") {
              failed = true;
              lastError = outcome.kind === "failed"
                ? errorMessage(outcome.error)
                : `broker ${broker} is not enabled`;
              continue;
            }
            retry.coids.delete(coid);
            done++;
          }
        };
        const workers = Math.min(this.#reconcileRetryConcurrency, due.length);
        await Promise.all(Array.from({ length: workers }, lookUp));
        if (signal.aborted || !this.#running) return;
        if (done > 0) {
          this.#log.info("reconciled orders whose lookup had failed", {
            broker,
            orders: done,
            left: retry.coids.size,
          });
        }
        if (!failed) attempt = -1; // orders added meanwhile start from the first delay
      }
    } finally {
      retry.running = false;
      if (signal.aborted || !this.#running) retry.coids.clear();
    }
  }

  /** The backoff delay before retry `attempt` (0-based) of a broker lookup or cancel, in ms. */
  #brokerRetryDelay(attempt: number): number {
    return backoffDelay(Math.min(attempt, 30), {
      initialMs: this.#brokerRetryInitialMs,
      maxMs: this.#brokerRetryMaxMs,
      random: this.#random,
    });
  }

  /**
   * Publishes again on FILLS every stored fill the position tracker has not
   * applied (`realized_pnl IS NULL`), oldest first; returns how many. Safe to
   * repeat: JetStream deduplicates `fill-<id>` within its window and the
   * tracker applies a fill once.
   */
  async republishUnappliedFills(): Promise<number> {
    const rows = await this.#sql<
      (Fill & Pick<Order, "client_order_id" | "strategy" | "portfolio_id">)[]
    >`
      SELECT f.*, o.client_order_id, o.strategy, o.portfolio_id
      FROM fills f JOIN orders o ON o.id = f.order_id
      WHERE f.realized_pnl IS NULL ORDER BY f.id`;
    for (const row of rows) this.#sendFill(fillMessage(row, row));
    return rows.length;
  }

  // -- kill switch and cancels ------------------------------------------------

  /**
   * Switches the kill switch (stored in PostgreSQL, so it survives restarts)
   * and, with `active` and `cancel_open`, asks brokers to cancel every open
   * order (pending orders not yet at a broker are cancelled here). Runs
   * between signal batches. An activation holds in memory at once — the
   * batches not yet decided are refused — and a deactivation once stored. A
   * store whose answer is lost, or that the database cannot take, is retried
   * with backoff for at most `unknown_outcome_wait_ms` (reading the stored
   * switch first after a lost answer) before the call rejects; the switch
   * then stays as it is (on, for an activation or a deactivation) until
   * PostgreSQL answers, and then holds what PostgreSQL holds. The
   * cancellations complete as broker events. The orders whose cancel could
   * not be sent are named in `not_cancelled` and in a critical alert; those
   * a broker could not answer (unreachable, rate limited) are asked again
   * with backoff until the cancel is sent or the order closes. Cancelling
   * needs no database: when the switch could not be stored, `cancel_open`'s
   * cancels are sent all the same and the error's message names the orders
   * asked for and those not cancelled. The orders of a batch whose commit's
   * answer was lost and that is still being read back are cancelled once
   * read back (never submitted).
   */
  setKillSwitch(
    request: KillSwitchRequest & { by?: string | undefined },
  ): Promise<KillSwitchState> {
    if (!this.#running) return Promise.reject(new ExecutionNotReadyError());
    const wanted = { active: request.active, reason: request.reason ?? null };
    const by = request.by ?? this.#by;
    const generation = ++this.#killRequests;
    if (wanted.active) {
      // Fail safe: on in memory first — the batches not yet decided are refused — until
      // PostgreSQL says otherwise.
      this.#kill = { ...wanted, changed_at: new Date(this.#clock.now()), changed_by: by };
    }
    return this.#exclusive(async () => {
      await this.#drainBatches();
      const cancelOpen = request.active && request.cancel_open === true;
      let state: KillSwitch;
      try {
        state = await this.#storeKillSwitch(wanted, by, generation);
      } catch (error) {
        if (!cancelOpen) throw error;
        // Cancelling needs no database: the operator's cancels go out all the same, and the
        // error says which (the switch is on in memory until PostgreSQL answers).
        const { asked, notCancelled } = await this.#cancelOpen(request.reason, false);
        throw withMessage(error, `${errorMessage(error)}; ${cancelsSent(asked, notCancelled)}`);
      }
      // A later request holds memory itself (an activation is on already).
      if (generation === this.#killRequests) this.#holdKill(state);
      this.#log.warn(state.active ? "kill switch on" : "kill switch off", {
        reason: state.reason,
        by: state.changed_by,
        cancel_open: request.cancel_open === true,
      });
      if (!cancelOpen) return { ...state, cancel_requested: 0, not_cancelled: [] };
      const { asked, notCancelled } = await this.#cancelOpen(request.reason, true);
      return { ...state, cancel_requested: asked.length, not_cancelled: notCancelled };
    });
  }

  /**
   * A kill switch's `cancel_open`: asks the broker of every open order to
   * cancel it (a pending order not at its broker is cancelled here); returns
   * the orders asked for and those whose cancel was not sent, which a
   * critical alert names (awaited when `awaitAlert`, else raised in the
   * background: PostgreSQL may be away) and whose broker could not answer
   * are asked again with backoff.
   */
  async #cancelOpen(
    requestReason: string | undefined,
    awaitAlert: boolean,
  ): Promise<{ asked: Order[]; notCancelled: NotCancelledOrder[] }> {
    const reason = `kill switch${requestReason ? `: ${requestReason}` : ""}`;
    // A batch still being read back after its commit lost its answer is not in `#open`: its
    // orders are cancelled when it is taken over (`#takeOver`).
    this.#cancelOpenScans++;
    this.#cancelOpenReason = reason;
    this.#cancelOpenHeld = reason;
    const open = [...this.#open.values()];
    const results = await Promise.all(
      open.map((tracked) => this.#requestCancel(tracked, reason)),
    );
    const asked: Order[] = [];
    const notCancelled: NotCancelledOrder[] = [];
    results.forEach((refusal, i) => {
      const row = open[i]!.row;
      if (refusal === null) {
        asked.push(row);
        return;
      }
      notCancelled.push({
        order_id: row.id,
        client_order_id: row.client_order_id,
        broker: row.broker,
        reason: refusal.reason,
        retrying: refusal.retryable,
      });
      if (refusal.retryable) this.#retryCancel(open[i]!, reason);
    });
    if (notCancelled.length > 0) {
      const alerting = this.#alertNotCancelled(notCancelled);
      if (awaitAlert) await alerting;
      else this.#background_(alerting);
    }
    return { asked, notCancelled };
  }

  /** Holds `state` as the kill switch; switched off, it forgets the `cancel_open` of its time on. */
  #holdKill(state: KillSwitch): void {
    this.#kill = state;
    if (!state.active) this.#cancelOpenHeld = null;
  }

  /**
   * Stores the kill switch as `wanted` and returns it as stored, retrying
   * with backoff while the database cannot answer, for at most
   * `unknown_outcome_wait_ms` — a write that hangs included. After a
   * connection error (whether the write committed is unknown) the stored
   * switch is read first: already as wanted, it is not written again. Throws
   * the last error (a `DbConnectionError` when none came in time) when the
   * time is up, the engine stops or the database refuses; the engine then
   * holds the switch as PostgreSQL does once a write in flight settled and
   * PostgreSQL answers ({@linkcode ExecutionEngine.setKillSwitch}).
   */
  async #storeKillSwitch(
    wanted: { active: boolean; reason: string | null },
    by: string,
    generation: number,
  ): Promise<KillSwitch> {
    const giveUp = new AbortController();
    const failures: unknown[] = [];
    const storing = this.#storeKillSwitchLoop(
      wanted,
      by,
      AbortSignal.any([giveUp.signal, this.#stopping.signal]),
      failures,
    );
    const timer = new AbortController();
    const late = this.#clock.sleep(this.#outcomeWaitMs, timer.signal).then(
      () => null,
      () => null,
    );
    try {
      const stored = await Promise.race([storing, late]);
      if (stored !== null) return stored;
      throw failures.at(-1) ??
        new DbConnectionError(
          `PostgreSQL did not answer within ${this.#outcomeWaitMs} ms; the kill switch may or may not be stored`,
        );
    } catch (error) {
      giveUp.abort();
      this.#log.error("could not store the kill switch", {
        active: wanted.active,
        held: this.#kill.active,
        error: errorMessage(error),
      });
      this.#followStoredKillSwitch(generation, storing.then(() => {}, () => {}));
      throw error;
    } finally {
      timer.abort();
    }
  }

  /** The attempts of `#storeKillSwitch` until one stores, `stop` aborts or an error is not transient. */
  async #storeKillSwitchLoop(
    wanted: { active: boolean; reason: string | null },
    by: string,
    stop: AbortSignal,
    failures: unknown[],
  ): Promise<KillSwitch> {
    let unknown = false;
    for (let attempt = 0;; attempt++) {
      try {
        if (unknown) {
          const stored = await getKillSwitch(this.#sql);
          if (stored.active === wanted.active && stored.reason === wanted.reason) {
            this.#log.info("the kill switch was stored; its answer had been lost", {
              active: stored.active,
            });
            return stored;
          }
          unknown = false;
        }
        // Given up meanwhile (the caller has its error): no write after that.
        stop.throwIfAborted();
        return await storeKillSwitch(this.#sql, wanted, { by });
      } catch (error) {
        failures.push(error);
        unknown ||= mayHaveCommitted(error);
        if (!isTransient(error) || stop.aborted) throw error;
        const delayMs = this.#retryDelay(attempt);
        this.#log.warn("could not store the kill switch; retrying", {
          active: wanted.active,
          attempt: attempt + 1,
          retry_in_ms: delayMs,
          error: errorMessage(error),
        });
        await this.#clock.sleep(delayMs, stop).catch(() => {});
        if (stop.aborted) throw error;
      }
    }
  }

  /**
   * After a kill switch request that could not be confirmed (request
   * `generation`): the engine holds the switch as it is — on, for an
   * activation or a deactivation — until its write in flight settled
   * (`settled`) and PostgreSQL answers, then as PostgreSQL holds it (read
   * with backoff until then, or until the engine stops or another request
   * comes), so that the two agree.
   */
  #followStoredKillSwitch(generation: number, settled: Promise<void>): void {
    const stopping = this.#stopping.signal;
    const following = (async () => {
      await settled;
      for (let attempt = 0; !stopping.aborted && generation === this.#killRequests; attempt++) {
        try {
          const stored = await getKillSwitch(this.#sql);
          if (generation !== this.#killRequests) return;
          if (stored.active !== this.#kill.active) {
            this.#log.warn("the kill switch follows PostgreSQL after a change not confirmed", {
              active: stored.active,
              reason: stored.reason,
            });
          }
          this.#holdKill(stored);
          return;
        } catch (error) {
          if (!isTransient(error)) {
            this.#log.error("could not read the kill switch", { error: errorMessage(error) });
            return;
          }
        }
        // Soon after PostgreSQL is back: signal batches wait for this (`#killSwitchKnown`).
        await this.#clock.sleep(Math.min(this.#retryDelay(attempt), 1_000), stopping).catch(
          () => {},
        );
      }
    })();
    this.#killFollow = following;
    void following.finally(() => {
      if (this.#killFollow === following) this.#killFollow = null;
    });
    this.#background_(following);
  }

  /**
   * Before a signal batch is decided while the kill switch is not known
   * (`#followStoredKillSwitch` runs): waits for it to be read, at most
   * `unknown_outcome_wait_ms` — the batch is then decided with the switch as
   * held (on, for an activation) — so that a batch decided once PostgreSQL
   * is back sees what PostgreSQL holds.
   */
  async #killSwitchKnown(following: Promise<void>): Promise<void> {
    const timer = new AbortController();
    try {
      await Promise.race([
        following,
        this.#clock.sleep(this.#outcomeWaitMs, AbortSignal.any([timer.signal, this.#halt.signal]))
          .catch(() => {}),
      ]);
    } finally {
      timer.abort();
    }
  }

  /**
   * Logs and raises a critical alert naming the open orders whose cancel was
   * not sent; `title` says who asked (a kill switch's, by default).
   */
  async #alertNotCancelled(
    orders: readonly NotCancelledOrder[],
    title = "Kill switch",
  ): Promise<void> {
    const details = { orders };
    this.#log.error(`${title}: orders not (yet) cancelled`, details);
    await this.#raiseCritical(
      `${title}: ${orders.length} open order(s) not (yet) cancelled: ${
        orders.map((order) => order.order_id).join(", ")
      }`,
      details,
    );
  }

  /**
   * Acts on a cancel of `tracked` its broker did not take (`refusal`), asked
   * for with `reason` where no caller hears the refusal (a kill switch's or
   * a DELETE's cancel sent once the order's submit returned): asked again
   * with backoff when the broker could not answer, else (the order still
   * open) alerted.
   */
  async #cancelRefused(tracked: Tracked, reason: string, refusal: CancelRefusal): Promise<void> {
    if (refusal.retryable) {
      this.#retryCancel(tracked, reason);
      return;
    }
    const coid = tracked.row.client_order_id;
    if (this.#open.get(coid) !== tracked) return;
    await this.#alertNotCancelled([{
      order_id: tracked.row.id,
      client_order_id: coid,
      broker: tracked.row.broker,
      reason: refusal.reason,
      retrying: false,
    }], `Cancel not sent (${reason})`);
  }

  /**
   * Asks again, with backoff, for `tracked` to be cancelled (for `reason`)
   * after its broker could not answer a cancel (unreachable, rate limited):
   * until the cancel is sent, the order closes, the broker refuses it for
   * good (alerted) or the engine stops. One retry loop per order.
   */
  #retryCancel(tracked: Tracked, reason: string): void {
    const coid = tracked.row.client_order_id;
    if (this.#cancelRetries.has(coid)) return;
    this.#cancelRetries.add(coid);
    const signal = this.#halt.signal;
    this.#background_((async () => {
      try {
        for (let attempt = 0;; attempt++) {
          const delayMs = this.#brokerRetryDelay(attempt);
          this.#log.warn("cancel not sent; retrying", {
            client_order_id: coid,
            reason,
            attempt: attempt + 1,
            retry_in_ms: delayMs,
          });
          try {
            await this.#clock.sleep(delayMs, signal);
          } catch {
            return;
          }
          if (!this.#running || this.#open.get(coid) !== tracked) return; // closed meanwhile
          const refusal = await this.#requestCancel(tracked, reason);
          if (refusal === null) {
            this.#log.info("cancel sent after retrying", {
              client_order_id: coid,
              attempts: attempt + 1,
            });
            return;
          }
          if (!refusal.retryable) {
            // Refused for good: alerted while the order is open, as any refused cancel is.
            await this.#cancelRefused(tracked, reason, refusal);
            return;
          }
        }
      } finally {
        this.#cancelRetries.delete(coid);
      }
    })());
  }

  /**
   * Asks for order `id` (row id, decimal text) to be cancelled and returns it
   * as stored now; the cancellation completes as a broker event (an order not
   * yet at a broker is cancelled at once). Throws `NotFoundError` for an
   * unknown id and `ConflictError` (with `actual`, the order) for an order
   * that is no longer open.
   */
  async cancelOrder(id: string, reason = "cancelled by request"): Promise<Order> {
    if (!this.#running) throw new ExecutionNotReadyError();
    const coid = this.#openById.get(id);
    const tracked = coid === undefined ? undefined : this.#open.get(coid);
    if (tracked === undefined) {
      const order = await getOrder(this.#sql, id);
      if (isOpen(order.status)) {
        // Opened moments ago by a batch still committing, or changed by someone else.
        throw new ConflictError(`Order ${id} is ${order.status} but not tracked yet; try again`, {
          table: "orders",
          actual: order,
        });
      }
      throw new ConflictError(`Order ${id} is ${order.status}: it cannot be cancelled`, {
        table: "orders",
        actual: order,
      });
    }
    const refused = await this.#requestCancel(tracked, reason);
    await this.idle();
    const order = this.#open.get(tracked.row.client_order_id)?.row ?? await getOrder(this.#sql, id);
    if (refused !== null && isOpen(order.status)) throw new CancelNotSentError(order, refused);
    return order;
  }

  /**
   * Starts cancelling `tracked`: null once a cancellation was asked for, else
   * why it could not be (the broker refused it, or could not be reached).
   */
  async #requestCancel(tracked: Tracked, reason: string): Promise<CancelRefusal | null> {
    const row = tracked.row;
    if (tracked.submitting) {
      // Its submit loop sees the flag: before a retry it cancels here, after a submit at the broker
      // (`#cancelAsked`: a cancel the broker could not answer is asked again, another alerted).
      tracked.cancelRequested = true;
      tracked.cancelReason = reason;
      return null;
    }
    const broker = this.#brokers.get(row.broker);
    if (broker === undefined) {
      if (row.status === "pending") {
        this.#enqueue({ kind: "local_cancel", coid: row.client_order_id, reason });
        return null;
      }
      return { reason: `broker ${row.broker} is not enabled`, retryable: false };
    }
    if (row.status === "pending") {
      try {
        const known = await this.#limiter(row.broker).run(() =>
          broker.getOrder(row.client_order_id)
        );
        if (known === null) {
          this.#enqueue({ kind: "local_cancel", coid: row.client_order_id, reason });
          return null;
        }
      } catch (error) {
        this.#log.warn("could not look an order up to cancel it", {
          client_order_id: row.client_order_id,
          error: errorMessage(error),
        });
        return refusalOf(error);
      }
    }
    return await this.#cancelAtBroker(tracked, broker);
  }

  /**
   * Sends the cancel asked for while `tracked` was being submitted, now that
   * its broker has it (`#submitLoop`); a refusal is acted on (`#cancelRefused`).
   */
  async #cancelAsked(tracked: Tracked, broker: Broker): Promise<void> {
    const refusal = await this.#cancelAtBroker(tracked, broker);
    if (refusal === null) return;
    await this.#cancelRefused(tracked, tracked.cancelReason ?? "cancelled by request", refusal);
  }

  /**
   * Cancels `tracked`, an order stored earlier that may be at its broker,
   * taken over after a kill switch's `cancel_open` that could not see it; a
   * refusal is acted on (`#cancelRefused`).
   */
  async #cancelTakenOver(tracked: Tracked, reason: string): Promise<void> {
    const refusal = await this.#requestCancel(tracked, reason);
    if (refusal !== null) await this.#cancelRefused(tracked, reason, refusal);
  }

  /** Asks the broker to cancel `tracked`: null once asked, else why it could not be. */
  async #cancelAtBroker(tracked: Tracked, broker: Broker): Promise<CancelRefusal | null> {
    const coid = tracked.row.client_order_id;
    try {
      await this.#limiter(broker.name).run(() => broker.cancel(coid));
      return null;
    } catch (error) {
      this.#log.warn("broker refused to cancel an order", {
        client_order_id: coid,
        error: errorMessage(error),
      });
      return refusalOf(error);
    }
  }
}

// ---------------------------------------------------------------------------
// Pure helpers
// ---------------------------------------------------------------------------

/** The sum of the decimals given (absent ones are zero). */
function sum(...values: Array<Decimal | undefined>): Decimal {
  let total = ZERO;
  for (const value of values) {
    if (value === undefined || value.isZero()) continue;
    total = total.isZero() ? value : total.plus(value);
  }
  return total;
}

/** `text` as a decimal when it is one above zero, else null (a venue quoting `"0"` has no price). */
function positiveDecimal(text: string): Decimal | null {
  const parsed = safeParseDecimal(text);
  return parsed.ok && parsed.value.gt(0) ? parsed.value : null;
}

/** The order a valid signal asks for. */
function newOrderOf(s: Signal, broker: string): Extract<
  SignalBatchItem["outcome"],
  { status: "accepted" }
>["order"] {
  return {
    client_order_id: crypto.randomUUID(),
    broker,
    symbol: s.symbol,
    side: s.side,
    type: s.type,
    time_in_force: s.time_in_force,
    qty: s.qty,
    limit_price: s.limit_price ?? null,
    stop_price: s.stop_price ?? null,
    reason: s.reason ?? null,
  };
}

/**
 * The results of a batch read back by key (`stored`, {@linkcode
 * findSignalsByKeys}), as `insertSignalsAndOrders` would have returned them:
 * `created` when the stored signal is the one decided here (its order's
 * client order id, else its outcome and receive time). Null when a key is not
 * stored: the batch did not commit.
 */
function storedResults(
  decisions: readonly Decision[],
  stored: ReadonlyMap<string, SignalWithOrder>,
): SignalInsertResult[] | null {
  const results: SignalInsertResult[] = [];
  const firstByKey = new Map<string, number>();
  for (let i = 0; i < decisions.length; i++) {
    const { signal, outcome } = decisions[i]!.item;
    const key = signalKeyOf(signal.strategy, signal.client_signal_id);
    const found = stored.get(key);
    if (found === undefined) return null;
    const first = firstByKey.get(key);
    if (first !== undefined) {
      results.push({ created: false, duplicateOf: first, ...found });
      continue;
    }
    firstByKey.set(key, i);
    const created = outcome.status === "accepted"
      ? found.order !== null && found.order.client_order_id === outcome.order.client_order_id
      : found.order === null && found.signal.status === outcome.status &&
        found.signal.source === signal.source &&
        found.signal.received_at.getTime() === signal.received_at?.getTime();
    results.push({ created, ...found });
  }
  return results;
}

function toOutcome(result: SignalInsertResult): SignalOutcome {
  const { signal, order } = result;
  const duplicate = !result.created;
  if (signal.status === "accepted" && order !== null) {
    return { status: "accepted", duplicate, signal, order };
  }
  if (signal.status === "rejected") {
    return {
      status: "rejected",
      duplicate,
      signal,
      reasons: (signal.reasons ?? []) as RejectReason[],
    };
  }
  return { status: "received", duplicate: true, signal };
}

/**
 * The state-machine view of a stored order; `notional` is Σ qty × price of
 * its fills (see {@linkcode rowNotional} when not given).
 */
function stateOf(row: Order, notional?: Decimal): OrderState {
  const filled = fromDb(row.filled_qty);
  return {
    status: row.status,
    qty: fromDb(row.qty),
    filled_qty: filled,
    avg_fill_price: row.avg_fill_price === null ? null : fromDb(row.avg_fill_price),
    filled_notional: notional ?? rowNotional(row, filled),
    reason: row.status_reason,
    broker_order_id: row.broker_order_id,
  };
}

/**
 * Σ qty × price of an order's fills as far as its row tells: the stored
 * (rounded) average times `filled`. Only for an order whose fills were not
 * read or applied here; the engine keeps the exact figure otherwise.
 */
function rowNotional(row: Order, filled: Decimal = fromDb(row.filled_qty)): Decimal {
  return row.avg_fill_price === null || filled.isZero()
    ? ZERO
    : fromDb(row.avg_fill_price).times(filled);
}

/**
 * What an order's stored fills add up to: its filled quantity and their
 * value, Σ qty × price (`notional` when known, else {@linkcode rowNotional}).
 */
function counted(row: Order, notional?: Decimal): { filled: Decimal; value: Decimal } {
  const filled = fromDb(row.filled_qty);
  return { filled, value: notional ?? rowNotional(row, filled) };
}

/**
 * The price of `qty`, the part of a fill whose quantity the broker did not
 * say (`qty_derived`) that the order's fills (`counted`) do not count yet —
 * a count other than the adapter's (a reconciliation counted part of it).
 * With the broker's average over `cum_qty` (`cum_avg_price`) the part is
 * priced so that the order's average becomes the broker's: (`cum_qty` ×
 * `cum_avg_price` − counted value) ÷ `qty`, rounded to the stored scale.
 * Without it: a derived fill stands for all of the executions since the
 * broker's adapter last saw the order, at their average price; when it saw
 * none (`qty` is the whole `cum_qty`, as after a restart) its value is the
 * order's, and the part is priced the same way from it — (qty × price −
 * counted value) ÷ `qty`. Otherwise (or when either is not positive) the
 * fill's price.
 */
function derivedPrice(
  fill: FillEvent,
  qty: Decimal,
  counted: { filled: Decimal; value: Decimal },
): Decimal {
  if (fill.cum_qty !== undefined && fill.cum_avg_price !== undefined) {
    // The broker's average over cum_qty: the part not counted makes the order's average its.
    const value = fill.cum_qty.times(fill.cum_avg_price).minus(counted.value);
    const price = parseDecimal(toDb(value.dividedBy(qty)));
    if (price.gt(0)) return price;
  }
  if (fill.cum_qty === undefined || !fill.qty.eq(fill.cum_qty) || counted.filled.isZero()) {
    return fill.price;
  }
  const price = parseDecimal(toDb(fill.qty.times(fill.price).minus(counted.value).dividedBy(qty)));
  return price.gt(0) ? price : fill.price;
}

/**
 * The broker events that bring an order to the broker's `state`: accepted,
 * one fill for the quantity we missed (priced so that the average matches
 * the broker's; id `reconcile-<broker filled qty>`; dated when the broker
 * filled it, see {@linkcode caughtUpFillAt}), and the final status.
 * `counted` is what the order's fills so far add up to: their quantity and
 * their value (quantity × price).
 */
export function catchUpEvents(
  row: Order,
  counted: { filled: Decimal; value: Decimal },
  state: BrokerOrderState,
  nowMs: number,
): BrokerEvent[] {
  const coid = row.client_order_id;
  const events: BrokerEvent[] = [];
  if (row.status === "pending" && state.status !== "rejected") {
    events.push({
      type: "accepted",
      client_order_id: coid,
      broker_order_id: state.broker_order_id,
      at_ms: nowMs,
    });
  }
  const fill = missedFill(coid, counted, state, caughtUpFillAt(row, state, nowMs));
  if (fill !== null) events.push(fill);
  if (state.status === "cancelled" || state.status === "expired" || state.status === "rejected") {
    events.push({
      type: state.status,
      client_order_id: coid,
      broker_order_id: state.broker_order_id,
      reason: `${state.status} at the broker (reconciliation)`,
      at_ms: nowMs,
    });
  }
  return events;
}

/**
 * When a fill caught up from the broker's `state` of `row` executed: the
 * broker's `filled_at_ms`, no later than `nowMs` and no earlier than the
 * order's creation; `nowMs` when the broker does not say. Its realized P&L
 * then counts on the day it executed, not on the day it was reconciled.
 *
 * @example
 * ```ts
 * const row = { created_at: new Date("2026-12-04T15:00:00Z") };
 * caughtUpFillAt(row, { filled_at_ms: Date.parse("2026-12-04T16:00:00Z") }, Date.now());
 * // Date.parse("2026-12-04T16:00:00Z")
 * ```
 */
export function caughtUpFillAt(
  row: Pick<Order, "created_at">,
  state: Pick<BrokerOrderState, "filled_at_ms">,
  nowMs: number,
): number {
  const at = state.filled_at_ms;
  if (at === undefined || !Number.isFinite(at)) return nowMs;
  return Math.min(Math.max(at, row.created_at.getTime()), nowMs);
}

/**
 * The fill for what the broker counts as filled (`state.filled_qty`) beyond
 * what the order's fills add up to (`counted`), or null when nothing is
 * missing (or the broker gives no price): priced so that the order's average
 * becomes the broker's — (avg × filled − counted value) ÷ missing, in
 * decimals, rounded to the stored scale (the broker's average when that is
 * not positive) — with id `reconcile-<broker filled qty>`, dated `atMs`.
 */
export function missedFill(
  coid: string,
  counted: { filled: Decimal; value: Decimal },
  state: Pick<BrokerOrderState, "broker_order_id" | "filled_qty" | "avg_fill_price">,
  atMs: number,
): FillEvent | null {
  const missed = state.filled_qty.minus(counted.filled);
  if (!missed.gt(0)) return null;
  let price = state.avg_fill_price === null
    ? null
    : state.avg_fill_price.times(state.filled_qty).minus(counted.value).dividedBy(missed);
  if (price === null || !price.gt(0)) price = state.avg_fill_price;
  if (price === null || !price.gt(0)) return null;
  return {
    type: "fill",
    client_order_id: coid,
    broker_order_id: state.broker_order_id,
    fill_id: `reconcile-${toJson(state.filled_qty)}`,
    qty: missed,
    price: parseDecimal(toDb(price)),
    fee: ZERO,
    at_ms: atMs,
  };
}

/** An order as JSON for `orders.<status>.<symbol>`: decimals as plain strings, times ISO 8601. */
export function orderJson(row: Order): Record<string, unknown> {
  return {
    id: row.id,
    client_order_id: row.client_order_id,
    broker: row.broker,
    broker_order_id: row.broker_order_id,
    portfolio_id: row.portfolio_id,
    signal_id: row.signal_id,
    symbol: row.symbol,
    side: row.side,
    type: row.type,
    time_in_force: row.time_in_force,
    qty: plain(row.qty),
    limit_price: plain(row.limit_price),
    stop_price: plain(row.stop_price),
    status: row.status,
    filled_qty: plain(row.filled_qty),
    avg_fill_price: plain(row.avg_fill_price),
    reason: row.reason,
    status_reason: row.status_reason,
    strategy: row.strategy,
    submitted_at: row.submitted_at === null ? null : iso(row.submitted_at),
    closed_at: row.closed_at === null ? null : iso(row.closed_at),
    created_at: iso(row.created_at),
    updated_at: iso(row.updated_at),
  };
}

/**
 * When a day order's session ends: counted from when it reached its broker
 * (or was created, if it never did), by the paper broker's rule (the
 * regular session's close for a US equity, 00:00 UTC for crypto).
 */
function dayOrderEnd(row: Order): number {
  const placed = (row.submitted_at ?? row.created_at).getTime();
  return dayOrderExpiry(placed, defaultAssetClass(row.symbol));
}

/** The last time rendered by {@linkcode iso}: a batch's rows share their commit time. */
let lastIso = { ms: Number.NaN, text: "" };

/** `date.toISOString()`, reusing the last rendering for the same instant. */
function iso(date: Date): string {
  const ms = date.getTime();
  if (ms !== lastIso.ms) lastIso = { ms, text: date.toISOString() };
  return lastIso.text;
}

/** NUMERIC text as a plain decimal, or null (see {@linkcode plainNumeric}). */
function plain(text: string | null): string | null {
  return text === null ? null : plainNumeric(text);
}

function describeUpdate(update: Update): Record<string, unknown> {
  if (update.kind !== "event") return { ...update };
  const event = update.event;
  return {
    kind: "event",
    broker: update.broker,
    type: event.type,
    client_order_id: event.client_order_id,
    ...(event.type === "fill" ? { fill_id: event.fill_id, qty: toJson(event.qty) } : {}),
  };
}
