/**
 * The order lifecycle as a pure state machine. {@linkcode transition} takes
 * an order and an event and returns the next order, or throws
 * {@linkcode IllegalTransitionError}; fills go through {@linkcode applyFill},
 * which keeps the filled quantity, the exact filled notional (Σ qty × price)
 * and the volume-weighted average fill price derived from it.
 *
 * | from               | to                                                            |
 * | ------------------ | ------------------------------------------------------------- |
 * | `pending`          | `submitted`, `rejected`, `cancelled`                          |
 * | `submitted`        | `partially_filled`, `filled`, `cancelled`, `rejected`, `expired` |
 * | `partially_filled` | `partially_filled` (another fill), `filled`, `cancelled`, `expired` |
 * | terminal           | nothing: `filled`, `cancelled`, `rejected`, `expired`         |
 *
 * Why: `pending` is the row written before the broker is called, so it may be
 * rejected (broker refused it) or cancelled (kill switch, or recovery deciding
 * not to send it), but not filled — a broker fill for it is recorded as
 * `submit` then `fill`. A partially filled order was accepted, so it can no
 * longer be rejected; whatever is left of it is cancelled or expires. The
 * statuses are confirmed broker states: a cancel *request* changes nothing
 * until the broker confirms, and a fill that wins the race is applied first.
 *
 * @example
 * ```ts
 * import { newOrderState, transition } from "./order_state.ts";
 * import { parseDecimal } from "./money.ts";
 *
 * let order = newOrderState(parseDecimal("10"));
 * order = transition(order, { type: "submit", broker_order_id: "b-1" });
 * order = transition(order, { type: "fill", qty: parseDecimal("4"), price: parseDecimal("100") });
 * order.status; // "partially_filled"
 * ```
 *
 * @module
 */

import { type Decimal, toJson, ZERO } from "./money.ts";
import { FINAL_ORDER_STATUSES, ORDER_STATUSES, type OrderStatus } from "../db/enums.ts";

// Every order status is a label of the database's order_status enum (db/enums.ts).
export { ORDER_STATUSES };
export type { OrderStatus };
/** Statuses an order never leaves. */
export const TERMINAL_ORDER_STATUSES: readonly OrderStatus[] = FINAL_ORDER_STATUSES;
/** Statuses of a live order: counted by the `max_open_orders` risk rule, cancellable. */
export const OPEN_ORDER_STATUSES: readonly OrderStatus[] = [
  "pending",
  "submitted",
  "partially_filled",
];

/** The legal next statuses of each status (see the module doc). */
export const ORDER_TRANSITIONS: Readonly<Record<OrderStatus, readonly OrderStatus[]>> = {
  pending: ["submitted", "rejected", "cancelled"],
  submitted: ["partially_filled", "filled", "cancelled", "rejected", "expired"],
  partially_filled: ["partially_filled", "filled", "cancelled", "expired"],
  filled: [],
  cancelled: [],
  rejected: [],
  expired: [],
};

/** Whether an order may go from status `from` to status `to`. */
export function canTransition(from: OrderStatus, to: OrderStatus): boolean {
  return ORDER_TRANSITIONS[from].includes(to);
}

/** Whether `status` is final (`filled`, `cancelled`, `rejected`, `expired`). */
export function isTerminal(status: OrderStatus): boolean {
  return TERMINAL_ORDER_STATUSES.includes(status);
}

/** Whether `status` is a live order's (`pending`, `submitted`, `partially_filled`). */
export function isOpen(status: OrderStatus): boolean {
  return OPEN_ORDER_STATUSES.includes(status);
}

/**
 * What the state machine needs of an order. {@linkcode transition} and
 * {@linkcode applyFill} are generic over it, so a fuller order record passes
 * through with its other fields untouched.
 */
export interface OrderState {
  /** Current status. */
  readonly status: OrderStatus;
  /** Ordered quantity, > 0. */
  readonly qty: Decimal;
  /** Quantity filled so far, 0..qty. */
  readonly filled_qty: Decimal;
  /**
   * Volume-weighted average price of the fills (`filled_notional ÷
   * filled_qty`); `null` before the first fill. It may be held rounded (as
   * stored, NUMERIC(20,8)): it is shown, never weighted again.
   */
  readonly avg_fill_price: Decimal | null;
  /**
   * Σ qty × price of the fills, exact: what the next fill's average is
   * derived from. Re-weighting a rounded stored average instead drifts (fills
   * 1@1, 1@1, 1@2 then 3@1 would average 1.16666666, not 7/6).
   */
  readonly filled_notional: Decimal;
  /** Why the order was rejected, cancelled or expired; `null` otherwise. */
  readonly reason: string | null;
  /** The broker's id of the order, once submitted (when the broker gave one). */
  readonly broker_order_id: string | null;
}

/** A new `pending` order of `qty`, nothing filled. Throws a `RangeError` unless `qty` > 0. */
export function newOrderState(qty: Decimal): OrderState {
  if (!qty.gt(0)) throw new RangeError(`Order quantity must be > 0, got ${toJson(qty)}`);
  return {
    status: "pending",
    qty,
    filled_qty: ZERO,
    avg_fill_price: null,
    filled_notional: ZERO,
    reason: null,
    broker_order_id: null,
  };
}

