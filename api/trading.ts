/**
 * The trading API: signals, orders, positions, the portfolio and the kill
 * switch. Mounted at `/api/v1/trading` behind the API-key middleware and the
 * guards against cross-site requests and DNS rebinding ({@linkcode TradingHttpOptions}).
 * Money values are decimal strings.
 *
 * @module
 */

import { Hono } from "hono";
import type { Sql } from "postgres";
import {
  ConflictError,
  getOrder,
  getPortfolio,
  isRowId,
  listOrders,
  listPositions,
  listSignals,
  listSnapshots,
  MAX_ROW_ID,
  NotFoundError,
  type Order,
  ORDER_STATUSES,
  type Signal,
  SIGNAL_STATUSES,
} from "../db/mod.ts";
import { MicroDate } from "../db/_common.ts";
import { DbTimeoutError } from "../db/errors.ts";
import {
  CancelNotSentError,
  type ExecutionEngine,
  ExecutionNotReadyError,
  orderJson,
  type SignalOutcome,
} from "../trading/execution.ts";
import {
  markPrice,
  type PortfolioState,
  roundPortfolio,
  roundPositionValue,
} from "../trading/portfolio_state.ts";
import { markPosition, portfolioValueToJson } from "../trading/positions.ts";
import { KILL_SWITCH_NOT_AN_OBJECT, parseKillSwitchRequest } from "../trading/signals_stream.ts";
import { fromDb, toJson } from "../trading/money.ts";
import {
  decodeSignalBody,
  keyReusedMessage,
  sameSignalBody,
  SIGNAL_ID_PATTERN,
  STRATEGY_PATTERN,
  SYMBOL_PATTERN,
} from "../trading/signal.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { JsonDuplicateKeyError, parseJsonNumbers } from "../lib/json_numbers.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { ApiError, methodNotAllowed } from "./errors.ts";
import { singleParams } from "./_params.ts";
import {
  allowCrossOrigin,
  isLoopbackHost,
  requireApiKey,
  requireLoopbackHost,
  requireSameOrigin,
} from "./auth.ts";
import { isoTimeUs } from "./market_data.ts";

/** What the trading routes need. */
export interface TradingRoutesDeps {
  /** The PostgreSQL pool. */
  sql: Sql;
  /** The execution engine (signals, cancels, the kill switch). */
  engine: ExecutionEngine;
  /** The portfolio view kept by the position tracker. */
  state: PortfolioState;
  /** Latest prices, for marks. */
  cache: LatestCache;
  /** A price older than this (ms) is not used as a mark. */
  maxPriceAgeMs: number;
  /**
   * Accepted API key hashes; empty leaves the routes open to clients on this
   * machine (development only; see {@linkcode TradingHttpOptions}).
   */
  apiKeyHashes: readonly string[];
  /**
   * The `http` settings that say who else may call the routes: pass
   * `config.http`. Without them, keyless routes do not refuse clients on
   * other machines (they cannot know `http.allow_keyless_remote`).
   */
  http?: TradingHttpOptions;
  /** @default {systemClock} */
  clock?: Clock;
  /**
   * Longest wait for an answer of PostgreSQL to a query of these routes, ms:
   * past it the request is a 503 `unavailable` with `Retry-After`, even when
   * PostgreSQL holds the connection open without answering (a partition).
   * @default {dbDeadlineMs(sql)}
   */
  dbDeadlineMs?: number;
}

/**
 * What the trading routes read of the `http` configuration. Every request
 * is refused that a browser sends for a page of another origin (its
 * `Origin` not the API's own nor in `allowed_origins`, or `Sec-Fetch-Site:
 * cross-site`/`same-site`); a page of one of `allowed_origins` may call them
 * from a browser (CORS: its preflight is answered without an API key, every
 * answer names its origin). When the server listens on a loopback address,
 * or the routes have no API key, a request whose `Host` is not a loopback
 * name nor in `allowed_hosts` is refused (DNS rebinding). Without an API
 * key, a client on another machine is refused unless `allow_keyless_remote`.
 */
