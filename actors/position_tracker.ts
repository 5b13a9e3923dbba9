/**
 * The position tracker: fills from the JetStream stream `FILLS` into
 * positions, cash and realized P&L in PostgreSQL — each fill exactly once —
 * and into the in-process {@linkcode PortfolioState}; periodic portfolio
 * snapshots.
 *
 * How it works:
 *
 * 1. At start it makes sure the stream (unless `ensure_stream: false`) and
 *    its durable pull consumer `position_tracker` exist
 *    (`trading/fills_stream.ts`), initialises the portfolio with
 *    `portfolio.starting_cash` when it is pristine (stored as its starting
 *    cash; a configured figure that differs from the stored one later is
 *    logged as a warning and not used), and loads the
 *    {@linkcode PortfolioState} from PostgreSQL (open orders too on the first
 *    start). It retries with backoff while NATS or PostgreSQL say no.
 * 2. Fills arrive through `consume()`; whatever has arrived while the last
 *    batch was being written makes the next batch (at most `batch_max`), so
 *    a quiet stream gets one small transaction per fill and a busy one
 *    shares transactions. When the consumer or `FILLS` is gone (NATS came
 *    back without its JetStream store, `nats consumer rm`), consume ends
 *    and the tracker with it, once idle: its supervisor's restart sets both
 *    up again. A NATS that is only away (same store) restarts nothing.
 * 3. Per batch, first the fast path: fills of the tracked portfolio are
 *    applied to the positions and cash the {@linkcode PortfolioState} holds
 *    — the tracker is their only writer, so they are what is stored — and
 *    ONE statement marks the fills applied and stores the positions and the
 *    portfolio, checking that every fill is there, of that portfolio, with
 *    those figures and not applied yet, and that the positions and cash are
 *    as the state holds them (`storeAppliedFills`). When anything is not, it
 *    writes nothing and the batch takes the locked path:
 *    ONE transaction: the fills' rows are read and locked
 *    (`SELECT … FOR UPDATE`) with their orders' portfolio; those whose
 *    `realized_pnl` is still NULL are applied in id order to the locked
 *    position rows and portfolio cash (`applyTrackedFill`: average cost
 *    against the exact cost basis, flips through zero, fees; every figure
 *    but the cost basis rounded to 8 decimals); then
 *    `UPDATE fills SET realized_pnl = … WHERE id = … AND realized_pnl IS
 *    NULL RETURNING id` marks them applied, positions are upserted and the
 *    portfolios' cash and realized P&L (and, for the tracked portfolio,
 *    equity and exposure at the current marks) updated. Whichever path, each
 *    fill applied is added to its order's strategy's UTC day of `filled_at`
 *    in `strategy_performance` (fills, notional, realized P&L, fees; a fill
 *    reducing a position as a win or a loss by the trade it closes: its gain
 *    net of the opening fees it releases and of its share of its own fee,
 *    `AppliedFill.trade_pnl`) by the same
 *    statement or transaction — one more CTE or pipelined statement per
 *    batch, one row per strategy and day. Commit, then every
 *    message is acked, then the state records the new figures and
 *    `positions.<symbol>` is published for each changed position.
 * 4. Exactly once: a redelivered fill (a crash between commit and ack, a
 *    duplicate publish) finds `realized_pnl` set and changes nothing; it is
 *    acked.
 * 5. Handed-over fills (`handoff`, see {@linkcode FillHandoff}): the engine of
 *    this process hands each fill over as it publishes it; the tracker applies
 *    those first, on the fast path only, without waiting for their messages,
 *    and acks the messages when they come. One that cannot be applied so is
 *    left to its message. Better still, when the tracker is idle the engine
 *    reserves the positions for the fills it is about to store: the tracker
 *    computes what they do (as on the fast path) and writes nothing until the
 *    engine's own statement has stored fills, orders, positions and cash
 *    together, with the same checks (`insertFillsWithOrders`' `positions`);
 *    then it records and publishes the positions. One commit, not two,
 *    between a fill and its position. Never ahead of an older fill: no
 *    reservation while the tracker holds messages or handed-over fills not
 *    applied, or the state counts fills stored but not applied.
 * 6. Order: fills are applied in id order — the order they were stored in.
 *    A batch (messages or handed-over fills) is sorted by id, and any older
 *    fill the state counts as stored but not applied (loaded so at a
 *    restart, its message held until `ack_wait`; or published late) is
 *    applied first, read from PostgreSQL under lock; its message is then
 *    only acked.
 * 7. Bad input never stops it: a message that is not a {@linkcode FillMessage}
 *    is dead-lettered on `dlq.fills` and acked; a fill whose row does not
 *    exist (yet) is redelivered after `missing_fill_delay_ms` up to
 *    `missing_fill_deliveries` times, then dead-lettered; a batch the
 *    database refuses for its data (an integrity error, a figure that does not
 *    fit NUMERIC(20,8)) is split and the fill at fault dead-lettered. Other
 *    database failures are retried with backoff, holding the batch (its
 *    messages kept from redelivery with `working()`).
 * 8. Every `portfolio.snapshot_interval_ms` (between batches), and once more
 *    at a graceful stop, the tracked portfolio is valued at the current marks
 *    and stored as a `portfolio_snapshots` row, its portfolio row's equity and
 *    exposure and the positions' marks are updated, its risk figures are
 *    stored in `risk_metrics` (equity, drawdown, gross and net exposure, realized
 *    P&L today, open orders, with the limits in force given as `limits`),
 *    all in one transaction, and the snapshot is published on
 *    `portfolio.snapshot`.
 * 9. A lost answer — a write of the tracker's, or a reservation's statement
 *    (`unknown()`), failed so that it may have committed (`mayHaveCommitted`:
 *    the connection dropped) — makes the tracker read its state back before
 *    anything else, granting no reservation meanwhile. A dropped client socket
 *    does not stop a statement running in its backend (waiting on a lock,
 *    say): it may still commit. So the tracker first waits for it to end:
 *    until no other client backend of this database that is not idle is in a
 *    transaction begun before the server's time when the wait began
 *    (`pg_stat_activity`: `xact_start` earlier; the statement whose answer
 *    was lost began before) — looking again after the backoff delay, at most
 *    every {@linkcode DEFAULT_UNKNOWN_OUTCOME_POLL_MAX_MS}, and for at most
 *    the server's `statement_timeout` (which ends a statement, lock waits
 *    included) plus `unknown_outcome_margin_ms`
 *    ({@linkcode DEFAULT_UNKNOWN_OUTCOME_MARGIN_MS}), or
 *    `unknown_outcome_max_wait_ms` when it is 0; past that it logs a warning
 *    and reads back anyway. Unrelated transactions older than the loss only
 *    make it wait longer. Sessions of other roles are not seen without
 *    `pg_read_all_stats`: the engine and the tracker use one role. Then it
 *    reads positions, cash, realized P&L by day and the fills not applied in
 *    one snapshot (`PortfolioState.load`: one `REPEATABLE READ READ ONLY`
 *    transaction) and publishes `positions.<symbol>` for each position that
 *    differs from what it held, with the last fill stored for it. Fills of a
 *    lost write of its own whose position changed so are counted `recovered`
 *    (not `applied`, not `duplicates`) when seen again.
 *
 * Marks: {@linkcode markPrice} — the mid of the freshest fresh best bid/ask,
 * else the newest fresh last trade (fresh: no older than `max_price_age_ms`);
 * a position without either is valued at cost (its cost basis, nothing
 * unrealized), shown with `mark_price` null and listed as unmarked.
 *
 * The lead wires it with the shared `PortfolioState` (also given to the
 * execution engine) after `ensureStreams(nc, [fillsStream()])`; one tracker
 * per consumer.
 *
 * @example
 * ```ts
 * const state = new PortfolioState({ starting_cash: config.portfolio.starting_cash });
 * const tracker = positionTrackerActor({
 *   nats, sql, cache, state, log,
 *   options: { portfolio: config.portfolio, max_price_age_ms: config.execution.max_price_age_ms },
 * });
 * ```
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import { type ConsumerMessages, jetstream, jetstreamManager, type JsMsg } from "@nats-io/jetstream";
import type { Sql, TransactionSql } from "postgres";
import { actor } from "./actor.ts";
import type { ChildSpec } from "./types.ts";
import { encodeJson } from "../adapters/codec.ts";
import { ensureConsumer, ensureStreams, watchConsumer } from "../adapters/nats.ts";
import { backoffDelay } from "../lib/backoff.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import type { Logger } from "../lib/log.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { symbolToken } from "../market/subjects.ts";
import {
  addStrategyTrades,
  DbError,
  insertRiskMetrics,
  insertSnapshot,
  IntegrityError,
  mapDbError,
  markPositions,
  mayHaveCommitted,
  peakEquity,
  type PendingPositionChange,
  type PortfolioChange,
  type PositionFigures,
  type RiskMetricInput,
  SerializationError,
  storeAppliedFills,
  unitOfWork,
  upsertPortfolio,
  upsertPositions,
} from "../db/mod.ts";
import { type Decimal, fromDb, parseDecimal, toJson, ZERO } from "../trading/money.ts";
import {
  costBasisOf,
  emptyPosition,
  markPosition,
  type PortfolioValue,
  type PortfolioValueJson,
  portfolioValueToJson,
  type Position,
  type PositionValueJson,
  positionValueToJson,
  valuePortfolio,
} from "../trading/positions.ts";
import {
  type AppliedFill,
  applyTrackedFill,
  DEFAULT_RISK_MARK_MAX_AGE_MS,
  markPrice,
  type PortfolioState,
  roundMoney,
  roundPortfolio,
  roundPositionValue,
  type StoredFillFigures,
} from "../trading/portfolio_state.ts";
import {
  DEFAULT_FILLS_STREAM,
  DEFAULT_POSITION_TRACKER_CONSUMER,
  type FillMessage,
  FILLS_DLQ_SUBJECT,
  fillsStream,
  parseFillMessage,
  positionTrackerConsumer,
} from "../trading/fills_stream.ts";
import type { PendingFill, PositionsPartner, PositionsReservation } from "../trading/execution.ts";
import type { RiskLimits } from "../trading/risk.ts";
import { assertPositiveInteger } from "../lib/assert.ts";
import { InsertionOrderedSet } from "../lib/insertion_map.ts";
import { LatchedWakeup } from "../lib/wakeup.ts";

/** Default name of the tracker in the supervision tree. */
export const DEFAULT_POSITION_TRACKER_NAME = "position_tracker";
/** Most fills applied in one transaction. */
export const DEFAULT_TRACKER_BATCH_MAX = 500;
/** Deliveries of a fill whose row is missing before it is dead-lettered. */
export const DEFAULT_MISSING_FILL_DELIVERIES = 5;
/** Redelivery delay of a fill whose row is missing, ms. */
export const DEFAULT_MISSING_FILL_DELAY_MS = 1_000;
/** First delay before retrying a failed transaction or set-up, ms. */
export const DEFAULT_TRACKER_RETRY_INITIAL_MS = 100;
/** Longest delay before retrying a failed transaction or set-up, ms. */
export const DEFAULT_TRACKER_RETRY_MAX_MS = 5_000;
/** Longest wait for the portfolio snapshot taken at a graceful stop, ms. */
export const DEFAULT_FINAL_SNAPSHOT_MS = 2_000;
/**
 * Added to the server's `statement_timeout` to bound the wait for a statement
 * whose answer was lost to end before the state is read back, ms.
 */