/** A fill of part or all of an order: quantity and price, both > 0. */
export interface OrderFill {
  /** Filled quantity, > 0. */
  qty: Decimal;
  /** Fill price, > 0. */
  price: Decimal;
}

/** Something that happens to an order; each leads to one status (see the module doc). */
export type OrderEvent =
  | { type: "submit"; broker_order_id?: string }
  | ({ type: "fill" } & OrderFill)
  | { type: "cancel"; reason?: string }
  | { type: "reject"; reason: string }
  | { type: "expire"; reason?: string };

/** The status each non-fill event leads to. */
export const EVENT_STATUS: Readonly<Record<Exclude<OrderEvent["type"], "fill">, OrderStatus>> = {
  submit: "submitted",
  cancel: "cancelled",
  reject: "rejected",
  expire: "expired",
};

/** Thrown when an event would move an order along a transition the lifecycle forbids. */
export class IllegalTransitionError extends Error {
  /** The order's status. */
  readonly from: OrderStatus;
  /** The status the event leads to. */
  readonly to: OrderStatus;

  /** Creates the error for the refused transition `from` → `to`. */
  constructor(from: OrderStatus, to: OrderStatus, options?: ErrorOptions) {
    super(`Illegal order transition from ${from} to ${to}`, options);
    this.name = "IllegalTransitionError";
    this.from = from;
    this.to = to;
  }
}

/** Thrown when a fill would take an order's filled quantity above its quantity. */
export class OverfillError extends Error {
  /** The order's quantity. */
  readonly qty: Decimal;
  /** Filled before this fill. */
  readonly filled_qty: Decimal;
  /** The refused fill's quantity. */
  readonly fill_qty: Decimal;

  /** Creates the error for a fill of `fillQty` on an order of `qty` with `filledQty` filled. */
  constructor(qty: Decimal, filledQty: Decimal, fillQty: Decimal, options?: ErrorOptions) {
    super(
      `Overfill: a fill of ${toJson(fillQty)} on an order of ${toJson(qty)} with ${
        toJson(filledQty)
      } already filled`,
      options,
    );
    this.name = "OverfillError";
    this.qty = qty;
    this.filled_qty = filledQty;
    this.fill_qty = fillQty;
  }
}

/**
 * The order after `event`; `order` itself is not changed. `submit` records the
 * broker's order id when given; `cancel`, `reject` and `expire` record their
 * reason (keeping the previous one when none is given); `fill` is
 * {@linkcode applyFill}. Throws {@linkcode IllegalTransitionError} naming
 * both statuses when the lifecycle forbids the move.
 *
 * @example
 * ```ts
 * import { newOrderState, transition } from "./order_state.ts";
 * import { parseDecimal } from "./money.ts";
 *
 * const rejected = transition(newOrderState(parseDecimal("1")), { type: "reject", reason: "no price" });
 * transition(rejected, { type: "submit" }); // throws IllegalTransitionError (rejected → submitted)
 * ```
 */
export function transition<T extends OrderState>(order: T, event: OrderEvent): T {
  if (event.type === "fill") return applyFill(order, event);
  const to = EVENT_STATUS[event.type];
  if (!canTransition(order.status, to)) throw new IllegalTransitionError(order.status, to);
  switch (event.type) {
    case "submit":
      return {
        ...order,
        status: to,
        broker_order_id: event.broker_order_id ?? order.broker_order_id,
      };
    case "reject":
      return { ...order, status: to, reason: event.reason };
    case "cancel":
    case "expire":
      return { ...order, status: to, reason: event.reason ?? order.reason };
  }
}

/**
 * The order after a fill: filled quantity and filled notional increased,
 * average fill price their quotient (exact, whatever `avg_fill_price` held),
 * status `partially_filled` or — when the whole quantity is filled —
 * `filled`. Throws a `RangeError` unless the fill's
 * quantity and price are > 0, {@linkcode IllegalTransitionError} unless the
 * order is `submitted` or `partially_filled`, and {@linkcode OverfillError}
 * when the fill exceeds what remains.
 */
export function applyFill<T extends OrderState>(order: T, fill: OrderFill): T {
  if (!fill.qty.gt(0)) throw new RangeError(`Fill quantity must be > 0, got ${toJson(fill.qty)}`);
  if (!fill.price.gt(0)) {
    throw new RangeError(`Fill price must be > 0, got ${toJson(fill.price)}`);
  }
  const filled = order.filled_qty.plus(fill.qty);
  const to: OrderStatus = filled.gte(order.qty) ? "filled" : "partially_filled";
  if (!canTransition(order.status, to)) throw new IllegalTransitionError(order.status, to);
  if (filled.gt(order.qty)) throw new OverfillError(order.qty, order.filled_qty, fill.qty);
  const notional = order.filled_notional.plus(fill.qty.times(fill.price));
  return {
    ...order,
    status: to,
    filled_qty: filled,
    filled_notional: notional,
    avg_fill_price: notional.dividedBy(filled),
  };
}

/** Quantity still to fill: `qty − filled_qty`. */
export function remainingQty(order: OrderState): Decimal {
  return order.qty.minus(order.filled_qty);
}
