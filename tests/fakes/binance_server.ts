/**
 * A fake Binance Spot venue for feed tests: a scripted market
 * ({@linkcode FakeBinanceMarket}: order books with update ids, trade ids)
 * that writes frames exactly as Binance's combined streams do, and
 * {@linkcode startBinanceServer}, a loopback server speaking the real
 * protocol — WebSocket `/stream?streams=…` and REST `GET /api/v3/depth` —
 * with controls to inject a sequence gap, garbage, a dropped connection,
 * silence or a `serverShutdown` notice.
 *
 * @module
 */

import type { Level } from "../../market/events.ts";
import { compareDecimal, isZero } from "../../market/decimal.ts";
import { binanceSymbol } from "../../venues/binance/symbols.ts";
import { type FakeSocket, type FakeWsServer, startWsServer } from "./ws_server.ts";

/** One symbol's book on the fake venue, with Binance's update ids. */
export class FakeBinanceBook {
  /** Binance symbol, e.g. `BTCUSDT`. */
  readonly venueSymbol: string;
  /** Bid levels, price → size. */
  readonly bids = new Map<string, string>();
  /** Ask levels, price → size. */
  readonly asks = new Map<string, string>();
  /** The id of the last change applied. */
  lastUpdateId: number;

  /** A book at `lastUpdateId` holding `bids` and `asks`. */
  constructor(venueSymbol: string, lastUpdateId: number, bids: Level[] = [], asks: Level[] = []) {
    this.venueSymbol = venueSymbol;
    this.lastUpdateId = lastUpdateId;
    for (const [price, size] of bids) this.bids.set(price, size);
    for (const [price, size] of asks) this.asks.set(price, size);
  }

  /** Applies levels (size zero removes) without touching the update id. */
  apply(bids: readonly Level[], asks: readonly Level[]): void {
    for (const [price, size] of bids) {
      isZero(size) ? this.bids.delete(price) : this.bids.set(price, size);
    }
    for (const [price, size] of asks) {
      isZero(size) ? this.asks.delete(price) : this.asks.set(price, size);
    }
  }

  /** Best `limit` levels of a side, best first. */
  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    const map = side === "bid" ? this.bids : this.asks;
    const sign = side === "bid" ? -1 : 1;
    return [...map.entries()]
      .sort((a, b) => sign * compareDecimal(a[0], b[0]))
      .slice(0, limit);
  }

  /** The REST `GET /api/v3/depth` body for `limit` levels. */
  snapshotBody(limit: number): string {
    return JSON.stringify({
      lastUpdateId: this.lastUpdateId,
      bids: this.levels("bid", limit),
      asks: this.levels("ask", limit),
    });
  }
}

/** Options of {@linkcode FakeBinanceMarket}. */
export interface FakeBinanceMarketOptions {
  /** Update id every book starts at. @default {1000} */
  startUpdateId?: number;
  /** Event time source, ms since the epoch. @default {Date.now} */
  now?: () => number;
}

/** A scripted Binance market: books, trades and the frames Binance sends for them. */
export class FakeBinanceMarket {
  /** Books by Binance symbol. */
  readonly books = new Map<string, FakeBinanceBook>();
  readonly #now: () => number;
  #tradeId = 5_000;

  /** A market with an empty book for each canonical symbol (`BTC-USDT`). */
  constructor(symbols: readonly string[], options: FakeBinanceMarketOptions = {}) {
    this.#now = options.now ?? Date.now;
    for (const symbol of symbols) {
      const venueSymbol = binanceSymbol(symbol);
      this.books.set(venueSymbol, new FakeBinanceBook(venueSymbol, options.startUpdateId ?? 1000));
    }
  }

  /** The book of a Binance symbol; throws a `RangeError` for an unknown one. */
  book(venueSymbol: string): FakeBinanceBook {
    const book = this.books.get(venueSymbol);
    if (!book) throw new RangeError(`No fake book for ${venueSymbol}`);
    return book;
  }

