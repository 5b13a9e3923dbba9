/**
 * The Alpaca broker adapter: Trading API v2 over REST for orders, positions,
 * account and market clock, and the `trade_updates` WebSocket stream for what
 * happens to orders afterwards.
 *
 * REST (every request carries `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` and a
 * timeout of `request_timeout_ms`):
 *
 * - `submit` → `POST /v2/orders` with quantities and prices as decimal
 *   strings (never floats) and our `client_order_id`. Crypto symbols go out in
 *   Alpaca's form (`BTC-USDT` → `BTC/USDT`), stocks as they are. Alpaca keeps
 *   `client_order_id` unique per account, which makes submitting idempotent:
 *   - 2xx: the new order's id.
 *   - 422 (Alpaca answers a duplicate `client_order_id` with 422 "client_order_id
 *     must be unique"): the order is looked up with
 *     `GET /v2/orders:by_client_order_id`; if it exists it is returned (after
 *     checking it is the same symbol, side and quantity), otherwise the 422 is a
 *     validation failure → {@linkcode BrokerRejectedError} with Alpaca's message.
 *   - timeout, network error or 5xx (the order may or may not have landed): the
 *     same lookup; found → returned, not found → {@linkcode BrokerUnavailableError}
 *     and the caller retries with the same `client_order_id`.
 *   - 429 → {@linkcode BrokerUnavailableError} (rate limited, nothing placed).
 *   - 401 → {@linkcode BrokerRejectedError} whose `cause` is an
 *     {@linkcode AlpacaAuthError} (the keys are wrong; nothing was placed).
 *   - any other 4xx (403 "insufficient buying power", …) → {@linkcode BrokerRejectedError}.
 * - `cancel` → `DELETE /v2/orders/{id}` (the id from an earlier submit or
 *   event, else looked up by client order id). 422 "order is not cancelable"
 *   is no error when the order is already terminal; the `cancelled` event comes
 *   from the stream.
 * - `getOrder` / `openOrders` (`GET /v2/orders?status=open`, paged by 500) for
 *   reconciliation, with Alpaca's statuses mapped by {@linkcode alpacaOrderStatus}.
 *   `openOrders` pages in submission order with `after` (exclusive) set just
 *   before the last order's `submitted_at` ({@linkcode alpacaCursorBefore}),
 *   so orders sharing that instant across a page boundary are not skipped;
 *   orders seen twice count once; a page short of the limit ends it. A full
 *   page bringing nothing new is more orders of one instant than a page
 *   holds, which `after` cannot reach: it steps past that instant once and
 *   logs a warning.
 * - `clock()`, `positions()`, `account()`.
 *
 * Stream (`stream_url`, by default `base_url` with `https` → `wss` and
 * `/stream` appended): on open the adapter authenticates — by default with the
 * form the trade_updates documentation shows,
 * `{"action":"authenticate","data":{"key_id":…,"secret_key":…}}`, or with the
 * newer `{"action":"auth","key":…,"secret":…}` when `stream_auth` is `"auth"` —
 * waits for `{"stream":"authorization","data":{"status":"authorized"}}`, sends
 * `{"action":"listen","data":{"streams":["trade_updates"]}}` and waits for
 * `listening`. Alpaca's paper stream sends binary frames: both kinds are
 * decoded as UTF-8 JSON. Each `trade_updates` message becomes at most one
 * {@linkcode BrokerEvent} ({@linkcode tradeUpdateEvent}): `new` / `accepted` /
 * `pending_new` → `accepted` (once per order), `fill` / `partial_fill` → `fill`
 * with this execution's `qty` and `price` and the order's cumulative
 * `filled_qty` as `cum_qty` (`fill_id` = `execution_id`, or
 * `<order id>:<cumulative filled_qty>` when Alpaca sends none; fee 0, Alpaca
 * charges no commission on the stream; without a `qty` the quantity is
 * derived from `filled_qty` and marked `qty_derived`, priced from the
 * order's averages), preceded by a fill for the executions made before it
 * that the stream did not show ({@linkcode fillMissedBefore}), `canceled` /
 * `replaced` → `cancelled`, `expired`, `rejected` — each with the order's
 * `filled_qty` and `filled_avg_price`; the others (`done_for_day`,
 * `pending_cancel`, `calculated`, …) change nothing. Listeners run one event
 * at a time, in order.
 *
 * `start(signal)` resolves once the first connection listens, and rejects when
 * it cannot (an {@linkcode AlpacaAuthError} for refused keys, a
 * {@linkcode BrokerUnavailableError} otherwise): retrying a failed start is the
 * caller's choice. After that, a lost connection is re-opened with backoff
 * (`reconnect_initial_ms` doubling to `reconnect_max_ms`, on the injected
 * clock) forever; the delay starts over from `reconnect_initial_ms` only after
 * a connection that stayed listening for `reconnect_max_ms` or more, so a
 * stream cut right after each `listening` is not re-opened at a fixed rate.
 * Each time a connection listens — the first one after `start` too — every
 * `onReconnect` callback runs, after the events already received, so the
 * engine can reconcile open orders: Alpaca does not replay updates missed
 * while the stream was not listening, whether it was lost, had not started
 * (a failed start) or was still connecting (an order that filled between the
 * engine's startup reconciliation and the first `listening`).
 * {@linkcode AlpacaBroker.streamStatus} says how long the stream has not been
 * listening and whether Alpaca refused the keys, for health.
 *
 * The key and secret are sent, never logged.
 *
 * @example
 * ```ts
 * import { alpacaBroker } from "./alpaca.ts";
 * import { nullLogger as log } from "../lib/log.ts";
 *
 * await using broker = alpacaBroker({
 *   base_url: "https://paper-api.alpaca.markets",
 *   key_id: "AK…",
 *   secret_key: "…",
 * });
 * broker.onEvent((event) => log.info("broker event", { type: event.type }));
 * broker.onReconnect(() => log.info("reconcile open orders"));
 * await broker.start(AbortSignal.timeout(60_000));
 * ```
 *
 * @module
 */

import { backoffDelay } from "../lib/backoff.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { type Logger, nullLogger } from "../lib/log.ts";
import { redactValues } from "../lib/redact.ts";
import { InsertionOrderedMap, InsertionOrderedSet } from "../lib/insertion_map.ts";
import { type Decimal, ONE, parseDecimal, toDb, toJson, ZERO } from "../trading/money.ts";
import {
  type Broker,
  type BrokerEvent,
  type BrokerOrderRequest,
  type BrokerOrderState,
  type BrokerOrderStatus,
  type BrokerRefusal,
  BrokerRejectedError,
  type BrokerStreamStatus,
  BrokerUnavailableError,
  type OrderShape,
} from "./broker.ts";

/** The broker name orders are routed by. */
export const ALPACA_BROKER_NAME = "alpaca";
/** Alpaca's paper-trading REST base. */
export const DEFAULT_ALPACA_BASE_URL = "https://paper-api.alpaca.markets";
/** Deadline of every REST request, in milliseconds. */
export const DEFAULT_ALPACA_REQUEST_TIMEOUT_MS = 10_000;
/** Deadline from opening the stream to `listening`, in milliseconds. */
export const DEFAULT_ALPACA_HANDSHAKE_TIMEOUT_MS = 10_000;
/** First delay before re-opening a lost stream, in milliseconds. */
export const DEFAULT_ALPACA_RECONNECT_INITIAL_MS = 500;
/** Longest delay between stream reconnects, in milliseconds. */
export const DEFAULT_ALPACA_RECONNECT_MAX_MS = 30_000;
/** The stream authentication form the trade_updates documentation shows. */
export const DEFAULT_ALPACA_STREAM_AUTH: AlpacaStreamAuth = "authenticate";
/** Orders per `GET /v2/orders` page (Alpaca's maximum). */
export const ALPACA_ORDERS_PAGE_LIMIT = 500;
/** Orders whose ids and fill progress the adapter remembers at most (oldest forgotten first). */
export const ALPACA_TRACKED_ORDERS = 10_000;
/** Quote currencies recognised when Alpaca writes a crypto pair without a slash (`SOLUSD`). */
export const ALPACA_CRYPTO_QUOTES: readonly string[] = ["USDT", "USDC", "USD", "BTC", "ETH"];

