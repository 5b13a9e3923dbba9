/**
 * A fake Alpaca market data v2 stock stream for feed tests, on the loopback
 * {@linkcode startWsServer}, speaking the protocol of Alpaca's documentation
 * (`wss://stream.data.alpaca.markets/v2/{feed}`):
 *
 * 1. On connect: `[{"T":"success","msg":"connected"}]`; a client that does not
 *    authenticate within `authTimeoutMs` gets `404 auth timeout` and is closed.
 * 2. `{"action":"auth","key":…,"secret":…}`: the configured credentials give
 *    `[{"T":"success","msg":"authenticated"}]`; others `402 auth failed`;
 *    a key already authenticated on `connectionLimit` other connections
 *    `406 connection limit exceeded`; a second auth `403 already authenticated`.
 *    After 402 and 406 the server closes the connection.
 * 3. `{"action":"subscribe"|"unsubscribe",…}` before auth: `401 not
 *    authenticated`; after: the whole subscription as a `subscription`
 *    message (corrections and cancel/errors follow trades). Anything else:
 *    `400 invalid syntax`.
 * 4. Data (`t`, `q`, `b` messages the test scripts) go, one JSON array a
 *    frame, to the authenticated connections subscribed to the symbol. Prices
 *    and sizes are written as the number text given, so exact decimals can be
 *    checked.
 *
 * Controls: any error message, garbage frames, dropping every connection,
 * going silent.
 *
 * @example
 * ```ts
 * import { startAlpacaServer } from "./alpaca_server.ts";
 *
 * await using venue = await startAlpacaServer({ keyId: "KEY", secretKey: "SECRET" });
 * venue.url; // "ws://127.0.0.1:<port>/v2": the session's ws_url
 * venue.trade("AAPL", { price: "126.50", size: "100" });
 * ```
 *
 * @module
 */

import { type FakeSocket, type FakeWsServer, startWsServer } from "./ws_server.ts";

/** Alpaca's time limit for authenticating after connecting, in milliseconds. */
export const DEFAULT_FAKE_AUTH_TIMEOUT_MS = 10_000;

/** Options of {@linkcode startAlpacaServer}. */
export interface AlpacaServerOptions {
  /** The key id the server accepts. */
  keyId: string;
  /** The secret the server accepts. */
  secretKey: string;
  /** Feeds served, as paths `/v2/<feed>`. @default {["iex"]} */
  feeds?: readonly string[];
  /** Time to authenticate, ms. @default {DEFAULT_FAKE_AUTH_TIMEOUT_MS} */
  authTimeoutMs?: number;
  /** Authenticated connections allowed per key at once. @default {1} */
  connectionLimit?: number;
}

/** A trade for {@linkcode FakeAlpacaServer.trade}; numbers are JSON number text. */
export interface FakeAlpacaTrade {
  /** Price, e.g. `"126.50"`. */
  price: string;
  /** Size, e.g. `"100"` or `"1e2"`. */
  size: string;
  /** Trade id. @default {a counter} */
  id?: string;
  /** Exchange code. @default {"V"} (IEX) */
  exchange?: string;
  /** RFC 3339 time. @default {now} */
  time?: string;
}

/** A quote for {@linkcode FakeAlpacaServer.quote}; numbers are JSON number text. */
export interface FakeAlpacaQuote {
  /** Bid price. */
  bidPrice: string;
  /** Bid size. */
  bidSize: string;
  /** Ask price. */
  askPrice: string;
  /** Ask size. */
  askSize: string;
  /** RFC 3339 time. @default {now} */
  time?: string;
}

/** A minute bar for {@linkcode FakeAlpacaServer.bar}; numbers are JSON number text. */
export interface FakeAlpacaBar {
  /** Open. */
  open: string;
  /** High. */
  high: string;
  /** Low. */
  low: string;
  /** Close. */
  close: string;
  /** Volume. */
  volume: string;
  /** Bar start, RFC 3339. */
  time: string;
  /** Trades in the bar. */
  trades?: string;
  /** Volume-weighted average price. */
  vwap?: string;
}

/** Data channels the fake streams. */
type DataChannel = "trades" | "quotes" | "bars";
const SUBSCRIPTION_LISTS = [
  "trades",
  "quotes",
  "bars",
  "updatedBars",
  "dailyBars",
  "statuses",
  "lulds",
] as const;

/** What the fake knows about one connection. */
interface Connection {
  readonly socket: FakeSocket;
  /** The key it authenticated with, or null. */
  key: string | null;
  readonly subscriptions: Map<string, Set<string>>;
  silent: boolean;
  authTimer: ReturnType<typeof setTimeout> | undefined;
}