export interface TradingHttpOptions {
  /** The address the server listens on (`http.host`). */
  host?: string;
  /** Origins allowed besides the API's own (`http.allowed_origins`). @default {[]} */
  allowed_origins?: readonly string[];
  /** Host names allowed besides the loopback ones (`http.allowed_hosts`). @default {[]} */
  allowed_hosts?: readonly string[];
  /**
   * Without API keys, answer clients on other machines too
   * (`http.allow_keyless_remote`).
   * @default {false}
   */
  allow_keyless_remote?: boolean;
}

/**
 * Added to the pool's `statement_timeout` and connect timeout to make the
 * client-side deadline of the trading routes' queries ({@linkcode dbDeadlineMs}), ms.
 */
export const DB_DEADLINE_MARGIN_MS = 2_000;
/** The deadline's base when the pool has no `statement_timeout` (0: none), ms. */
export const DEFAULT_DB_STATEMENT_MS = 30_000;

/** What {@linkcode dbDeadlineMs} reads of a postgres.js pool's options. */
interface PoolOptions {
  connect_timeout?: unknown;
  connection?: { statement_timeout?: unknown };
}

/**
 * The client-side deadline of the trading routes' queries for the pool `sql`:
 * its server-side `statement_timeout` (or {@linkcode DEFAULT_DB_STATEMENT_MS}
 * without one), plus its connect timeout and {@linkcode DB_DEADLINE_MARGIN_MS}
 * — longer than PostgreSQL takes to end a statement itself, so it only fires
 * when PostgreSQL does not answer at all.
 *
 * @example
 * ```ts
 * const sql = createPostgres({ url, statement_timeout_ms: 1000, connect_timeout_s: 2 });
 * dbDeadlineMs(sql); // 5000
 * ```
 */
export function dbDeadlineMs(sql: Sql): number {
  // postgres.js keeps the options it was made with; a stand-in pool may have none.
  const options = (sql as unknown as { options?: PoolOptions }).options;
  const statement = Number(options?.connection?.statement_timeout ?? 0);
  const connect = Number(options?.connect_timeout ?? 0);
  return (Number.isFinite(statement) && statement > 0 ? statement : DEFAULT_DB_STATEMENT_MS) +
    (Number.isFinite(connect) && connect > 0 ? connect * 1000 : 0) + DB_DEADLINE_MARGIN_MS;
}

/**
 * Earliest `from`/`to` of the trading lists, epoch ms: 1970-01-01T00:00:00Z
 * (epoch milliseconds are not negative; PostgreSQL holds every time in range).
 */
export const MIN_LIST_TIME_MS = 0;
/** Latest `from`/`to` of the trading lists, epoch ms: 9999-12-31T23:59:59.999Z. */
export const MAX_LIST_TIME_MS = 253_402_300_799_999;

