/**
 * The durable intake of trade signals and the messages around the execution
 * engine:
 *
 * - the JetStream stream `SIGNALS` (subjects `signals.*`, file storage, a
 *   two-minute duplicate window for `Nats-Msg-Id`), which keeps signals
 *   published while the engine is down, and the engine's durable pull
 *   consumer `execution` (explicit acks: a message is acknowledged only after
 *   the transaction recording its signal committed);
 * - `signals.rejected`, reserved for {@linkcode SignalRejectEvent}s (a
 *   strategy cannot be named `rejected`; the consumer acknowledges and skips
 *   that subject);
 * - `orders.<status>.<symbol>`, where every order transition is published;
 * - `control.kill_switch`, request/reply with a {@linkcode KillSwitchRequest}
 *   and a {@linkcode KillSwitchReply}.
 *
 * Names and a subject prefix are options so tests run their own stream next
 * to a running engine.
 *
 * @example
 * ```ts
 * import { ensureStreams } from "../adapters/nats.ts";
 * import { signalsStream } from "./signals_stream.ts";
 *
 * await ensureStreams(nc, [signalsStream({ max_age_s: 604_800 })], log);
 * nc.publish("signals.momentum", encodeJson({ id: "s-1", symbol: "BTC-USDT", side: "buy", qty: "0.5" }));
 * ```
 *
 * @module
 */

import type { ConsumerConfig } from "@nats-io/jetstream";
import { limitsStream, type StreamSpec, workConsumer } from "../adapters/nats.ts";
import { symbolToken } from "../market/subjects.ts";
import type { NotCancelledOrder } from "./execution.ts";
import type { OrderStatus } from "./order_state.ts";
import { assertPositiveInteger } from "../lib/assert.ts";
import { JsonDuplicateKeyError, JsonNumber, parseJsonNumbers } from "../lib/json_numbers.ts";
import { storableText } from "./signal.ts";

/** Name of the stream of signals. */
export const DEFAULT_SIGNALS_STREAM = "SIGNALS";
/** Name of the execution engine's durable consumer. */
export const DEFAULT_EXECUTION_CONSUMER = "execution";
/** How long the stream keeps a signal, in seconds (the config's `execution.signals_max_age_s`). */
export const DEFAULT_SIGNALS_MAX_AGE_S = 7 * 24 * 3600;
/** Duplicate window of `Nats-Msg-Id` on the stream, in ms: 2 minutes. */
export const DEFAULT_SIGNALS_DUPLICATE_WINDOW_MS = 120_000;
/** Most bytes the stream keeps: 1 GiB. */
export const DEFAULT_SIGNALS_MAX_BYTES = 1024 * 1024 * 1024;
/**
 * Redelivery delay of an unacknowledged signal, in ms. A batch commits in
 * milliseconds; this only decides how soon signals delivered to an engine
 * that died are delivered again.
 */
export const DEFAULT_SIGNALS_ACK_WAIT_MS = 10_000;
/** Most delivered, unacknowledged signals of the consumer. */
export const DEFAULT_SIGNALS_MAX_ACK_PENDING = 4_000;
/** The token after `signals.` that carries reject events, never signals. */
export const REJECTED_TOKEN = "rejected";
/** Request/reply subject of the kill switch. */
export const KILL_SWITCH_SUBJECT = "control.kill_switch";

/** Names shared by the stream, consumer and subject helpers; injectable for tests. */
export interface SignalsStreamNames {
  /** Stream name. @default {DEFAULT_SIGNALS_STREAM} */
  stream?: string | undefined;
  /**
   * Prepended to every subject of this module (`<prefix>signals.*`,
   * `<prefix>orders.…`, `<prefix>control.kill_switch`), e.g. `"t1a2b."` in
   * tests. @default {""}
   */
  subject_prefix?: string | undefined;
}