/**
 * How the stream authenticates: `"authenticate"` sends
 * `{"action":"authenticate","data":{"key_id","secret_key"}}` (the
 * trade_updates documentation), `"auth"` sends `{"action":"auth","key","secret"}`.
 */
export type AlpacaStreamAuth = "authenticate" | "auth";

/** Options of {@linkcode alpacaBroker}. */
export interface AlpacaBrokerOptions {
  /** REST base, without `/v2`. @default {DEFAULT_ALPACA_BASE_URL} */
  base_url?: string;
  /** trade_updates stream URL. @default {base_url with https→wss, http→ws, plus "/stream"} */
  stream_url?: string;
  /** API key id (`APCA-API-KEY-ID`). */
  key_id: string;
  /** API secret (`APCA-API-SECRET-KEY`). */
  secret_key: string;
  /** Deadline of every REST request, in ms. @default {DEFAULT_ALPACA_REQUEST_TIMEOUT_MS} */
  request_timeout_ms?: number;
  /** Deadline from opening the stream to `listening`, in ms. @default {DEFAULT_ALPACA_HANDSHAKE_TIMEOUT_MS} */
  handshake_timeout_ms?: number;
  /** First reconnect delay, in ms. @default {DEFAULT_ALPACA_RECONNECT_INITIAL_MS} */
  reconnect_initial_ms?: number;
  /**
   * Longest reconnect delay, in ms; also how long a connection must stay
   * listening for the next reconnect to start over from `reconnect_initial_ms`.
   * @default {DEFAULT_ALPACA_RECONNECT_MAX_MS}
   */
  reconnect_max_ms?: number;
  /** Stream authentication form. @default {DEFAULT_ALPACA_STREAM_AUTH} */
  stream_auth?: AlpacaStreamAuth;
  /** The broker's name. @default {ALPACA_BROKER_NAME} */
  name?: string;
}

/** What {@linkcode alpacaBroker} needs from its surroundings. */
export interface AlpacaBrokerDeps {
  /** Logger. @default {nullLogger} */
  log?: Logger;
  /** Clock for reconnect backoff, the handshake deadline and event times Alpaca omits. @default {systemClock} */
  clock?: Clock;
  /** HTTP client. @default {globalThis.fetch} */
  fetch?: typeof fetch;
  /** Opens the stream socket. @default {(url) => new WebSocket(url)} */
  webSocket?: (url: string) => WebSocket;
  /** Source of the backoff jitter, uniform in [0, 1). @default {Math.random} */
  random?: () => number;
}

/** Alpaca's market clock (`GET /v2/clock`), times in ms since the epoch. */
export interface AlpacaMarketClock {
  /** Whether the market is open now. */
  is_open: boolean;
  /** Next opening bell. */
  next_open: number;
  /** Next closing bell. */
  next_close: number;
  /** Alpaca's current time. */
  timestamp: number;
}

/** One open position (`GET /v2/positions`). */
export interface AlpacaPosition {
  /** Canonical symbol (`AAPL`, `BTC-USD`). */
  symbol: string;
  /** `us_equity`, `crypto`, … */
  asset_class: string;
  /** `long` or `short`. */
  side: "long" | "short";
  /** Signed quantity: negative for a short. */
  qty: Decimal;
  /** Average entry price. */
  avg_entry_price: Decimal;
  /** Market value (negative for a short). */
  market_value: Decimal | null;
  /** Cost basis. */
  cost_basis: Decimal | null;
  /** Unrealized P&L. */
  unrealized_pl: Decimal | null;
  /** Current price. */
  current_price: Decimal | null;
}

/** The account (`GET /v2/account`), money as decimals. */
export interface AlpacaAccount {
  /** Account id. */
  id: string;
  /** Account status (`ACTIVE`, …). */
  status: string;
  /** Currency of the amounts. */
  currency: string;
  /** Cash. */
  cash: Decimal;
  /** Equity. */
  equity: Decimal;
  /** Buying power. */
  buying_power: Decimal;
  /** Portfolio value. */
  portfolio_value: Decimal | null;
  /** Long market value. */
  long_market_value: Decimal | null;
  /** Short market value. */
  short_market_value: Decimal | null;
  /** Whether trading is blocked. */
  trading_blocked: boolean;
  /** Whether the account is blocked. */
  account_blocked: boolean;
}

/** The fields of an Alpaca order the adapter reads. */
export interface AlpacaOrder {
  /** Alpaca's order id. */
  id: string;
  /** Our id. */
  client_order_id: string;
  /** Alpaca's symbol (`AAPL`, `BTC/USD`, `SOLUSD`). */
  symbol: string;
  /** `us_equity`, `crypto`, … or null when absent. */
  asset_class: string | null;
  /** Alpaca's status (`new`, `partially_filled`, `done_for_day`, …). */
  status: string;
  /** `buy` or `sell`. */
  side: string;
  /** Ordered quantity (null for notional orders). */
  qty: Decimal | null;
  /** Cumulative filled quantity. */
  filled_qty: Decimal;
  /** Average fill price, null before a fill. */
  filled_avg_price: Decimal | null;
  /** `submitted_at` as Alpaca wrote it (paging cursor), or null. */
  submitted_at: string | null;
  /** `updated_at` in ms since the epoch, or null. */
  updated_at_ms: number | null;
  /** `filled_at` (when the order filled completely) in ms since the epoch, or null. */
  filled_at_ms: number | null;
}

/** Where the stream stands: the {@linkcode BrokerStreamStatus} health reads, and counters. */
export interface AlpacaStreamStatus extends BrokerStreamStatus {
  /** Connections opened, the first one included. */
  connections: number;
  /** Reconnects after a lost connection. */
  reconnects: number;
  /** Stream messages that could not be read (counted and logged, never fatal). */
  malformed: number;
}

/** The Alpaca adapter: a {@linkcode Broker} plus Alpaca's clock, positions and account. */
export interface AlpacaBroker extends Broker {
  /** The market clock (`GET /v2/clock`). */
  clock(): Promise<AlpacaMarketClock>;
  /** Open positions (`GET /v2/positions`). */
  positions(): Promise<AlpacaPosition[]>;
  /** The account (`GET /v2/account`). */
  account(): Promise<AlpacaAccount>;
  /**
   * Calls `callback` each time the stream listens — after a lost connection,
   * and for the first connection after `start` too (what happened before it
   * is not replayed) — after the events received before; returns a function
   * that removes it.
   */
  onReconnect(callback: () => void | Promise<void>): () => void;
  /** The stream's state and counters. */
  streamStatus(): AlpacaStreamStatus;
  /**
   * Resolves once the broker is stopped (disposed, or the start signal
   * aborted), its stream closed and the events received delivered.
   */
  closed(): Promise<void>;
}