/** The trading routes, to mount at `/api/v1/trading`. */
export function tradingRoutes(deps: TradingRoutesDeps): Hono {
  const clock = deps.clock ?? systemClock;
  const deadlineMs = deps.dbDeadlineMs ?? dbDeadlineMs(deps.sql);
  /** A query of these routes, a 503 (DbTimeoutError) when PostgreSQL does not answer in time. */
  const db = <T>(query: () => Promise<T>) => withDeadline(query, deadlineMs, clock);
  const app = new Hono();
  const http = deps.http ?? {};
  // First: a dashboard of an allowed origin gets its preflight (no API key) and reads every answer.
  app.use("*", allowCrossOrigin({ allowedOrigins: http.allowed_origins ?? [] }));
  // Before anything reads the body: a page of another site must not reach the routes.
  app.use("*", requireSameOrigin({ allowedOrigins: http.allowed_origins ?? [] }));
  if (
    deps.apiKeyHashes.length === 0 || (http.host !== undefined && isLoopbackHost(http.host))
  ) {
    app.use("*", requireLoopbackHost({ allowedHosts: http.allowed_hosts ?? [] }));
  }
  app.use(
    "*",
    requireApiKey({
      hashes: deps.apiKeyHashes,
      // Without the settings, as before them: a keyless engine in a container (compose.yaml)
      // sees its clients come from the container network's gateway.
      allowKeylessRemote: http.allow_keyless_remote ?? deps.http === undefined,
    }),
  );

  app.post("/signal", async (c) => {
    // Before anything is read or done: `?dry_run=true` must not place an order.
    noParams(c.req.queries());
    // Read as the NATS path reads it: numbers exactly as sent, too deep a body refused unread.
    const text = await utf8Body(c.req);
    let body: unknown;
    try {
      body = decodeSignalBody(text);
    } catch {
      throw new ApiError(400, "bad_request", "The body is not valid JSON");
    }
    // A retried request without a body `id` is recognised by its Idempotency-Key header.
    const key = c.req.header("idempotency-key");
    if (key !== undefined && !SIGNAL_ID_PATTERN.test(key)) {
      throw new ApiError(
        400,
        "bad_request",
        "Idempotency-Key must be 1..128 characters of [A-Za-z0-9_.:-]",
      );
    }
    const [outcome] = await engineCall(() =>
      deps.engine.processSignals([{ body, source: "rest", ...(key === undefined ? {} : { key }) }])
    );
    // A key used before for another body: its stored outcome is not this signal's.
    if (outcome!.duplicate && !sameSignalBody(body, outcome!.signal.payload)) {
      throw keyReused(outcome!.signal, body);
    }
    return respondToOutcome(c, outcome!);
  });

  app.get("/orders", async (c) => {
    const { q, filter } = listQuery(singleParams(c.req.queries()));
    const statuses = statusParam(q.status, ORDER_STATUSES);
    const page = await badParams(() =>
      db(() => listOrders(deps.sql, { ...filter, ...(statuses ? { status: statuses } : {}) }))
    );
    return c.json({ orders: page.items.map(orderJson), next_cursor: page.next });
  });

  app.get("/signals", async (c) => {
    const { q, filter } = listQuery(singleParams(c.req.queries()));
    const statuses = statusParam(q.status, SIGNAL_STATUSES);
    const page = await badParams(() =>
      db(() => listSignals(deps.sql, { ...filter, ...(statuses ? { status: statuses } : {}) }))
    );
    return c.json({ signals: page.items.map(signalJson), next_cursor: page.next });
  });

  app.get("/orders/:id", async (c) => {
    noParams(c.req.queries());
    const id = orderId(c.req.param("id"));
    return c.json({ order: orderJson(await found(() => db(() => getOrder(deps.sql, id)))) });
  });

  app.delete("/orders/:id", async (c) => {
    noParams(c.req.queries());
    const id = orderId(c.req.param("id"));
    const order = await found(() => engineCall(() => deps.engine.cancelOrder(id)));
    return c.json({ order: orderJson(order) }, 202);
  });

  app.get("/positions", async (c) => {
    const q = query(singleParams(c.req.queries()), ["symbol", "all"]);
    if (q.symbol !== undefined) checkSymbol(q.symbol);
    if (q.all !== undefined && q.all !== "true" && q.all !== "false") {
      throw new ApiError(
        400,
        "bad_request",
        `all must be true or false, got ${JSON.stringify(q.all)}`,
      );
    }
    const rows = await db(() =>
      listPositions(deps.sql, {
        ...(q.symbol !== undefined ? { symbol: q.symbol } : {}),
        open: q.all !== "true",
      })
    );
    const now = clock.now();
    return c.json({
      positions: rows.map((row) => {
        const mark = markPrice(deps.cache, row.symbol, deps.maxPriceAgeMs, now);
        const position = {
          symbol: row.symbol,
          qty: fromDb(row.qty),
          avg_entry_price: fromDb(row.avg_entry_price),
          realized_pnl: fromDb(row.realized_pnl),
          fees: fromDb(row.commission),
          // Exact: unrealized P&L is qty × mark − cost basis, not against the rounded average.
          cost_basis: fromDb(row.cost_basis),
        };
        // Money as the tracker stores it: 8 decimals (qty × mark − the exact basis has up to 16).
        const value = mark === null ? null : roundPositionValue(markPosition(position, mark));
        return {
          symbol: row.symbol,
          qty: toJson(position.qty),
          avg_entry_price: toJson(position.avg_entry_price),
          realized_pnl: toJson(position.realized_pnl),
          commission: toJson(position.fees),
          mark_price: mark === null ? null : toJson(mark),
          market_value: value === null ? null : toJson(value.market_value),
          unrealized_pnl: value === null ? null : toJson(value.unrealized_pnl),
          updated_at: row.updated_at,
        };
      }),
    });
  });

  app.get("/portfolio", async (c) => {
    noParams(c.req.queries());
    const stored = await found(() => db(() => getPortfolio(deps.sql)));
    // Until the position tracker loaded them, the figures in memory are the starting ones.
    if (!deps.state.loaded) {
      throw new ApiError(503, "unavailable", "The portfolio is not loaded yet; try again shortly");
    }
    const now = clock.now();
    const value = roundPortfolio(
      deps.state.value((symbol) => markPrice(deps.cache, symbol, deps.maxPriceAgeMs, now)),
    );
    const { positions: _positions, ...figures } = portfolioValueToJson(value);
    return c.json({
      portfolio: {
        id: stored.id,
        broker: stored.broker,
        base_currency: stored.base_currency,
        ...figures,
      },
    });
  });

  app.get("/portfolio/history", async (c) => {
    const q = query(singleParams(c.req.queries()), ["from", "to", "limit", "cursor"]);
    const page = await badParams(() =>
      db(() =>
        listSnapshots(deps.sql, {
          ...range(q),
          limit: limit(q.limit),
          after: q.cursor === undefined ? null : rowId(q.cursor, "cursor"),
        })
      )
    );
    return c.json({
      snapshots: page.items.map((row) => ({
        taken_at: row.taken_at,
        cash: toJson(fromDb(row.cash)),
        equity: toJson(fromDb(row.equity)),
        market_value: toJson(fromDb(row.market_value)),
        gross_exposure: toJson(fromDb(row.gross_exposure)),
        net_exposure: toJson(fromDb(row.net_exposure)),
        realized_pnl: toJson(fromDb(row.realized_pnl)),
        unrealized_pnl: toJson(fromDb(row.unrealized_pnl)),
      })),
      next_cursor: page.next,
    });
  });

  app.get("/kill-switch", (c) => {
    noParams(c.req.queries());
    return c.json({ kill_switch: deps.engine.killSwitch() });
  });

  app.post("/kill-switch", async (c) => {
    noParams(c.req.queries());
    const text = await utf8Body(c.req);
    let body: unknown;
    try {
      // {"active":true,"active":false} is refused, not read as its last value.
      body = parseJsonNumbers(text, { duplicateKeys: "reject" });
    } catch (error) {
      if (error instanceof JsonDuplicateKeyError) {
        throw new ApiError(422, "unprocessable_entity", "Invalid kill-switch request", {
          details: [`${error.key}: given more than once`],
        });
      }
      throw new ApiError(400, "bad_request", "The body is not valid JSON");
    }
    const request = killSwitchRequest(body);
    const state = await engineCall(() => deps.engine.setKillSwitch({ ...request, by: "api" }));
    return c.json({ kill_switch: state });
  });

  // Last: PUT /signal, PATCH /kill-switch… are 405 naming the methods served, not 404.
  app.all("*", methodNotAllowed(app));
  return app;
}

