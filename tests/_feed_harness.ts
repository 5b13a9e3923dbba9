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