/** Options of {@linkcode signalsStream}. */
export interface SignalsStreamOptions extends SignalsStreamNames {
  /** Longest a signal is kept, in seconds. @default {DEFAULT_SIGNALS_MAX_AGE_S} */
  max_age_s?: number | undefined;
  /** Most bytes kept; beyond that the oldest signals are dropped. @default {DEFAULT_SIGNALS_MAX_BYTES} */
  max_bytes?: number | undefined;
  /** Duplicate window of `Nats-Msg-Id`, in ms. @default {DEFAULT_SIGNALS_DUPLICATE_WINDOW_MS} */
  duplicate_window_ms?: number | undefined;
}

/** The stream's subject filter: `<prefix>signals.*`. */
export function signalsSubjectFilter(names: SignalsStreamNames = {}): string {
  return `${names.subject_prefix ?? ""}signals.*`;
}

/**
 * `<prefix>signals.<strategy>`: where a strategy publishes. Throws a
 * `TypeError` for a strategy that is not a single subject token, or is the
 * reserved `rejected`.
 */
export function signalSubject(strategy: string, names: SignalsStreamNames = {}): string {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(strategy) || strategy === REJECTED_TOKEN) {
    throw new TypeError(`Invalid strategy for a signal subject: ${JSON.stringify(strategy)}`);
  }
  return `${names.subject_prefix ?? ""}signals.${strategy}`;
}

/** `<prefix>signals.rejected`: where reject events go. */
export function signalsRejectedSubject(names: SignalsStreamNames = {}): string {
  return `${names.subject_prefix ?? ""}signals.${REJECTED_TOKEN}`;
}

/** `<prefix>control.kill_switch`: the kill switch's request subject. */
export function killSwitchSubject(names: SignalsStreamNames = {}): string {
  return `${names.subject_prefix ?? ""}${KILL_SWITCH_SUBJECT}`;
}

/**
 * `<prefix>orders.<status>.<symbol token>`: where an order's transition to
 * `status` is published (dots in the symbol become underscores).
 *
 * @example
 * ```ts
 * orderSubject("filled", "BRK.B"); // "orders.filled.BRK_B"
 * ```
 */
export function orderSubject(
  status: OrderStatus,
  symbol: string,
  names: SignalsStreamNames = {},
): string {
  return `${names.subject_prefix ?? ""}orders.${status}.${symbolToken(symbol)}`;
}

/**
 * The strategy token of a signal subject (`signals.momentum` → `momentum`),
 * or null for a subject outside `<prefix>signals.*` and for the reserved
 * `signals.rejected`.
 */
export function strategyOfSubject(subject: string, names: SignalsStreamNames = {}): string | null {
  const head = `${names.subject_prefix ?? ""}signals.`;
  if (!subject.startsWith(head)) return null;
  const token = subject.slice(head.length);
  if (token === "" || token === REJECTED_TOKEN || token.includes(".")) return null;
  return token;
}

/**
 * The spec of `SIGNALS`: file storage, limits retention, discard old, the age,
 * byte and duplicate-window limits of `options`. Pass it to `ensureStreams`.
 *
 * @example
 * ```ts
 * signalsStream({ max_age_s: 3600 });
 * // { name: "SIGNALS", subjects: ["signals.*"], storage: "file", duplicate_window: 120000000000, … }
 * ```
 */
export function signalsStream(options: SignalsStreamOptions = {}): StreamSpec {
  const maxAgeS = options.max_age_s ?? DEFAULT_SIGNALS_MAX_AGE_S;
  const maxBytes = options.max_bytes ?? DEFAULT_SIGNALS_MAX_BYTES;
  const windowMs = options.duplicate_window_ms ?? DEFAULT_SIGNALS_DUPLICATE_WINDOW_MS;
  assertPositiveInteger(maxAgeS, "max_age_s");
  assertPositiveInteger(maxBytes, "max_bytes");
  assertPositiveInteger(windowMs, "duplicate_window_ms");
  return limitsStream({
    name: options.stream ?? DEFAULT_SIGNALS_STREAM,
    subject: signalsSubjectFilter(options),
    max_age_s: maxAgeS,
    max_bytes: maxBytes,
    duplicate_window_ms: windowMs,
  });
}