export const DEFAULT_UNKNOWN_OUTCOME_MARGIN_MS = 5_000;
/** Longest wait for such a statement to end when `statement_timeout` is 0 (none), ms. */
export const DEFAULT_UNKNOWN_OUTCOME_MAX_WAIT_MS = 60_000;
/** Longest pause between two looks at whether such a statement has ended, ms. */
export const DEFAULT_UNKNOWN_OUTCOME_POLL_MAX_MS = 500;
/** Who the tracker's writes are recorded as (`updated_by`). */
export const POSITION_TRACKER_ACTOR = "position_tracker";

/** What the tracker is configured with. */
export interface PositionTrackerOptions {
  /** `config.portfolio`: starting cash and snapshot interval. */
  portfolio: { starting_cash: string; snapshot_interval_ms: number };
  /** A quote older than this (ms) is not a fresh mark (`config.execution.max_price_age_ms`). */
  max_price_age_ms: number;
  /** Most fills per transaction. @default {DEFAULT_TRACKER_BATCH_MAX} */
  batch_max?: number | undefined;
  /** Redelivery delay of an unacknowledged fill, ms. @default {DEFAULT_FILLS_ACK_WAIT_MS} */
  ack_wait_ms?: number | undefined;
  /** See {@linkcode DEFAULT_MISSING_FILL_DELIVERIES}. */
  missing_fill_deliveries?: number | undefined;
  /** See {@linkcode DEFAULT_MISSING_FILL_DELAY_MS}. */
  missing_fill_delay_ms?: number | undefined;
  /** See {@linkcode DEFAULT_TRACKER_RETRY_INITIAL_MS}. */
  retry_initial_ms?: number | undefined;
  /** See {@linkcode DEFAULT_TRACKER_RETRY_MAX_MS}. */
  retry_max_ms?: number | undefined;
  /**
   * The account-wide risk limits in force (`riskLimitsFromConfig(config.risk)`),
   * stored as `limit_value` beside the figures they bound in `risk_metrics`.
   * @default {none stored}
   */
  limits?: Partial<RiskMetricLimits> | undefined;
  /** Longest wait for the snapshot taken at a graceful stop, ms. @default {DEFAULT_FINAL_SNAPSHOT_MS} */
  final_snapshot_ms?: number | undefined;
  /** See {@linkcode DEFAULT_UNKNOWN_OUTCOME_MARGIN_MS}. */
  unknown_outcome_margin_ms?: number | undefined;
  /** See {@linkcode DEFAULT_UNKNOWN_OUTCOME_MAX_WAIT_MS}. */
  unknown_outcome_max_wait_ms?: number | undefined;
}

/** The limits stored beside the risk figures ({@linkcode PositionTrackerOptions.limits}). */
export type RiskMetricLimits = Pick<
  RiskLimits,
  "max_gross_exposure" | "max_open_orders" | "daily_loss_limit"
>;

/** Figures of a running tracker, shared with health and tests. */
export interface PositionTrackerStatus {
  /** Set up and consuming. */
  running: boolean;
  /** Transactions committed. */
  batches: number;
  /**
   * Fills applied to positions by writes whose answer came (those whose
   * answer was lost are counted in `recovered`).
   */
  applied: number;
  /** Of those, fills applied as the execution engine handed them over, before their message. */
  handed_over: number;
  /** Fills seen again and skipped (already applied). */
  duplicates: number;
  /**
   * Fills applied by a write of the tracker's whose answer was lost: found
   * applied when seen again, after the read-back showed their position
   * changed (so `applied + recovered` fills were applied). Fills stored by a
   * reservation's statement whose answer was lost are in neither: their ids
   * are not known to the tracker.
   */
  recovered: number;
  /** Messages dead-lettered. */
  dead_lettered: number;
  /** Fills redelivered later because their row was missing. */
  missing: number;
  /** Snapshots stored. */
  snapshots: number;
  /** Failed transactions retried. */
  retries: number;
  /** Id of the last fill applied. */
  last_fill_id: string | null;
  /** Message of the last error, if any. */
  last_error: string | null;
}

/** A fresh {@linkcode PositionTrackerStatus}. */
export function newPositionTrackerStatus(): PositionTrackerStatus {
  return {
    running: false,
    batches: 0,
    applied: 0,
    handed_over: 0,
    duplicates: 0,
    recovered: 0,
    dead_lettered: 0,
    missing: 0,
    snapshots: 0,
    retries: 0,
    last_fill_id: null,
    last_error: null,
  };
}

/** What {@linkcode positionTrackerActor} needs. */
export interface PositionTrackerDeps {
  /** The engine's NATS connection. */
  nats: NatsConnection;
  /** The PostgreSQL pool (from `createPostgres`). */
  sql: Sql;
  /** Latest market data, for marks. */
  cache: LatestCache;
  /** The shared in-process portfolio the tracker keeps current. */
  state: PortfolioState;
  /** Settings. */
  options: PositionTrackerOptions;
  /** @default {nullLogger} */
  log?: Logger | undefined;
  /** @default {systemClock} */
  clock?: Clock | undefined;
  /** Figures to keep current. @default {a new one} */
  status?: PositionTrackerStatus | undefined;
  /** Name in the supervision tree. @default {DEFAULT_POSITION_TRACKER_NAME} */
  name?: string | undefined;
  /** Stream name. @default {DEFAULT_FILLS_STREAM} */
  stream?: string | undefined;
  /** Durable consumer name. @default {DEFAULT_POSITION_TRACKER_CONSUMER} */
  consumer?: string | undefined;
  /**
   * Prepended to every subject it uses (`fills.*`, `positions.*`,
   * `portfolio.snapshot`, `dlq.fills`), e.g. `"t1a2b."` in tests. @default {""}
   */
  subject_prefix?: string | undefined;
  /** Create or update the stream at start. @default {true} */
  ensure_stream?: boolean | undefined;
  /** Fills handed over in process by the execution engine ({@linkcode FillHandoff}). @default {none} */
  handoff?: FillHandoff | undefined;
}

/** A `positions.<symbol>` message. */
export interface PositionMessage extends PositionValueJson {
  /** Portfolio. */
  portfolio_id: string;
  /** Whether the position has a mark (false: `mark_price` null, valued at cost). */
  marked: boolean;
  /** The last fill applied to it. */
  last_fill_id: string;
  /** When it was published, ms since the epoch. */
  at: number;
}

/** The `portfolio.snapshot` message: the valued portfolio, with what it is and when. */
export interface SnapshotMessage extends PortfolioValueJson {
  /** Portfolio. */
  portfolio_id: string;
  /** When it was taken, ms since the epoch. */
  taken_at: number;
  /** Cash the portfolio started with. */
  starting_cash: string;
}