/**
 * The query of a list of orders or signals, and its filters common to both:
 * symbol, strategy, from, to, limit and cursor (`status` is left to the caller).
 */
function listQuery(params: Record<string, string>) {
  const q = query(params, ["symbol", "status", "strategy", "from", "to", "limit", "cursor"]);
  if (q.symbol !== undefined) checkSymbol(q.symbol);
  if (q.strategy !== undefined && !STRATEGY_PATTERN.test(q.strategy)) {
    throw new ApiError(
      400,
      "bad_request",
      `strategy must be 1..64 characters of [A-Za-z0-9_-], got ${JSON.stringify(q.strategy)}`,
    );
  }
  const filter = {
    ...(q.symbol !== undefined ? { symbol: q.symbol } : {}),
    ...(q.strategy !== undefined ? { strategy: q.strategy } : {}),
    ...range(q),
    limit: limit(q.limit),
    after: q.cursor === undefined ? null : rowId(q.cursor, "cursor"),
  };
  return { q, filter };
}

/** Throws a 400 unless `symbol` is a canonical symbol (what the tables hold). */
function checkSymbol(symbol: string): void {
  if (!SYMBOL_PATTERN.test(symbol)) {
    throw new ApiError(
      400,
      "bad_request",
      `symbol must be a canonical symbol such as BTC-USDT or AAPL, got ${JSON.stringify(symbol)}`,
    );
  }
}

