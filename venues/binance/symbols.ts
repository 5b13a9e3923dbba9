/**
 * Binance symbol naming: canonical `BASE-QUOTE` symbols (`BTC-USDT`) against
 * Binance's separator-less symbols (`BTCUSDT`) and lower-case stream names
 * (`btcusdt@trade`), and the combined-stream URL.
 *
 * Binance symbols cannot be split back into base and quote without the
 * exchange's symbol list, so the map is built from the configured canonical
 * symbols, never guessed from a frame.
 *
 * @example
 * ```ts
 * const symbols = binanceSymbolMap(["BTC-USDT", "ETH-BTC"]);
 * symbols.canonical("BTCUSDT"); // "BTC-USDT"
 * const streams = binanceStreamNames(symbols.canonicalSymbols());
 * binanceCombinedUrl("wss://stream.binance.com:9443", streams);
 * ```
 *
 * @module
 */

/** A canonical crypto symbol: upper-case alphanumeric base and quote joined by `-`. */
const CANONICAL = /^([A-Z0-9]+)-([A-Z0-9]+)$/;

/** Most streams one Binance connection may carry. */
export const BINANCE_MAX_STREAMS_PER_CONNECTION = 1024;

/**
 * Longest combined-stream URL, in characters, a Binance connection is opened
 * with. Binance documents no limit, but stream.binance.com was measured to
 * open nothing for a URL longer than 8,004 characters
 * (oliver-zehentleitner/unicorn-binance-websocket-api issues 17 and 19); a
 * longer URL would leave the feed reconnecting forever. With the three
 * default channels that is about 130 symbols.
 */
export const BINANCE_MAX_URL_LENGTH = 8_000;

/** Slots of {@linkcode SymbolMap.canonical}'s cache: a power of two. */
const FOUND_SLOTS = 32;

/**
 * A two-way map between a venue's symbols and canonical symbols, fixed when
 * made (its `canonical` caches its answers).
 *
 * @example
 * ```ts
 * const map = new SymbolMap([["BTCUSDT", "BTC-USDT"]]);
 * map.canonical("BTCUSDT"); // "BTC-USDT"
 * map.venue("BTC-USDT"); // "BTCUSDT"
 * ```
 */
export class SymbolMap {
  readonly #toCanonical = new Map<string, string>();
  readonly #toVenue = new Map<string, string>();
  /** Venue symbols found lately: `[venue, canonical, ...]`, two strings a slot ({@linkcode SymbolMap.canonical}). */
  readonly #found: string[] = new Array<string>(2 * FOUND_SLOTS).fill("");

  /**
   * Makes a map from `[venueSymbol, canonicalSymbol]` pairs. Throws a
   * `TypeError` when either side repeats, since the map must be one-to-one.
   */
  constructor(pairs: Iterable<readonly [venue: string, canonical: string]>) {
    for (const [venue, canonical] of pairs) {
      if (this.#toCanonical.has(venue)) {
        throw new TypeError(`Venue symbol ${JSON.stringify(venue)} is mapped twice`);
      }
      if (this.#toVenue.has(canonical)) {
        throw new TypeError(`Canonical symbol ${JSON.stringify(canonical)} is mapped twice`);
      }
      this.#toCanonical.set(venue, canonical);
      this.#toVenue.set(canonical, venue);
    }
  }

  /**
   * The canonical symbol of a venue symbol, or undefined when it is not
   * configured. Called for every frame the Binance parser reads: the symbols
   * found before are matched against a small cache (slot by length, first
   * and last character) first — comparing a frame's short symbol to the one
   * cached costs less than hashing it for the map, and the map never changes.
   */
  canonical(venueSymbol: string): string | undefined {
    const length = venueSymbol.length;
    if (length === 0) return this.#toCanonical.get(venueSymbol);
    const found = this.#found;
    const slot = ((length * 7 + venueSymbol.charCodeAt(0) * 3 +
      venueSymbol.charCodeAt(length - 1)) & (FOUND_SLOTS - 1)) << 1;
    if (found[slot] === venueSymbol) return found[slot + 1];
    const symbol = this.#toCanonical.get(venueSymbol);
    if (symbol !== undefined) {
      found[slot] = venueSymbol;
      found[slot + 1] = symbol;
    }
    return symbol;
  }

