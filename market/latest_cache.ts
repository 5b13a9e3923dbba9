/**
 * The latest market state per (exchange, symbol), in memory: the last trade,
 * the last best bid/ask (from `top` or `quote` events) and the last bar, fed
 * by {@linkcode LatestCache.update} with validated events and read by the
 * HTTP API and the paper broker.
 *
 * Updating is O(1) per event and allocates nothing: the cache keeps a
 * reference to the newest event of each kind (events are never mutated after
 * decoding). Reads build plain JSON-ready copies. Freshness is measured on
 * `ts_local`, the local receive time, so it does not depend on a venue's
 * clock.
 *
 * @example
 * ```ts
 * const cache = new LatestCache();
 * cache.update([{
 *   kind: "top", exchange: "binance", symbol: "BTC-USDT", venue_symbol: "BTCUSDT",
 *   ts_exchange: 1_700_000_000_000_000, ts_local: 1_700_000_000_001_000,
 *   bid_price: "42000.10", bid_qty: "1.5", ask_price: "42000.20", ask_qty: "0.3",
 * }]);
 * cache.bestBidAsk("binance", "BTC-USDT", 2_000, 1_700_000_000_500); // { bid_price: "42000.10", … }
 * cache.bestBidAsk("binance", "BTC-USDT", 2_000, 1_700_000_009_000); // null: stale
 * ```
 *
 * @module
 */

import { type Clock, systemClock } from "../lib/clock.ts";
import {
  type BarEvent,
  type Exchange,
  EXCHANGES,
  type MarketEvent,
  type QuoteEvent,
  type TopEvent,
  type TradeEvent,
} from "./events.ts";
import { assertPositiveInteger } from "../lib/assert.ts";

/** Default bound on the (exchange, symbol) pairs a cache holds. */
export const DEFAULT_MAX_ENTRIES = 10_000;
/** Longest symbol the cache accepts, in UTF-16 code units. */
export const MAX_SYMBOL_LENGTH = 64;

/** Options for {@linkcode LatestCache}. */
export interface LatestCacheOptions {
  /** Clock used by {@linkcode LatestCache.latest} to compute ages. @default {systemClock} */
  clock?: Clock;
  /**
   * Most (exchange, symbol) pairs held; events of further pairs are ignored
   * and counted in `rejected_new_keys`.
   * @default {DEFAULT_MAX_ENTRIES}
   */
  maxEntries?: number;
}

/** The last trade of a pair, as read from the cache. */
export interface TradeView {
  /** The venue's trade id. */
  trade_id: string;
  /** Trade price, exact decimal text. */
  price: string;
  /** Trade size, exact decimal text. */
  qty: string;
  /** Aggressor side. */
  side: TradeEvent["side"];
  /** Venue time, µs since the epoch. */
  ts_exchange: number;
  /** Local receive time, µs since the epoch. */
  ts_local: number;
  /** Milliseconds since it was received (from `ts_local`). */
  age_ms: number;
}

/** The last best bid and ask of a pair, as read from the cache. */
export interface QuoteView {
  /** Which event kind it came from. */
  source: "top" | "quote";
  /** Best bid price. */
  bid_price: string;
  /** Size at the best bid. */
  bid_qty: string;
  /** Best ask price. */
  ask_price: string;
  /** Size at the best ask. */
  ask_qty: string;
  /** Venue time, µs since the epoch. */
  ts_exchange: number;
  /** Local receive time, µs since the epoch. */
  ts_local: number;
  /** Milliseconds since it was received (from `ts_local`). */
  age_ms: number;
}

/** The last bar of a pair, as read from the cache. */
export interface BarView {
  /** Bar length, e.g. `"1m"`. */
  interval: string;
  /** Bar start, µs since the epoch. */
  start: number;
  /** Open price. */
  open: string;
  /** High price. */
  high: string;
  /** Low price. */
  low: string;
  /** Close price. */
  close: string;
  /** Volume. */
  volume: string;
  /** Trades in the bar, where given. */
  trades: number | null;
  /** Volume-weighted average price, where given. */
  vwap: string | null;
  /** Venue time, µs since the epoch. */
  ts_exchange: number;
  /** Local receive time, µs since the epoch. */
  ts_local: number;
  /** Milliseconds since it was received (from `ts_local`). */
  age_ms: number;
}

