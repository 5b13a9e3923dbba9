/**
 * The durable hand-over of fills from the execution engine to the position
 * tracker: the JetStream stream `FILLS` (subjects `fills.<symbol>`), its
 * durable pull consumer `position_tracker`, and the message on it — one
 * {@linkcode FillMessage} per persisted fill, published with
 * `Nats-Msg-Id: fill-<fill row id>` so that a publish retried within the
 * duplicate window is stored once.
 *
 * The execution engine publishes a fill only after the transaction that
 * inserted it committed ({@linkcode publishFill}); the position tracker
 * applies each fill exactly once whatever JetStream redelivers (its guard is
 * `fills.realized_pnl IS NULL`, see `actors/position_tracker.ts`).
 *
 * @example
 * ```ts
 * import { jetstream } from "@nats-io/jetstream";
 * import { ensureStreams } from "../adapters/nats.ts";
 * import { fillMessage, fillsStream, publishFill } from "./fills_stream.ts";
 *
 * await ensureStreams(nc, [fillsStream()], log);
 * // after the commit that inserted `fill` (a db Fill row) for `order`:
 * await publishFill(jetstream(nc), fillMessage(fill, order));
 * ```
 *
 * @module
 */

import type { ConsumerConfig, JetStreamClient, PubAck } from "@nats-io/jetstream";
import { limitsStream, type StreamSpec, workConsumer } from "../adapters/nats.ts";
import { encodeJson } from "../adapters/codec.ts";
import { symbolToken } from "../market/subjects.ts";
import { plainNumeric, safeParseDecimal } from "./money.ts";
import type { StoredFillFigures } from "./portfolio_state.ts";
import type { Side } from "./signal.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** Name of the stream of persisted fills. */
export const DEFAULT_FILLS_STREAM = "FILLS";
/** Name of the position tracker's durable consumer. */
export const DEFAULT_POSITION_TRACKER_CONSUMER = "position_tracker";
/** How long the stream keeps a fill, in seconds: 7 days. */
export const DEFAULT_FILLS_MAX_AGE_S = 7 * 24 * 3600;
/** Most bytes the stream keeps: 1 GiB. */
export const DEFAULT_FILLS_MAX_BYTES = 1024 * 1024 * 1024;
/** JetStream's duplicate window for `Nats-Msg-Id`, in ms: 2 minutes. */
export const DEFAULT_FILLS_DUPLICATE_WINDOW_MS = 120_000;
/** Redelivery delay of an unacknowledged fill, in ms. */
export const DEFAULT_FILLS_ACK_WAIT_MS = 30_000;
/** Most delivered, unacknowledged fills. */
export const DEFAULT_FILLS_MAX_ACK_PENDING = 10_000;
/** Subject of malformed fill messages, one dead letter per message. */
export const FILLS_DLQ_SUBJECT = "dlq.fills";

/** Names shared by the stream and consumer factories; injectable so tests run their own. */
export interface FillsStreamNames {
  /** Stream name. @default {DEFAULT_FILLS_STREAM} */
  stream?: string | undefined;
  /**
   * Prepended to the fills subjects (`<prefix>fills.*`), e.g. `"t1a2b."` in
   * tests. @default {""}
   */
  subject_prefix?: string | undefined;
}

/** Options of {@linkcode fillsStream}. */
export interface FillsStreamOptions extends FillsStreamNames {
  /** Longest a fill is kept, in seconds. @default {DEFAULT_FILLS_MAX_AGE_S} */
  max_age_s?: number | undefined;
  /** Most bytes kept; beyond that the oldest fills are dropped. @default {DEFAULT_FILLS_MAX_BYTES} */
  max_bytes?: number | undefined;
  /** Duplicate window of `Nats-Msg-Id`, in ms. @default {DEFAULT_FILLS_DUPLICATE_WINDOW_MS} */
  duplicate_window_ms?: number | undefined;
}

/** The stream's subject filter: `<prefix>fills.*`. */
export function fillsSubjectFilter(names: FillsStreamNames = {}): string {
  return `${names.subject_prefix ?? ""}fills.*`;
}