/** A dead letter on `dlq.fills`. */
export interface FillDeadLetter {
  /** Always `position_tracker`. */
  stage: "position_tracker";
  /** `malformed`, `unknown_fill` or `unapplicable`. */
  reason: string;
  /** What is wrong. */
  detail: string;
  /** The message's subject. */
  subject: string;
  /** Its stream sequence. */
  stream_seq: number;
  /** Its payload as text (at most 4096 characters). */
  data: string;
  /** When it was dead-lettered, ms since the epoch. */
  at: number;
}

/**
 * The child spec of the position tracker (see the module doc). Permanent;
 * a crash (e.g. the consumer deleted) is restarted by its supervisor.
 */
export function positionTrackerActor(deps: PositionTrackerDeps): ChildSpec {
  return actor({
    name: deps.name ?? DEFAULT_POSITION_TRACKER_NAME,
    shutdownMs: 10_000,
    run: (ctx) => new Tracker(deps, ctx.signal, ctx.log).run(),
  }, {
    nats: deps.nats,
    ...(deps.log ? { log: deps.log } : {}),
    ...(deps.clock ? { clock: deps.clock } : {}),
  });
}

/** Most ids of handed-over fills remembered until their FILLS message comes. */
export const DEFAULT_HANDOFF_MEMORY = 100_000;

/**
 * The in-process shortcut from the execution engine to the position tracker
 * of the same process: the engine offers each fill it stored as it publishes
 * it on FILLS; the tracker applies offered fills at once — one JetStream hop
 * less between a fill and its position — and acknowledges their FILLS
 * messages without applying them again when they come. FILLS stays the
 * durable path: an offer the tracker cannot apply at once (another
 * portfolio, stored rows not as expected, no tracker running) is dropped and
 * the message applies the fill; either way the fill is applied under the
 * same exactly-once check in PostgreSQL (`realized_pnl` still NULL).
 *
 * It also lends the tracker's positions to the engine
 * ({@linkcode PositionsPartner}): `reserve` computes what new fills do to the
 * positions and cash and holds the tracker's own writes until the engine has
 * stored them with the fills (`commit`: the tracker records and publishes
 * the positions, and acks the fills' messages only) or not (`release`: the
 * fills are applied as usual). A reservation is refused while the tracker is
 * writing, holds offered fills or messages not applied, or its state counts
 * fills stored but not applied — the new fills would be applied ahead of
 * those — so the positions it lends are the stored ones, the newest; the
 * statement checks that they are.
 *
 * @example
 * ```ts
 * const handoff = new FillHandoff();
 * const publishFill = (fill: FillMessage) => {
 *   handoff.offer(fill);
 *   return publisher.publish(fillSubject(fill.symbol), encodeJson(fill), `fill-${fill.id}`);
 * };
 * positionTrackerActor({ ...deps, handoff });
 * ```
 */
export class FillHandoff implements PositionsPartner {
  #tracker: HandoffReceiver | null = null;

  /** Hands `fill` (stored, being published on FILLS) to the tracker, if one is running. */
  offer(fill: FillMessage): void {
    this.#tracker?.offer(fill);
  }

  /** The running tracker's reservation for new fills ({@linkcode PositionsPartner}); null without one. */
  reserve(fills: readonly PendingFill[]): PositionsReservation | null {
    return this.#tracker?.reserve(fills) ?? null;
  }

  /** Makes `tracker` take the offers and reservations until the returned function is called. */
  attach(tracker: HandoffReceiver): () => void {
    this.#tracker = tracker;
    return () => {
      if (this.#tracker === tracker) this.#tracker = null;
    };
  }
}

/** The tracker's side of a {@linkcode FillHandoff}. */
export interface HandoffReceiver {
  /** Takes a stored fill to apply. */
  offer(fill: FillMessage): void;
  /** Reserves the positions for new fills; see {@linkcode PositionsPartner}. */
  reserve(fills: readonly PendingFill[]): PositionsReservation | null;
}

/** A fill row as locked for applying. */
interface FillRow extends StoredFillFigures {
  id: string;
  pending: boolean;
  portfolio_id: string;
  strategy: string;
}

/** What a batch of fills does to the tracked portfolio ({@linkcode Tracker}'s `#compute`). */
interface Computed {
  /** Each fill as applied, in order. */
  applied: AppliedFill[];
  /** The portfolio's cash before and after, and its figures after. */
  portfolio: PortfolioChange;
  /** Each position changed, with the index of its last fill in the batch. */
  positions: PendingPositionChange[];
}

/** A message of the batch being applied. */
interface Item {
  msg: JsMsg;
  fill: FillMessage;
}

/** What one transaction did. */
interface BatchResult {
  applied: Array<{ portfolio_id: string; fill_id: string; applied: AppliedFill }>;
  applied_items: Item[];
  duplicates: Item[];
  missing: Item[];
}

/** What the read-back after a lost answer waits for ({@linkcode Tracker}'s `#awaitSettled`). */
interface SettleWait {
  /** The server's time (timestamptz text) when the wait began. */
  since: string;
  /** When to stop waiting, ms (the tracker's clock). */
  until: number;
}

/** Thrown for a batch the database refuses because of its data: not worth retrying as it is. */
class UnapplicableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "UnapplicableError";
  }
}

const textDecoder = new TextDecoder();

class Tracker {
  readonly #deps: PositionTrackerDeps;
  readonly #signal: AbortSignal;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #status: PositionTrackerStatus;
  readonly #stream: string;
  readonly #consumer: string;
  readonly #prefix: string;
  readonly #batchMax: number;
  readonly #startingCash: Decimal;
  readonly #pending: JsMsg[] = [];
  /** Fills handed over by the engine, not applied yet, by id (in the order handed over). */
  readonly #offered = new Map<string, FillMessage>();
  /** Ids of fills applied as handed over whose FILLS message has not come yet. */
  readonly #handedOver = new InsertionOrderedSet<string>();
  /** Latched: a notify while the loop is busy applying must not be lost. */
  readonly #wake = new LatchedWakeup();
  #snapshotDue = false;
  /** A reservation's statement lost its answer: the state is read back before anything else. */
  #reloadNeeded = false;
  /**
   * Fills of writes of the tracker's whose answer was lost, until the state is
   * read back: id → symbol (null: not known here).
   */
  readonly #lostFills = new Map<string, string | null>();
  /** Ids of those fills the read-back found applied by their lost write: counted applied once seen. */
  readonly #recovered = new InsertionOrderedSet<string>();
  /** Applying fills or taking a snapshot: no reservation is granted meanwhile. */
  #busy = false;
  /** A reservation is open: the engine is storing positions with its fills. */
  #reserved = false;
  /** The highest equity snapshotted (or the starting cash): what drawdown is measured from. */
  #peakEquity: Decimal | null = null;

  constructor(deps: PositionTrackerDeps, signal: AbortSignal, log: Logger) {
    this.#deps = deps;
    this.#signal = signal;
    this.#log = log;
    this.#clock = deps.clock ?? systemClock;
    this.#status = deps.status ?? newPositionTrackerStatus();
    this.#stream = deps.stream ?? DEFAULT_FILLS_STREAM;
    this.#consumer = deps.consumer ?? DEFAULT_POSITION_TRACKER_CONSUMER;
    this.#prefix = deps.subject_prefix ?? "";
    this.#batchMax = deps.options.batch_max ?? DEFAULT_TRACKER_BATCH_MAX;
    assertPositiveInteger(this.#batchMax, "batch_max");
    const interval = deps.options.portfolio.snapshot_interval_ms;
    if (!Number.isFinite(interval) || interval < 1) {
      throw new RangeError(`snapshot_interval_ms must be >= 1, got ${interval}`);
    }
    this.#startingCash = parseDecimal(deps.options.portfolio.starting_cash);
    if (!this.#startingCash.eq(deps.state.configured_starting_cash)) {
      this.#log.warn("portfolio state and tracker disagree on the starting cash", {
        state: toJson(deps.state.configured_starting_cash),
        tracker: toJson(this.#startingCash),
      });
    }
  }

