/**
 * The PostgreSQL enum types of the trading schema, mirrored as string unions
 * and constant lists (a test checks that they match the database's labels).
 *
 * @module
 */

/** Labels of the `order_side` enum. */
export const ORDER_SIDES = ["buy", "sell"] as const;
/** An order or fill side. */
export type OrderSide = typeof ORDER_SIDES[number];

/** Labels of the `order_type` enum. */
export const ORDER_TYPES = ["market", "limit", "stop", "stop_limit"] as const;
/** An order type. */
export type OrderType = typeof ORDER_TYPES[number];

/** Labels of the `time_in_force` enum. */
export const TIMES_IN_FORCE = ["day", "gtc", "ioc", "fok"] as const;
/** An order's time in force. */
export type TimeInForce = typeof TIMES_IN_FORCE[number];

/** Labels of the `order_status` enum, in lifecycle order. */
export const ORDER_STATUSES = [
  "pending",
  "submitted",
  "partially_filled",
  "filled",
  "cancelled",
  "rejected",
  "expired",
] as const;
/** An order's status. */
export type OrderStatus = typeof ORDER_STATUSES[number];

/** Statuses of an order that may still trade (what `orders_open_idx` covers). */
export const OPEN_ORDER_STATUSES: readonly OrderStatus[] = [
  "pending",
  "submitted",
  "partially_filled",
];

/** Final statuses: the order will not trade any more. */
export const FINAL_ORDER_STATUSES: readonly OrderStatus[] = [
  "filled",
  "cancelled",
  "rejected",
  "expired",
];

/** Labels of the `signal_status` enum. */
export const SIGNAL_STATUSES = ["received", "accepted", "rejected"] as const;
/** A signal's outcome: `received` until decided. */
export type SignalStatus = typeof SIGNAL_STATUSES[number];

/** Values of `signals.source`. */
export const SIGNAL_SOURCES = ["nats", "rest", "internal"] as const;
/** How a signal arrived. */
export type SignalSource = typeof SIGNAL_SOURCES[number];

/** Labels of the `alert_severity` enum. */
export const ALERT_SEVERITIES = ["info", "warning", "critical"] as const;
/** An alert's severity. */
export type AlertSeverity = typeof ALERT_SEVERITIES[number];