/**
 * `<prefix>fills.<symbol token>`: where the fill of `symbol` is published
 * (dots in the symbol become underscores).
 *
 * @example
 * ```ts
 * fillSubject("BRK.B"); // "fills.BRK_B"
 * ```
 */
export function fillSubject(symbol: string, names: FillsStreamNames = {}): string {
  return `${names.subject_prefix ?? ""}fills.${symbolToken(symbol)}`;
}

/**
 * The spec of `FILLS`: file storage, limits retention, discard old, with the
 * age, byte and duplicate-window limits of `options`. Pass it to
 * `ensureStreams`.
 */
export function fillsStream(options: FillsStreamOptions = {}): StreamSpec {
  const maxAgeS = options.max_age_s ?? DEFAULT_FILLS_MAX_AGE_S;
  const maxBytes = options.max_bytes ?? DEFAULT_FILLS_MAX_BYTES;
  const windowMs = options.duplicate_window_ms ?? DEFAULT_FILLS_DUPLICATE_WINDOW_MS;
  assertPositiveInteger(maxAgeS, "max_age_s");
  assertPositiveInteger(maxBytes, "max_bytes");
  assertPositiveInteger(windowMs, "duplicate_window_ms");
  return limitsStream({
    name: options.stream ?? DEFAULT_FILLS_STREAM,
    subject: fillsSubjectFilter(options),
    max_age_s: maxAgeS,
    max_bytes: maxBytes,
    duplicate_window_ms: windowMs,
  });
}

/** Options of {@linkcode positionTrackerConsumer}. */
export interface PositionTrackerConsumerOptions extends FillsStreamNames {
  /** Durable consumer name. @default {DEFAULT_POSITION_TRACKER_CONSUMER} */
  consumer?: string | undefined;
  /** Redelivery delay of an unacknowledged fill, in ms. @default {DEFAULT_FILLS_ACK_WAIT_MS} */
  ack_wait_ms?: number | undefined;
  /** Most delivered, unacknowledged fills. @default {DEFAULT_FILLS_MAX_ACK_PENDING} */
  max_ack_pending?: number | undefined;
}

/**
 * The durable pull consumer of the position tracker: explicit acks (a fill
 * is acknowledged after the transaction that applied it committed), every
 * fill from the start of the stream, redelivered until acknowledged.
 */
export function positionTrackerConsumer(
  options: PositionTrackerConsumerOptions = {},
): ConsumerConfig {
  return workConsumer({
    durable_name: options.consumer ?? DEFAULT_POSITION_TRACKER_CONSUMER,
    description: "Tradewire position tracker: fills into positions and the portfolio",
    filter_subject: fillsSubjectFilter(options),
    ack_wait_ms: options.ack_wait_ms ?? DEFAULT_FILLS_ACK_WAIT_MS,
    max_ack_pending: options.max_ack_pending ?? DEFAULT_FILLS_MAX_ACK_PENDING,
  });
}

/**
 * A persisted fill as JSON, the body of a `fills.<symbol>` message. Every
 * quantity and amount is a plain decimal string.
 */
export interface FillMessage {
  /** The fill's row id in PostgreSQL (decimal text); the exactly-once key. */
  id: string;
  /** The order's row id (decimal text). */
  order_id: string;
  /** The order's client order id. */
  client_order_id: string;
  /** The broker's execution id. */
  broker_fill_id: string;
  /** Canonical symbol. */
  symbol: string;
  /** Buy or sell. */
  side: Side;
  /** Quantity filled, > 0. */
  qty: string;
  /** Fill price, > 0. */
  price: string;
  /** Fee paid; negative for a rebate. */
  fee: string;
  /** When the broker executed it, ms since epoch. */
  filled_at: number;
  /** The order's strategy. */
  strategy: string;
  /** The order's portfolio. */
  portfolio_id: string;
}