/** Options of {@linkcode executionConsumer}. */
export interface ExecutionConsumerOptions extends SignalsStreamNames {
  /** Durable consumer name. @default {DEFAULT_EXECUTION_CONSUMER} */
  consumer?: string | undefined;
  /** Redelivery delay of an unacknowledged signal, in ms. @default {DEFAULT_SIGNALS_ACK_WAIT_MS} */
  ack_wait_ms?: number | undefined;
  /** Most delivered, unacknowledged signals. @default {DEFAULT_SIGNALS_MAX_ACK_PENDING} */
  max_ack_pending?: number | undefined;
}

/**
 * The durable pull consumer of the execution engine: explicit acks, every
 * signal from the start of the stream, redelivered until acknowledged.
 */
export function executionConsumer(options: ExecutionConsumerOptions = {}): ConsumerConfig {
  return workConsumer({
    durable_name: options.consumer ?? DEFAULT_EXECUTION_CONSUMER,
    description: "Tradewire execution engine: signals into risk-checked orders",
    filter_subject: signalsSubjectFilter(options),
    ack_wait_ms: options.ack_wait_ms ?? DEFAULT_SIGNALS_ACK_WAIT_MS,
    max_ack_pending: options.max_ack_pending ?? DEFAULT_SIGNALS_MAX_ACK_PENDING,
  });
}

/** One reason a signal was refused: a field (`path`) or a risk rule (`rule`), and what is wrong. */
export type RejectReason =
  | { path: string; message: string }
  | { rule: string; message: string };

/** The JSON published on `signals.rejected` for every refused signal. */
export interface SignalRejectEvent {
  /** The signal's row id (decimal text). */
  signal_id: string;
  /** Its strategy. */
  strategy: string;
  /** Its idempotency key within the strategy (the body's `id`, or one derived from the delivery). */
  client_signal_id: string;
  /** Every reason, each naming its field or rule. */
  reasons: RejectReason[];
  /** When it arrived (ISO 8601). */
  received_at: string;
}

/** A kill-switch request, on `control.kill_switch` or from the API. */
export interface KillSwitchRequest {
  /** Switch on (new orders refused) or off. */
  active: boolean;
  /** With `active`, also cancel every open order at its broker. @default {false} */
  cancel_open?: boolean | undefined;
  /** Why, for the record. */
  reason?: string | undefined;
}

/** The answer to a kill-switch request: the state now, or why the request was refused. */
export type KillSwitchReply =
  | {
    ok: true;
    /** Whether new orders are refused. */
    active: boolean;
    /** Why it was switched, when said. */
    reason: string | null;
    /** When it last changed (ISO 8601), null when never set. */
    changed_at: string | null;
    /** Who last changed it. */
    changed_by: string | null;
    /** Open orders whose cancellation was asked for by this request. */
    cancel_requested: number;
    /** The open orders whose cancel could not be sent (yet), as REST reports them. */
    not_cancelled: NotCancelledOrder[];
  }
  | { ok: false; error: string };

/** Longest kill-switch `reason`, in characters (Unicode code points, {@linkcode characterCount}). */
export const MAX_KILL_SWITCH_REASON = 1_000;

/** The problem of a kill-switch request that is not a JSON object (REST answers it with a 400). */
export const KILL_SWITCH_NOT_AN_OBJECT = "a kill-switch request must be a JSON object";

/**
 * The characters of `text`: its Unicode code points, as a signal's `reason`
 * is counted — a surrogate pair (an emoji, CJK extension B) is one, a lone
 * surrogate one — not its UTF-16 code units (`text.length`).
 *
 * @example
 * ```ts
 * characterCount("desk halt \u{1f6d1}"); // 11 ("desk halt 🛑".length is 12)
 * ```
 */