/** Everything known about one (exchange, symbol) pair. */
export interface LatestEntry {
  /** The venue. */
  exchange: Exchange;
  /** Canonical symbol. */
  symbol: string;
  /** Last trade, or null. */
  trade: TradeView | null;
  /** Last best bid/ask, or null. */
  quote: QuoteView | null;
  /** Last bar, or null. */
  bar: BarView | null;
  /** Local receive time of its newest event, µs since the epoch. */
  updated_us: number;
  /** Milliseconds since its newest event was received. */
  age_ms: number;
}

/** The answer of {@linkcode LatestCache.latest}. */
export interface LatestSnapshot {
  /** Canonical symbol. */
  symbol: string;
  /** The most recently updated of `exchanges`. */
  freshest: LatestEntry;
  /** One entry per venue that has data for the symbol, in {@linkcode EXCHANGES} order. */
  exchanges: LatestEntry[];
}

/** A best bid and ask fresh enough to act on; see {@linkcode LatestCache.bestBidAsk}. */
export interface BestBidAsk {
  /** The venue. */
  exchange: Exchange;
  /** Canonical symbol. */
  symbol: string;
  /** Best bid price (may be `"0"` where a venue has no bid). */
  bid_price: string;
  /** Size at the best bid. */
  bid_qty: string;
  /** Best ask price (may be `"0"` where a venue has no ask). */
  ask_price: string;
  /** Size at the best ask. */
  ask_qty: string;
  /** Venue time, µs since the epoch. */
  ts_exchange: number;
  /** Local receive time, µs since the epoch. */
  ts_local: number;
  /** Milliseconds between `ts_local` and the `nowMs` asked about. */
  age_ms: number;
}

/** Counters of {@linkcode LatestCache}. */
export interface LatestCacheStats {
  /** (exchange, symbol) pairs held. */
  entries: number;
  /** Events that updated an entry. */
  applied: number;
  /** Events older than what the entry already holds (kept the newer one). */
  out_of_order: number;
  /** Events of kinds the cache does not keep (`book`). */
  skipped: number;
  /** Events without the fields the cache needs (not an object, unknown exchange, bad types). */
  malformed: number;
  /** Events of new pairs refused because the cache was full. */
  rejected_new_keys: number;
}

/** One pair's newest events. */
interface Slot {
  readonly exchange: Exchange;
  readonly symbol: string;
  trade: TradeEvent | null;
  quote: TopEvent | QuoteEvent | null;
  bar: BarEvent | null;
  updatedUs: number;
}

const EXCHANGE_SET: ReadonlySet<string> = new Set(EXCHANGES);

const USABLE = 0;
const SKIPPED = 1;
const MALFORMED = 2;

/**
 * Whether the cache can keep `event`: hand-written checks of the fields it
 * reads (no schema library on the hot path). Exchange and symbol are checked
 * by the slot lookup.
 */
function usableKind(event: unknown): typeof USABLE | typeof SKIPPED | typeof MALFORMED {
  if (event === null || typeof event !== "object") return MALFORMED;
  const e = event as Record<string, unknown>;
  if (typeof e.ts_exchange !== "number" || typeof e.ts_local !== "number") return MALFORMED;
  switch (e.kind) {
    case "trade":
      return typeof e.price === "string" && typeof e.qty === "string" ? USABLE : MALFORMED;
    case "top":
    case "quote":
      return typeof e.bid_price === "string" && typeof e.ask_price === "string" &&
          typeof e.bid_qty === "string" && typeof e.ask_qty === "string"
        ? USABLE
        : MALFORMED;
    case "bar":
      return typeof e.close === "string" && typeof e.start === "number" ? USABLE : MALFORMED;
    case "book":
      return SKIPPED;
    default:
      return MALFORMED;
  }
}

/**
 * The latest trade, best bid/ask and bar per (exchange, symbol). See the
 * module documentation.
 */
export class LatestCache {
  /** symbol → exchange → slot: `latest(symbol)` reads one inner map. */
  readonly #bySymbol = new Map<string, Map<Exchange, Slot>>();
  readonly #clock: Clock;
  readonly #maxEntries: number;
  #entries = 0;
  #applied = 0;
  #outOfOrder = 0;
  #skipped = 0;
  #malformed = 0;
  #rejectedNewKeys = 0;

  /** Creates an empty cache. */
  constructor(options: LatestCacheOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    this.#maxEntries = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    assertPositiveInteger(this.#maxEntries, "maxEntries");
  }

