/**
 * A fake Coinbase Advanced Trade market-data venue for feed tests, on the
 * loopback {@linkcode startWsServer}: it speaks the real protocol as the
 * captured session shows it (`wss://advanced-trade-ws.coinbase.com`).
 *
 * - Clients send `{"type":"subscribe"|"unsubscribe","product_ids":[…],"channel":"…"}`;
 *   each is answered the way Coinbase does: `market_trades` with a trades
 *   snapshot, `ticker` with a ticker snapshot, `level2` with one `l2_data`
 *   snapshot frame per product, then a `subscriptions` frame listing the
 *   whole subscription. `heartbeats` start a heartbeat frame every
 *   `heartbeatMs`. An unknown channel or an unreadable request gets
 *   `{"type":"error","message":"Failure to subscribe"}`.
 * - Every frame of a connection carries `sequence_num`, one counter per
 *   connection across all channels, starting at 0 (error frames have none).
 * - The market is scripted by the test ({@linkcode FakeCoinbaseServer.updateBook},
 *   {@linkcode FakeCoinbaseServer.trade}, {@linkcode FakeCoinbaseServer.ticker});
 *   frames go to the connections subscribed to the product and channel.
 * - Controls: skip sequence numbers (a gap), garbage frames, a raw channel
 *   frame, an error message, dropping every connection, going silent, and
 *   replaying captured frames verbatim (renumbered per connection).
 *
 * @example
 * ```ts
 * import { startCoinbaseServer } from "./coinbase_server.ts";
 *
 * await using venue = await startCoinbaseServer({ products: ["BTC-USD"] });
 * venue.setBook("BTC-USD", [["100", "1"]], [["101", "2"]]);
 * venue.url; // "ws://127.0.0.1:<port>"
 * venue.updateBook("BTC-USD", [["100.5", "3"]], []); // sent to level2 subscribers
 * venue.skipSequence(); // the next frame of every connection jumps a number
 * ```
 *
 * @module
 */

import type { Level } from "../../market/events.ts";
import { compareDecimal, isZero } from "../../market/decimal.ts";
import { type FakeSocket, type FakeWsServer, startWsServer } from "./ws_server.ts";

/** Products of a fake venue when none are given. */
export const DEFAULT_FAKE_PRODUCTS: readonly string[] = ["BTC-USD", "ETH-USD"];
/** Interval of heartbeat frames, in milliseconds (Coinbase sends one a second). */
export const DEFAULT_FAKE_HEARTBEAT_MS = 1_000;
/** Trades kept per product for the `market_trades` snapshot (Coinbase sends 50). */
export const FAKE_TRADE_SNAPSHOT_SIZE = 50;

/** Channels the fake answers. */
const CHANNELS = new Set(["market_trades", "ticker", "level2", "heartbeats", "candles"]);

/** One product's book on the fake venue. */
export class FakeCoinbaseBook {
  /** Bid levels, price → size. */
  readonly bids = new Map<string, string>();
  /** Offer levels, price → size. */
  readonly asks = new Map<string, string>();

  /** Sets levels; a zero size removes one. */
  apply(bids: readonly Level[], asks: readonly Level[]): void {
    for (const [price, size] of bids) {
      isZero(size) ? this.bids.delete(price) : this.bids.set(price, size);
    }
    for (const [price, size] of asks) {
      isZero(size) ? this.asks.delete(price) : this.asks.set(price, size);
    }
  }

  /** Levels of a side, best first. */
  levels(side: "bid" | "ask"): Level[] {
    const map = side === "bid" ? this.bids : this.asks;
    const sign = side === "bid" ? -1 : 1;
    return [...map.entries()].sort((a, b) => sign * compareDecimal(a[0], b[0]));
  }
}

/** A trade for {@linkcode FakeCoinbaseServer.trade}. */
export interface FakeCoinbaseTrade {
  /** Price text, sent as is. */
  price: string;
  /** Size text, sent as is. */
  size: string;
  /** The maker's side, as Coinbase labels trades. */
  side: "BUY" | "SELL";
  /** RFC 3339 time. @default {now, with microseconds} */
  time?: string;
  /** Trade id. @default {a counter} */
  trade_id?: string;
}

