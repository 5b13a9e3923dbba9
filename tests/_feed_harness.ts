/**
 * What the venue feed tests share: collecting a venue's published events and
 * dead letters from NATS, running a feed actor, and picking events by kind.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import { decodeJson } from "../adapters/codec.ts";
import { feedActor, type FeedDeps } from "../actors/feed.ts";
import type { Exchange, MarketEvent } from "../market/events.ts";
import { type FeedStatus, MarketStatus } from "../market/status.ts";
import type { Logger } from "../lib/log.ts";
import type { Clock } from "../lib/clock.ts";
import { type DeadLetter, dlqSubject } from "../market/subjects.ts";
import type { VenueSession } from "../venues/session.ts";
import { deadline } from "./_helpers.ts";

/** What a venue published, as a test sees it. */
export interface VenueWatch {
  /** Every event, in arrival order. */
  events: MarketEvent[];
  /** Every message: its subject and its events. */
  messages: Array<{ subject: string; events: MarketEvent[] }>;
  /** Dead letters whose frame contains one of the markers. */
  letters: DeadLetter[];
}

/**
 * Subscribes to `md.*.<exchange>.*` for the subject tokens `symbols` and to
 * `dlq.md.<exchange>` for dead letters whose frame contains one of `markers`
 * (so concurrent tests on the shared NATS do not see each other's).
 */
export async function watchVenue(
  nc: NatsConnection,
  exchange: Exchange,
  symbols: Iterable<string>,
  markers: readonly string[],
): Promise<VenueWatch> {
  const wanted = new Set(symbols);
  const watch: VenueWatch = { events: [], messages: [], letters: [] };
  nc.subscribe(`md.*.${exchange}.*`, {
    callback: (error, msg) => {
      if (error || !wanted.has(msg.subject.split(".")[3]!)) return;
      const batch = decodeJson<MarketEvent[]>(msg.data);
      watch.messages.push({ subject: msg.subject, events: batch });
      watch.events.push(...batch);
    },
  });
  nc.subscribe(dlqSubject(exchange), {
    callback: (error, msg) => {
      if (error) return;
      const letter = decodeJson<DeadLetter>(msg.data);
      const frame = letter.frame ?? "";
      if (markers.some((marker) => frame.includes(marker))) watch.letters.push(letter);
    },
  });
  await nc.flush();
  return watch;
}

/** Starts a feed for `session`; the returned function stops it (within 5 s) and waits for it. */
export function runFeed(session: VenueSession, deps: FeedDeps): () => Promise<void> {
  const controller = new AbortController();
  const running = feedActor(session, deps).start(controller.signal);
  return async () => {
    controller.abort();
    await deadline(running.done, 5_000, "feed stop");
  };
}

/** Options of {@linkcode startTestFeed}. */
export interface TestFeedOptions {
  /** @default {20_000} */
  staleAfterMs?: number | undefined;
  /** @default {20} */
  reconnectInitialMs?: number | undefined;
  /** @default {100} */
  reconnectMaxMs?: number | undefined;
  /** @default {50} */
  tickMs?: number;
  /** The feed's logger. */
  log?: Logger;
  /** The feed's clock. @default {systemClock} */
  clock?: Clock;
}

/** A feed started by {@linkcode startTestFeed}. */
export interface TestFeed {
  /** The figures the feed keeps. */
  marketStatus: MarketStatus;
  /** This venue's feed figures. */
  status: FeedStatus;
  /** Stops the feed, then the venue, then drains the connection. */
  close(): Promise<void>;
}

/**
 * Runs `session`'s feed on `nc` with the feed tests' fast timings (events
 * published as they come, quick reconnects) against the fake `venue`.
 */
export function startTestFeed(
  session: VenueSession,
  nc: NatsConnection,
  venue: { stop(): Promise<void> },
  options: TestFeedOptions = {},
): TestFeed {
  const marketStatus = new MarketStatus();
  const stopFeed = runFeed(session, {
    nats: nc,
    status: marketStatus,
    ...(options.log ? { log: options.log } : {}),
    ...(options.clock ? { clock: options.clock } : {}),
    options: {
      stale_after_ms: options.staleAfterMs ?? 20_000,
      reconnect_initial_ms: options.reconnectInitialMs ?? 20,
      reconnect_max_ms: options.reconnectMaxMs ?? 100,
      publish_batch_ms: 0,
      tick_ms: options.tickMs ?? 50,
    },
  });
  return {
    marketStatus,
    status: marketStatus.feed(session.exchange),
    close: async () => {
      await stopFeed();
      await venue.stop();
      await nc.drain();
    },
  };
}

/** The events of `kind` for `symbol`. */
export function ofKind<K extends MarketEvent["kind"]>(
  events: readonly MarketEvent[],
  kind: K,
  symbol: string,
): Extract<MarketEvent, { kind: K }>[] {
  return events.filter((event) => event.kind === kind && event.symbol === symbol) as Extract<
    MarketEvent,
    { kind: K }
  >[];
}