  /**
   * Applies a batch of validated events, O(1) each. An event replaces the
   * held one of its kind unless it is older (`ts_exchange`, or `start` for
   * bars); `book` events are skipped (the best bid/ask comes from `top` and
   * `quote`); events without the needed fields are counted as malformed,
   * never thrown. Returns how many events were applied.
   */
  update(events: readonly MarketEvent[]): number {
    let slot: Slot | undefined;
    let lastExchange: unknown;
    let lastSymbol: unknown;
    let applied = 0;
    for (let i = 0; i < events.length; i++) {
      const event = events[i] as MarketEvent | null | undefined;
      const usable = usableKind(event);
      if (usable !== USABLE) {
        if (usable === SKIPPED) this.#skipped++;
        else this.#malformed++;
        continue;
      }
      const ev = event as MarketEvent;
      // A message carries one exchange and symbol: look the slot up once.
      if (slot === undefined || ev.exchange !== lastExchange || ev.symbol !== lastSymbol) {
        slot = this.#slot(ev.exchange, ev.symbol);
        lastExchange = ev.exchange;
        lastSymbol = ev.symbol;
        if (slot === undefined) continue;
      }
      const tsExchange = ev.ts_exchange;
      if (ev.kind === "trade") {
        const held = slot.trade;
        if (held !== null && tsExchange < held.ts_exchange) {
          this.#outOfOrder++;
          continue;
        }
        slot.trade = ev;
      } else if (ev.kind === "bar") {
        const held = slot.bar;
        if (
          held !== null &&
          (ev.start < held.start || (ev.start === held.start && tsExchange < held.ts_exchange))
        ) {
          this.#outOfOrder++;
          continue;
        }
        slot.bar = ev;
      } else {
        const held = slot.quote;
        if (held !== null && tsExchange < held.ts_exchange) {
          this.#outOfOrder++;
          continue;
        }
        slot.quote = ev as TopEvent | QuoteEvent;
      }
      if (ev.ts_local > slot.updatedUs) slot.updatedUs = ev.ts_local;
      applied++;
    }
    this.#applied += applied;
    return applied;
  }

