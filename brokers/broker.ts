/**
 * The contract every broker adapter fulfils (paper, Alpaca): submit orders
 * idempotently by client order id, cancel them, report what happened to them
 * as a stream of events, and answer reconciliation queries at startup.
 *
 * @module
 */

import { type Decimal, parseDecimal, ZERO } from "../trading/money.ts";
import type { FillCostBound } from "../trading/risk.ts";
import type { OrderType, Side, TimeInForce } from "../trading/signal.ts";

/** An order as sent to a broker. */
export interface BrokerOrderRequest {
  /** Our id for the order; the broker's idempotency key (a retried submit is recognised). */
  client_order_id: string;
  /** Canonical symbol (`BTC-USDT`, `AAPL`). */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Order type. */
  type: OrderType;
  /** Time in force. */
  time_in_force: TimeInForce;
  /** Quantity. */
  qty: Decimal;
  /** Limit price for limit and stop_limit orders. */
  limit_price: Decimal | null;
  /** Stop price for stop and stop_limit orders. */
  stop_price: Decimal | null;
  /** Market-data venue whose prices the paper broker uses; ignored by real brokers. */
  exchange: string | null;
}

/** Where an order stands at the broker. */
export type BrokerOrderStatus =
  | "accepted"
  | "partially_filled"
  | "filled"
  | "cancelled"
  | "expired"
  | "rejected";

/** A broker's view of one order, for reconciliation. */
export interface BrokerOrderState {
  /** Our id. */
  client_order_id: string;
  /** The broker's id. */
  broker_order_id: string;
  /** Its status at the broker. */
  status: BrokerOrderStatus;
  /** Quantity filled so far. */
  filled_qty: Decimal;
  /** Volume-weighted average fill price, or null before any fill. */
  avg_fill_price: Decimal | null;
  /**
   * When the broker last filled it, in ms since the epoch, when it says
   * (Alpaca's `filled_at`, else its `updated_at`); absent before any fill. A
   * fill reconciliation records for it is dated then, not when it was
   * reconciled: the day its P&L is realized on is the day it executed.
   */
  filled_at_ms?: number;
}

/** Something that happened to an order at the broker. */
export type BrokerEvent =
  | {
    type: "accepted";
    client_order_id: string;
    broker_order_id: string;
    at_ms: number;
  }
  | {
    type: "fill";
    client_order_id: string;
    broker_order_id: string;
    /** The broker's id of this execution; with the order it makes the fill unique. */
    fill_id: string;
    /** Quantity of this fill. */
    qty: Decimal;
    /** Price of this fill. */
    price: Decimal;
    /** Commission charged for this fill. */
    fee: Decimal;
    /**
     * The order's filled quantity after this fill, when the broker says: a
     * fill that reconciliation already counted (under a `reconcile-…` id, not
     * knowing this one) is then recognised and not counted twice.
     */
    cum_qty?: Decimal;
    /**
     * The average price of `cum_qty`, when the broker says (Alpaca's
     * `filled_avg_price`): a derived fill (`qty_derived`) the engine records
     * for a quantity other than `qty` — part of it counted already by a
     * reconciliation — is priced from it, so that the order's average stays
     * the broker's.
     */
    cum_avg_price?: Decimal;
    /**
     * True when the broker did not say this execution's quantity (Alpaca's
     * documented `partial_fill` has none): `qty` is the adapter's guess from
     * the cumulative quantity it saw before, which it may not know (a
     * restart, a stream gap). `cum_qty` is then set, and the engine records
     * `cum_qty` minus what the order's fills already count instead.
     */
    qty_derived?: boolean;
    at_ms: number;
  }
  | {
    type: "cancelled" | "expired" | "rejected";
    client_order_id: string;
    broker_order_id: string | null;
    reason: string;
    /**
     * The order's filled quantity at the end, when the broker says (Alpaca
     * sends the order with its cumulative `filled_qty`): more than the
     * order's fills count means fills were missed (a stream gap), and the
     * engine records the missing quantity before closing the order.
     */
    filled_qty?: Decimal;
    /** The average price of `filled_qty`, when the broker says. */
    avg_fill_price?: Decimal | null;
    at_ms: number;
  };