export function characterCount(text: string): number {
  let count = text.length;
  for (let i = 0; i < text.length - 1; i++) {
    if (
      (text.charCodeAt(i) & 0xfc00) === 0xd800 && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00
    ) {
      count--;
      i++;
    }
  }
  return count;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Reads the bytes of a `control.kill_switch` request as REST reads its body,
 * then checks it ({@linkcode parseKillSwitchRequest}): UTF-8 (never decoded
 * with U+FFFD in place of the bytes that are not), JSON with each key given
 * once — `{"active":true,"active":false}` is refused as `active: given more
 * than once`, not read as its last value. Returns the request or every
 * problem: a request refused here changes nothing.
 *
 * @example
 * ```ts
 * decodeKillSwitchRequest(new TextEncoder().encode('{"active":true,"active":false}'));
 * // { ok: false, problems: ["active: given more than once"] }
 * ```
 */
export function decodeKillSwitchRequest(
  data: Uint8Array,
): { ok: true; request: KillSwitchRequest } | { ok: false; problems: string[] } {
  let text: string;
  try {
    text = utf8.decode(data);
  } catch {
    return { ok: false, problems: ["a kill-switch request must be UTF-8"] };
  }
  let value: unknown;
  try {
    value = parseJsonNumbers(text, { duplicateKeys: "reject" });
  } catch (error) {
    if (error instanceof JsonDuplicateKeyError) {
      return { ok: false, problems: [`${error.key}: given more than once`] };
    }
    value = undefined;
  }
  return parseKillSwitchRequest(value);
}

/**
 * Checks a decoded kill-switch request (hand-written, no schema library) —
 * the one check of REST's `POST /kill-switch` body and of a
 * `control.kill_switch` request: `active` a boolean, `cancel_open` a boolean
 * when given, `reason` a string of at most {@linkcode MAX_KILL_SWITCH_REASON}
 * characters that PostgreSQL can store ({@linkcode storableText}: no U+0000,
 * no unpaired surrogate) when given, no other keys. `null` counts as not
 * given. Returns the request or every problem, each naming its field: a
 * request refused here changes nothing.
 *
 * @example
 * ```ts
 * parseKillSwitchRequest({ active: "yes", junk: 1 });
 * // { ok: false, problems: ["active: expected true or false", "junk: unknown field"] }
 * ```
 */
export function parseKillSwitchRequest(
  value: unknown,
): { ok: true; request: KillSwitchRequest } | { ok: false; problems: string[] } {
  if (
    typeof value !== "object" || value === null || Array.isArray(value) ||
    value instanceof JsonNumber
  ) {
    return { ok: false, problems: [KILL_SWITCH_NOT_AN_OBJECT] };
  }
  const { active, cancel_open, reason, ...rest } = value as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof active !== "boolean") problems.push("active: expected true or false");
  if (cancel_open !== undefined && cancel_open !== null && typeof cancel_open !== "boolean") {
    problems.push("cancel_open: expected true or false");
  }
  if (reason !== undefined && reason !== null) {
    if (typeof reason !== "string" || characterCount(reason) > MAX_KILL_SWITCH_REASON) {
      problems.push(`reason: expected a string of at most ${MAX_KILL_SWITCH_REASON} characters`);
    } else if (!storableText(reason)) {
      problems.push("reason: must not hold U+0000 or an unpaired surrogate");
    }
  }
  for (const key of Object.keys(rest)) problems.push(`${key}: unknown field`);
  if (problems.length > 0) return { ok: false, problems };
  const request: KillSwitchRequest = { active: active as boolean };
  if (typeof cancel_open === "boolean") request.cancel_open = cancel_open;
  if (typeof reason === "string") request.reason = reason;
  return { ok: true, request };
}