/** Alpaca refused the API keys (HTTP 401, or `unauthorized` on the stream). */
export class AlpacaAuthError extends Error {
  /** Creates the error; the message names what was refused, never the keys. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "AlpacaAuthError";
  }
}

/** Order types Alpaca takes for crypto pairs. */
export const ALPACA_CRYPTO_ORDER_TYPES: readonly string[] = ["market", "limit", "stop_limit"];
/** Times in force Alpaca takes for crypto pairs. */
export const ALPACA_CRYPTO_TIMES_IN_FORCE: readonly string[] = ["gtc", "ioc"];
/** Most decimals Alpaca takes in a US equity price of $1.00 or more. */
export const ALPACA_EQUITY_PRICE_DECIMALS = 2;
/** Most decimals Alpaca takes in a US equity price below $1.00. */
export const ALPACA_EQUITY_SUB_DOLLAR_PRICE_DECIMALS = 4;
/** The only time in force Alpaca takes for a US equity order of a fractional quantity. */
export const ALPACA_FRACTIONAL_TIME_IN_FORCE = "day";

/**
 * What Alpaca refuses about an order before it is sent (HTTP 422 at
 * `POST /v2/orders`), each with the signal field it is about:
 *
 * - crypto pairs (canonical `BASE-QUOTE`) take only market, limit and
 *   stop_limit orders, with time in force gtc or ioc (Alpaca's crypto orders
 *   documentation);
 * - US equities (every other symbol) take every type and time in force the
 *   engine knows, but no sub-penny price: a `limit_price` or `stop_price` of
 *   $1.00 or more has at most 2 decimals, one below $1.00 at most 4 (Alpaca
 *   answers "sub-penny increment does not fulfill minimum pricing
 *   criteria"); and a fractional `qty` only as a day order, of any type
 *   (Alpaca's fractional trading documentation: "supported only for day
 *   orders"; market orders, limit orders since 2023, stop and stop_limit
 *   orders since, per its changelog).
 *
 * The quantity and prices are checked when the order carries them.
 *
 * @example
 * ```ts
 * alpacaRefusals({ symbol: "BTC-USD", type: "market", time_in_force: "day" });
 * // [{ path: "time_in_force",
 * //    message: "alpaca: crypto orders take time_in_force gtc or ioc, not day" }]
 * alpacaRefusals({
 *   symbol: "AAPL",
 *   type: "limit",
 *   time_in_force: "gtc",
 *   qty: new Decimal("0.5"),
 *   limit_price: new Decimal("187.555"),
 * });
 * // [{ path: "limit_price",
 * //    message: "alpaca: limit_price 187.555 has sub-penny decimals (at or above $1.00: at most 2)" },
 * //  { path: "time_in_force",
 * //    message: "alpaca: a fractional qty (0.5) takes time_in_force day, not gtc" }]
 * ```
 */
export function alpacaRefusals(order: OrderShape): BrokerRefusal[] {
  return order.symbol.includes("-") ? cryptoRefusals(order) : equityRefusals(order);
}

function cryptoRefusals(order: OrderShape): BrokerRefusal[] {
  const refusals: BrokerRefusal[] = [];
  if (!ALPACA_CRYPTO_ORDER_TYPES.includes(order.type)) {
    refusals.push({
      path: "type",
      message: `alpaca: crypto orders are ${
        ALPACA_CRYPTO_ORDER_TYPES.join(", ")
      }, not ${order.type}`,
    });
  }
  if (!ALPACA_CRYPTO_TIMES_IN_FORCE.includes(order.time_in_force)) {
    refusals.push({
      path: "time_in_force",
      message: `alpaca: crypto orders take time_in_force ${
        ALPACA_CRYPTO_TIMES_IN_FORCE.join(" or ")
      }, not ${order.time_in_force}`,
    });
  }
  return refusals;
}

function equityRefusals(order: OrderShape): BrokerRefusal[] {
  const refusals: BrokerRefusal[] = [];
  for (const field of ["limit_price", "stop_price"] as const) {
    const price = order[field];
    if (price === undefined || price === null || !price.isFinite()) continue;
    const subDollar = price.lt(ONE);
    const places = subDollar
      ? ALPACA_EQUITY_SUB_DOLLAR_PRICE_DECIMALS
      : ALPACA_EQUITY_PRICE_DECIMALS;
    if (price.decimalPlaces() > places) {
      refusals.push({
        path: field,
        message: `alpaca: ${field} ${price.toFixed()} has sub-penny decimals (${
          subDollar ? "below" : "at or above"
        } $1.00: at most ${places})`,
      });
    }
  }
  const qty = order.qty;
  if (
    qty !== undefined && qty.isFinite() && !qty.isInteger() &&
    order.time_in_force !== ALPACA_FRACTIONAL_TIME_IN_FORCE
  ) {
    refusals.push({
      path: "time_in_force",
      message: `alpaca: a fractional qty (${qty.toFixed()}) takes time_in_force ` +
        `${ALPACA_FRACTIONAL_TIME_IN_FORCE}, not ${order.time_in_force}`,
    });
  }
  return refusals;
}

/**
 * Alpaca's symbol for a canonical one: crypto pairs take a slash
 * (`BTC-USDT` → `BTC/USDT`), stocks stay as they are.
 */
export function toAlpacaSymbol(symbol: string): string {
  return symbol.replace("-", "/");
}

/**
 * The canonical symbol for one of Alpaca's: `BTC/USD` → `BTC-USD`; a crypto
 * pair written without a slash (`SOLUSD`, as positions and older orders show
 * them) is split before a known quote ({@linkcode ALPACA_CRYPTO_QUOTES});
 * stocks stay as they are (trimmed).
 */
export function fromAlpacaSymbol(symbol: string, assetClass: string | null = null): string {
  const trimmed = symbol.trim();
  if (trimmed.includes("/")) return trimmed.replace("/", "-");
  if (assetClass === "crypto") {
    for (const quote of ALPACA_CRYPTO_QUOTES) {
      if (trimmed.length > quote.length && trimmed.endsWith(quote)) {
        return `${trimmed.slice(0, -quote.length)}-${quote}`;
      }
    }
  }
  return trimmed;
}

/** The `POST /v2/orders` body of `order`: decimals as strings, only the prices its type uses. */
export function alpacaOrderBody(order: BrokerOrderRequest): Record<string, string> {
  const body: Record<string, string> = {
    symbol: toAlpacaSymbol(order.symbol),
    qty: toJson(order.qty),
    side: order.side,
    type: order.type,
    time_in_force: order.time_in_force,
    client_order_id: order.client_order_id,
  };
  if (order.limit_price !== null) body.limit_price = toJson(order.limit_price);
  if (order.stop_price !== null) body.stop_price = toJson(order.stop_price);
  return body;
}

/**
 * Reads an Alpaca order object; throws a `TypeError` naming the field that is
 * missing or not what Alpaca documents.
 */
export function parseAlpacaOrder(raw: unknown): AlpacaOrder {
  const order = record(raw, "order");
  const updatedAt = optionalString(order, "updated_at");
  return {
    id: requiredString(order, "id"),
    client_order_id: requiredString(order, "client_order_id"),
    symbol: requiredString(order, "symbol"),
    asset_class: optionalString(order, "asset_class"),
    status: requiredString(order, "status"),
    side: requiredString(order, "side"),
    qty: optionalDecimal(order, "qty"),
    filled_qty: optionalDecimal(order, "filled_qty") ?? ZERO,
    filled_avg_price: optionalDecimal(order, "filled_avg_price"),
    submitted_at: optionalString(order, "submitted_at"),
    updated_at_ms: updatedAt === null ? null : parseTimestampMs(updatedAt),
    filled_at_ms: optionalTimestampMs(order, "filled_at"),
  };
}

/**
 * Maps an Alpaca order status to a {@linkcode BrokerOrderStatus}:
 * `filled` → filled; `canceled` and `replaced` (the order lives on under
 * another id, which we never ask for) → cancelled; `expired`, `rejected` as
 * such; `calculated` → filled when the whole quantity is filled; every other
 * status (`new`, `accepted`, `pending_new`, `accepted_for_bidding`,
 * `partially_filled`, `done_for_day`, `pending_cancel`, `pending_replace`,
 * `stopped`, `suspended`, `held`, and any status Alpaca adds) is still open:
 * `partially_filled` when something is filled, else `accepted`.
 */
export function alpacaOrderStatus(
  status: string,
  filledQty: Decimal,
  qty: Decimal | null,
): BrokerOrderStatus {
  switch (status) {
    case "filled":
      return "filled";
    case "canceled":
    case "replaced":
      return "cancelled";
    case "expired":
      return "expired";
    case "rejected":
      return "rejected";
    case "calculated":
      if (qty !== null && filledQty.gte(qty)) return "filled";
  }
  return filledQty.gt(0) ? "partially_filled" : "accepted";
}

/**
 * The broker's view of an Alpaca order. An order with fills carries when it
 * was last filled as `filled_at_ms`: its `filled_at` (set once it is filled
 * completely), else its `updated_at` (a partly filled order's last change,
 * no earlier than its last fill); neither a time → none.
 */
export function toBrokerOrderState(order: AlpacaOrder): BrokerOrderState {
  const state: BrokerOrderState = {
    client_order_id: order.client_order_id,
    broker_order_id: order.id,
    status: alpacaOrderStatus(order.status, order.filled_qty, order.qty),
    filled_qty: order.filled_qty,
    avg_fill_price: order.filled_avg_price,
  };
  const filledAt = order.filled_at_ms ?? order.updated_at_ms;
  if (order.filled_qty.gt(0) && filledAt !== null) state.filled_at_ms = filledAt;
  return state;
}

/** Trade-update events after which Alpaca sends nothing more for the order. */
const TERMINAL_EVENTS = new Set(["fill", "canceled", "expired", "rejected", "replaced"]);
/** Trade-update events that say the order is live at Alpaca. */
const ACCEPTED_EVENTS = new Set(["new", "accepted", "pending_new"]);

/**
 * The {@linkcode BrokerEvent} of one `trade_updates` message's `data`, or
 * null for an update that changes nothing for us (`done_for_day`,
 * `pending_cancel`, `calculated`, `order_cancel_rejected`, …). Pure: a fill's
 * quantity is the event's `qty` (this execution), or — when Alpaca leaves it
 * out, as its documented `partial_fill` does — the order's cumulative
 * `filled_qty` minus `previousFilledQty` (all of it when that is unknown),
 * marked `qty_derived` (the engine counts `cum_qty` minus what it holds; a
 * qty-less fill adding nothing to `previousFilledQty` is null); its price is
 * the event's `price`, else the order's average — but a derived quantity,
 * which may stand for several executions, is priced at their average from
 * the order's: (filled_avg_price × filled_qty − previous value) ÷ the
 * quantity, rounded to 8 decimals, the previous value being
 * `previousAvgPrice` × `previousFilledQty` (0 when `previousFilledQty` is
 * null: all of the order's executions, at its filled_avg_price; the event's
 * price when `previousAvgPrice` is not given). Every fill carries the
 * order's cumulative `filled_qty` as `cum_qty` (and its `filled_avg_price`
 * as `cum_avg_price`), and `canceled` / `replaced` /
 * `expired` / `rejected` carry it as `filled_qty` with `filled_avg_price`
 * (fills made while nobody listened are then not lost). Times come from
 * `timestamp`, else the order's `updated_at`, else `nowMs`. Throws a
 * `TypeError` for a message that is not a trade update.
 */
export function tradeUpdateEvent(
  data: unknown,
  previousFilledQty: Decimal | null,
  nowMs: number,
  previousAvgPrice: Decimal | null = null,
): BrokerEvent | null {
  const update = record(data, "trade update");
  const event = requiredString(update, "event");
  const order = parseAlpacaOrder(update.order);
  const timestamp = optionalString(update, "timestamp");
  const at_ms = (timestamp === null ? null : parseTimestampMs(timestamp)) ??
    order.updated_at_ms ?? nowMs;
  const ids = { client_order_id: order.client_order_id, broker_order_id: order.id };
  if (ACCEPTED_EVENTS.has(event)) return { type: "accepted", ...ids, at_ms };
  switch (event) {
    case "fill":
    case "partial_fill": {
      const given = optionalDecimal(update, "qty");
      let qty = given;
      let price = optionalDecimal(update, "price") ?? order.filled_avg_price;
      if (qty === null) {
        if (previousFilledQty !== null && !order.filled_qty.gt(previousFilledQty)) return null;
        qty = order.filled_qty.minus(previousFilledQty ?? ZERO);
        // Maybe several executions (some made while nobody listened): priced at their average.
        const before = previousFilledQty === null
          ? ZERO
          : previousAvgPrice?.times(previousFilledQty) ?? null;
        if (order.filled_avg_price !== null && before !== null && qty.gt(0)) {
          price = averagePrice(order.filled_avg_price.times(order.filled_qty).minus(before), qty) ??
            price;
        }
      }
      if (!qty.gt(0)) throw new TypeError(`Trade update ${event} has no positive quantity`);
      if (price === null || !price.gt(0)) {
        throw new TypeError(`Trade update ${event} has no positive price`);
      }
      const executionId = optionalString(update, "execution_id");
      const fill_id = executionId !== null && executionId !== ""
        ? executionId
        : `${order.id}:${toJson(order.filled_qty)}`;
      // The order's cumulative quantity, when Alpaca sent it (it always does): at least this fill.
      const cumulative = !order.filled_qty.gte(qty)
        ? {}
        : order.filled_avg_price === null
        ? { cum_qty: order.filled_qty }
        : { cum_qty: order.filled_qty, cum_avg_price: order.filled_avg_price };
      const derived = given === null ? { qty_derived: true } : {};
      return {
        type: "fill",
        ...ids,
        fill_id,
        qty,
        price,
        fee: ZERO,
        ...cumulative,
        ...derived,
        at_ms,
      };
    }
  }
  const filled = { filled_qty: order.filled_qty, avg_fill_price: order.filled_avg_price };
  switch (event) {
    case "canceled":
      return { type: "cancelled", ...ids, reason: "canceled at Alpaca", ...filled, at_ms };
    case "replaced":
      return { type: "cancelled", ...ids, reason: "replaced at Alpaca", ...filled, at_ms };
    case "expired":
      return { type: "expired", ...ids, reason: "expired at Alpaca", ...filled, at_ms };
    case "rejected":
      return { type: "rejected", ...ids, reason: "rejected by Alpaca", ...filled, at_ms };
  }
  return null;
}

/** What the stream showed of an order's fills: its cumulative `filled_qty` and `filled_avg_price`. */
export interface AlpacaFilled {
  filled_qty: Decimal;
  filled_avg_price: Decimal | null;
}

/**
 * The fill for the executions Alpaca made before `fill` (a fill with its own
 * `qty`, from {@linkcode tradeUpdateEvent}) that the stream did not show —
 * made while nobody listened, Alpaca replays none — or null when there are
 * none: from what the stream showed before (`previous`; nothing when null,
 * as after a restart) to `fill`'s `cum_qty` minus its `qty`. Priced at their
 * average from the order's averages, (`avgPrice` × `cum_qty` − `qty` ×
 * `price` − `previous` value) ÷ their quantity, rounded to 8 decimals
 * (`avgPrice` itself when that is not positive); null without `avgPrice`
 * or `previous`'s average. Marked `qty_derived` with that cumulative
 * quantity as `cum_qty` and the average there as `cum_avg_price` (the
 * engine counts what its fills do not, priced from them), id
 * `<order id>:<that cumulative quantity>` as a qty-less update at that point
 * would be.
 */
export function fillMissedBefore(
  fill: Extract<BrokerEvent, { type: "fill" }>,
  avgPrice: Decimal | null,
  previous: AlpacaFilled | null,
): Extract<BrokerEvent, { type: "fill" }> | null {
  if (fill.qty_derived === true || fill.cum_qty === undefined || avgPrice === null) return null;
  const from = previous?.filled_qty ?? ZERO;
  const to = fill.cum_qty.minus(fill.qty);
  const qty = to.minus(from);
  if (!qty.gt(0)) return null;
  const fromValue = previous === null ? ZERO : previous.filled_avg_price?.times(from) ?? null;
  if (fromValue === null) return null;
  const valueTo = avgPrice.times(fill.cum_qty).minus(fill.qty.times(fill.price));
  const price = averagePrice(valueTo.minus(fromValue), qty) ?? averagePrice(avgPrice, ONE);
  if (price === null) return null;
  // The average at `to`, unrounded: what the engine prices a part of this fill from.
  const toAvg = valueTo.dividedBy(to);
  return {
    type: "fill",
    client_order_id: fill.client_order_id,
    broker_order_id: fill.broker_order_id,
    fill_id: `${fill.broker_order_id}:${toJson(to)}`,
    qty,
    price,
    fee: ZERO,
    cum_qty: to,
    ...(toAvg.gt(0) ? { cum_avg_price: toAvg } : {}),
    qty_derived: true,
    at_ms: fill.at_ms,
  };
}

/** `value` ÷ `qty` rounded to 8 decimals (what fills store), or null when not positive. */
function averagePrice(value: Decimal, qty: Decimal): Decimal | null {
  const price = parseDecimal(toDb(value.dividedBy(qty)));
  return price.gt(0) ? price : null;
}

/** Reads Alpaca's clock body; times become ms since the epoch. */
export function parseAlpacaClock(raw: unknown): AlpacaMarketClock {
  const clock = record(raw, "clock");
  const isOpen = clock.is_open;
  if (typeof isOpen !== "boolean") {
    throw new TypeError("Alpaca clock field is_open is not a boolean");
  }
  return {
    is_open: isOpen,
    next_open: requiredTime(clock, "next_open"),
    next_close: requiredTime(clock, "next_close"),
    timestamp: requiredTime(clock, "timestamp"),
  };
}

/** Reads one of Alpaca's position objects. */
export function parseAlpacaPosition(raw: unknown): AlpacaPosition {
  const position = record(raw, "position");
  const assetClass = optionalString(position, "asset_class") ?? "us_equity";
  const side = optionalString(position, "side");
  const qty = requiredDecimal(position, "qty");
  const short = side === "short" || (side === null && qty.lt(0));
  return {
    symbol: fromAlpacaSymbol(requiredString(position, "symbol"), assetClass),
    asset_class: assetClass,
    side: short ? "short" : "long",
    qty: short ? qty.abs().negated() : qty.abs(),
    avg_entry_price: requiredDecimal(position, "avg_entry_price"),
    market_value: optionalDecimal(position, "market_value"),
    cost_basis: optionalDecimal(position, "cost_basis"),
    unrealized_pl: optionalDecimal(position, "unrealized_pl"),
    current_price: optionalDecimal(position, "current_price"),
  };
}

/** Reads Alpaca's account object. */
export function parseAlpacaAccount(raw: unknown): AlpacaAccount {
  const account = record(raw, "account");
  return {
    id: requiredString(account, "id"),
    status: requiredString(account, "status"),
    currency: optionalString(account, "currency") ?? "USD",
    cash: requiredDecimal(account, "cash"),
    equity: requiredDecimal(account, "equity"),
    buying_power: requiredDecimal(account, "buying_power"),
    portfolio_value: optionalDecimal(account, "portfolio_value"),
    long_market_value: optionalDecimal(account, "long_market_value"),
    short_market_value: optionalDecimal(account, "short_market_value"),
    trading_blocked: account.trading_blocked === true,
    account_blocked: account.account_blocked === true,
  };
}

/**
 * Milliseconds since the epoch of an RFC 3339 time as Alpaca writes them —
 * with up to nanosecond fractions and a `Z` or `±hh:mm` offset
 * (`2022-04-28T14:07:04.451420928-04:00`); null when it is not one.
 */
export function parseTimestampMs(text: string): number | null {
  const match = TIMESTAMP.exec(text);
  if (!match) return null;
  const fraction = (match[2] ?? "").slice(0, 4); // "." and up to 3 digits: ms precision
  const ms = Date.parse(`${match[1]}${fraction}${match[3]}`);
  return Number.isFinite(ms) ? ms : null;
}

/**
 * The `after` cursor of `GET /v2/orders` (exclusive) that still takes in the
 * orders submitted at `submittedAt`: one microsecond before it (floored to
 * microseconds, Alpaca's precision), in UTC; null when it is not an RFC 3339
 * time.
 *
 * @example
 * ```ts
 * import { alpacaCursorBefore } from "./alpaca.ts";
 *
 * alpacaCursorBefore("2026-03-10T11:00:01.000000-04:00"); // "2026-03-10T15:00:00.999999Z"
 * ```
 */
export function alpacaCursorBefore(submittedAt: string): string | null {
  const match = TIMESTAMP.exec(submittedAt);
  if (!match) return null;
  const secondMs = Date.parse(`${match[1]}${match[3]}`);
  if (!Number.isFinite(secondMs)) return null;
  const fraction = `${(match[2] ?? ".").slice(1)}000000`.slice(0, 6);
  const micros = secondMs * 1000 + Number(fraction) - 1;
  const whole = Math.floor(micros / 1_000_000);
  const rest = String(micros - whole * 1_000_000).padStart(6, "0");
  return `${new Date(whole * 1000).toISOString().slice(0, 19)}.${rest}Z`;
}

/**
 * The trade_updates stream URL for a REST base: `https` → `wss`, `http` →
 * `ws`, plus `/stream`.
 */
export function alpacaStreamUrl(baseUrl: string): string {
  return `${trimSlash(baseUrl).replace(/^http/i, "ws")}/stream`;
}

/**
 * Creates the Alpaca adapter. Nothing is connected until `start`; REST calls
 * work at once.
 */
export function alpacaBroker(
  options: AlpacaBrokerOptions,
  deps: AlpacaBrokerDeps = {},
): AlpacaBroker {
  return new AlpacaBrokerImpl(options, deps);
}

const TIMESTAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$/i;
const decoder = new TextDecoder();

/** A REST answer: status and parsed body (null when the body is not JSON). */
interface Answer {
  status: number;
  body: unknown;
  /** Alpaca's `message`, else the start of the body, else `HTTP <status>`. */
  message: string;
}

/** How one stream connection ended. */
interface ConnectionEnd {
  listened: boolean;
  error: Error | null;
}

class AlpacaBrokerImpl implements AlpacaBroker {
  readonly name: string;
  readonly refusals: (order: OrderShape) => BrokerRefusal[];
  readonly #baseUrl: string;
  readonly #streamUrl: string;
  readonly #keyId: string;
  readonly #secretKey: string;
  readonly #timeoutMs: number;
  readonly #handshakeMs: number;
  readonly #initialMs: number;
  readonly #maxMs: number;
  readonly #streamAuth: AlpacaStreamAuth;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #fetch: typeof fetch;
  readonly #webSocket: (url: string) => WebSocket;
  readonly #random: () => number;
  /** Aborts on dispose (or the start signal): ends the stream, its sleeps and in-flight requests. */
  readonly #halt = new AbortController();
  readonly #listeners = new Set<(event: BrokerEvent) => void | Promise<void>>();
  readonly #reconnectListeners = new Set<() => void | Promise<void>>();
  /** Client order id → Alpaca id, for orders not yet terminal. */
  readonly #brokerIds = new InsertionOrderedMap<string, string>();
  /** Alpaca id → cumulative filled quantity and average seen on the stream, until terminal. */
  readonly #filled = new InsertionOrderedMap<string, AlpacaFilled>();
  /** Alpaca ids of orders whose `accepted` was emitted, until terminal. */
  readonly #accepted = new InsertionOrderedSet<string>();
  readonly #status: Omit<AlpacaStreamStatus, "down_for_ms"> = {
    state: "idle",
    auth_error: false,
    last_error: null,
    connections: 0,
    reconnects: 0,
    malformed: 0,
  };
  /** When the stream stopped listening (or the broker was made), on the clock; null while it listens. */
  #downSinceMs: number | null;
  /** Event and reconnect deliveries, one at a time. */
  #queue: Promise<void> = Promise.resolve();
  #ready: Promise<void> | null = null;
  #loop: Promise<void> = Promise.resolve();
  readonly #closed: Promise<void>;