  /**
   * Changes a book and returns its `depthUpdate` frame: `U` is the next
   * update id, `u` advances by one id per level changed. With `skip`, that
   * many further ids are used up by changes that are never sent (a gap the
   * client must notice); the skipped change is `hidden` (applied, not sent).
   */
  depthUpdate(
    venueSymbol: string,
    bids: Level[],
    asks: Level[],
    options: { hidden?: { bids: Level[]; asks: Level[] } } = {},
  ): string {
    const book = this.book(venueSymbol);
    if (options.hidden) {
      book.apply(options.hidden.bids, options.hidden.asks);
      book.lastUpdateId += Math.max(1, options.hidden.bids.length + options.hidden.asks.length);
    }
    const first = book.lastUpdateId + 1;
    book.apply(bids, asks);
    book.lastUpdateId += Math.max(1, bids.length + asks.length);
    return combined(`${venueSymbol.toLowerCase()}@depth@100ms`, {
      e: "depthUpdate",
      E: this.#now(),
      s: venueSymbol,
      U: first,
      u: book.lastUpdateId,
      b: bids,
      a: asks,
    });
  }

  /** A `trade` frame; `buyerIsMaker` true means the aggressor sold. */
  trade(venueSymbol: string, price: string, qty: string, buyerIsMaker: boolean, timeMs?: number) {
    this.book(venueSymbol);
    const time = timeMs ?? this.#now();
    return combined(`${venueSymbol.toLowerCase()}@trade`, {
      e: "trade",
      E: time,
      s: venueSymbol,
      t: ++this.#tradeId,
      p: price,
      q: qty,
      T: time,
      m: buyerIsMaker,
      M: true,
    });
  }

  /** The id the next {@linkcode FakeBinanceMarket.trade} gets. */
  get nextTradeId(): number {
    return this.#tradeId + 1;
  }

  /** A `bookTicker` frame of the book's current best bid and ask. */
  bookTicker(venueSymbol: string): string {
    const book = this.book(venueSymbol);
    const [bid] = book.levels("bid", 1);
    const [ask] = book.levels("ask", 1);
    if (!bid || !ask) throw new RangeError(`${venueSymbol} has an empty side`);
    return combined(`${venueSymbol.toLowerCase()}@bookTicker`, {
      u: book.lastUpdateId,
      s: venueSymbol,
      b: bid[0],
      B: bid[1],
      a: ask[0],
      A: ask[1],
    });
  }
}

/** A `serverShutdown` notice as Binance sends it on combined streams. */
export function serverShutdownFrame(timeMs = Date.now()): string {
  return combined("!serverShutdown", { e: "serverShutdown", E: timeMs });
}

function combined(stream: string, data: unknown): string {
  return JSON.stringify({ stream, data });
}

/** Options of {@linkcode startBinanceServer}. */
export interface BinanceServerOptions {
  /** The market whose books and trades the server serves. */
  market: FakeBinanceMarket;
  /** Port to listen on. @default {a free loopback port} */
  port?: number;
}

/** A running fake Binance venue. */
export interface FakeBinanceServer extends AsyncDisposable {
  /** The WebSocket server underneath (connections, drop, refuse…). */
  readonly ws: FakeWsServer;
  /** The scripted market. */
  readonly market: FakeBinanceMarket;
  /** WebSocket base URL, for `exchanges.binance.ws_url`. */
  readonly wsUrl: string;
  /** REST base URL, for `exchanges.binance.rest_url`. */
  readonly restUrl: string;
  /** Symbols of the depth snapshot requests served, in order (failed ones included). */
  readonly snapshotRequests: string[];
  /** REST bodies served verbatim instead of the market's book, by Binance symbol (fixture replay). */
  readonly snapshotBodies: Map<string, string>;
  /** While true, nothing is sent (the connection stays open): a silent venue. */
  silent: boolean;
  /** The streams a connection asked for in its URL. */
  streams(socket: FakeSocket): Set<string>;
  /** Sends a raw frame on every open connection (garbage, fixture lines…). */
  send(frame: string): void;
  /** Changes a book and sends its `depthUpdate` to connections on `<sym>@depth@100ms`. */
  depthUpdate(
    venueSymbol: string,
    bids: Level[],
    asks: Level[],
    options?: { hidden?: { bids: Level[]; asks: Level[] } },
  ): void;
  /** Sends a trade to connections on `<sym>@trade`. */
  trade(venueSymbol: string, price: string, qty: string, buyerIsMaker: boolean): void;
  /** Sends the book's best bid and ask to connections on `<sym>@bookTicker`. */
  bookTicker(venueSymbol: string): void;
  /** Sends a `serverShutdown` notice. */
  serverShutdown(): void;
  /** The next `count` depth requests fail with HTTP `status` and a Binance error body. */
  failSnapshots(count: number, status?: number): void;
  /** Cuts every connection without a close frame. */
  drop(): void;
  /** Stops the server. */
  stop(): Promise<void>;
}