/**
 * The `status` parameter of a list of orders or signals: one status or
 * several comma-separated (`status=filled,cancelled`), each one of `all`;
 * a 400 naming the known statuses otherwise. Undefined when not given.
 */
function statusParam<S extends string>(
  text: string | undefined,
  all: readonly S[],
): S[] | undefined {
  if (text === undefined) return undefined;
  const statuses = text.split(",").map((s) => s.trim());
  for (const status of statuses) {
    if (!(all as readonly string[]).includes(status)) {
      throw new ApiError(
        400,
        "bad_request",
        `Unknown status ${JSON.stringify(status)}; expected ${all.join(", ")}`,
      );
    }
  }
  return statuses as S[];
}

/** A stored signal as the API shows it: its outcome, reasons and the body as received. */
function signalJson(signal: Signal) {
  return {
    id: signal.id,
    strategy: signal.strategy,
    client_signal_id: signal.client_signal_id,
    source: signal.source,
    symbol: signal.symbol,
    status: signal.status,
    reasons: signal.reasons,
    payload: signal.payload,
    received_at: signal.received_at.toISOString(),
    decided_at: signal.decided_at?.toISOString() ?? null,
  };
}

function respondToOutcome(
  c: { json: (body: unknown, status: 200 | 201 | 422) => Response },
  outcome: SignalOutcome,
): Response {
  const signal = { id: outcome.signal.id, duplicate: outcome.duplicate };
  if (outcome.status === "accepted") {
    return c.json({ signal, order: orderJson(outcome.order) }, outcome.duplicate ? 200 : 201);
  }
  if (outcome.status === "rejected") {
    return c.json({
      error: {
        code: "signal_rejected",
        message: outcome.reasons.map((r) => r.message).join("; "),
        details: outcome.reasons,
      },
      signal,
    }, 422);
  }
  return c.json({ signal, status: outcome.status }, 200);
}

/**
 * The 422 for a signal whose idempotency key — its body's `id`, else the
 * `Idempotency-Key` header — is the key of `stored`, a signal with another
 * body (`body`, as decoded): the client reused a key, or changed the body of
 * a retry.
 */