/** A running fake Alpaca stream. */
export interface FakeAlpacaServer extends AsyncDisposable {
  /** `ws://127.0.0.1:<port>/v2`: the session's `ws_url` (the feed is appended). */
  readonly url: string;
  /** The WebSocket server underneath (connections, sockets…). */
  readonly ws: FakeWsServer;
  /** When each connection opened (ms since the epoch), oldest first. */
  readonly openedAt: readonly number[];
  /** Every error the server sent, as `[code, msg]`, oldest first. */
  readonly errorsSent: ReadonlyArray<[number, string]>;
  /** Open connections that are authenticated. */
  authenticated(): number;
  /** The symbols `socket` is subscribed to on `channel`. */
  subscribed(socket: FakeSocket, channel: DataChannel): string[];
  /** Sends a trade of `symbol` to its subscribers. */
  trade(symbol: string, trade: FakeAlpacaTrade): void;
  /** Sends a quote of `symbol` to its subscribers. */
  quote(symbol: string, quote: FakeAlpacaQuote): void;
  /** Sends a minute bar of `symbol` to its subscribers. */
  bar(symbol: string, bar: FakeAlpacaBar): void;
  /** Sends `text` as is to every open authenticated connection. */
  raw(text: string): void;
  /** Sends `[{"T":"error","code":…,"msg":…}]` to every open connection. */
  error(code: number, msg: string): void;
  /** Sends `text` as is to every open connection. */
  garbage(text: string): void;
  /** Cuts every open connection without a close frame. */
  drop(): void;
  /** Every open connection goes silent; new connections are not. */
  silence(): void;
  /** Stops the server. */
  stop(): Promise<void>;
}

