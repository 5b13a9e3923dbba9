/**
 * Inputs for the pure risk checks' tests: limits with every rule off but
 * those given, a context around them, and the rules an order breaks.
 *
 * @module
 */

import { parseDecimal, ZERO } from "../trading/money.ts";
import {
  checkRisk,
  type ProposedOrder,
  type RiskContext,
  type RiskLimits,
} from "../trading/risk.ts";

/** Monday 2026-11-23 10:00 New York time: the US equity market is open. */
export const OPEN_NOW = Date.parse("2026-11-23T15:00:00Z");

/** No limit at all, except those given. */
export function limits(overrides: Partial<RiskLimits> = {}): RiskLimits {
  return {
    max_order_qty: null,
    max_order_notional: null,
    max_position_qty: null,
    price_collar_pct: null,
    market_hours: "always",
    max_gross_exposure: null,
    max_open_orders: null,
    daily_loss_limit: null,
    exchanges: {},
    symbols: {},
    ...overrides,
  };
}

/**
 * A flat book at {@linkcode OPEN_NOW} with no limit, a last price of 100 and
 * the kill switch off, but for `overrides`.
 */
export function riskContext(overrides: Partial<RiskContext> = {}): RiskContext {
  return {
    limits: limits(),
    position_qty: ZERO,
    open_orders: 0,
    gross_exposure: ZERO,
    last_price: parseDecimal("100"),
    realized_pnl_today: ZERO,
    kill_switch: false,
    now: OPEN_NOW,
    ...overrides,
  };
}

/** The names of the rules `order` breaks in `context`, in checkRisk's order. */
export function brokenRules(order: ProposedOrder, context: RiskContext): string[] {
  return checkRisk(order, context).map((violation) => violation.rule);
}