/**
 * Starts a fake Binance venue on a loopback port: `/stream?streams=a/b/c`
 * WebSocket connections get combined-stream frames for the streams they
 * named, `GET /api/v3/depth?symbol=X&limit=N` answers a snapshot of the
 * market's book consistent with the diffs already sent.
 *
 * @example
 * ```ts
 * const market = new FakeBinanceMarket(["BTC-USDT"]);
 * await using venue = await startBinanceServer({ market });
 * venue.depthUpdate("BTCUSDT", [["100.00", "1.000"]], []);
 * ```
 */
export async function startBinanceServer(
  options: BinanceServerOptions,
): Promise<FakeBinanceServer> {
  const { market } = options;
  const snapshotRequests: string[] = [];
  const snapshotBodies = new Map<string, string>();
  let failures = 0;
  let failStatus = 429;

  const ws = await startWsServer({
    ...(options.port === undefined ? {} : { port: options.port }),
    onOpen(socket) {
      if (streamsOf(socket).size === 0) socket.close(1008, "Invalid request");
    },
    http(request) {
      const url = new URL(request.url);
      if (url.pathname !== "/api/v3/depth") return undefined;
      const symbol = url.searchParams.get("symbol") ?? "";
      snapshotRequests.push(symbol);
      if (failures > 0) {
        failures--;
        return Response.json({ code: -1003, msg: "Too many requests." }, { status: failStatus });
      }
      const fixed = snapshotBodies.get(symbol);
      if (fixed !== undefined) return new Response(fixed);
      const book = market.books.get(symbol);
      if (!book) return Response.json({ code: -1121, msg: "Invalid symbol." }, { status: 400 });
      const limit = Number(url.searchParams.get("limit") ?? "100");
      return new Response(book.snapshotBody(limit));
    },
  });

  const server: FakeBinanceServer = {
    ws,
    market,
    wsUrl: ws.url,
    restUrl: ws.httpUrl,
    snapshotRequests,
    snapshotBodies,
    silent: false,
    streams: streamsOf,
    send(frame) {
      if (server.silent) return;
      ws.broadcast(frame);
    },
    depthUpdate(venueSymbol, bids, asks, opts = {}) {
      const frame = market.depthUpdate(venueSymbol, bids, asks, opts);
      sendTo(`${venueSymbol.toLowerCase()}@depth@100ms`, frame);
    },
    trade(venueSymbol, price, qty, buyerIsMaker) {
      sendTo(
        `${venueSymbol.toLowerCase()}@trade`,
        market.trade(venueSymbol, price, qty, buyerIsMaker),
      );
    },
    bookTicker(venueSymbol) {
      sendTo(`${venueSymbol.toLowerCase()}@bookTicker`, market.bookTicker(venueSymbol));
    },
    serverShutdown() {
      server.send(serverShutdownFrame());
    },
    failSnapshots(count, status = 429) {
      failures = count;
      failStatus = status;
    },
    drop() {
      for (const socket of ws.openSockets()) socket.drop();
    },
    stop: () => ws.stop(),
    [Symbol.asyncDispose]: () => ws.stop(),
  };

  /** The streams named by a connection's `/stream?streams=a/b/c` URL; none for another path. */
  function streamsOf(socket: FakeSocket): Set<string> {
    const url = new URL(socket.path, "http://fake");
    const streams = url.searchParams.get("streams");
    return url.pathname === "/stream" && streams ? new Set(streams.split("/")) : new Set();
  }

  function sendTo(stream: string, frame: string): void {
    if (server.silent) return;
    for (const socket of ws.openSockets()) {
      if (streamsOf(socket).has(stream)) socket.send(frame);
    }
  }

  return server;
}