/** Starts a fake Alpaca stream on a loopback port. */
export async function startAlpacaServer(options: AlpacaServerOptions): Promise<FakeAlpacaServer> {
  const {
    keyId,
    secretKey,
    feeds = ["iex"],
    authTimeoutMs = DEFAULT_FAKE_AUTH_TIMEOUT_MS,
    connectionLimit = 1,
  } = options;
  const paths = new Set(feeds.map((feed) => `/v2/${feed}`));
  const connections = new Map<FakeSocket, Connection>();
  const openedAt: number[] = [];
  const errorsSent: Array<[number, string]> = [];
  let tradeId = 1_000;

  const open = () => [...connections.values()].filter((c) => c.socket.open);

  const send = (connection: Connection, text: string) => {
    if (!connection.silent) connection.socket.send(text);
  };

  const sendError = (connection: Connection, code: number, msg: string) => {
    errorsSent.push([code, msg]);
    send(connection, JSON.stringify([{ T: "error", code, msg }]));
  };

  const refuse = (connection: Connection, code: number, msg: string) => {
    sendError(connection, code, msg);
    clearTimeout(connection.authTimer);
    connection.socket.close(1008, msg);
  };

  const onAuth = (connection: Connection, request: Record<string, unknown>) => {
    if (connection.key !== null) return sendError(connection, 403, "already authenticated");
    if (request.key !== keyId || request.secret !== secretKey) {
      return refuse(connection, 402, "auth failed");
    }
    const holding = open().filter((other) => other.key === keyId).length;
    if (holding >= connectionLimit) return refuse(connection, 406, "connection limit exceeded");
    clearTimeout(connection.authTimer);
    connection.key = keyId;
    send(connection, '[{"T":"success","msg":"authenticated"}]');
  };

  const onSubscribe = (connection: Connection, request: Record<string, unknown>) => {
    if (connection.key === null) return sendError(connection, 401, "not authenticated");
    const subscribing = request.action === "subscribe";
    for (const list of SUBSCRIPTION_LISTS) {
      const symbols = request[list];
      if (symbols === undefined) continue;
      if (!Array.isArray(symbols) || !symbols.every((symbol) => typeof symbol === "string")) {
        return sendError(connection, 400, "invalid syntax");
      }
      let set = connection.subscriptions.get(list);
      if (!set) connection.subscriptions.set(list, set = new Set());
      for (const symbol of symbols as string[]) subscribing ? set.add(symbol) : set.delete(symbol);
    }
    const ack: Record<string, unknown> = { T: "subscription" };
    for (const list of SUBSCRIPTION_LISTS) {
      ack[list] = [...connection.subscriptions.get(list) ?? []];
    }
    ack.corrections = ack.trades;
    ack.cancelErrors = ack.trades;
    send(connection, JSON.stringify([ack]));
  };

  const onMessage = (connection: Connection, text: string) => {
    let request: unknown;
    try {
      request = JSON.parse(text);
    } catch {
      return sendError(connection, 400, "invalid syntax");
    }
    if (typeof request !== "object" || request === null || Array.isArray(request)) {
      return sendError(connection, 400, "invalid syntax");
    }
    const record = request as Record<string, unknown>;
    switch (record.action) {
      case "auth":
        return onAuth(connection, record);
      case "subscribe":
      case "unsubscribe":
        return onSubscribe(connection, record);
      default:
        return sendError(connection, 400, "invalid syntax");
    }
  };

  /** Sends one data message to the connections subscribed to `symbol` on `channel`. */
  const publish = (channel: DataChannel, symbol: string, message: string) => {
    for (const connection of open()) {
      const set = connection.subscriptions.get(channel);
      if (connection.key !== null && (set?.has(symbol) || set?.has("*"))) {
        send(connection, `[${message}]`);
      }
    }
  };

  const ws = await startWsServer({
    onOpen: (socket) => {
      openedAt.push(Date.now());
      const connection: Connection = {
        socket,
        key: null,
        subscriptions: new Map(),
        silent: false,
        authTimer: undefined,
      };
      connections.set(socket, connection);
      if (!paths.has(socket.path)) {
        socket.close(1008, "unknown feed");
        return;
      }
      send(connection, '[{"T":"success","msg":"connected"}]');
      connection.authTimer = setTimeout(() => {
        if (connection.key === null) refuse(connection, 404, "auth timeout");
      }, authTimeoutMs);
    },
    onMessage: (socket, text) => {
      const connection = connections.get(socket);
      if (connection) onMessage(connection, text);
    },
    onClose: (socket) => clearTimeout(connections.get(socket)?.authTimer),
  });

  const stop = async () => {
    for (const connection of connections.values()) clearTimeout(connection.authTimer);
    await ws.stop();
  };

  return {
    url: `${ws.url}/v2`,
    ws,
    openedAt,
    errorsSent,
    authenticated: () => open().filter((connection) => connection.key !== null).length,
    subscribed: (socket, channel) => [...connections.get(socket)?.subscriptions.get(channel) ?? []],
    trade(symbol, trade) {
      publish(
        "trades",
        symbol,
        `{"T":"t","S":${JSON.stringify(symbol)},"i":${number(trade.id ?? String(tradeId++))},` +
          `"x":${JSON.stringify(trade.exchange ?? "V")},"p":${number(trade.price)},` +
          `"s":${number(trade.size)},"c":["@"],"t":${JSON.stringify(trade.time ?? now())},"z":"C"}`,
      );
    },
    quote(symbol, quote) {
      publish(
        "quotes",
        symbol,
        `{"T":"q","S":${JSON.stringify(symbol)},"bx":"V","bp":${number(quote.bidPrice)},` +
          `"bs":${number(quote.bidSize)},"ax":"V","ap":${number(quote.askPrice)},` +
          `"as":${number(quote.askSize)},"c":["R"],"z":"C","t":${
            JSON.stringify(quote.time ?? now())
          }}`,
      );
    },
    bar(symbol, bar) {
      const extra = (bar.trades !== undefined ? `,"n":${number(bar.trades)}` : "") +
        (bar.vwap !== undefined ? `,"vw":${number(bar.vwap)}` : "");
      publish(
        "bars",
        symbol,
        `{"T":"b","S":${JSON.stringify(symbol)},"o":${number(bar.open)},"h":${number(bar.high)},` +
          `"l":${number(bar.low)},"c":${number(bar.close)},"v":${number(bar.volume)},` +
          `"t":${JSON.stringify(bar.time)}${extra}}`,
      );
    },
    raw(text) {
      for (const connection of open()) if (connection.key !== null) send(connection, text);
    },
    error(code, msg) {
      for (const connection of open()) sendError(connection, code, msg);
    },
    garbage(text) {
      for (const connection of open()) send(connection, text);
    },
    drop() {
      for (const connection of open()) connection.socket.drop();
    },
    silence() {
      for (const connection of open()) connection.silent = true;
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** `text` when it is a JSON number token; throws a `TypeError` otherwise. */
function number(text: string): string {
  if (!/^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/.test(text)) {
    throw new TypeError(`Not a JSON number: ${JSON.stringify(text)}`);
  }
  return text;
}

/** Now as RFC 3339 with nanoseconds, as Alpaca writes quote times. */
function now(): string {
  const us = Math.round((performance.timeOrigin + performance.now()) * 1000);
  const iso = new Date(Math.floor(us / 1000)).toISOString();
  return `${iso.slice(0, 19)}.${String(us % 1_000_000).padStart(6, "0")}000Z`;
}