/** Options of {@linkcode startCoinbaseServer}. */
export interface CoinbaseServerOptions {
  /** Products with a book. @default {DEFAULT_FAKE_PRODUCTS} */
  products?: readonly string[];
  /** Heartbeat interval, ms. @default {DEFAULT_FAKE_HEARTBEAT_MS} */
  heartbeatMs?: number;
  /**
   * Whether subscribe requests are answered (snapshots, acks, heartbeats).
   * Off for a verbatim replay of a capture, which holds its own answers.
   * @default {true}
   */
  answer?: boolean;
}

/** What the fake knows about one connection. */
interface Connection {
  readonly socket: FakeSocket;
  /** The next `sequence_num`. */
  sequence: number;
  /** Products per subscribed channel. */
  readonly subscriptions: Map<string, Set<string>>;
  /** Sends nothing while true. */
  silent: boolean;
  heartbeat: ReturnType<typeof setInterval> | undefined;
}

/** A running fake Coinbase venue. */
export interface FakeCoinbaseServer extends AsyncDisposable {
  /** `ws://127.0.0.1:<port>`: the session's `ws_url`. */
  readonly url: string;
  /** The WebSocket server underneath (connections, sockets, refuse…). */
  readonly ws: FakeWsServer;
  /** Books by product. */
  readonly books: ReadonlyMap<string, FakeCoinbaseBook>;
  /** Every request received from clients, parsed, oldest first. */
  readonly requests: ReadonlyArray<{ connection: number; request: Record<string, unknown> }>;
  /** Replaces a product's book without sending anything (the next snapshot shows it). */
  setBook(product: string, bids: readonly Level[], asks: readonly Level[]): void;
  /** Changes a book and sends the `l2_data` update to its `level2` subscribers. */
  updateBook(product: string, bids: readonly Level[], asks: readonly Level[]): void;
  /** Sends a `market_trades` update to the product's subscribers. */
  trade(product: string, trade: FakeCoinbaseTrade): void;
  /** Sends a `ticker` update with the book's best bid and ask to the product's subscribers. */
  ticker(product: string): void;
  /** Sends a frame of `channel` with `events` as given, numbered, to every open connection. */
  sendChannel(channel: string, events: unknown[]): void;
  /** Makes the next frame of every open connection skip `count` sequence numbers. */
  skipSequence(count?: number): void;
  /** Sends `text` as is (no sequence number) on every open connection. */
  garbage(text: string): void;
  /** Sends `{"type":"error","message":…}` on every open connection. */
  error(message: string): void;
  /** Cuts every open connection without a close frame. */
  drop(): void;
  /** Every open connection goes silent (heartbeats included); new connections are not. */
  silence(): void;
  /** Sends captured frames verbatim on every open connection, `sequence_num` renumbered to its counter. */
  replay(frames: readonly string[]): void;
  /** Open connections subscribed to `channel` (all its products). */
  subscribed(channel: string): number;
  /** Stops the server. */
  stop(): Promise<void>;
}

/**
 * Starts a fake Coinbase venue on a loopback port.
 */