  /** The venue symbol of a canonical symbol, or undefined when it is not configured. */
  venue(canonicalSymbol: string): string | undefined {
    return this.#toVenue.get(canonicalSymbol);
  }

  /** The configured canonical symbols, in the order given. */
  canonicalSymbols(): string[] {
    return [...this.#toVenue.keys()];
  }

  /** Number of configured symbols. */
  get size(): number {
    return this.#toVenue.size;
  }
}

/**
 * The Binance symbol of a canonical `BASE-QUOTE` symbol: `"BTC-USDT"` →
 * `"BTCUSDT"`. Throws a `TypeError` when `canonical` is not `BASE-QUOTE` in
 * upper case.
 *
 * @example
 * ```ts
 * binanceSymbol("ETH-BTC"); // "ETHBTC"
 * ```
 */
export function binanceSymbol(canonical: string): string {
  const match = CANONICAL.exec(canonical);
  if (!match) {
    throw new TypeError(
      `Not a canonical BASE-QUOTE symbol: ${JSON.stringify(canonical)}`,
    );
  }
  return match[1]! + match[2]!;
}

/**
 * A {@linkcode SymbolMap} between Binance symbols and the given canonical
 * symbols. Throws a `TypeError` on a malformed symbol or when two canonical
 * symbols collapse to one Binance symbol (`AB-CD` and `ABC-D`).
 *
 * @example
 * ```ts
 * binanceSymbolMap(["BTC-USDT"]).canonical("BTCUSDT"); // "BTC-USDT"
 * ```
 */
export function binanceSymbolMap(canonicalSymbols: readonly string[]): SymbolMap {
  return new SymbolMap(canonicalSymbols.map((c) => [binanceSymbol(c), c] as const));
}

/** Which streams {@linkcode binanceStreamNames} lists for each symbol. */
export interface BinanceStreamOptions {
  /** Diff depth stream `<symbol>@depth@<speed>`, for the book sync. @default {true} */
  depth?: boolean;
  /** Update speed of the diff depth stream. @default {"100ms"} */
  depthSpeed?: "100ms" | "1000ms";
  /** Raw trade stream `<symbol>@trade`. @default {true} */
  trades?: boolean;
  /**
   * Aggregate trade stream `<symbol>@aggTrade`. Off by default: it repeats the
   * trades of `@trade` aggregated per taker order, so taking both counts
   * volume twice. @default {false}
   */
  aggTrades?: boolean;
  /** Best bid and ask stream `<symbol>@bookTicker`. @default {true} */
  bookTicker?: boolean;
  /** Kline interval for `<symbol>@kline_<interval>` (`"1m"`), or null for none. @default {null} */
  klineInterval?: string | null;
}

/** Defaults of {@linkcode BinanceStreamOptions}. */
export const DEFAULT_BINANCE_STREAM_OPTIONS: Readonly<Required<BinanceStreamOptions>> = {
  depth: true,
  depthSpeed: "100ms",
  trades: true,
  aggTrades: false,
  bookTicker: true,
  klineInterval: null,
};

const KLINE_INTERVAL = /^(?:1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)$/;

/**
 * The stream names to subscribe for canonical symbols, per symbol in the
 * order depth, trade, aggTrade, bookTicker, kline. Throws a `TypeError` on a
 * malformed symbol or kline interval.
 *
 * @example
 * ```ts
 * binanceStreamNames(["BTC-USDT"], { depth: true, trades: true, bookTicker: true });
 * // ["btcusdt@depth@100ms", "btcusdt@trade", "btcusdt@bookTicker"]
 * ```
 */
export function binanceStreamNames(
  canonicalSymbols: readonly string[],
  options: BinanceStreamOptions = {},
): string[] {
  const {
    depth = DEFAULT_BINANCE_STREAM_OPTIONS.depth,
    depthSpeed = DEFAULT_BINANCE_STREAM_OPTIONS.depthSpeed,
    trades = DEFAULT_BINANCE_STREAM_OPTIONS.trades,
    aggTrades = DEFAULT_BINANCE_STREAM_OPTIONS.aggTrades,
    bookTicker = DEFAULT_BINANCE_STREAM_OPTIONS.bookTicker,
    klineInterval = DEFAULT_BINANCE_STREAM_OPTIONS.klineInterval,
  } = options;
  if (klineInterval !== null && !KLINE_INTERVAL.test(klineInterval)) {
    throw new TypeError(`Not a Binance kline interval: ${JSON.stringify(klineInterval)}`);
  }
  const names: string[] = [];
  for (const canonical of canonicalSymbols) {
    const stream = binanceSymbol(canonical).toLowerCase();
    if (depth) names.push(`${stream}@depth@${depthSpeed}`);
    if (trades) names.push(`${stream}@trade`);
    if (aggTrades) names.push(`${stream}@aggTrade`);
    if (bookTicker) names.push(`${stream}@bookTicker`);
    if (klineInterval !== null) names.push(`${stream}@kline_${klineInterval}`);
  }
  return names;
}

/**
 * The streams of the configured channels — `book` → `<sym>@depth@100ms`,
 * `trades` → `<sym>@trade`, `top` → `<sym>@bookTicker` — of each symbol.
 * Throws a `TypeError` on a malformed symbol.
 *
 * @example
 * ```ts
 * binanceChannelStreams(["BTC-USDT"], ["trades", "top"]);
 * // ["btcusdt@trade", "btcusdt@bookTicker"]
 * ```
 */
export function binanceChannelStreams(
  canonicalSymbols: readonly string[],
  channels: readonly string[],
): string[] {
  const set = new Set(channels);
  return binanceStreamNames(canonicalSymbols, {
    depth: set.has("book"),
    trades: set.has("trades"),
    bookTicker: set.has("top"),
  });
}

/**
 * The length of the combined-stream URL of `streams` on `base`, without
 * checking either.
 *
 * @example
 * ```ts
 * binanceCombinedUrlLength("wss://stream.binance.com:9443", ["btcusdt@trade"]); // 59
 * ```
 */
export function binanceCombinedUrlLength(base: string, streams: readonly string[]): number {
  let length = base.replace(/\/$/, "").length + "/stream?streams=".length;
  for (const stream of streams) length += stream.length;
  return length + Math.max(0, streams.length - 1);
}

/**
 * The combined-stream URL `<base>/stream?streams=a/b/c`, whose frames arrive
 * wrapped as `{"stream": ..., "data": ...}`. Throws a `RangeError` for no
 * streams, more than {@linkcode BINANCE_MAX_STREAMS_PER_CONNECTION} or a URL
 * longer than {@linkcode BINANCE_MAX_URL_LENGTH}, a `TypeError` for a base
 * that is not a `ws:`/`wss:` URL.
 *
 * @example
 * ```ts
 * binanceCombinedUrl("wss://stream.binance.com:9443", ["btcusdt@trade", "btcusdt@bookTicker"]);
 * // "wss://stream.binance.com:9443/stream?streams=btcusdt@trade/btcusdt@bookTicker"
 * ```
 */
export function binanceCombinedUrl(base: string, streams: readonly string[]): string {
  if (streams.length === 0) throw new RangeError("No streams to combine");
  if (streams.length > BINANCE_MAX_STREAMS_PER_CONNECTION) {
    throw new RangeError(
      `${streams.length} streams exceed the ${BINANCE_MAX_STREAMS_PER_CONNECTION} one connection may carry`,
    );
  }
  if (!/^wss?:\/\/[^/?#]+\/?$/.test(base)) {
    throw new TypeError(`Not a WebSocket base URL: ${JSON.stringify(base)}`);
  }
  for (const stream of streams) {
    if (!/^[A-Za-z0-9!@_]+$/.test(stream)) {
      throw new TypeError(`Not a Binance stream name: ${JSON.stringify(stream)}`);
    }
  }
  const url = `${base.replace(/\/$/, "")}/stream?streams=${streams.join("/")}`;
  if (url.length > BINANCE_MAX_URL_LENGTH) {
    throw new RangeError(
      `The combined-stream URL of ${streams.length} streams is ${url.length} characters, ` +
        `over the ${BINANCE_MAX_URL_LENGTH} Binance opens`,
    );
  }
  return url;
}
