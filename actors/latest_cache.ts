/**
 * The actor that keeps a {@linkcode LatestCache} current from the validator's
 * accepted events (`clean.md.>`, JSON arrays).
 *
 * Only the newest values matter, so its mailbox drops the oldest messages
 * when it falls behind (`drop_oldest`); the drops show as `mailbox.dropped` in
 * the supervision tree (health). A message that is not an array is counted in
 * the cache's `malformed` and skipped, never thrown.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import { actor } from "./actor.ts";
import type { ChildSpec } from "./types.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import type { MarketEvent } from "../market/events.ts";
import { CLEAN_ALL } from "../market/subjects.ts";
import type { Logger } from "../lib/log.ts";

/** Default name of the actor in the supervision tree. */
export const DEFAULT_LATEST_CACHE_ACTOR_NAME = "latest_cache";
/** Default mailbox capacity, in messages (each an array of events). */
export const DEFAULT_LATEST_CACHE_MAILBOX = 4096;

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
  /** Subject to follow. @default {CLEAN_ALL} */
  subject?: string;
  /** Mailbox capacity in messages; older ones are dropped beyond it. @default {DEFAULT_LATEST_CACHE_MAILBOX} */
  capacity?: number;
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
    subjects: [options.subject ?? CLEAN_ALL],
    mailbox: {
      capacity: options.capacity ?? DEFAULT_LATEST_CACHE_MAILBOX,
      overflow: "drop_oldest",
    },
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