  /** The slot of a pair, created on first use; undefined (and counted) when it cannot be. */
  #slot(exchange: unknown, symbol: unknown): Slot | undefined {
    if (
      typeof exchange !== "string" || !EXCHANGE_SET.has(exchange) ||
      typeof symbol !== "string" || symbol.length === 0 || symbol.length > MAX_SYMBOL_LENGTH
    ) {
      this.#malformed++;
      return undefined;
    }
    let byExchange = this.#bySymbol.get(symbol);
    let slot = byExchange?.get(exchange as Exchange);
    if (slot !== undefined) return slot;
    if (this.#entries >= this.#maxEntries) {
      this.#rejectedNewKeys++;
      return undefined;
    }
    if (byExchange === undefined) {
      byExchange = new Map();
      this.#bySymbol.set(symbol, byExchange);
    }
    slot = {
      exchange: exchange as Exchange,
      symbol,
      trade: null,
      quote: null,
      bar: null,
      updatedUs: 0,
    };
    byExchange.set(exchange as Exchange, slot);
    this.#entries++;
    return slot;
  }

  /**
   * What is known about `symbol`: one entry per venue (only `exchange`'s when
   * given) and the freshest of them, with ages taken from the clock; null
   * when nothing was seen.
   */
  latest(symbol: string, exchange?: Exchange): LatestSnapshot | null {
    const byExchange = this.#bySymbol.get(symbol);
    if (byExchange === undefined) return null;
    const nowMs = this.#clock.now();
    const entries: LatestEntry[] = [];
    let freshest: LatestEntry | undefined;
    for (const name of EXCHANGES) {
      if (exchange !== undefined && name !== exchange) continue;
      const slot = byExchange.get(name);
      if (slot === undefined) continue;
      const entry = toEntry(slot, nowMs);
      entries.push(entry);
      if (freshest === undefined || entry.updated_us > freshest.updated_us) freshest = entry;
    }
    return freshest === undefined ? null : { symbol, freshest, exchanges: entries };
  }

  /**
   * The best bid and ask of `symbol` on `exchange`, or null when there is none
   * or it was received more than `maxAgeMs` before `nowMs` (ms since the
   * epoch). A side may be `"0"` where the venue has no order on it; the caller
   * decides whether it can fill against it.
   *
   * @example
   * ```ts
   * const quote = cache.bestBidAsk("coinbase", "ETH-USD", 2_000, Date.now());
   * if (quote === null) throw new Error("No fresh price");
   * ```
   */
  bestBidAsk(
    exchange: Exchange,
    symbol: string,
    maxAgeMs: number,
    nowMs: number,
  ): BestBidAsk | null {
    const quote = this.#bySymbol.get(symbol)?.get(exchange)?.quote;
    if (quote === undefined || quote === null) return null;
    const ageMs = age(nowMs, quote.ts_local);
    if (!(ageMs <= maxAgeMs)) return null;
    return {
      exchange,
      symbol,
      bid_price: quote.bid_price,
      bid_qty: quote.bid_qty,
      ask_price: quote.ask_price,
      ask_qty: quote.ask_qty,
      ts_exchange: quote.ts_exchange,
      ts_local: quote.ts_local,
      age_ms: ageMs,
    };
  }

  /**
   * Milliseconds between `nowMs` and the newest event of `symbol` on
   * `exchange`, or null when nothing was seen.
   */
  ageMs(exchange: Exchange, symbol: string, nowMs: number): number | null {
    const slot = this.#bySymbol.get(symbol)?.get(exchange);
    return slot === undefined ? null : age(nowMs, slot.updatedUs);
  }

  /** The symbols seen so far on each venue, sorted. */
  symbols(): Map<Exchange, string[]> {
    const seen = new Map<Exchange, string[]>();
    for (const [symbol, byExchange] of this.#bySymbol) {
      for (const exchange of byExchange.keys()) {
        let list = seen.get(exchange);
        if (list === undefined) seen.set(exchange, list = []);
        list.push(symbol);
      }
    }
    for (const list of seen.values()) list.sort();
    return seen;
  }

  /** Whether anything was seen for `symbol` (on `exchange`, when given). */
  has(symbol: string, exchange?: Exchange): boolean {
    const byExchange = this.#bySymbol.get(symbol);
    if (byExchange === undefined) return false;
    return exchange === undefined ? byExchange.size > 0 : byExchange.has(exchange);
  }

  /**
   * Counts `count` malformed inputs the caller could not hand to
   * {@linkcode LatestCache.update} (e.g. a message that is not an array);
   * returns the new total.
   */
  noteMalformed(count = 1): number {
    return this.#malformed += count;
  }

  /** The cache's counters. */
  stats(): LatestCacheStats {
    return {
      entries: this.#entries,
      applied: this.#applied,
      out_of_order: this.#outOfOrder,
      skipped: this.#skipped,
      malformed: this.#malformed,
      rejected_new_keys: this.#rejectedNewKeys,
    };
  }
}

/** Milliseconds from `tsLocalUs` to `nowMs`, to the microsecond (no float noise in JSON). */
function age(nowMs: number, tsLocalUs: number): number {
  return Math.round(nowMs * 1000 - tsLocalUs) / 1000;
}

function toEntry(slot: Slot, nowMs: number): LatestEntry {
  const { trade, quote, bar } = slot;
  return {
    exchange: slot.exchange,
    symbol: slot.symbol,
    trade: trade === null ? null : {
      trade_id: trade.trade_id,
      price: trade.price,
      qty: trade.qty,
      side: trade.side,
      ts_exchange: trade.ts_exchange,
      ts_local: trade.ts_local,
      age_ms: age(nowMs, trade.ts_local),
    },
    quote: quote === null ? null : {
      source: quote.kind,
      bid_price: quote.bid_price,
      bid_qty: quote.bid_qty,
      ask_price: quote.ask_price,
      ask_qty: quote.ask_qty,
      ts_exchange: quote.ts_exchange,
      ts_local: quote.ts_local,
      age_ms: age(nowMs, quote.ts_local),
    },
    bar: bar === null ? null : {
      interval: bar.interval,
      start: bar.start,
      open: bar.open,
      high: bar.high,
      low: bar.low,
      close: bar.close,
      volume: bar.volume,
      trades: bar.trades,
      vwap: bar.vwap,
      ts_exchange: bar.ts_exchange,
      ts_local: bar.ts_local,
      age_ms: age(nowMs, bar.ts_local),
    },
    updated_us: slot.updatedUs,
    age_ms: age(nowMs, slot.updatedUs),
  };
}
