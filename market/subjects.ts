/**
 * The market-data subject map. Every message on these subjects is a JSON array
 * of one or more {@linkcode MarketEvent}s of the same kind, exchange and symbol.
 *
 * | subject | who publishes |
 * | --- | --- |
 * | `md.<kind>.<exchange>.<symbol>` | feed actors (raw, normalized) |
 * | `clean.md.<kind>.<exchange>.<symbol>` | the validator (accepted events) |
 * | `dlq.md.<exchange>` | feeds (malformed frames) and the validator (rejected events) |
 *
 * @module
 */

import type { EventKind, Exchange, MarketEvent } from "./events.ts";

/**
 * A symbol as a subject token: dots (as in `BRK.B`) become underscores, since
 * a dot separates tokens.
 */
export function symbolToken(symbol: string): string {
  return symbol.replaceAll(".", "_");
}

/** `md.<kind>.<exchange>.<symbol>`: where a feed publishes. */
export function mdSubject(kind: EventKind, exchange: Exchange, symbol: string): string {
  return `md.${kind}.${exchange}.${symbolToken(symbol)}`;
}

/** `clean.md.<kind>.<exchange>.<symbol>`: where the validator republishes accepted events. */
export function cleanSubject(kind: EventKind, exchange: Exchange, symbol: string): string {
  return `clean.${mdSubject(kind, exchange, symbol)}`;
}

/** `clean.md.<kind>.>`: every accepted event of one kind, on every venue and symbol. */
export function cleanKindAll(kind: EventKind): string {
  return `clean.md.${kind}.>`;
}

/** `dlq.md.<exchange>`: malformed frames and rejected events of one venue. */
export function dlqSubject(exchange: Exchange): string {
  return `dlq.md.${exchange}`;
}

/** The subject of an event: `md.<kind>.<exchange>.<symbol>`. */
export function subjectOf(event: MarketEvent): string {
  return mdSubject(event.kind, event.exchange, event.symbol);
}

/** Wildcard for every raw feed subject. */
export const MD_ALL = "md.>";
/** Wildcard for every validated subject. */
export const CLEAN_ALL = "clean.md.>";
/** Wildcard for every dead-letter subject. */
export const DLQ_ALL = "dlq.md.>";

/** A dead-letter message: what was refused, why, and the original frame or event. */
export interface DeadLetter {
  /** The venue. */
  exchange: Exchange;
  /** Who refused it. */
  stage: "feed" | "validator" | "writer";
  /** Machine-readable reason, e.g. `malformed`, `spike`, `duplicate`, `crossed_book`. */
  reason: string;
  /** Human-readable detail. */
  detail: string;
  /** The raw frame (feed stage). */
  frame?: string;
  /** The refused event (validator stage). */
  event?: MarketEvent;
  /** When it was refused, microseconds since the epoch. */
  at_us: number;
}