  constructor(options: AlpacaBrokerOptions, deps: AlpacaBrokerDeps) {
    this.name = options.name ?? ALPACA_BROKER_NAME;
    this.refusals = alpacaRefusals;
    this.#baseUrl = trimSlash(options.base_url ?? DEFAULT_ALPACA_BASE_URL);
    this.#streamUrl = options.stream_url ?? alpacaStreamUrl(this.#baseUrl);
    if (typeof options.key_id !== "string" || typeof options.secret_key !== "string") {
      throw new TypeError("Alpaca key_id and secret_key must be strings");
    }
    this.#keyId = options.key_id;
    this.#secretKey = options.secret_key;
    this.#timeoutMs = positive(
      options.request_timeout_ms,
      DEFAULT_ALPACA_REQUEST_TIMEOUT_MS,
      "request_timeout_ms",
    );
    this.#handshakeMs = positive(
      options.handshake_timeout_ms,
      DEFAULT_ALPACA_HANDSHAKE_TIMEOUT_MS,
      "handshake_timeout_ms",
    );
    this.#initialMs = positive(
      options.reconnect_initial_ms,
      DEFAULT_ALPACA_RECONNECT_INITIAL_MS,
      "reconnect_initial_ms",
    );
    this.#maxMs = Math.max(
      this.#initialMs,
      positive(options.reconnect_max_ms, DEFAULT_ALPACA_RECONNECT_MAX_MS, "reconnect_max_ms"),
    );
    this.#streamAuth = options.stream_auth ?? DEFAULT_ALPACA_STREAM_AUTH;
    this.#log = (deps.log ?? nullLogger).child({ broker: this.name });
    this.#clock = deps.clock ?? systemClock;
    this.#fetch = deps.fetch ?? ((input, init) => fetch(input, init));
    this.#webSocket = deps.webSocket ?? ((url) => new WebSocket(url));
    this.#random = deps.random ?? Math.random;
    this.#downSinceMs = this.#clock.now();
    const halted = new Promise<void>((resolve) =>
      this.#halt.signal.addEventListener("abort", () => resolve(), { once: true })
    );
    this.#closed = halted.then(() => this.#loop).then(() => this.#queue);
  }

  // ---- Orders ----

  async submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    const body = alpacaOrderBody(order);
    let answer: Answer;
    try {
      answer = await this.#request("POST", "/v2/orders", body);
    } catch (error) {
      // Timeout or network failure: the order may have landed.
      return await this.#recoverSubmit(order, error);
    }
    const { status } = answer;
    if (status >= 200 && status < 300) {
      const placed = this.#readOrder(answer.body, "POST /v2/orders");
      remember(this.#brokerIds, order.client_order_id, placed.id);
      return { broker_order_id: placed.id };
    }
    if (status === 401) {
      const cause = new AlpacaAuthError(`Alpaca refused the API keys: ${answer.message}`);
      throw new BrokerRejectedError(cause.message, { cause });
    }
    if (status === 422) {
      // A duplicate client_order_id, or a validation failure: Alpaca answers both with 422.
      const existing = await this.#findOrder(order.client_order_id);
      if (existing !== null) return this.#adopt(order, existing);
      throw new BrokerRejectedError(answer.message);
    }
    if (status === 429) {
      throw new BrokerUnavailableError(`Alpaca rate limit on POST /v2/orders: ${answer.message}`);
    }
    if (status >= 500) {
      return await this.#recoverSubmit(
        order,
        new BrokerUnavailableError(`Alpaca POST /v2/orders answered ${status}: ${answer.message}`),
      );
    }
    throw new BrokerRejectedError(answer.message);
  }

  async cancel(clientOrderId: string): Promise<void> {
    let id = this.#brokerIds.get(clientOrderId);
    if (id === undefined) {
      const found = await this.#findOrder(clientOrderId);
      if (found === null) {
        throw new BrokerRejectedError(`order ${clientOrderId} is not known to Alpaca`);
      }
      if (isTerminal(found)) return;
      id = found.id;
    }
    const path = `/v2/orders/${encodeURIComponent(id)}`;
    const answer = await this.#request("DELETE", path);
    if (answer.status >= 200 && answer.status < 300) return;
    if (answer.status === 422 || answer.status === 404) {
      const current = await this.#findOrder(clientOrderId);
      if (current !== null && isTerminal(current)) return;
      if (answer.status === 404) {
        throw new BrokerRejectedError(`order ${clientOrderId} is not known to Alpaca`);
      }
      throw new BrokerRejectedError(answer.message);
    }
    this.#fail("DELETE", "/v2/orders/{id}", answer);
  }

  async getOrder(clientOrderId: string): Promise<BrokerOrderState | null> {
    const order = await this.#findOrder(clientOrderId);
    return order === null ? null : toBrokerOrderState(order);
  }

  async openOrders(): Promise<BrokerOrderState[]> {
    const states: BrokerOrderState[] = [];
    const seen = new Set<string>();
    let after: string | null = null;
    for (;;) {
      const query = new URLSearchParams({
        status: "open",
        limit: String(ALPACA_ORDERS_PAGE_LIMIT),
        direction: "asc",
        nested: "false",
      });
      if (after !== null) query.set("after", after);
      const answer = await this.#request("GET", `/v2/orders?${query}`);
      const body = this.#expectOk("GET", "/v2/orders", answer);
      if (!Array.isArray(body)) {
        throw new BrokerUnavailableError(
          "Alpaca GET /v2/orders answered something else than a list",
        );
      }
      let lastSubmitted: string | null = null;
      let added = 0;
      for (const raw of body) {
        let order: AlpacaOrder;
        try {
          order = parseAlpacaOrder(raw);
        } catch (error) {
          this.#log.error("unreadable order in Alpaca's open orders", { error });
          continue;
        }
        lastSubmitted = order.submitted_at ?? lastSubmitted;
        if (seen.has(order.id)) continue;
        seen.add(order.id);
        added++;
        remember(this.#brokerIds, order.client_order_id, order.id);
        states.push(toBrokerOrderState(order));
      }
      if (body.length < ALPACA_ORDERS_PAGE_LIMIT || lastSubmitted === null) return states;
      // `after` is exclusive: the next page starts just before the last order's instant, so the
      // orders sharing it that did not fit this page come too (the ones seen are skipped by id).
      let next = alpacaCursorBefore(lastSubmitted) ?? lastSubmitted;
      if (added === 0) {
        // A whole page of one instant: the orders of that instant beyond it cannot be reached
        // by `after`; step past the instant rather than ask for the same page again.
        if (after === lastSubmitted) return states;
        this.#log.warn("more open orders share one submitted_at than an Alpaca page holds", {
          submitted_at: lastSubmitted,
          page_limit: ALPACA_ORDERS_PAGE_LIMIT,
        });
        next = lastSubmitted;
      }
      after = next;
    }
  }

  // ---- Account ----

  async clock(): Promise<AlpacaMarketClock> {
    const answer = await this.#request("GET", "/v2/clock");
    return this.#parse(
      "GET /v2/clock",
      parseAlpacaClock,
      this.#expectOk("GET", "/v2/clock", answer),
    );
  }

  async positions(): Promise<AlpacaPosition[]> {
    const answer = await this.#request("GET", "/v2/positions");
    const body = this.#expectOk("GET", "/v2/positions", answer);
    if (!Array.isArray(body)) {
      throw new BrokerUnavailableError(
        "Alpaca GET /v2/positions answered something else than a list",
      );
    }
    return body.map((raw) => this.#parse("GET /v2/positions", parseAlpacaPosition, raw));
  }

  async account(): Promise<AlpacaAccount> {
    const answer = await this.#request("GET", "/v2/account");
    return this.#parse(
      "GET /v2/account",
      parseAlpacaAccount,
      this.#expectOk("GET", "/v2/account", answer),
    );
  }

  // ---- Events ----

  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  onReconnect(callback: () => void | Promise<void>): () => void {
    this.#reconnectListeners.add(callback);
    return () => this.#reconnectListeners.delete(callback);
  }

  streamStatus(): AlpacaStreamStatus {
    const down = this.#downSinceMs;
    return {
      ...this.#status,
      down_for_ms: down === null ? null : Math.max(0, this.#clock.now() - down),
    };
  }

  start(signal: AbortSignal): Promise<void> {
    if (this.#ready !== null) return this.#ready;
    if (this.#halt.signal.aborted) return Promise.reject(new Error("Alpaca broker is disposed"));
    const stop = () => this.#halt.abort(signal.reason);
    if (signal.aborted) stop();
    else signal.addEventListener("abort", stop, { once: true });
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#ready = promise;
    this.#loop = this.#run(resolve, (error) => {
      this.#ready = null; // A failed start may be tried again.
      signal.removeEventListener("abort", stop);
      reject(error);
    });
    return promise;
  }

  closed(): Promise<void> {
    return this.#closed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.#halt.abort(new Error("Alpaca broker disposed"));
    await this.#loop;
    await this.#queue;
  }

  // ---- REST helpers ----

  /** Sends one request; throws {@linkcode BrokerUnavailableError} on timeout or network failure. */
  async #request(method: string, path: string, body?: unknown): Promise<Answer> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.#timeoutMs), this.#halt.signal]);
    const headers: Record<string, string> = {
      "APCA-API-KEY-ID": this.#keyId,
      "APCA-API-SECRET-KEY": this.#secretKey,
      accept: "application/json",
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    const route = `${method} ${path.split("?")[0]}`;
    let status: number;
    let text: string;
    try {
      const response = await this.#fetch(`${this.#baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal,
      });
      status = response.status;
      // An error page may echo the request's headers (a proxy, a gateway): the key id and
      // secret never go further, into a log line, an error or an order's rejection reason.
      text = redactValues(await response.text(), [this.#keyId, this.#secretKey]);
    } catch (error) {
      const timedOut = error instanceof DOMException && error.name === "TimeoutError";
      const message = timedOut
        ? `Alpaca ${route} timed out after ${this.#timeoutMs} ms`
        : `Alpaca ${route} failed: ${
          redactValues(errorMessage(error), [this.#keyId, this.#secretKey])
        }`;
      this.#log.warn("alpaca request failed", { route, timed_out: timedOut, error: message });
      throw new BrokerUnavailableError(message, { cause: error });
    }
    let parsed: unknown = null;
    try {
      parsed = text === "" ? null : JSON.parse(text);
    } catch {
      parsed = null;
    }
    const alpacaMessage = isRecord(parsed) && typeof parsed.message === "string"
      ? parsed.message
      : null;
    const message = alpacaMessage ?? (text.trim() === "" ? `HTTP ${status}` : text.slice(0, 200));
    if (status >= 400) this.#log.info("alpaca answered an error", { route, status, message });
    return { status, body: parsed, message };
  }

  /** The body of a 2xx answer; throws for anything else. */
  #expectOk(method: string, path: string, answer: Answer): unknown {
    if (answer.status >= 200 && answer.status < 300) return answer.body;
    this.#fail(method, path, answer);
  }

  /** Throws the error for a non-2xx answer to a call that is not an order submit. */
  #fail(method: string, path: string, answer: Answer): never {
    const what = `Alpaca ${method} ${path} answered ${answer.status}: ${answer.message}`;
    if (answer.status === 401) {
      throw new AlpacaAuthError(`Alpaca refused the API keys: ${answer.message}`);
    }
    if (answer.status === 429 || answer.status >= 500) throw new BrokerUnavailableError(what);
    throw new Error(what);
  }

  #parse<T>(route: string, parse: (raw: unknown) => T, raw: unknown): T {
    try {
      return parse(raw);
    } catch (error) {
      throw new BrokerUnavailableError(`Alpaca ${route} answered an unreadable body`, {
        cause: error,
      });
    }
  }

  #readOrder(raw: unknown, route: string): AlpacaOrder {
    return this.#parse(route, parseAlpacaOrder, raw);
  }

  /** The order with `clientOrderId` at Alpaca, or null when Alpaca does not know it. */
  async #findOrder(clientOrderId: string): Promise<AlpacaOrder | null> {
    const route = "/v2/orders:by_client_order_id";
    const answer = await this.#request(
      "GET",
      `${route}?client_order_id=${encodeURIComponent(clientOrderId)}`,
    );
    if (answer.status === 404) return null;
    const order = this.#readOrder(this.#expectOk("GET", route, answer), `GET ${route}`);
    if (order.client_order_id !== clientOrderId) {
      throw new BrokerUnavailableError(
        `Alpaca GET ${route} returned order ${order.id} for another client order id`,
      );
    }
    if (isTerminal(order)) this.#brokerIds.delete(clientOrderId);
    else remember(this.#brokerIds, clientOrderId, order.id);
    return order;
  }

  /** After an ambiguous submit failure: the existing order, or `error` rethrown. */
  async #recoverSubmit(
    order: BrokerOrderRequest,
    error: unknown,
  ): Promise<{ broker_order_id: string }> {
    let existing: AlpacaOrder | null;
    try {
      existing = await this.#findOrder(order.client_order_id);
    } catch (lookupError) {
      this.#log.warn("alpaca order lookup after a failed submit failed", {
        client_order_id: order.client_order_id,
        error: errorMessage(lookupError),
      });
      throw asUnavailable(error);
    }
    if (existing === null) throw asUnavailable(error);
    this.#log.info("alpaca submit recovered an existing order", {
      client_order_id: order.client_order_id,
      broker_order_id: existing.id,
    });
    return this.#adopt(order, existing);
  }

  /** Returns `existing` as the result of submitting `order`, if it is the same order. */
  #adopt(order: BrokerOrderRequest, existing: AlpacaOrder): { broker_order_id: string } {
    const sameSymbol = fromAlpacaSymbol(existing.symbol, existing.asset_class).replace("-", "") ===
      order.symbol.replace("-", "");
    const sameQty = existing.qty === null || existing.qty.eq(order.qty);
    if (!sameSymbol || existing.side !== order.side || !sameQty) {
      throw new BrokerRejectedError(
        `client_order_id ${order.client_order_id} is already used at Alpaca by another order (${existing.side} ${
          existing.qty === null ? "?" : toJson(existing.qty)
        } ${existing.symbol})`,
      );
    }
    return { broker_order_id: existing.id };
  }

  // ---- Stream ----

  async #run(started: () => void, failed: (error: Error) => void): Promise<void> {
    const halt = this.#halt.signal;
    let first = true;
    let attempt = 0;
    while (!halt.aborted) {
      this.#status.state = first ? "connecting" : "reconnecting";
      let listenedAt: number | null = null;
      const end = await this.#connect(() => {
        listenedAt = this.#clock.now();
        this.#downSinceMs = null;
        this.#status.state = "listening";
        this.#status.auth_error = false;
        if (first) {
          first = false;
          this.#log.info("alpaca stream listening", { url: this.#streamUrl });
          started();
        } else {
          this.#log.info("alpaca stream listening again", { reconnects: this.#status.reconnects });
        }
        // Alpaca replays nothing from before this listen: updates made while the stream was lost,
        // or before its first listen — also when the first connection follows a start that failed
        // or the engine's startup reconciliation read the orders while it was still connecting.
        this.#enqueue(() => this.#notifyReconnect());
      });
      if (listenedAt !== null) this.#downSinceMs = this.#clock.now();
      if (halt.aborted) break;
      if (end.error) this.#status.last_error = end.error.message;
      this.#status.auth_error = end.error instanceof AlpacaAuthError;
      if (first) {
        this.#status.state = "failed";
        this.#log.error("alpaca stream could not start", { error: end.error?.message });
        failed(end.error ?? new BrokerUnavailableError("Alpaca stream closed before listening"));
        return;
      }
      // Start the backoff over only after a connection that lasted: one cut right after it
      // listened (a flapping stream) keeps the delay growing.
      if (listenedAt !== null && this.#clock.now() - listenedAt >= this.#maxMs) attempt = 0;
      const delayMs = backoffDelay(attempt, {
        initialMs: this.#initialMs,
        maxMs: this.#maxMs,
        random: this.#random,
      });
      attempt = Math.min(attempt + 1, 64);
      this.#status.reconnects++;
      this.#status.state = "reconnecting";
      this.#log.warn("alpaca stream lost, reconnecting", {
        error: end.error?.message ?? null,
        delay_ms: delayMs,
        attempt,
      });
      try {
        await this.#clock.sleep(delayMs, halt);
      } catch {
        break;
      }
    }
    this.#status.state = "stopped";
    if (first) {
      failed(halt.reason instanceof Error ? halt.reason : new Error("Alpaca stream stopped"));
    }
  }

  /** One connection, from open to close. `listening` runs once it listens to trade_updates. */
  #connect(listening: () => void): Promise<ConnectionEnd> {
    const halt = this.#halt.signal;
    return new Promise<ConnectionEnd>((resolve) => {
      this.#status.connections++;
      let socket: WebSocket;
      try {
        socket = this.#webSocket(this.#streamUrl);
      } catch (error) {
        resolve({
          listened: false,
          error: new BrokerUnavailableError(
            `Alpaca stream could not open: ${errorMessage(error)}`,
            {
              cause: error,
            },
          ),
        });
        return;
      }
      socket.binaryType = "arraybuffer";
      let listened = false;
      let error: Error | null = null;
      const handshake = new AbortController();
      const close = () => {
        if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
          socket.close(1000);
        }
      };
      const fail = (reason: Error) => {
        error ??= reason;
        close();
      };
      halt.addEventListener("abort", close, { once: true });
      this.#clock.sleep(this.#handshakeMs, handshake.signal).then(
        () =>
          fail(
            new BrokerUnavailableError(
              `Alpaca stream did not listen within ${this.#handshakeMs} ms`,
            ),
          ),
        () => {},
      );
      socket.onopen = () => socket.send(this.#authMessage());
      socket.onmessage = (message: MessageEvent) => {
        const text = typeof message.data === "string"
          ? message.data
          : decoder.decode(message.data as ArrayBuffer);
        let frame: unknown;
        try {
          frame = JSON.parse(text);
        } catch {
          this.#malformed("stream frame is not JSON", text);
          return;
        }
        if (!isRecord(frame) || typeof frame.stream !== "string") {
          this.#malformed("stream frame has no stream", text);
          return;
        }
        const data = isRecord(frame.data) ? frame.data : {};
        switch (frame.stream) {
          case "authorization":
            if (data.status === "authorized") {
              socket.send(
                JSON.stringify({ action: "listen", data: { streams: ["trade_updates"] } }),
              );
            } else {
              fail(
                new AlpacaAuthError(
                  `Alpaca stream authorization failed: ${String(data.status)} (action ${
                    String(data.action)
                  })`,
                ),
              );
            }
            return;
          case "listening": {
            const streams = Array.isArray(data.streams) ? data.streams : [];
            if (!streams.includes("trade_updates")) {
              fail(new BrokerUnavailableError("Alpaca stream did not grant trade_updates"));
              return;
            }
            if (!listened) {
              listened = true;
              handshake.abort();
              listening();
            }
            return;
          }
          case "trade_updates":
            this.#tradeUpdate(frame.data, text);
            return;
          default:
            this.#log.debug("alpaca stream message ignored", { stream: frame.stream });
        }
      };
      socket.onerror = (event: Event) => {
        const detail = event instanceof ErrorEvent ? event.message : "socket error";
        error ??= new BrokerUnavailableError(`Alpaca stream error: ${detail}`);
      };
      socket.onclose = (event: CloseEvent) => {
        handshake.abort();
        halt.removeEventListener("abort", close);
        if (!error && !halt.aborted) {
          error = new BrokerUnavailableError(
            `Alpaca stream closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`,
          );
        }
        resolve({ listened, error });
      };
    });
  }

  #authMessage(): string {
    return this.#streamAuth === "auth"
      ? JSON.stringify({ action: "auth", key: this.#keyId, secret: this.#secretKey })
      : JSON.stringify({
        action: "authenticate",
        data: { key_id: this.#keyId, secret_key: this.#secretKey },
      });
  }

  #tradeUpdate(data: unknown, text: string): void {
    let event: BrokerEvent | null;
    let orderId: string;
    let terminal: boolean;
    let filled: AlpacaFilled;
    let previous: AlpacaFilled | null;
    try {
      const update = record(data, "trade update");
      const order = parseAlpacaOrder(update.order);
      orderId = order.id;
      filled = { filled_qty: order.filled_qty, filled_avg_price: order.filled_avg_price };
      terminal = TERMINAL_EVENTS.has(String(update.event));
      previous = this.#filled.get(order.id) ?? null;
      event = tradeUpdateEvent(
        update,
        previous?.filled_qty ?? null,
        this.#clock.now(),
        previous?.filled_avg_price ?? null,
      );
    } catch (error) {
      this.#malformed(errorMessage(error), text);
      return;
    }
    if (event === null) {
      if (terminal) {
        this.#accepted.delete(orderId);
        this.#filled.delete(orderId);
      }
      this.#log.debug("alpaca trade update ignored", { order_id: orderId });
      return;
    }
    if (event.type === "accepted") {
      if (this.#accepted.has(orderId)) return;
      if (this.#accepted.size >= ALPACA_TRACKED_ORDERS) this.#accepted.deleteOldest();
      this.#accepted.add(orderId);
    }
    if (event.type === "fill") {
      const missed = fillMissedBefore(event, filled.filled_avg_price, previous);
      if (missed !== null) {
        const message = "alpaca fill shows executions the stream did not; recording them";
        const fields = {
          order_id: orderId,
          fill_id: missed.fill_id,
          qty: toJson(missed.qty),
          price: toJson(missed.price),
        };
        // Nothing seen before (a restart): usual, the engine counts only what its fills lack.
        if (previous === null) this.#log.debug(message, fields);
        else this.#log.warn(message, fields);
        this.#enqueue(() => this.#deliver(missed));
      }
      remember(this.#filled, orderId, filled);
    }
    if (terminal) {
      this.#accepted.delete(orderId);
      this.#filled.delete(orderId);
      this.#brokerIds.delete(event.client_order_id);
    } else {
      remember(this.#brokerIds, event.client_order_id, orderId);
    }
    const delivered = event;
    this.#enqueue(() => this.#deliver(delivered));
  }

  #malformed(why: string, text: string): void {
    this.#status.malformed++;
    this.#log.warn("unreadable alpaca stream message", { why, frame: text.slice(0, 300) });
  }

  #enqueue(task: () => Promise<void>): void {
    this.#queue = this.#queue.then(task);
  }

  async #deliver(event: BrokerEvent): Promise<void> {
    for (const listener of [...this.#listeners]) {
      try {
        await listener(event);
      } catch (error) {
        this.#log.error("broker event listener failed", {
          type: event.type,
          client_order_id: event.client_order_id,
          error,
        });
      }
    }
  }

  async #notifyReconnect(): Promise<void> {
    for (const callback of [...this.#reconnectListeners]) {
      try {
        await callback();
      } catch (error) {
        this.#log.error("alpaca reconnect callback failed", { error });
      }
    }
  }
}