  async run(): Promise<void> {
    const messages = await this.#setUp();
    if (messages === null) return;
    this.#status.running = true;
    this.#log.info("Position tracker started", {
      stream: this.#stream,
      consumer: this.#consumer,
      portfolio: this.#deps.state.portfolio_id,
    });
    const timers = new AbortController();
    const stop = AbortSignal.any([this.#signal, timers.signal]);
    const onAbort = () => this.#wake.notify();
    this.#signal.addEventListener("abort", onAbort, { once: true });
    let consumerClosed = false;
    // Found missing by our own checks too: consume ends as when nats.js finds it so.
    void watchConsumer(this.#deps.nats, this.#stream, this.#consumer, {
      signal: stop,
      clock: this.#clock,
    }).then((gone) => {
      if (gone !== null) messages.stop(gone);
    });
    const closed = messages.closed().then((error) => {
      consumerClosed = true;
      this.#wake.notify();
      return error;
    });
    const snapshots = this.#snapshotTimer(stop);
    const detach = this.#deps.handoff?.attach({
      offer: (fill) => {
        // Applied by the engine's own statement (a reservation): only its message is to come.
        if (this.#handedOver.has(fill.id)) return;
        this.#offered.set(fill.id, fill);
        this.#wake.notify();
      },
      reserve: (fills) => this.#reserve(fills),
    });
    try {
      while (!this.#signal.aborted) {
        // While the engine stores positions with its fills, the tracker writes nothing.
        const idle = this.#reserved ||
          (this.#offered.size === 0 && this.#pending.length === 0 && !this.#snapshotDue &&
            !this.#reloadNeeded);
        if (idle) {
          if (consumerClosed && !this.#reserved) {
            const error = await closed;
            throw new Error("Fills consumer closed unexpectedly", {
              ...(error instanceof Error ? { cause: error } : {}),
            });
          }
          await this.#wake.wait();
          continue;
        }
        this.#busy = true;
        try {
          if (this.#reloadNeeded && !await this.#reload()) continue;
          if (this.#offered.size > 0) await this.#applyOffered(this.#takeOffered());
          if (this.#pending.length > 0) {
            const batch = this.#pending.splice(0, this.#batchMax);
            await this.#process(batch);
          }
          if (this.#snapshotDue && !this.#signal.aborted) {
            this.#snapshotDue = false;
            await this.#snapshot();
          }
        } finally {
          this.#busy = false;
        }
      }
    } finally {
      detach?.();
      this.#offered.clear();
      this.#status.running = false;
      this.#signal.removeEventListener("abort", onAbort);
      timers.abort();
      await messages.close().catch(() => {});
      for (const msg of this.#pending.splice(0)) msg.nak();
      await snapshots;
      if (this.#signal.aborted && !this.#reserved) await this.#finalSnapshot();
    }
  }

  /**
   * At a graceful stop, one last snapshot (and its risk figures): the
   * portfolio as the engine left it. Waits at most `final_snapshot_ms`.
   */
  async #finalSnapshot(): Promise<void> {
    if (!this.#deps.state.loaded || this.#deps.nats.isClosed()) return;
    const timer = new AbortController();
    const waitMs = this.#deps.options.final_snapshot_ms ?? DEFAULT_FINAL_SNAPSHOT_MS;
    try {
      await Promise.race([
        this.#snapshot(),
        this.#clock.sleep(waitMs, timer.signal).catch(() => {}),
      ]);
    } finally {
      timer.abort();
    }
  }

  /** Stream, consumer, portfolio and state; null when stopped first. */
  async #setUp(): Promise<ConsumerMessages | null> {
    const { nats, sql, state, options } = this.#deps;
    for (let attempt = 0; !this.#signal.aborted; attempt++) {
      try {
        if (this.#deps.ensure_stream !== false) {
          await ensureStreams(nats, [
            fillsStream({ stream: this.#stream, subject_prefix: this.#prefix }),
          ], this.#log);
        }
        const jsm = await jetstreamManager(nats);
        await ensureConsumer(
          jsm,
          this.#stream,
          positionTrackerConsumer({
            consumer: this.#consumer,
            subject_prefix: this.#prefix,
            ...(options.ack_wait_ms !== undefined ? { ack_wait_ms: options.ack_wait_ms } : {}),
            max_ack_pending: Math.max(1_000, this.#batchMax * 4),
          }),
          this.#log,
        );
        await state.load(sql, { open_orders: !state.loaded, by: POSITION_TRACKER_ACTOR });
        const peak = await peakEquity(sql, { portfolio_id: state.portfolio_id });
        this.#peakEquity = peak === null || fromDb(peak).lt(state.starting_cash)
          ? state.starting_cash
          : fromDb(peak);
        if (!state.starting_cash.eq(this.#startingCash)) {
          this.#log.warn(
            "portfolio.starting_cash differs from the starting cash stored with the portfolio; the stored one is kept",
            {
              portfolio: state.portfolio_id,
              stored: toJson(state.starting_cash),
              configured: toJson(this.#startingCash),
            },
          );
        }
        const consumer = await jetstream(nats).consumers.get(this.#stream, this.#consumer);
        return await consumer.consume({
          max_messages: this.#batchMax * 2,
          // The consumer or FILLS found missing (checked after each reconnect and when heartbeats
          // stop, or told by the server): consume ends, and so does the tracker, whose restart
          // creates both again — instead of waiting for them forever.
          abort_on_missing_resource: true,
          callback: (msg) => {
            this.#pending.push(msg);
            this.#wake.notify();
          },
        });
      } catch (error) {
        if (nats.isClosed()) throw error;
        this.#status.last_error = errorMessage(error);
        await this.#backOff(attempt, error, "Position tracker cannot set up, retrying", {
          stream: this.#stream,
          consumer: this.#consumer,
        });
      }
    }
    return null;
  }

  async #snapshotTimer(stop: AbortSignal): Promise<void> {
    const interval = this.#deps.options.portfolio.snapshot_interval_ms;
    while (!stop.aborted) {
      try {
        await this.#clock.sleep(interval, stop);
      } catch {
        return;
      }
      this.#snapshotDue = true;
      this.#wake.notify();
    }
  }

  #delay(attempt: number): number {
    const o = this.#deps.options;
    return backoffDelay(Math.min(attempt, 30), {
      initialMs: o.retry_initial_ms ?? DEFAULT_TRACKER_RETRY_INITIAL_MS,
      maxMs: o.retry_max_ms ?? DEFAULT_TRACKER_RETRY_MAX_MS,
    });
  }

  /**
   * After failed attempt `attempt` (0-based): logs `message` with `fields`,
   * the attempt, the delay and the error, then waits the backoff delay. False
   * when the tracker is stopped meanwhile.
   */
  async #backOff(
    attempt: number,
    error: unknown,
    message: string,
    fields: Record<string, unknown> = {},
  ): Promise<boolean> {
    const delayMs = this.#delay(attempt);
    this.#log.warn(message, {
      ...fields,
      attempt: attempt + 1,
      retry_in_ms: delayMs,
      error: errorMessage(error),
    });
    try {
      await this.#clock.sleep(delayMs, this.#signal);
      return true;
    } catch {
      return false;
    }
  }

  // -- fills ----------------------------------------------------------------------------------

  async #process(batch: JsMsg[]): Promise<void> {
    const items: Item[] = [];
    for (const msg of batch) {
      let fill: FillMessage;
      try {
        const value: unknown = JSON.parse(textDecoder.decode(msg.data));
        const id = (value as { id?: unknown } | null)?.id;
        if (typeof id === "string" && this.#handedOver.delete(id)) {
          msg.ack(); // applied when the engine handed it over
          continue;
        }
        // Handed over but not applied yet: its message applies it (once) instead.
        if (typeof id === "string") this.#offered.delete(id);
        fill = parseFillMessage(value);
      } catch (error) {
        this.#deadLetter(msg, "malformed", errorMessage(error));
        msg.ack();
        continue;
      }
      items.push({ msg, fill });
    }
    if (items.length === 0) return;
    // Applied in id order — the order the fills were stored in — after any older one the state
    // knows unapplied; else a newer fill's P&L would be realized before an older one's.
    items.sort((a, b) => compareIds(a.fill.id, b.fill.id));
    if (!await this.#catchUp(items.map((item) => item.fill.id), true)) {
      for (const item of items) item.msg.nak();
      return;
    }
    await this.#applyWithRetry(items);
  }

  /** The oldest handed-over fills, at most a batch, taken off the queue. */
  #takeOffered(): FillMessage[] {
    const fills: FillMessage[] = [];
    for (const [id, fill] of this.#offered) {
      if (fills.length >= this.#batchMax) break;
      fills.push(fill);
      this.#offered.delete(id);
    }
    return fills.sort((a, b) => compareIds(a.id, b.id));
  }

  /**
   * Applies fills the engine handed over, on the fast path only: whatever
   * it cannot apply at once is left to their FILLS messages.
   */
  async #applyOffered(fills: FillMessage[]): Promise<void> {
    if (!await this.#catchUp(fills.map((fill) => fill.id), false)) return;
    let applied: BatchResult["applied"] | null = null;
    try {
      applied = await this.#applyFast(fills);
    } catch (error) {
      this.#noteUnknownOutcome(error, fills);
      this.#log.debug("handed-over fills left to their messages", { error: errorMessage(error) });
    }
    if (applied !== null) this.#settleHandedOver(applied);
  }

  /**
   * After fills applied without their FILLS messages (handed over, or stored
   * with the engine's statement) committed: remembers their ids, so that the
   * messages are only acked, then records and publishes as for any batch.
   */
  #settleHandedOver(applied: BatchResult["applied"]): void {
    this.#status.handed_over += applied.length;
    this.#settleAhead(applied);
  }

  /**
   * After fills applied ahead of their FILLS messages committed: remembers
   * their ids, so that the messages are only acked, then records and
   * publishes as for any batch.
   */
  #settleAhead(applied: BatchResult["applied"]): void {
    const memory = this.#handedOver;
    for (const { fill_id } of applied) {
      memory.add(fill_id);
      if (memory.size > DEFAULT_HANDOFF_MEMORY) memory.deleteOldest();
    }
    this.#settle({ applied, applied_items: [], duplicates: [], missing: [] });
  }

  /**
   * Applies first the fills the state knows stored but not yet applied that
   * are older (lower ids) than the newest of `ids` and not among them: after
   * a restart those loaded unapplied wait for their messages (JetStream
   * redelivers a message held at the crash only after `ack_wait`), and a
   * message may come after a newer fill's (a publish retried). Applying the
   * newer fill first would realize P&L out of the order the fills were
   * stored in. They are read and applied under lock in id order, and their
   * messages then only acked; one found applied already, or not stored, is
   * forgotten. With `retry`, transient failures are retried with backoff;
   * false when it could not (stopping, or a failure without `retry`): the
   * caller leaves its batch for later.
   */
  async #catchUp(ids: readonly string[], retry: boolean): Promise<boolean> {
    const state = this.#deps.state;
    if (state.unappliedFillCount() === 0 || ids.length === 0) return true;
    const newest = ids.reduce((max, id) => compareIds(id, max) > 0 ? id : max);
    const batch = new Set(ids);
    const older = state.unappliedFillIds().filter((id) =>
      !batch.has(id) && compareIds(id, newest) < 0
    );
    return older.length === 0 || await this.#applyAhead(older, retry);
  }

  /** Applies the stored fills `ids` (in that order) without their messages; see `#catchUp`. */
  async #applyAhead(ids: readonly string[], retry: boolean): Promise<boolean> {
    for (let attempt = 0;; attempt++) {
      try {
        const { applied, outcomes } = await unitOfWork(
          this.#deps.sql,
          (tx) => this.#applyStored(tx, ids),
          { clock: this.#clock },
        );
        ids.forEach((id, i) => {
          if (outcomes[i] !== "applied") this.#deps.state.forgetUnappliedFill(id);
        });
        this.#settleAhead(applied);
        return true;
      } catch (error) {
        if (error instanceof UnapplicableError || isDataError(error)) {
          if (ids.length > 1) {
            for (const id of ids) if (!await this.#applyAhead([id], retry)) return false;
            return true;
          }
          // Its own message dead-letters it; the fills after it go on.
          this.#log.warn("an older unapplied fill cannot be applied; left to its message", {
            fill_id: ids[0],
            error: errorMessage(error),
          });
          return true;
        }
        this.#status.retries++;
        this.#status.last_error = errorMessage(error);
        this.#noteUnknownOutcome(error, ids.map((id) => ({ id, symbol: null })));
        if (!retry || this.#signal.aborted || this.#deps.nats.isClosed()) return false;
        const message = "Position tracker could not apply older unapplied fills, retrying";
        if (!await this.#backOff(attempt, error, message, { fills: ids.length })) return false;
        if (this.#reloadNeeded && !await this.#reload()) return false;
      }
    }
  }

  /** Applies `items` in one transaction, retrying transient failures; splits on bad data. */
  async #applyWithRetry(items: Item[]): Promise<void> {
    for (let attempt = 0;; attempt++) {
      try {
        const applied = attempt === 0
          ? await this.#applyFast(items.map((item) => item.fill))
          : null;
        const result = applied !== null
          ? { applied, applied_items: items, duplicates: [], missing: [] }
          : await unitOfWork(this.#deps.sql, (tx) => this.#applyBatch(tx, items), {
            clock: this.#clock,
          });

        this.#settle(result);
        return;
      } catch (error) {
        if (error instanceof UnapplicableError || isDataError(error)) {
          if (items.length > 1) {
            for (const item of items) await this.#applyWithRetry([item]);
            return;
          }
          const [item] = items;
          if (item === undefined) return;
          this.#log.error("fill cannot be applied; dead-lettered", {
            fill_id: item.fill.id,
            error: errorMessage(error),
          });
          this.#deadLetter(item.msg, "unapplicable", errorMessage(error));
          item.msg.ack();
          return;
        }
        this.#status.retries++;
        this.#status.last_error = errorMessage(error);
        this.#noteUnknownOutcome(error, items.map((item) => item.fill));
        if (this.#signal.aborted || this.#deps.nats.isClosed()) {
          for (const item of items) item.msg.nak();
          return;
        }
        for (const item of items) item.msg.working();
        const message = "Position tracker transaction failed, retrying";
        if (!await this.#backOff(attempt, error, message, { fills: items.length })) {
          for (const item of items) item.msg.nak();
          return;
        }
        // Its write may have committed: the state follows PostgreSQL before the batch is run
        // again (and then finds its fills applied).
        if (this.#reloadNeeded && !await this.#reload()) {
          for (const item of items) item.msg.nak();
          return;
        }
      }
    }
  }

  /**
   * The fast path of a batch of the tracked portfolio's fills: applied to
   * the positions and cash the state holds (they are what is stored, the
   * tracker being their only writer) and stored in one statement that checks
   * so ({@linkcode storeAppliedFills}). Null — take the locked path — when a
   * fill appears twice, `#compute` refuses the batch, or the statement found the
   * stored rows not as expected (then it wrote nothing).
   */
  async #applyFast(batch: readonly FillMessage[]): Promise<BatchResult["applied"] | null> {
    const seen = new Set<string>();
    for (const fill of batch) {
      if (seen.has(fill.id)) return null;
      seen.add(fill.id);
    }
    const computed = this.#compute(batch);
    if (computed === null) return null;
    try {
      await storeAppliedFills(this.#deps.sql, {
        portfolio: computed.portfolio,
        fills: batch.map((fill, i) => ({
          id: fill.id,
          order_id: fill.order_id,
          symbol: fill.symbol,
          side: fill.side,
          qty: fill.qty,
          price: fill.price,
          commission: fill.fee,
          filled_at: new Date(fill.filled_at),
          realized_pnl: computed.applied[i]!.realized,
          closing: computed.applied[i]!.closing,
          trade_pnl: computed.applied[i]!.trade_pnl,
        })),
        positions: computed.positions.map(({ last_fill, ...change }) => ({
          ...change,
          last_fill_id: batch[last_fill]!.id,
        })),
      }, { by: POSITION_TRACKER_ACTOR });
    } catch (error) {
      if (mapDbError(error) instanceof SerializationError) return null;
      throw error;
    }
    return this.#appliedAs(computed, batch.map((fill) => fill.id));
  }

  /**
   * What `batch` (fills of the tracked portfolio, in order) does to the
   * positions and cash the state holds. Null when the state is not loaded, a
   * fill is of another portfolio, or the arithmetic refuses a fill.
   */
  #compute(batch: readonly PendingFill[]): Computed | null {
    const state = this.#deps.state;
    if (!state.loaded) return null;
    const applied: AppliedFill[] = [];
    const before = new Map<string, Position | null>();
    const after = new Map<string, { position: Position; last_fill: number }>();
    let cash = state.cash;
    let realized = ZERO;
    try {
      for (const [i, fill] of batch.entries()) {
        if (fill.portfolio_id !== state.portfolio_id) return null;
        const symbol = fill.symbol;
        if (!before.has(symbol)) {
          before.set(symbol, state.hasPosition(symbol) ? state.position(symbol) : null);
        }
        const position = after.get(symbol)?.position ?? state.position(symbol);
        const next = applyTrackedFill(position, cash, {
          symbol,
          side: fill.side,
          qty: parseDecimal(fill.qty),
          price: parseDecimal(fill.price),
          fee: parseDecimal(fill.fee),
          filled_at: fill.filled_at,
        });
        cash = next.cash;
        realized = realized.plus(next.realized);
        after.set(symbol, { position: next.position, last_fill: i });
        applied.push(next);
      }
    } catch {
      return null;
    }
    return {
      applied,
      portfolio: {
        id: state.portfolio_id,
        cash_before: state.cash,
        cash,
        realized_pnl_delta: realized,
        ...this.#valuedFigures(cash, [...after.values()].map((a) => a.position)),
      },
      positions: [...after].map(([symbol, { position, last_fill }]) => {
        const stored = before.get(symbol) ?? null;
        return {
          symbol,
          before: stored === null ? null : figuresOf(stored),
          after: figuresOf(position),
          last_fill,
        };
      }),
    };
  }

  /** `computed`'s fills as applied, by the ids they are stored under. */
  #appliedAs(computed: Computed, ids: readonly string[]): BatchResult["applied"] {
    const portfolio_id = this.#deps.state.portfolio_id;
    return computed.applied.map((applied, i) => ({ portfolio_id, fill_id: ids[i]!, applied }));
  }

  /**
   * Reserves the positions for new fills the engine is about to store: what
   * they do is computed now and stored by the engine's own statement. Until
   * the reservation is committed or released the tracker writes nothing.
   * Null when the tracker is busy, has handed-over fills or messages
   * waiting, the state holds fills stored but not applied (the new fills
   * would be applied before them), `#compute` refuses the fills, or a
   * closing fill's trade is a win or a loss its realized P&L does not tell
   * (`insertFillsWithOrders` judges wins and losses by realized P&L: the
   * tracker then applies the fills itself, judging them by their trade).
   */
  #reserve(fills: readonly PendingFill[]): PositionsReservation | null {
    if (
      this.#busy || this.#reserved || this.#reloadNeeded || !this.#status.running ||
      this.#offered.size > 0 ||
      this.#deps.state.unappliedFillCount() > 0 || this.#pendingUnapplied()
    ) {
      return null;
    }
    const computed = this.#compute(fills);
    if (computed === null || computed.applied.some(judgedOtherwise)) return null;
    this.#reserved = true;
    let open = true;
    const end = (): boolean => {
      if (!open) return false;
      open = false;
      this.#reserved = false;
      this.#wake.notify();
      return true;
    };
    return {
      realized: computed.applied.map((applied) => applied.realized),
      positions: {
        portfolio: computed.portfolio,
        positions: computed.positions,
        closing: computed.applied.map((applied) => applied.closing),
      },
      commit: (ids) => {
        // Ended first: whatever follows, the tracker is not held.
        if (!end()) return;
        if (ids.length !== fills.length) {
          throw new RangeError(`${fills.length} fills reserved, ${ids.length} ids committed`);
        }
        // The engine offers these fills after this commit (then ignored as handed over); one
        // offered before it must not wait here to be applied a second time.
        for (const id of ids) this.#offered.delete(id);
        this.#settleHandedOver(this.#appliedAs(computed, ids));
      },
      release: () => {
        end();
      },
      unknown: () => {
        // Flagged before the tracker is let go, so that no reservation or write comes first.
        if (open) this.#reloadNeeded = true;
        end();
      },
    };
  }

  /**
   * A write of the tracker's, of `fills`, failed with `error`: when its answer
   * was lost (it may have committed), the state is to be read back before the
   * next write ({@linkcode #reload}), and the fills are remembered until then.
   */
  #noteUnknownOutcome(
    error: unknown,
    fills: ReadonlyArray<{ id: string; symbol: string | null }> = [],
  ): void {
    if (!mayHaveCommitted(mapDbError(error))) return;
    this.#reloadNeeded = true;
    for (const { id, symbol } of fills) this.#lostFills.set(id, symbol);
  }

  /**
   * After a write whose answer was lost — the tracker's own, or a
   * reservation's statement — which may have committed the positions and
   * cash it carried: waits until that statement has ended
   * ({@linkcode #awaitSettled}), then reads positions, cash, realized P&L per
   * day and the fills not applied back from PostgreSQL (one snapshot),
   * retrying with backoff; publishes `positions.<symbol>` for each position
   * that differs from what the state held, and marks the lost write's fills
   * of those symbols as applied by it (`#recovered`). False when stopping
   * first.
   */
  async #reload(): Promise<boolean> {
    const { sql, state } = this.#deps;
    let settle: SettleWait | null = null;
    for (let attempt = 0; !this.#signal.aborted; attempt++) {
      try {
        settle ??= await this.#settleWait();
        if (!await this.#awaitSettled(settle)) return false;
        const before = new Map(state.positions().map((p) => [p.symbol, p]));
        await state.load(sql, { open_orders: false, by: POSITION_TRACKER_ACTOR });
        this.#reloadNeeded = false;
        const changed = this.#publishChanged(before);
        for (const [id, symbol] of this.#lostFills) {
          if (symbol === null ? changed.size > 0 : changed.has(symbol)) {
            this.#recovered.add(id);
            if (this.#recovered.size > DEFAULT_HANDOFF_MEMORY) this.#recovered.deleteOldest();
          }
        }
        this.#lostFills.clear();
        this.#log.info("positions read back after a statement storing them lost its answer", {
          portfolio: state.portfolio_id,
          changed: [...changed],
        });
        return true;
      } catch (error) {
        this.#status.retries++;
        this.#status.last_error = errorMessage(error);
        const message = "Position tracker could not read its positions back, retrying";
        if (!await this.#backOff(attempt, error, message)) return false;
      }
    }
    return false;
  }

  /**
   * What the read-back after a lost answer waits for: the server's time now
   * — later than the start of the statement whose answer was lost — and how
   * long at most to wait (the server's `statement_timeout` plus
   * `unknown_outcome_margin_ms`; `unknown_outcome_max_wait_ms` when it is 0).
   */
  async #settleWait(): Promise<SettleWait> {
    const [row] = await this.#deps.sql<{ since: string; timeout_ms: string }[]>`
      SELECT now()::text AS since, setting AS timeout_ms
      FROM pg_settings WHERE name = 'statement_timeout'`;
    const o = this.#deps.options;
    const timeoutMs = Number(row?.timeout_ms ?? 0);
    const waitMs = timeoutMs > 0
      ? timeoutMs + (o.unknown_outcome_margin_ms ?? DEFAULT_UNKNOWN_OUTCOME_MARGIN_MS)
      : o.unknown_outcome_max_wait_ms ?? DEFAULT_UNKNOWN_OUTCOME_MAX_WAIT_MS;
    return { since: row!.since, until: this.#clock.now() + waitMs };
  }

  /**
   * Waits until no other session of this database (`pg_stat_activity`: a
   * client backend, not idle) is in a transaction that started before
   * `settle.since`: the statement whose answer was lost — still running in
   * its backend though its client is gone, waiting on a lock, say — has
   * then committed or rolled back, so what is read next includes it or never
   * will. Looks again after the backoff delay (at most
   * {@linkcode DEFAULT_UNKNOWN_OUTCOME_POLL_MAX_MS}); past `settle.until`
   * it logs a warning and stops waiting. False when stopping first.
   */
  async #awaitSettled(settle: SettleWait): Promise<boolean> {
    for (let attempt = 0;; attempt++) {
      const rows = await this.#deps.sql<{ pid: number }[]>`
        SELECT pid FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND backend_type = 'client backend' AND state <> 'idle'
          AND xact_start < ${settle.since}::timestamptz`;
      if (rows.length === 0) return true;
      const now = this.#clock.now();
      if (now >= settle.until) {
        this.#log.warn(
          "transactions older than a lost answer still run; positions read back without waiting longer",
          { pids: rows.map((r) => r.pid) },
        );
        return true;
      }
      const delayMs = Math.min(
        this.#delay(attempt),
        DEFAULT_UNKNOWN_OUTCOME_POLL_MAX_MS,
        settle.until - now,
      );
      try {
        await this.#clock.sleep(delayMs, this.#signal);
      } catch {
        return false;
      }
    }
  }

  /**
   * After a read-back: publishes `positions.<symbol>` for each position that
   * differs from `before` (what the state held), with the last fill stored
   * for it, and returns their symbols.
   */
  #publishChanged(before: ReadonlyMap<string, Position>): Set<string> {
    const { state } = this.#deps;
    const symbols = new Set([...before.keys(), ...state.positions().map((p) => p.symbol)]);
    const changed = new Set<string>();
    const markOf = this.#markOf();
    for (const symbol of symbols) {
      const now = state.position(symbol);
      const was = before.get(symbol) ?? emptyPosition(symbol);
      if (samePosition(was, now)) continue;
      changed.add(symbol);
      const lastFill = state.lastFillId(symbol);
      if (lastFill === null) continue; // a stored position changes only with a fill
      this.#publishPosition(state.portfolio_id, now, lastFill, markOf);
    }
    return changed;
  }

  /**
   * Whether a message received and not processed yet may carry a fill not
   * applied: any but the messages of fills applied ahead of them (by a
   * reservation, for one), known by their `Nats-Msg-Id: fill-<id>`.
   */
  #pendingUnapplied(): boolean {
    for (const msg of this.#pending) {
      const msgId = msg.headers?.get("Nats-Msg-Id") ?? "";
      if (!msgId.startsWith("fill-") || !this.#handedOver.has(msgId.slice(5))) return true;
    }
    return false;
  }

  async #applyBatch(tx: TransactionSql, items: Item[]): Promise<BatchResult> {
    const { applied, outcomes } = await this.#applyStored(tx, items.map((item) => item.fill.id));
    const result: BatchResult = { applied, applied_items: [], duplicates: [], missing: [] };
    items.forEach((item, i) => {
      const outcome = outcomes[i]!;
      if (outcome === "applied") result.applied_items.push(item);
      else if (outcome === "duplicate") result.duplicates.push(item);
      else result.missing.push(item);
    });
    return result;
  }

  /**
   * The locked path: reads and locks the stored fills `ids` and applies, in
   * that order, those not applied yet to the locked positions and cash.
   * `outcomes` says, per id given, whether it was applied now, applied
   * before (or given twice: a duplicate) or not found (missing).
   */
  async #applyStored(tx: TransactionSql, ids: readonly string[]): Promise<{
    applied: BatchResult["applied"];
    outcomes: Array<"applied" | "duplicate" | "missing">;
  }> {
    const state = this.#deps.state;
    const rows = await tx<FillRow[]>`
      SELECT f.id::text AS id, f.symbol, f.side, f.qty::text AS qty, f.price::text AS price,
        f.commission::text AS commission, f.filled_at, f.realized_pnl IS NULL AS pending,
        o.portfolio_id, o.strategy
      FROM fills f JOIN orders o ON o.id = f.order_id
      WHERE f.id = ANY (string_to_array(${[...new Set(ids)].join(",")}, ',')::bigint[])
      ORDER BY f.id
      FOR UPDATE OF f`;
    const byId = new Map(rows.map((row) => [row.id, row]));
    const result: BatchResult = { applied: [], applied_items: [], duplicates: [], missing: [] };
    const outcomes: Array<"applied" | "duplicate" | "missing"> = [];
    const toApply: FillRow[] = [];
    const seen = new Set<string>();
    for (const id of ids) {
      const row = byId.get(id);
      if (row === undefined) outcomes.push("missing");
      else if (!row.pending || seen.has(row.id)) outcomes.push("duplicate");
      else {
        seen.add(row.id);
        toApply.push(row);
        outcomes.push("applied");
      }
    }
    if (toApply.length === 0) return { applied: [], outcomes };

    const pairs = uniqueBy(
      toApply.map((row) => ({ portfolio_id: row.portfolio_id, symbol: row.symbol })),
      (p) => pairKey(p.portfolio_id, p.symbol),
    );
    // The positions and portfolios reads (and, below, the writes) are sent together — postgres.js
    // pipelines queries issued at once on the transaction's connection — saving round trips;
    // PostgreSQL still runs them in order, so the locks are taken in the same order as before.
    const portfolioIds = [...new Set(toApply.map((row) => row.portfolio_id))].sort();
    const storedQuery = tx<
      {
        portfolio_id: string;
        symbol: string;
        qty: string;
        avg: string;
        cost: string;
        realized: string;
        fees: string;
        open_fees: string;
      }[]
    >`
      SELECT p.portfolio_id, p.symbol, p.qty::text AS qty, p.avg_entry_price::text AS avg,
        p.cost_basis::text AS cost, p.realized_pnl::text AS realized, p.commission::text AS fees,
        p.open_fees::text AS open_fees
      FROM positions p
      JOIN jsonb_to_recordset(${JSON.stringify(pairs)}::text::jsonb)
        AS k(portfolio_id text, symbol text)
        ON k.portfolio_id = p.portfolio_id AND k.symbol = p.symbol
      ORDER BY p.portfolio_id, p.symbol
      FOR UPDATE OF p`;
    const portfoliosQuery = tx<{ id: string; cash: string; realized: string }[]>`
      SELECT id, cash::text AS cash, realized_pnl::text AS realized FROM portfolios
      WHERE id IN (SELECT jsonb_array_elements_text(${JSON.stringify(portfolioIds)}::text::jsonb))
      ORDER BY id
      FOR UPDATE`;
    const [stored, portfolios] = await Promise.all([storedQuery, portfoliosQuery]);
    const positions = new Map<string, Position>();
    for (const p of stored) {
      positions.set(pairKey(p.portfolio_id, p.symbol), {
        symbol: p.symbol,
        qty: fromDb(p.qty),
        avg_entry_price: fromDb(p.avg),
        cost_basis: fromDb(p.cost),
        realized_pnl: fromDb(p.realized),
        fees: fromDb(p.fees),
        open_fees: fromDb(p.open_fees),
      });
    }
    const cash = new Map<string, Decimal>();
    const realized = new Map<string, Decimal>();
    for (const p of portfolios) {
      cash.set(p.id, fromDb(p.cash));
      realized.set(p.id, fromDb(p.realized));
    }

    const marks: Array<{ id: string; r: string }> = [];
    const lastFill = new Map<string, string>();
    for (const row of toApply) {
      const key = pairKey(row.portfolio_id, row.symbol);
      const before = positions.get(key) ?? emptyPosition(row.symbol);
      const cashBefore = cash.get(row.portfolio_id);
      if (cashBefore === undefined) {
        throw new UnapplicableError(`Portfolio ${row.portfolio_id} of fill ${row.id} not found`);
      }
      let applied: AppliedFill;
      try {
        applied = applyTrackedFill(before, cashBefore, {
          symbol: row.symbol,
          side: row.side,
          qty: fromDb(row.qty),
          price: fromDb(row.price),
          fee: fromDb(row.commission),
          filled_at: row.filled_at.getTime(),
        });
      } catch (error) {
        throw new UnapplicableError(`Fill ${row.id}: ${errorMessage(error)}`, { cause: error });
      }
      positions.set(key, applied.position);
      cash.set(row.portfolio_id, applied.cash);
      realized.set(
        row.portfolio_id,
        (realized.get(row.portfolio_id) ?? ZERO).plus(applied.realized),
      );
      lastFill.set(key, row.id);
      marks.push({ id: row.id, r: applied.realized.toFixed() });
      result.applied.push({ portfolio_id: row.portfolio_id, fill_id: row.id, applied });
    }

    // The three writes are pipelined (sent at once, run in order, one round trip); the
    // transaction only commits after all of them, and the count check below rolls it back.
    const writes: Promise<unknown>[] = [];
    const marked = tx<{ id: string }[]>`
      UPDATE fills f SET realized_pnl = x.r
      FROM jsonb_to_recordset(${JSON.stringify(marks)}::text::jsonb) AS x(id bigint, r numeric)
      WHERE f.id = x.id AND f.realized_pnl IS NULL
        AND f.id = ANY (string_to_array(${marks.map((m) => m.id).join(",")}, ',')::bigint[])
      RETURNING f.id::text AS id`;
    writes.push(marked);
    const by = { by: POSITION_TRACKER_ACTOR };
    writes.push(upsertPositions(
      tx,
      pairs.map(({ portfolio_id, symbol }) => {
        const key = pairKey(portfolio_id, symbol);
        const p = positions.get(key)!;
        return {
          portfolio_id,
          symbol,
          qty: p.qty,
          avg_entry_price: p.avg_entry_price,
          cost_basis: costBasisOf(p),
          realized_pnl: p.realized_pnl,
          commission: p.fees,
          open_fees: p.open_fees ?? ZERO,
          last_fill_id: lastFill.get(key)!,
        };
      }),
      by,
    ));
    for (const id of portfolioIds) {
      const newCash = cash.get(id)!;
      const figures: Record<string, Decimal> = {
        cash: newCash,
        realized_pnl: roundMoney(realized.get(id) ?? ZERO),
      };
      if (id === state.portfolio_id) {
        const changed = [...positions].filter(([key]) => key.startsWith(`${id}\u0000`));
        Object.assign(figures, this.#valuedFigures(newCash, changed.map(([, p]) => p)));
      }
      writes.push(upsertPortfolio(tx, { id, ...figures }, by));
    }
    writes.push(addStrategyTrades(
      tx,
      toApply.map((row, i) => {
        const { applied } = result.applied[i]!;
        return {
          strategy: row.strategy,
          filled_at: row.filled_at,
          qty: row.qty,
          price: row.price,
          commission: row.commission,
          realized_pnl: applied.realized,
          trade_pnl: applied.trade_pnl,
        };
      }),
      by,
    ));
    await Promise.all(writes);
    const updated = await marked;
    if (updated.length !== marks.length) {
      // Impossible under the row locks; roll back rather than apply a fill twice.
      throw new Error(`Expected to mark ${marks.length} fills applied, marked ${updated.length}`);
    }
    return { applied: result.applied, outcomes };
  }

  /** After commit: ack, record in the state, publish the positions. */
  #settle(result: BatchResult): void {
    const { state } = this.#deps;
    const status = this.#status;
    const o = this.#deps.options;
    status.batches++;
    for (const item of result.applied_items) item.msg.ack();
    for (const item of result.duplicates) {
      item.msg.ack();
      if (this.#recovered.delete(item.fill.id)) {
        // Applied by a write whose answer was lost (the read-back published its position).
        status.recovered++;
        status.last_fill_id = item.fill.id;
      } else {
        status.duplicates++;
      }
    }
    const maxDeliveries = o.missing_fill_deliveries ?? DEFAULT_MISSING_FILL_DELIVERIES;
    for (const item of result.missing) {
      if (item.msg.info.deliveryCount >= maxDeliveries) {
        this.#deadLetter(
          item.msg,
          "unknown_fill",
          `fill ${item.fill.id} is not in the fills table after ${item.msg.info.deliveryCount} deliveries`,
        );
        item.msg.ack();
      } else {
        status.missing++;
        item.msg.nak(o.missing_fill_delay_ms ?? DEFAULT_MISSING_FILL_DELAY_MS);
      }
    }
    const changed = new Map<string, { portfolio_id: string; position: Position; fill: string }>();
    for (const entry of result.applied) {
      status.applied++;
      status.last_fill_id = entry.fill_id;
      // By its id: the engine counts a fill it stored without its position until then.
      if (entry.portfolio_id === state.portfolio_id) state.record(entry.applied, entry.fill_id);
      changed.set(pairKey(entry.portfolio_id, entry.applied.symbol), {
        portfolio_id: entry.portfolio_id,
        position: entry.applied.position,
        fill: entry.fill_id,
      });
    }
    const markOf = this.#markOf();
    for (const { portfolio_id, position, fill } of changed.values()) {
      this.#publishPosition(portfolio_id, position, fill, markOf);
    }
  }

  /** Publishes `position` on `positions.<symbol>`, valued at `markOf`'s mark. */
  #publishPosition(
    portfolio_id: string,
    position: Position,
    lastFillId: string,
    markOf: (symbol: string) => Decimal | null,
  ): void {
    const mark = markOf(position.symbol);
    const value = roundPositionValue(markPosition(position, mark));
    const message: PositionMessage = {
      ...positionValueToJson(value),
      portfolio_id,
      marked: mark !== null,
      last_fill_id: lastFillId,
      at: this.#clock.now(),
    };
    this.#publish(`positions.${symbolToken(position.symbol)}`, message);
  }

  // -- snapshots ----------------------------------------------------------------------------

  async #snapshot(): Promise<void> {
    const { state, sql } = this.#deps;
    const now = this.#clock.now();
    const markOf = this.#markOf();
    const value = roundPortfolio(state.value(markOf));
    const peak = this.#peakEquity === null || value.equity.gt(this.#peakEquity)
      ? value.equity
      : this.#peakEquity;
    const risk = this.#riskMetrics(value, peak, now);
    const marks = new Map<string, Decimal>();
    for (const p of value.positions) {
      if (!p.qty.isZero() && p.mark_price !== null) marks.set(p.symbol, p.mark_price);
    }
    const message: SnapshotMessage = {
      portfolio_id: state.portfolio_id,
      taken_at: now,
      starting_cash: toJson(state.starting_cash),
      ...portfolioValueToJson(value),
    };
    try {
      await unitOfWork(sql, async (tx) => {
        const by = { by: POSITION_TRACKER_ACTOR };
        const { created } = await insertSnapshot(tx, {
          portfolio_id: state.portfolio_id,
          taken_at: new Date(now),
          cash: value.cash,
          equity: value.equity,
          market_value: value.net_exposure,
          gross_exposure: value.gross_exposure,
          net_exposure: value.net_exposure,
          realized_pnl: value.realized_pnl,
          unrealized_pnl: value.unrealized_pnl,
          positions: message.positions,
        }, by);
        await upsertPortfolio(tx, {
          id: state.portfolio_id,
          equity: value.equity,
          market_value: value.net_exposure,
          gross_exposure: value.gross_exposure,
          net_exposure: value.net_exposure,
          unrealized_pnl: value.unrealized_pnl,
        }, by);
        if (marks.size > 0) {
          await markPositions(tx, marks, {
            portfolio_id: state.portfolio_id,
            at: new Date(now),
            ...by,
          });
        }
        // Once per instant: a snapshot taken at the same time as one stored (a retried write)
        // has its figures stored already.
        if (created) await insertRiskMetrics(tx, risk, by);
      }, { clock: this.#clock });
    } catch (error) {
      this.#status.last_error = errorMessage(error);
      this.#log.warn("Portfolio snapshot could not be stored; next interval", {
        error: errorMessage(error),
      });
      return;
    }
    this.#peakEquity = peak;
    this.#status.snapshots++;
    this.#publish("portfolio.snapshot", message);
  }

  /**
   * The risk figures stored with a snapshot (`risk_metrics`, one row each,
   * with the limit in force where there is one): equity and drawdown (the
   * highest equity snapshotted, or the starting cash, minus equity) as
   * snapshotted; gross and net exposure as the risk checks count them — the
   * fills not yet applied included, a position without a fresh price at its
   * newest price no older than `DEFAULT_RISK_MARK_MAX_AGE_MS` — against
   * `max_gross_exposure`; realized P&L today against the floor the daily
   * loss limit sets (−`daily_loss_limit`); open orders against
   * `max_open_orders`.
   */
  #riskMetrics(value: PortfolioValue, peak: Decimal, now: number): RiskMetricInput[] {
    const { state } = this.#deps;
    const limits = this.#deps.options.limits ?? {};
    const exposure = state.exposure(this.#markOf(DEFAULT_RISK_MARK_MAX_AGE_MS), {
      unapplied_fills: true,
    });
    const loss = limits.daily_loss_limit ?? null;
    const maxOpen = limits.max_open_orders ?? null;
    const figures: Array<[string, Decimal | string, Decimal | string | null]> = [
      ["equity", value.equity, null],
      ["drawdown", peak.minus(value.equity), null],
      ["gross_exposure", roundMoney(exposure.gross), limits.max_gross_exposure ?? null],
      ["net_exposure", roundMoney(exposure.net), null],
      [
        "daily_realized_pnl",
        roundMoney(state.realizedToday(now)),
        loss === null ? null : loss.neg(),
      ],
      ["open_orders", String(state.openOrderCount()), maxOpen === null ? null : String(maxOpen)],
    ];
    return figures.map(([metric, figure, limit]) => ({
      portfolio_id: state.portfolio_id,
      metric,
      value: figure,
      limit_value: limit,
      measured_at: new Date(now),
    }));
  }

  // -- helpers ------------------------------------------------------------------------------

  /**
   * The tracked portfolio's stored figures (equity, market value, exposures,
   * unrealized P&L, rounded to money) at the current marks, once its cash is
   * `cash` and `changed` replace the positions the state holds.
   */
  #valuedFigures(cash: Decimal, changed: Iterable<Position>) {
    const { state } = this.#deps;
    const positions = new Map<string, Position>();
    for (const p of state.positions()) positions.set(p.symbol, p);
    for (const p of changed) positions.set(p.symbol, p);
    const value = valuePortfolio(
      { starting_cash: state.starting_cash, cash, positions },
      this.#markOf(),
    );
    return {
      equity: roundMoney(value.equity),
      market_value: roundMoney(value.net_exposure),
      gross_exposure: roundMoney(value.gross_exposure),
      net_exposure: roundMoney(value.net_exposure),
      unrealized_pnl: roundMoney(value.unrealized_pnl),
    };
  }

  /** Marks at the current time, memoized; with `fallbackMs`, the risk checks' (see `markPrice`). */
  #markOf(fallbackMs = 0): (symbol: string) => Decimal | null {
    const now = this.#clock.now();
    const { cache, options } = this.#deps;
    const memo = new Map<string, Decimal | null>();
    const fallback = { fallback_max_age_ms: fallbackMs };
    return (symbol) => {
      let mark = memo.get(symbol);
      if (mark === undefined) {
        mark = markPrice(cache, symbol, options.max_price_age_ms, now, fallback);
        memo.set(symbol, mark);
      }
      return mark;
    };
  }

  #publish(subject: string, data: unknown): void {
    try {
      this.#deps.nats.publish(`${this.#prefix}${subject}`, encodeJson(data));
    } catch (error) {
      this.#log.warn("Position tracker cannot publish", { subject, error: errorMessage(error) });
    }
  }

  #deadLetter(msg: JsMsg, reason: string, detail: string): void {
    this.#status.dead_lettered++;
    const letter: FillDeadLetter = {
      stage: "position_tracker",
      reason,
      detail,
      subject: msg.subject,
      stream_seq: msg.seq,
      data: textDecoder.decode(msg.data).slice(0, 4096),
      at: this.#clock.now(),
    };
    this.#log.warn("fill message dead-lettered", { reason, detail, stream_seq: msg.seq });
    this.#publish(FILLS_DLQ_SUBJECT, letter);
  }
}

