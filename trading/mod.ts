/**
 * The trading domain, pure: no I/O, no clock of its own, no floats for money.
 *
 * - `money.ts`: {@linkcode Decimal} (40 digits, half-even), strict
 *   {@linkcode parseDecimal}, {@linkcode toDb} for `NUMERIC(20,8)`,
 *   {@linkcode fromDb}, {@linkcode toJson}.
 * - `signal.ts`: the signal body schema and {@linkcode parseSignal}, which
 *   reports every reason a body is refused.
 * - `order_state.ts`: the order lifecycle ({@linkcode transition},
 *   {@linkcode applyOrderFill}, {@linkcode IllegalTransitionError}).
 * - `risk.ts`: {@linkcode checkRisk} — every broken rule, each named — and
 *   the limits with their YAML shape ({@linkcode riskLimitsFromConfig}).
 * - `market_hours.ts`: the built-in NYSE calendar
 *   ({@linkcode isUsEquityMarketOpen}).
 * - `positions.ts`: positions and the portfolio from fills
 *   ({@linkcode applyPositionFill}, {@linkcode valuePortfolio}).
 *
 * `order_state.ts` and `positions.ts` both name their fill function
 * `applyFill`; here they are {@linkcode applyOrderFill} and
 * {@linkcode applyPositionFill}.
 *
 * @example
 * ```ts
 * import { applyPositionFill, checkRisk, emptyPosition, parseSignal } from "./mod.ts";
 * ```
 *
 * @module
 */

export * from "./money.ts";
export * from "./signal.ts";
export * from "./market_hours.ts";
export * from "./risk.ts";
export {
  applyFill as applyOrderFill,
  canTransition,
  EVENT_STATUS,
  IllegalTransitionError,
  isOpen,
  isTerminal,
  newOrderState,
  OPEN_ORDER_STATUSES,
  ORDER_STATUSES,
  ORDER_TRANSITIONS,
  type OrderEvent,
  type OrderFill,
  type OrderState,
  type OrderStatus,
  OverfillError,
  remainingQty,
  TERMINAL_ORDER_STATUSES,
  transition,
} from "./order_state.ts";
export {
  applyFill as applyPositionFill,
  applyPortfolioFill,
  emptyPosition,
  markPosition,
  newPortfolio,
  type Portfolio,
  type PortfolioFill,
  type PortfolioValue,
  type PortfolioValueJson,
  portfolioValueToJson,
  type Position,
  type PositionFill,
  type PositionValue,
  type PositionValueJson,
  positionValueToJson,
  valuePortfolio,
} from "./positions.ts";