/** The stored fill and order fields {@linkcode fillMessage} reads (db `Fill` and `Order` rows fit). */
export interface FillMessageSource {
  /** The fill row. */
  fill: StoredFillFigures & { id: string; order_id: string; broker_fill_id: string };
  /** Its order row. */
  order: { client_order_id: string; strategy: string; portfolio_id: string };
}

/**
 * The {@linkcode FillMessage} of a stored fill of `order`: NUMERIC text is
 * rendered as plain decimals (`"10.50000000"` → `"10.5"`).
 */
export function fillMessage(
  fill: FillMessageSource["fill"],
  order: FillMessageSource["order"],
): FillMessage {
  return {
    id: fill.id,
    order_id: fill.order_id,
    client_order_id: order.client_order_id,
    broker_fill_id: fill.broker_fill_id,
    symbol: fill.symbol,
    side: fill.side,
    qty: plainNumeric(fill.qty),
    price: plainNumeric(fill.price),
    fee: plainNumeric(fill.commission),
    filled_at: fill.filled_at.getTime(),
    strategy: order.strategy,
    portfolio_id: order.portfolio_id,
  };
}

/** Why a `fills.*` message is not a {@linkcode FillMessage}. */
export class MalformedFillError extends Error {
  /** Creates the error naming what is wrong. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "MalformedFillError";
  }
}

const ID = /^[1-9]\d{0,18}$/;

/**
 * Checks that `value` (decoded JSON) is a {@linkcode FillMessage}: ids are
 * positive integer text, side is buy or sell, qty and price decimals > 0, fee
 * a decimal, filled_at a finite integer, text fields non-empty strings.
 * Throws a {@linkcode MalformedFillError} naming every problem.
 */
export function parseFillMessage(value: unknown): FillMessage {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new MalformedFillError("A fill message must be a JSON object");
  }
  const v = value as Record<string, unknown>;
  const problems: string[] = [];
  for (const key of ["id", "order_id"] as const) {
    if (typeof v[key] !== "string" || !ID.test(v[key])) {
      problems.push(`${key} must be a positive integer as text`);
    }
  }
  for (const key of ["client_order_id", "broker_fill_id", "symbol", "strategy", "portfolio_id"]) {
    if (typeof v[key] !== "string" || v[key] === "") {
      problems.push(`${key} must be a non-empty string`);
    }
  }
  if (v.side !== "buy" && v.side !== "sell") problems.push("side must be buy or sell");
  for (const key of ["qty", "price"] as const) {
    const parsed = safeParseDecimal(v[key]);
    if (typeof v[key] !== "string" || !parsed.ok || !parsed.value.gt(0)) {
      problems.push(`${key} must be a decimal string > 0`);
    }
  }
  if (typeof v.fee !== "string" || !safeParseDecimal(v.fee).ok) {
    problems.push("fee must be a decimal string");
  }
  if (typeof v.filled_at !== "number" || !Number.isSafeInteger(v.filled_at)) {
    problems.push("filled_at must be an integer (ms since epoch)");
  }
  if (problems.length > 0) throw new MalformedFillError(problems.join("; "));
  return {
    id: v.id as string,
    order_id: v.order_id as string,
    client_order_id: v.client_order_id as string,
    broker_fill_id: v.broker_fill_id as string,
    symbol: v.symbol as string,
    side: v.side as Side,
    qty: v.qty as string,
    price: v.price as string,
    fee: v.fee as string,
    filled_at: v.filled_at as number,
    strategy: v.strategy as string,
    portfolio_id: v.portfolio_id as string,
  };
}

/**
 * Publishes `fill` on `fills.<symbol>` with `Nats-Msg-Id: fill-<id>` and
 * waits for JetStream's ack; a publish repeated within the duplicate window
 * is acknowledged as a duplicate and stored once.
 */
export function publishFill(
  js: JetStreamClient,
  fill: FillMessage,
  names: FillsStreamNames = {},
): Promise<PubAck> {
  return js.publish(fillSubject(fill.symbol, names), encodeJson(fill), {
    msgID: `fill-${fill.id}`,
  });
}
