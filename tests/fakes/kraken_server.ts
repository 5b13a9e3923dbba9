/**
 * A fake Kraken WebSocket v2 venue for feed tests: a scripted market
 * ({@linkcode FakeKrakenMarket}: books with the real CRC32 checksums, trades)
 * that writes frames exactly as Kraken does — prices and sizes as bare JSON
 * numbers with fixed decimals, microsecond RFC 3339 timestamps — and
 * {@linkcode startKrakenServer}, a loopback `/v2` server that answers
 * subscribe/unsubscribe/ping with the real shapes, with controls to corrupt a
 * checksum, send garbage, drop the connection or go silent.
 *
 * @module
 */

import type { Level } from "../../market/events.ts";
import { compareDecimal, isZero } from "../../market/decimal.ts";
import { KRAKEN_CHECKSUM_LEVELS, krakenChecksum } from "../../venues/kraken/checksum.ts";
import { type FakeSocket, type FakeWsServer, startWsServer } from "./ws_server.ts";

/** Decimals Kraken writes sizes with. */
export const KRAKEN_QTY_DECIMALS = 8;

/** A price or size: text is sent verbatim, a number is written with the pair's decimals. */
export type FakeAmount = string | number;

/** RFC 3339 with six fraction digits, as Kraken v2 writes times, from µs since the epoch. */
export function krakenTime(us: number): string {
  const ms = Math.floor(us / 1000);
  const iso = new Date(ms).toISOString(); // 2026-08-16T23:37:05.723Z
  const micros = String(us % 1_000_000).padStart(6, "0");
  return `${iso.slice(0, 19)}.${micros}Z`;
}

/** One pair's book on the fake venue, prices and sizes kept as the text Kraken sends. */
export class FakeKrakenBook {
  /** Kraken symbol, `BASE/QUOTE`. */
  readonly venueSymbol: string;
  /** Decimals of the pair's prices. */
  readonly priceDecimals: number;
  /** Bid levels, price text → size text. */
  readonly bids = new Map<string, string>();
  /** Ask levels, price text → size text. */
  readonly asks = new Map<string, string>();

  /** An empty book of `venueSymbol` whose prices have `priceDecimals` decimals. */
  constructor(venueSymbol: string, priceDecimals: number) {
    this.venueSymbol = venueSymbol;
    this.priceDecimals = priceDecimals;
  }

  /** A price as Kraken writes it for this pair. */
  price(value: FakeAmount): string {
    return typeof value === "string" ? value : value.toFixed(this.priceDecimals);
  }

  /** A size as Kraken writes it (8 decimals). */
  qty(value: FakeAmount): string {
    return typeof value === "string" ? value : value.toFixed(KRAKEN_QTY_DECIMALS);
  }

  /** Sets levels (size zero removes); returns them as written. */
  set(side: "bid" | "ask", levels: readonly [FakeAmount, FakeAmount][]): Level[] {
    const map = side === "bid" ? this.bids : this.asks;
    return levels.map(([p, q]) => {
      const price = this.price(p);
      const qty = this.qty(q);
      if (isZero(qty)) map.delete(price);
      else map.set(price, qty);
      return [price, qty];
    });
  }

  /** Best `limit` levels of a side, best first. */
  levels(side: "bid" | "ask", limit = Infinity): Level[] {
    const map = side === "bid" ? this.bids : this.asks;
    const sign = side === "bid" ? -1 : 1;
    return [...map.entries()].sort((a, b) => sign * compareDecimal(a[0], b[0])).slice(0, limit);
  }

  /** Kraken's checksum of the book as it stands. */
  checksum(): number {
    return krakenChecksum(
      this.levels("ask", KRAKEN_CHECKSUM_LEVELS),
      this.levels("bid", KRAKEN_CHECKSUM_LEVELS),
    );
  }
}

/** Options of {@linkcode FakeKrakenMarket}. */
export interface FakeKrakenMarketOptions {
  /** Decimals of prices, per Kraken symbol. @default {1 for every pair} */
  priceDecimals?: Record<string, number>;
  /** Time source, µs since the epoch. @default {Date.now() * 1000} */
  nowUs?: () => number;
}

/** A scripted Kraken market: books and trades, and the frames Kraken sends for them. */
export class FakeKrakenMarket {
  /** Books by Kraken symbol. */
  readonly books = new Map<string, FakeKrakenBook>();
  readonly #nowUs: () => number;
  #tradeId = 70_000;