function keyReused(stored: Signal, body: unknown): ApiError {
  const { client_signal_id: id, strategy } = stored;
  const bodyId = typeof body === "object" && body !== null ? (body as { id?: unknown }).id : null;
  const named = bodyId === id
    ? `id ${JSON.stringify(id)}`
    : `Idempotency-Key ${JSON.stringify(id)}`;
  return new ApiError(422, "idempotency_key_reused", keyReusedMessage(stored, named), {
    details: { signal_id: stored.id, strategy, client_signal_id: id, status: stored.status },
  });
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * The body of `request` as text: a 400 unless it is UTF-8, never decoded
 * with U+FFFD in place of the bytes that are not.
 */
async function utf8Body(request: { arrayBuffer(): Promise<ArrayBuffer> }): Promise<string> {
  const bytes = await request.arrayBuffer();
  try {
    return utf8.decode(bytes);
  } catch {
    throw new ApiError(400, "bad_request", "The body is not valid UTF-8");
  }
}

/** The body of `POST /kill-switch`, checked as a `control.kill_switch` request is. */
function killSwitchRequest(
  body: unknown,
): { active: boolean; cancel_open: boolean; reason?: string } {
  const parsed = parseKillSwitchRequest(body);
  if (!parsed.ok) {
    if (parsed.problems[0] === KILL_SWITCH_NOT_AN_OBJECT) {
      throw new ApiError(400, "bad_request", "Expected a JSON object");
    }
    throw new ApiError(422, "unprocessable_entity", "Invalid kill-switch request", {
      details: parsed.problems,
    });
  }
  const { active, cancel_open, reason } = parsed.request;
  return { active, cancel_open: cancel_open === true, ...(reason === undefined ? {} : { reason }) };
}

function query(params: Record<string, string>, allowed: string[]): Record<string, string> {
  for (const key of Object.keys(params)) {
    if (!allowed.includes(key)) {
      throw new ApiError(
        400,
        "bad_request",
        `Unknown parameter ${JSON.stringify(key)}; ` +
          (allowed.length === 0 ? "this endpoint takes none" : `expected ${allowed.join(", ")}`),
      );
    }
  }
  return params;
}

/**
 * Throws a 400 naming the first query parameter of `params` (Hono's
 * `c.req.queries()`), for an endpoint that takes none: one silently ignored
 * could be an option the client believes honoured (`POST /signal?dry_run=true`).
 */
function noParams(params: Record<string, string[]>): void {
  query(singleParams(params), []);
}

/** Page size of the trading lists when `limit` is not given. */
export const DEFAULT_LIST_LIMIT = 100;
/** Largest `limit` of the trading lists. */
export const MAX_LIST_LIMIT = 1000;

/**
 * A `limit` parameter: plain decimal digits (no sign, exponent, hex, spaces or
 * fraction; leading zeros allowed) from 1 to {@linkcode MAX_LIST_LIMIT}; a
 * 400 otherwise.
 */
function limit(text: string | undefined): number {
  if (text === undefined) return DEFAULT_LIST_LIMIT;
  const n = /^0*\d{1,4}$/.test(text) ? Number(text) : NaN;
  if (!(n >= 1 && n <= MAX_LIST_LIMIT)) {
    throw new ApiError(
      400,
      "bad_request",
      `limit must be an integer from 1 to ${MAX_LIST_LIMIT}, got ${JSON.stringify(text)}`,
    );
  }
  return n;
}

/** The space a query string makes of the `+` of a zone offset (`12:00:00 02:00`). */
const UNENCODED_PLUS = / (?=\d{2}:\d{2}$)/;

/**
 * A `from`/`to` parameter: epoch milliseconds, an ISO-8601 date (UTC
 * midnight) or an ISO-8601 time with a zone, from {@linkcode MIN_LIST_TIME_MS}
 * to {@linkcode MAX_LIST_TIME_MS}; a 400 naming `name` otherwise. Kept to the
 * microsecond (a {@linkcode MicroDate}), as PostgreSQL stores times.
 */
function date(text: string, name: string): Date {
  const us = /^\d{1,16}$/.test(text) ? Number(text) * 1000 : isoTimeUs(text);
  // To the microsecond, as PostgreSQL stores times: 12:00:00.123456Z is not 12:00:00.123Z.
  const value = us === null ? new Date(NaN) : new MicroDate(us);
  if (Number.isNaN(value.getTime())) {
    // `…T12:00:00+02:00` sent unencoded: a query string reads its `+` as a space.
    const plus = UNENCODED_PLUS.test(text) && isoTimeUs(text.replace(UNENCODED_PLUS, "+")) !== null;
    throw new ApiError(
      400,
      "bad_request",
      `${name} must be an ISO-8601 date or time with a zone (2024-05-01T12:00:00Z), ` +
        `or epoch milliseconds; got ${JSON.stringify(text)}` +
        (plus ? " (a + in a query string reads as a space: send it as %2B)" : ""),
    );
  }
  if (value.getTime() < MIN_LIST_TIME_MS || value.getTime() > MAX_LIST_TIME_MS) {
    throw new ApiError(
      400,
      "bad_request",
      `${name} must be from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z; ` +
        `got ${JSON.stringify(text)}`,
    );
  }
  return value;
}

/**
 * The `from` (inclusive) and `to` (exclusive) parameters of a list, each
 * read by {@linkcode date}; a 400 naming both when `from` is after `to` (a
 * swapped range is a mistake, not a request for nothing), as the
 * market-data endpoints answer it.
 */
function range(q: Record<string, string>): { from?: Date; to?: Date } {
  const from = q.from === undefined ? undefined : date(q.from, "from");
  const to = q.to === undefined ? undefined : date(q.to, "to");
  if (from !== undefined && to !== undefined && isAfter(from, to)) {
    throw new ApiError(
      400,
      "bad_request",
      `from (${q.from}) is after to (${q.to}); give the earlier time as from`,
    );
  }
  return { ...(from === undefined ? {} : { from }), ...(to === undefined ? {} : { to }) };
}

/** Whether `a` is after `b`, to the microsecond of a {@linkcode MicroDate}. */
function isAfter(a: Date, b: Date): boolean {
  if (a.getTime() !== b.getTime()) return a.getTime() > b.getTime();
  return (a instanceof MicroDate ? a.micros : 0) > (b instanceof MicroDate ? b.micros : 0);
}

/**
 * An order id or list cursor: an integer from 1 to {@linkcode MAX_ROW_ID}
 * with any leading zeros, written as PostgreSQL writes it (`007` is `7`: the
 * engine knows its open orders by that text); else a 400.
 */
function rowId(text: string, name: string): string {
  const digits = text.replace(LEADING_ZEROS, "");
  if (!isRowId(digits)) {
    throw new ApiError(
      400,
      "bad_request",
      `${name} must be an integer from 1 to ${MAX_ROW_ID}, got ${JSON.stringify(text)}`,
    );
  }
  return digits;
}

/** The zeros before an integer's first significant digit (all but the last of `000`). */
const LEADING_ZEROS = /^0+(?=\d)/;

function orderId(text: string): string {
  return rowId(text, "order id");
}

async function badParams<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof RangeError) throw new ApiError(400, "bad_request", error.message);
    throw error;
  }
}