/** Sets `key` in a map bounded by {@linkcode ALPACA_TRACKED_ORDERS}, forgetting the oldest entry. */
function remember<K, V>(map: InsertionOrderedMap<K, V>, key: K, value: V): void {
  map.delete(key);
  if (map.size >= ALPACA_TRACKED_ORDERS) map.deleteOldest();
  map.set(key, value);
}

function isTerminal(order: AlpacaOrder): boolean {
  const status = alpacaOrderStatus(order.status, order.filled_qty, order.qty);
  return status !== "accepted" && status !== "partially_filled";
}

function asUnavailable(error: unknown): BrokerUnavailableError {
  return error instanceof BrokerUnavailableError
    ? error
    : new BrokerUnavailableError(`Alpaca submit failed: ${errorMessage(error)}`, { cause: error });
}

function trimSlash(url: string): string {
  return url.replace(/\/+$/, "");
}

function positive(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!(Number.isFinite(value) && value > 0)) {
    throw new RangeError(`Alpaca option ${name} must be a positive number, got ${value}`);
  }
  return value;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (!isRecord(value)) throw new TypeError(`Alpaca ${what} is not an object`);
  return value;
}

function requiredString(object: Record<string, unknown>, key: string): string {
  const value = object[key];
  if (typeof value !== "string" || value === "") {
    throw new TypeError(`Alpaca field ${key} is missing or not a string`);
  }
  return value;
}