/** A broker adapter. */
export interface Broker extends AsyncDisposable {
  /** The name orders are routed by (`paper`, `alpaca`). */
  readonly name: string;
  /**
   * Submits an order. Submitting the same `client_order_id` again must not
   * create a second order: the broker's existing order is returned instead.
   * Rejects with a {@linkcode BrokerRejectedError} when the broker refuses it.
   */
  submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }>;
  /** Asks the broker to cancel the order; the outcome arrives as an event. */
  cancel(clientOrderId: string): Promise<void>;
  /** The broker's view of an order, or null when it does not know it. */
  getOrder(clientOrderId: string): Promise<BrokerOrderState | null>;
  /** Every order still open at the broker. */
  openOrders(): Promise<BrokerOrderState[]>;
  /** Calls `listener` for each event, in order, until the returned function is called. */
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void;
  /** Starts streaming events (e.g. Alpaca's trade_updates); resolves once connected. */
  start(signal: AbortSignal): Promise<void>;
  /**
   * Calls `listener` each time the event stream listens — after it was lost,
   * and the first time after a start — until the returned function is called. A broker that does not replay the
   * events missed meanwhile (Alpaca) has one: the engine then reconciles its
   * open orders. Absent: the stream loses nothing.
   */
  onReconnect?(listener: () => void | Promise<void>): () => void;
  /**
   * Where the broker's event stream stands, for health
   * ({@linkcode streamProblem}). Absent: the broker has no stream to lose
   * (paper).
   */
  streamStatus?(): BrokerStreamStatus;
  /**
   * What this broker is known to refuse about an order, checked by the engine
   * before the order exists (the signal is then rejected with these
   * reasons); empty when nothing. Absent: the broker refuses nothing in advance.
   */
  refusals?(order: OrderShape): BrokerRefusal[];
  /**
   * The most a fill of this broker costs beyond `qty × price` — its fee and
   * its slippage past the price the order was checked at — for the
   * `numeric_range` risk rule. Absent: {@linkcode DEFAULT_FILL_COST_BOUND}.
   */
  readonly fillCosts?: FillCostBound;
}

/**
 * The fee and slippage margin assumed for a broker that does not say its
 * own ({@linkcode Broker.fillCosts}): 100 bps (1%) of the notional, nothing
 * per order — Alpaca charges no commission on US equities and crypto fees
 * are below it; the margin covers a market order filling above the last
 * price.
 */
export const DEFAULT_FILL_COST_BOUND: FillCostBound = { bps: parseDecimal("100"), min: ZERO };

/** Where a broker's event stream (Alpaca's `trade_updates`) stands. */
export interface BrokerStreamStatus {
  /**
   * `idle` before start, `connecting` (first connection), `listening`,
   * `reconnecting`, `stopped`, `failed` (start failed).
   */
  state: "idle" | "connecting" | "listening" | "reconnecting" | "stopped" | "failed";
  /**
   * How long the stream has not been listening, in ms: since the broker was
   * created, or since the connection that listened was lost; null while it
   * listens.
   */
  down_for_ms: number | null;
  /** The broker refused the API keys on the last connection attempt (cleared once it listens). */
  auth_error: boolean;
  /** The last connection or protocol error, or null. */
  last_error: string | null;
}

/**
 * How long a broker's stream may be down before health reports it, in ms: a
 * lost connection is normal and comes back within a few reconnects.
 */
export const DEFAULT_STREAM_DOWN_GRACE_MS = 10_000;

/**
 * Why broker `name`'s event stream makes the engine degraded, or null when
 * it does not: the broker refused the API keys (at once — no order update
 * arrives until the keys are fixed), or the stream has not been listening
 * for longer than `graceMs`. Pure.
 *
 * @example
 * ```ts
 * streamProblem("alpaca", {
 *   state: "reconnecting",
 *   down_for_ms: 42_000,
 *   auth_error: false,
 *   last_error: "Alpaca stream closed (code 1006)",
 * });
 * // "broker alpaca: event stream reconnecting, not listening for 42 s (Alpaca stream closed (code 1006))"
 * ```
 */
export function streamProblem(
  name: string,
  status: BrokerStreamStatus,
  graceMs: number = DEFAULT_STREAM_DOWN_GRACE_MS,
): string | null {
  if (status.state === "listening" || status.down_for_ms === null) return null;
  const why = status.last_error === null ? "" : ` (${status.last_error})`;
  if (status.auth_error) return `broker ${name}: event stream refused the API keys${why}`;
  if (status.down_for_ms <= graceMs) return null;
  return `broker ${name}: event stream ${status.state}, not listening for ${
    Math.floor(status.down_for_ms / 1000)
  } s${why}`;
}

/**
 * What {@linkcode Broker.refusals} looks at: the order's symbol, type and
 * time in force, and, when the caller knows them, its quantity and prices (a
 * price absent or null: the order has none).
 */
export type OrderShape =
  & Pick<BrokerOrderRequest, "symbol" | "type" | "time_in_force">
  & Partial<Pick<BrokerOrderRequest, "qty" | "limit_price" | "stop_price">>;

/**
 * One thing a broker is known to refuse about an order: the signal field it
 * is about (`limit_price`, `time_in_force`…) and why.
 */
export interface BrokerRefusal {
  /** The signal field refused, as in a signal's own rejection reasons. */
  path: string;
  /** Why, starting with the broker's name. */
  message: string;
}

/** The broker refused an order; `reason` says why. Not retried. */
export class BrokerRejectedError extends Error {
  /** Creates the error with the broker's reason. */
  constructor(readonly reason: string, options?: ErrorOptions) {
    super(`Broker rejected the order: ${reason}`, options);
    this.name = "BrokerRejectedError";
  }
}

/** The broker could not be reached or answered with a server error; the call may be retried. */
export class BrokerUnavailableError extends Error {
  /** Creates the error; `cause` is the network or HTTP error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "BrokerUnavailableError";
  }
}