async function found<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof NotFoundError) throw new ApiError(404, "not_found", error.message);
    if (error instanceof RangeError) throw new ApiError(400, "bad_request", error.message);
    if (error instanceof ConflictError) {
      // An order found not open (a cancel): its state in details, as a refused cancel's 409 has it.
      const order = error.table === "orders" && isOrder(error.actual) ? error.actual : null;
      throw new ApiError(409, "conflict", error.message, {
        ...(order === null ? {} : { details: { order: orderJson(order) } }),
      });
    }
    throw error;
  }
}

/** Whether `value` is an order row (a {@linkcode ConflictError}'s `actual` may be anything). */
function isOrder(value: unknown): value is Order {
  return typeof value === "object" && value !== null && "client_order_id" in value &&
    "status" in value;
}

/**
 * `query()`, or a {@linkcode DbTimeoutError} (answered 503 with `Retry-After`)
 * when it has not settled within `ms` — PostgreSQL holding the connection
 * open without answering, which its own `statement_timeout` cannot end.
 */
async function withDeadline<T>(query: () => Promise<T>, ms: number, clock: Clock): Promise<T> {
  const stop = new AbortController();
  const late = clock.sleep(ms, stop.signal).then(() => {
    throw new DbTimeoutError(`PostgreSQL did not answer within ${ms} ms`);
  });
  try {
    return await Promise.race([query(), late]);
  } finally {
    stop.abort();
    late.catch(() => {}); // ended by the abort above
  }
}

async function engineCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof ExecutionNotReadyError) {
      throw new ApiError(503, "unavailable", error.message);
    }
    if (error instanceof CancelNotSentError) {
      const details = { order: orderJson(error.order) };
      if (error.retryable) throw new ApiError(503, "unavailable", error.message, { details });
      throw new ApiError(409, "conflict", error.message, { details });
    }
    throw error;
  }
}
