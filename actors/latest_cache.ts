/**
 * The actor that keeps a {@linkcode LatestCache} current from the validator's
 * accepted events (`clean.md.>`, JSON arrays).
 *
 * Only the newest values matter, so its mailbox conflates: per subject only
 * the newest message waits, and a burst of trades on one symbol costs one
 * decode, not one per message (the replaced messages show as
 * `mailbox.dropped` in the supervision tree). It follows only the kinds the
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

/**
 * Decodes only what the cache keeps of a message: its newest event, which is
 * its first or its last element — venues list a frame's trades oldest first
 * (Binance, Kraken, Alpaca) or newest first (Coinbase) — so both are
 * parsed and the one with the later exchange time (`ts_exchange`; the last on
 * a tie) is returned.
 * The last element starts after the array's last `},{` and the first ends at
 * its first `},{` (one element: the whole array); each is parsed alone
 * instead of the whole array. A `},{` inside a string or a nested object
 * gives a text that is not one complete object (a string's closing quote, or
 * a nested object's closing brackets, is left over), so such a cut fails to
 * parse and the whole message is decoded instead; so is anything that is not
 * an array of objects, which the cache then counts.
 *
 * @example
 * ```ts
 * newestEvents(new TextEncoder().encode('[{"kind":"trade","n":1},{"kind":"trade","n":2}]'));
 * // [{ kind: "trade", n: 2 }] (no ts_exchange either way: the last)
 * ```
 */
function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export function newestEvents(data: Uint8Array): unknown {
  const text = decoder.decode(data);
  const end = text.length - 1;
  if (text.charCodeAt(0) === 0x5b && text.charCodeAt(end) === 0x5d && end > 1) {
    const lastCut = text.lastIndexOf("},{");
    try {
      const last = JSON.parse(text.slice(lastCut < 0 ? 1 : lastCut + 2, end));
      if (isObject(last)) {
        if (lastCut < 0) return [last];
        const first = JSON.parse(text.slice(1, text.indexOf("},{") + 1));
        if (isObject(first)) {
          return [(first.ts_exchange as number) > (last.ts_exchange as number) ? first : last];
        }
      }
    } catch {
      // Not one complete object: decode the whole message below.
    }
  }
  return JSON.parse(text);
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