export async function startCoinbaseServer(
  options: CoinbaseServerOptions = {},
): Promise<FakeCoinbaseServer> {
  const {
    products = DEFAULT_FAKE_PRODUCTS,
    heartbeatMs = DEFAULT_FAKE_HEARTBEAT_MS,
    answer = true,
  } = options;
  const books = new Map<string, FakeCoinbaseBook>();
  for (const product of products) books.set(product, new FakeCoinbaseBook());
  const trades = new Map<string, unknown[]>();
  const connections = new Map<FakeSocket, Connection>();
  const requests: Array<{ connection: number; request: Record<string, unknown> }> = [];
  let tradeId = 1_000_000;
  let heartbeatCounter = 40_000;

  const open = () => [...connections.values()].filter((c) => c.socket.open);

  const send = (connection: Connection, channel: string, events: unknown[]) => {
    if (connection.silent || !connection.socket.open) return;
    connection.socket.send(JSON.stringify({
      channel,
      timestamp: rfc3339Nanos(),
      sequence_num: connection.sequence++,
      events,
    }));
  };

  /** Sends a frame of `channel` to the connections subscribed to `product` on `subscription`. */
  const sendTo = (subscription: string, channel: string, product: string, events: unknown[]) => {
    for (const connection of open()) {
      if (connection.subscriptions.get(subscription)?.has(product)) {
        send(connection, channel, events);
      }
    }
  };

  const l2Snapshot = (product: string) => {
    const book = books.get(product)!;
    return {
      type: "snapshot",
      product_id: product,
      updates: l2Updates(book.levels("bid"), book.levels("ask")),
    };
  };

  const tickerOf = (product: string) => {
    const book = books.get(product);
    const [bid] = book?.levels("bid") ?? [];
    const [ask] = book?.levels("ask") ?? [];
    if (bid === undefined || ask === undefined) return null;
    return {
      type: "ticker",
      product_id: product,
      price: bid[0],
      volume_24_h: "2867.54532609",
      low_24_h: bid[0],
      high_24_h: ask[0],
      low_52_w: bid[0],
      high_52_w: ask[0],
      price_percent_chg_24_h: "0.0",
      best_bid: bid[0],
      best_bid_quantity: bid[1],
      best_ask: ask[0],
      best_ask_quantity: ask[1],
    };
  };

  const onRequest = (connection: Connection, text: string) => {
    let request: unknown;
    try {
      request = JSON.parse(text);
    } catch {
      request = null;
    }
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
      return sendError(connection, "Failure to subscribe");
    }
    const record = request as Record<string, unknown>;
    requests.push({ connection: connection.socket.id, request: record });
    if (!answer) return;
    const { type, channel, product_ids: ids } = record;
    if (
      (type !== "subscribe" && type !== "unsubscribe") || typeof channel !== "string" ||
      !CHANNELS.has(channel) || !Array.isArray(ids) || !ids.every((id) => typeof id === "string")
    ) {
      return sendError(connection, "Failure to subscribe");
    }
    const productIds = ids as string[];
    if (channel !== "heartbeats" && productIds.some((id) => !books.has(id))) {
      return sendError(connection, "Failure to subscribe");
    }
    let subscribed = connection.subscriptions.get(channel);
    if (type === "unsubscribe") {
      for (const id of productIds) subscribed?.delete(id);
      if (subscribed?.size === 0) connection.subscriptions.delete(channel);
      if (channel === "heartbeats") stopHeartbeats(connection);
    } else {
      if (!subscribed) connection.subscriptions.set(channel, subscribed = new Set());
      for (const id of productIds) subscribed.add(id);
      switch (channel) {
        case "market_trades":
          send(connection, channel, [{
            type: "snapshot",
            trades: productIds.flatMap((id) => trades.get(id) ?? []),
          }]);
          break;
        case "ticker": {
          const tickers = productIds.map(tickerOf).filter((ticker) => ticker !== null);
          send(connection, channel, [{ type: "snapshot", tickers }]);
          break;
        }
        case "level2":
          for (const id of productIds) send(connection, "l2_data", [l2Snapshot(id)]);
          break;
        case "heartbeats":
          startHeartbeats(connection);
          break;
      }
    }
    const acked: Record<string, string[]> = {};
    for (const [name, ids] of connection.subscriptions) {
      acked[name] = name === "heartbeats" ? ["heartbeats"] : [...ids];
    }
    send(connection, "subscriptions", [{ subscriptions: acked }]);
  };

  const sendError = (connection: Connection, message: string) => {
    if (!connection.silent) connection.socket.send(JSON.stringify({ type: "error", message }));
  };

  const startHeartbeats = (connection: Connection) => {
    if (connection.heartbeat !== undefined) return;
    connection.heartbeat = setInterval(() => {
      const counter = heartbeatCounter++;
      send(connection, "heartbeats", [{
        current_time: `${new Date().toISOString().replace("T", " ").replace("Z", "")} +0000 UTC`,
        heartbeat_counter: counter,
      }]);
    }, heartbeatMs);
  };

  const stopHeartbeats = (connection: Connection) => {
    clearInterval(connection.heartbeat);
    connection.heartbeat = undefined;
  };

  const ws = await startWsServer({
    onOpen: (socket) => {
      connections.set(socket, {
        socket,
        sequence: 0,
        subscriptions: new Map(),
        silent: false,
        heartbeat: undefined,
      });
    },
    onMessage: (socket, text) => {
      const connection = connections.get(socket);
      if (connection) onRequest(connection, text);
    },
    onClose: (socket) => {
      const connection = connections.get(socket);
      if (connection) stopHeartbeats(connection);
    },
  });

  const stop = async () => {
    for (const connection of connections.values()) stopHeartbeats(connection);
    await ws.stop();
  };

  return {
    url: ws.url,
    ws,
    books,
    requests,
    setBook(product, bids, asks) {
      const book = new FakeCoinbaseBook();
      book.apply(bids, asks);
      books.set(product, book);
    },
    updateBook(product, bids, asks) {
      const book = books.get(product);
      if (!book) throw new RangeError(`No book for ${product}`);
      book.apply(bids, asks);
      // Subscribed as `level2`, sent on the `l2_data` channel.
      sendTo("level2", "l2_data", product, [{
        type: "update",
        product_id: product,
        updates: l2Updates(bids, asks),
      }]);
    },
    trade(product, trade) {
      const record = {
        product_id: product,
        trade_id: trade.trade_id ?? String(tradeId++),
        price: trade.price,
        size: trade.size,
        time: trade.time ?? rfc3339Micros(),
        side: trade.side,
      };
      const recent = trades.get(product) ?? [];
      recent.unshift(record);
      trades.set(product, recent.slice(0, FAKE_TRADE_SNAPSHOT_SIZE));
      sendTo("market_trades", "market_trades", product, [{ type: "update", trades: [record] }]);
    },
    ticker(product) {
      const ticker = tickerOf(product);
      if (ticker === null) throw new RangeError(`The book of ${product} has an empty side`);
      sendTo("ticker", "ticker", product, [{ type: "update", tickers: [ticker] }]);
    },
    sendChannel(channel, events) {
      for (const connection of open()) send(connection, channel, events);
    },
    skipSequence(count = 1) {
      for (const connection of open()) connection.sequence += count;
    },
    garbage(text) {
      for (const connection of open()) if (!connection.silent) connection.socket.send(text);
    },
    error(message) {
      for (const connection of open()) sendError(connection, message);
    },
    drop() {
      for (const connection of open()) connection.socket.drop();
    },
    silence() {
      for (const connection of open()) connection.silent = true;
    },
    replay(frames) {
      for (const connection of open()) {
        for (const frame of frames) {
          if (connection.silent) break;
          connection.socket.send(
            frame.replace(/"sequence_num":\d+/, `"sequence_num":${connection.sequence++}`),
          );
        }
      }
    },
    subscribed(channel) {
      return open().filter((connection) => connection.subscriptions.has(channel)).length;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** `l2_data` update entries: bids, then offers. */
function l2Updates(bids: readonly Level[], asks: readonly Level[]): unknown[] {
  return [
    ...bids.map(([price, size]) => level("bid", price, size)),
    ...asks.map(([price, size]) => level("offer", price, size)),
  ];
}

function level(side: "bid" | "offer", price: string, size: string) {
  return { side, event_time: rfc3339Micros(), price_level: price, new_quantity: size };
}

/** Now as RFC 3339 with microseconds, as Coinbase writes trade and event times. */
function rfc3339Micros(): string {
  const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return `${iso.slice(0, 19)}.${String(us % 1_000_000).padStart(6, "0")}Z`;
}

/** Now as RFC 3339 with nanoseconds, as Coinbase writes frame timestamps. */
function rfc3339Nanos(): string {
  return rfc3339Micros().replace("Z", "000Z");
}
