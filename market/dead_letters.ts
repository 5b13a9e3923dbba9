/**
 * Dead letters that fit NATS. A {@linkcode DeadLetter} wraps the frame or the
 * event it refuses with more fields (exchange, stage, reason, detail, at_us),
 * and JSON escapes some characters of a frame, so a letter can exceed the
 * server's payload limit (`max_payload`) even when what it carries fitted a
 * message; publishing it would throw. {@linkcode fitLetter} encodes a letter
 * in at most that limit, cutting what does not fit and saying so in its
 * `detail`. The feeds and the validator both publish their letters through it.
 *
 * @example
 * ```ts
 * import { fitLetter } from "./dead_letters.ts";
 *
 * const payload = fitLetter({
 *   exchange: "binance",
 *   stage: "feed",
 *   reason: "malformed",
 *   detail: "Frame is not JSON",
 *   frame: "x".repeat(2_000),
 *   at_us: 1,
 * }, 1_000);
 * payload.length <= 1_000; // true; its detail ends "(frame cut to … of 2000 characters to fit NATS)"
 * ```
 *
 * @module
 */

import { encodeJson } from "../adapters/codec.ts";
import type { DeadLetter } from "./subjects.ts";

/** NATS payload limit assumed when the server has not said (bytes). */
export const DEFAULT_MAX_PAYLOAD = 1_048_576;

/**
 * `letter` encoded in at most `limit` bytes (the server's `max_payload`). A
 * letter that fits is encoded as it is. Otherwise:
 * - a letter with a `frame` has it cut, and its detail says
 *   `(frame cut to N of M characters to fit NATS)`;
 * - a letter with an `event` (the validator's) carries instead the event's
 *   JSON text in `frame`, cut, and its detail says
 *   `(event too large for NATS: its JSON text in frame, cut to N of M characters)`;
 * - when not even a few characters fit, the frame or event is left out and
 *   the detail (cut to 256 characters) says `(frame left out: too large for NATS)`
 *   or `(event left out: too large for NATS)`.
 */
export function fitLetter(letter: DeadLetter, limit: number): Uint8Array {
  let payload = encodeJson(letter);
  if (payload.length <= limit) return payload;
  const { event, ...rest } = letter;
  const isEvent = event !== undefined;
  const text = isEvent ? JSON.stringify(event) : letter.frame ?? "";
  // As text in a JSON string the event takes more room (its quotes are escaped): measure that.
  if (isEvent) payload = encodeJson({ ...rest, frame: text });
  let keep = text.length;
  for (let pass = 0; keep > 0; pass++) {
    // First in proportion to the excess, so that as much as fits is kept; then at least by
    // half a pass, for the part of the letter that is not cut: a few passes at most.
    const share = Math.floor(keep * (limit / payload.length) * (pass === 0 ? 0.95 : 0.9));
    keep = pass === 0 ? Math.min(keep - 1, share) : Math.min(keep >> 1, share);
    const cut = isEvent
      ? `event too large for NATS: its JSON text in frame, cut to ${keep} of ${text.length} characters`
      : `frame cut to ${keep} of ${text.length} characters to fit NATS`;
    payload = encodeJson({
      ...rest,
      detail: `${letter.detail} (${cut})`,
      frame: text.slice(0, keep),
    });
    if (payload.length <= limit) return payload;
  }
  const { exchange, stage, reason, at_us } = letter;
  return encodeJson({
    exchange,
    stage,
    reason,
    detail: `${letter.detail.slice(0, 256)} (${
      isEvent ? "event" : "frame"
    } left out: too large for NATS)`,
    at_us,
  });
}
