/**
 * The actor that keeps a {@linkcode LatestCache} current from the validator's
 * accepted events (`clean.md.>`, JSON arrays).
 *
 * Only the newest values matter, so its mailbox conflates: per subject only
 * the message with the newest exchange time waits (a message arriving late,
 * with older events, does not replace a newer one), and a burst of trades on
 * one symbol costs one decode, not one per message (the replaced messages
 * show as `mailbox.dropped` in the supervision tree). It follows only the kinds the
 * cache holds (trades, tops, quotes, bars): book messages, the largest, are
 * never delivered to it. A message that is not an array is counted in the
 * cache's `malformed` and skipped, never thrown.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import { actor } from "./actor.ts";
import type { ChildSpec } from "./types.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import type { MarketEvent } from "../market/events.ts";
import { cleanKindAll } from "../market/subjects.ts";
import type { Logger } from "../lib/log.ts";

/** Default name of the actor in the supervision tree. */
export const DEFAULT_LATEST_CACHE_ACTOR_NAME = "latest_cache";
/** Default mailbox capacity, in subjects waiting (each with its newest message). */
export const DEFAULT_LATEST_CACHE_MAILBOX = 4096;
/** The subjects the cache follows: every clean kind it holds, on every venue and symbol. */
export const LATEST_CACHE_SUBJECTS: readonly string[] = (["trade", "top", "quote", "bar"] as const)
  .map(cleanKindAll);

/** What {@linkcode latestCacheActor} needs. */
export interface LatestCacheActorDeps {
  /** The NATS connection carrying `clean.md.>`. */
  nats: NatsConnection;
  /** The cache to update; shared with the API and the paper broker. */
  cache: LatestCache;
  /** Parent logger. @default {nullLogger} */
  log?: Logger;
}

/** Options of {@linkcode latestCacheActor}. */
export interface LatestCacheActorOptions {
  /** Name in the supervision tree. @default {DEFAULT_LATEST_CACHE_ACTOR_NAME} */
  name?: string;
  /** Subjects to follow. @default {LATEST_CACHE_SUBJECTS} */
  subjects?: readonly string[];
  /** Most subjects waiting in the mailbox; the oldest is dropped beyond it. @default {DEFAULT_LATEST_CACHE_MAILBOX} */
  capacity?: number;
}

const decoder = new TextDecoder();

const TS_KEY = '"ts_exchange":';

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * Where the newest event of a JSON array of events is: the position of its
 * `"ts_exchange":` key and its time (the last one on a tie), or `at` -1 when
 * no event has one. A scan of the text, without decoding it.
 */
function newestTs(text: string): { at: number; ts: number } {
  let best = { at: -1, ts: Number.NEGATIVE_INFINITY };
  for (let at = text.indexOf(TS_KEY); at >= 0; at = text.indexOf(TS_KEY, at + TS_KEY.length)) {
    let i = at + TS_KEY.length;
    let ts = 0;
    for (let c = text.charCodeAt(i); c >= 48 && c <= 57; c = text.charCodeAt(++i)) {
      ts = ts * 10 + (c - 48);
    }
    if (i > at + TS_KEY.length && ts >= best.ts) best = { at, ts };
  }
  return best;
}

/**
 * Decodes only what the cache keeps of a message: its newest event by
 * exchange time (`ts_exchange`; the last on a tie, the last element when
 * none has one) — wherever it is: the feeds publish a frame's trades oldest
 * first (Coinbase's parser reverses its venue's newest-first lists, so the
 * last of trades sharing a microsecond is the newest), but one message may
 * carry several frames, or a replay or a test an array in any order. The times are found by scanning the text; the
 * newest element is cut out at the `},{` around it and parsed alone. A `},{`
 * inside a string or a nested object gives a text that is not one complete
 * object, so such a cut fails to parse and the whole message is decoded
 * instead (the cache then keeps the newest itself); so is anything that is
 * not an array of objects, which the cache then counts.
 *
 * @example
 * ```ts
 * newestEvents(new TextEncoder().encode(
 *   '[{"kind":"trade","ts_exchange":3},{"kind":"trade","ts_exchange":9},{"kind":"trade","ts_exchange":5}]',
 * ));
 * // [{ kind: "trade", ts_exchange: 9 }]
 * ```
 */
export function newestEvents(data: Uint8Array): unknown {
  const text = decoder.decode(data);
  const end = text.length - 1;
  if (text.charCodeAt(0) === 0x5b && text.charCodeAt(end) === 0x5d && end > 1) {
    const { at } = newestTs(text);
    const from = at < 0 ? text.lastIndexOf("},{") : text.lastIndexOf("},{", at);
    const to = at < 0 ? -1 : text.indexOf("},{", at);
    try {
      const newest = JSON.parse(text.slice(from < 0 ? 1 : from + 2, to < 0 ? end : to + 1));
      if (isObject(newest)) return [newest];
    } catch {
      // Not one complete object: decode the whole message below.
    }
  }
  return JSON.parse(text);
}

/** The newest exchange time in each message seen, so each is scanned once. */
const newestTsOf = new WeakMap<Uint8Array, number>();

/**
 * Whether the waiting message stays in the conflating mailbox instead of the
 * incoming one of its subject: it holds a later exchange time (the incoming
 * one arrived late). Replaced otherwise, also on a tie.
 */
export function keepNewer(waiting: { data: Uint8Array }, incoming: { data: Uint8Array }): boolean {
  const ts = (data: Uint8Array) => {
    let value = newestTsOf.get(data);
    if (value === undefined) newestTsOf.set(data, value = newestTs(decoder.decode(data)).ts);
    return value;
  };
  return ts(waiting.data) > ts(incoming.data);
}

/**
 * The child spec of the latest-cache actor: subscribes `clean.md.>` and
 * applies every array of events to `deps.cache`. Permanent; the lead places
 * it after the validator in the market supervisor.
 *
 * @example
 * ```ts
 * const cache = new LatestCache();
 * const root = await startRoot({ name: "root" }, [latestCacheActor({ nats, cache })]);
 * ```
 */
export function latestCacheActor(
  deps: LatestCacheActorDeps,
  options: LatestCacheActorOptions = {},
): ChildSpec {
  const { cache } = deps;
  let warned = false;
  return actor<unknown>({
    name: options.name ?? DEFAULT_LATEST_CACHE_ACTOR_NAME,
    subjects: options.subjects ?? LATEST_CACHE_SUBJECTS,
    mailbox: {
      capacity: options.capacity ?? DEFAULT_LATEST_CACHE_MAILBOX,
      overflow: "conflate",
      keep: keepNewer,
    },
    decode: newestEvents,
    handle(message, ctx) {
      const data = message.data;
      if (Array.isArray(data)) {
        cache.update(data as MarketEvent[]);
        return;
      }
      // Counted in the cache's `malformed`; logged the first time only.
      cache.noteMalformed();
      if (!warned) {
        warned = true;
        ctx.log.warn("message is not an array of events; skipped (further ones only counted)", {
          subject: message.subject,
        });
      }
    },
  }, { nats: deps.nats, ...(deps.log ? { log: deps.log } : {}) });
}