  /** A market with an empty book for each Kraken symbol (`BTC/USD`). */
  constructor(venueSymbols: readonly string[], options: FakeKrakenMarketOptions = {}) {
    this.#nowUs = options.nowUs ?? (() => Date.now() * 1000);
    for (const symbol of venueSymbols) {
      this.books.set(symbol, new FakeKrakenBook(symbol, options.priceDecimals?.[symbol] ?? 1));
    }
  }

  /** The book of a Kraken symbol; throws a `RangeError` for an unknown one. */
  book(venueSymbol: string): FakeKrakenBook {
    const book = this.books.get(venueSymbol);
    if (!book) throw new RangeError(`No fake book for ${venueSymbol}`);
    return book;
  }

  /** The id the next trade gets. */
  get nextTradeId(): number {
    return this.#tradeId + 1;
  }

  /** The `book` snapshot frame of the best `depth` levels, checksum included. */
  snapshotFrame(venueSymbol: string, depth: number): string {
    const book = this.book(venueSymbol);
    return bookFrame(
      "snapshot",
      venueSymbol,
      book.levels("bid", depth),
      book.levels("ask", depth),
      book.checksum(),
      this.#nowUs(),
    );
  }

  /**
   * Changes a book and returns the `book` update frame a client subscribed at
   * `depth` receives, or null when no level within its depth changed. Like
   * Kraken: a removed level is sent with size 0, a level that enters the
   * window because another left it is sent, a level pushed out of the window
   * by an insert is not. `corrupt` sends a wrong checksum.
   */
  update(
    venueSymbol: string,
    depth: number,
    changes: { bids?: [FakeAmount, FakeAmount][]; asks?: [FakeAmount, FakeAmount][] },
    options: { corrupt?: boolean } = {},
  ): string | null {
    const book = this.book(venueSymbol);
    const sides = { bid: [] as Level[], ask: [] as Level[] };
    for (const side of ["bid", "ask"] as const) {
      const before = new Map(book.levels(side, depth));
      const applied = book.set(side, (side === "bid" ? changes.bids : changes.asks) ?? []);
      const after = new Map(book.levels(side, depth));
      const sent = new Set<string>();
      for (const [price, qty] of applied) {
        if (isZero(qty) ? before.has(price) : after.has(price)) {
          sides[side].push([price, qty]);
          sent.add(price);
        }
      }
      for (const [price, qty] of after) {
        if (!before.has(price) && !sent.has(price)) sides[side].push([price, qty]);
      }
    }
    if (sides.bid.length === 0 && sides.ask.length === 0) return null;
    const checksum = options.corrupt ? (book.checksum() + 1) >>> 0 : book.checksum();
    return bookFrame("update", venueSymbol, sides.bid, sides.ask, checksum, this.#nowUs());
  }

  /** A `trade` update frame of one trade; `side` is the taker's. */
  trade(
    venueSymbol: string,
    side: "buy" | "sell",
    price: FakeAmount,
    qty: FakeAmount,
    timeUs?: number,
  ): string {
    const book = this.book(venueSymbol);
    return '{"channel":"trade","type":"update","data":[{"symbol":' +
      JSON.stringify(venueSymbol) + ',"side":"' + side + '","price":' + book.price(price) +
      ',"qty":' + book.qty(qty) + ',"ord_type":"market","trade_id":' + ++this.#tradeId +
      ',"timestamp":"' + krakenTime(timeUs ?? this.#nowUs()) + '"}]}';
  }
}

/** A `heartbeat` frame. */
export const HEARTBEAT_FRAME = '{"channel":"heartbeat"}';

/** The `status` frame Kraken sends on connect, with `system` (`online`, `maintenance`…). */
export function statusFrame(system = "online"): string {
  return '{"channel":"status","type":"update","data":[{"version":"2.0.10","system":"' + system +
    '","api_version":"v2","connection_id":3007355780899554854}]}';
}

function levelsText(levels: readonly Level[]): string {
  return "[" + levels.map(([p, q]) => `{"price":${p},"qty":${q}}`).join(",") + "]";
}

function bookFrame(
  type: "snapshot" | "update",
  venueSymbol: string,
  bids: readonly Level[],
  asks: readonly Level[],
  checksum: number,
  timeUs: number,
): string {
  return '{"channel":"book","type":"' + type + '","data":[{"symbol":' +
    JSON.stringify(venueSymbol) + ',"bids":' + levelsText(bids) + ',"asks":' + levelsText(asks) +
    ',"checksum":' + checksum + ',"timestamp":"' + krakenTime(timeUs) + '"}]}';
}

/** Options of {@linkcode startKrakenServer}. */
export interface KrakenServerOptions {
  /** The market whose books and trades the server serves. */
  market: FakeKrakenMarket;
  /** Port to listen on. @default {a free loopback port} */
  port?: number;
  /** Send a heartbeat on every subscribed connection this often (ms); 0 for none. @default {0} */
  heartbeatMs?: number;
  /**
   * Frames sent verbatim, instead of a generated ack and snapshot, when a
   * connection subscribes to the book of a Kraken symbol (fixture replay).
   */
  bookScripts?: Record<string, string[]>;
}

/** One connection's subscriptions on the fake Kraken venue. */
export interface KrakenSubscriptions {
  /** Kraken symbols subscribed to `trade`. */
  trade: Set<string>;
  /** Kraken symbols subscribed to `book`, with their depth. */
  book: Map<string, number>;
}

/** A running fake Kraken venue. */
export interface FakeKrakenServer extends AsyncDisposable {
  /** The WebSocket server underneath (connections, drop, refuse…). */
  readonly ws: FakeWsServer;
  /** The scripted market. */
  readonly market: FakeKrakenMarket;
  /** `ws://127.0.0.1:<port>/v2`, for `exchanges.kraken.ws_url`. */
  readonly wsUrl: string;
  /** Every request received (parsed), in order, across connections. */
  readonly requests: Array<{ socket: number; method: string; params: Record<string, unknown> }>;
  /** While true, nothing is sent, heartbeats and pongs included: a silent venue. */
  silent: boolean;
  /** A connection's subscriptions. */
  subscriptions(socket: FakeSocket): KrakenSubscriptions;
  /** Sends a raw frame on every open connection (garbage, fixture lines…). */
  send(frame: string): void;
  /** Changes a book and sends the update (with its checksum, or a wrong one) to its subscribers. */
  bookUpdate(
    venueSymbol: string,
    changes: { bids?: [FakeAmount, FakeAmount][]; asks?: [FakeAmount, FakeAmount][] },
    options?: { corrupt?: boolean },
  ): void;
  /** Sends one trade to the symbol's `trade` subscribers. */
  trade(venueSymbol: string, side: "buy" | "sell", price: FakeAmount, qty: FakeAmount): void;
  /** Sends a heartbeat on every open connection. */
  heartbeat(): void;
  /** Cuts every connection without a close frame. */
  drop(): void;
  /** Stops the server. */
  stop(): Promise<void>;
}

/**
 * Starts a fake Kraken v2 venue on a loopback port. A connection to `/v2`
 * gets the `status` frame; `subscribe` is acknowledged per symbol in Kraken's
 * shape (an unknown pair gets `success: false`), a book subscription gets its
 * snapshot at the requested depth; `unsubscribe` is acknowledged; `ping` gets
 * `pong`. Book updates are sent at the depth each connection subscribed with.
 *
 * @example
 * ```ts
 * const market = new FakeKrakenMarket(["BTC/USD"]);
 * await using venue = await startKrakenServer({ market, heartbeatMs: 1000 });
 * venue.bookUpdate("BTC/USD", { bids: [[65000, 1]] });
 * ```
 */
export async function startKrakenServer(options: KrakenServerOptions): Promise<FakeKrakenServer> {
  const { market, heartbeatMs = 0, bookScripts = {} } = options;
  const subs = new Map<number, KrakenSubscriptions>();
  const requests: FakeKrakenServer["requests"] = [];

  const ws = await startWsServer({
    ...(options.port === undefined ? {} : { port: options.port }),
    onOpen(socket) {
      if (new URL(socket.path, "http://fake").pathname !== "/v2") {
        socket.close(1008, "Unknown endpoint");
        return;
      }
      subs.set(socket.id, { trade: new Set(), book: new Map() });
      send(socket, statusFrame("online"));
    },
    onMessage(socket, text) {
      let request: { method?: unknown; params?: Record<string, unknown>; req_id?: unknown };
      try {
        request = JSON.parse(text);
      } catch {
        send(socket, '{"error":"Malformed request","success":false}');
        return;
      }
      const method = typeof request.method === "string" ? request.method : "";
      const params = request.params ?? {};
      const reqId = typeof request.req_id === "number" ? request.req_id : undefined;
      requests.push({ socket: socket.id, method, params });
      const time = krakenTime(Date.now() * 1000);
      const tail = `"time_in":"${time}","time_out":"${time}"`;
      const idPart = reqId === undefined ? "" : `"req_id":${reqId},`;
      if (method === "ping") {
        send(socket, `{"method":"pong",${idPart}${tail}}`);
        return;
      }
      if (method !== "subscribe" && method !== "unsubscribe") {
        send(socket, `{"error":"Method not found",${idPart}"success":false,${tail}}`);
        return;
      }
      const channel = params.channel;
      const symbols = Array.isArray(params.symbol) ? params.symbol as string[] : [];
      const state = subs.get(socket.id);
      if (!state || (channel !== "trade" && channel !== "book")) {
        send(
          socket,
          `{"error":"Channel not supported","method":"${method}",${idPart}"success":false,${tail}}`,
        );
        return;
      }
      const depth = typeof params.depth === "number" ? params.depth : 10;
      const snapshot = params.snapshot !== false;
      for (const symbol of symbols) {
        if (!market.books.has(symbol)) {
          send(
            socket,
            `{"error":"Currency pair not supported ${symbol}","method":"${method}",${idPart}` +
              `"success":false,"symbol":${JSON.stringify(symbol)},${tail}}`,
          );
          continue;
        }
        if (channel === "book" && method === "subscribe" && bookScripts[symbol]) {
          state.book.set(symbol, depth);
          for (const frame of bookScripts[symbol]) send(socket, frame);
          continue;
        }
        const result = channel === "book"
          ? `{"channel":"book","depth":${depth},${
            method === "subscribe" ? `"snapshot":${snapshot},` : ""
          }"symbol":${JSON.stringify(symbol)}}`
          : `{"channel":"trade",${
            method === "subscribe" ? `"snapshot":${params.snapshot === true},` : ""
          }"symbol":${JSON.stringify(symbol)}}`;
        send(socket, `{"method":"${method}",${idPart}"result":${result},"success":true,${tail}}`);
        if (method === "unsubscribe") {
          if (channel === "book") state.book.delete(symbol);
          else state.trade.delete(symbol);
        } else if (channel === "trade") {
          state.trade.add(symbol);
        } else {
          state.book.set(symbol, depth);
          if (snapshot) send(socket, market.snapshotFrame(symbol, depth));
        }
      }
    },
  });

  function send(socket: FakeSocket, frame: string): void {
    if (!server.silent) socket.send(frame);
  }

  const timer = heartbeatMs > 0
    ? setInterval(() => {
      for (const socket of ws.openSockets()) {
        const state = subs.get(socket.id);
        if (state && (state.book.size > 0 || state.trade.size > 0)) send(socket, HEARTBEAT_FRAME);
      }
    }, heartbeatMs)
    : undefined;

  const stop = async () => {
    clearInterval(timer);
    await ws.stop();
  };

  const server: FakeKrakenServer = {
    ws,
    market,
    wsUrl: `${ws.url}/v2`,
    requests,
    silent: false,
    subscriptions: (socket) => subs.get(socket.id) ?? { trade: new Set(), book: new Map() },
    send(frame) {
      for (const socket of ws.openSockets()) send(socket, frame);
    },
    bookUpdate(venueSymbol, changes, opts = {}) {
      const subscribers = ws.openSockets().filter((socket) =>
        subs.get(socket.id)?.book.has(venueSymbol)
      );
      const depths = new Set(
        subscribers.map((socket) => subs.get(socket.id)!.book.get(venueSymbol)!),
      );
      if (depths.size > 1) throw new RangeError("Subscribers at several depths are not supported");
      const [depth = 10] = depths;
      const frame = market.update(venueSymbol, depth, changes, opts);
      if (frame === null) return;
      for (const socket of subscribers) send(socket, frame);
    },
    trade(venueSymbol, side, price, qty) {
      const frame = market.trade(venueSymbol, side, price, qty);
      for (const socket of ws.openSockets()) {
        if (subs.get(socket.id)?.trade.has(venueSymbol)) send(socket, frame);
      }
    },
    heartbeat() {
      server.send(HEARTBEAT_FRAME);
    },
    drop() {
      for (const socket of ws.openSockets()) socket.drop();
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
  return server;
}