function optionalString(object: Record<string, unknown>, key: string): string | null {
  const value = object[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== "string") throw new TypeError(`Alpaca field ${key} is not a string`);
  return value;
}

/** An optional time field in ms since the epoch: null when absent or not an RFC 3339 time. */
function optionalTimestampMs(object: Record<string, unknown>, key: string): number | null {
  const value = object[key];
  return typeof value === "string" ? parseTimestampMs(value) : null;
}

function optionalDecimal(object: Record<string, unknown>, key: string): Decimal | null {
  const value = object[key];
  if (value === undefined || value === null || value === "") return null;
  if (typeof value !== "string" && typeof value !== "number") {
    throw new TypeError(`Alpaca field ${key} is not a decimal`);
  }
  try {
    return parseDecimal(value);
  } catch (error) {
    throw new TypeError(`Alpaca field ${key} is not a decimal: ${JSON.stringify(value)}`, {
      cause: error,
    });
  }
}

function requiredDecimal(object: Record<string, unknown>, key: string): Decimal {
  const value = optionalDecimal(object, key);
  if (value === null) throw new TypeError(`Alpaca field ${key} is missing`);
  return value;
}

function requiredTime(object: Record<string, unknown>, key: string): number {
  const ms = parseTimestampMs(requiredString(object, key));
  if (ms === null) throw new TypeError(`Alpaca field ${key} is not an RFC 3339 time`);
  return ms;
}