/** Whether two positions have the same figures. */
function samePosition(a: Position, b: Position): boolean {
  return a.qty.eq(b.qty) && a.avg_entry_price.eq(b.avg_entry_price) &&
    costBasisOf(a).eq(costBasisOf(b)) && a.realized_pnl.eq(b.realized_pnl) && a.fees.eq(b.fees);
}

/** A position's stored figures. */
function figuresOf(position: Position): PositionFigures {
  return {
    qty: position.qty,
    avg_entry_price: position.avg_entry_price,
    cost_basis: costBasisOf(position),
    realized_pnl: position.realized_pnl,
    commission: position.fees,
    open_fees: position.open_fees ?? ZERO,
  };
}

/**
 * Whether `applied` closed a trade that is a win or a loss other than its
 * realized P&L's sign tells (that P&L carries the fill's whole fee, none of
 * the fees that opened what it closes): a flip whose closing part gained, a
 * close that gained less than its fees.
 */
function judgedOtherwise(applied: AppliedFill): boolean {
  return applied.trade_pnl !== null && applied.trade_pnl.cmp(0) !== applied.realized.cmp(0);
}

/** Orders fill ids (positive decimal integers) numerically. */
function compareIds(a: string, b: string): number {
  return a.length - b.length || (a < b ? -1 : a > b ? 1 : 0);
}

function pairKey(portfolioId: string, symbol: string): string {
  return `${portfolioId}\u0000${symbol}`;
}

function uniqueBy<T>(items: T[], key: (item: T) => string): T[] {
  const seen = new Map<string, T>();
  for (const item of items) if (!seen.has(key(item))) seen.set(key(item), item);
  return [...seen.values()];
}

/** Errors caused by the data of a fill rather than by the database being unavailable. */
function isDataError(error: unknown): boolean {
  if (error instanceof RangeError) return true;
  const mapped = mapDbError(error);
  return mapped instanceof IntegrityError ||
    (mapped instanceof DbError && /numeric field overflow/i.test(mapped.message));
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
