/**
 * A loopback fake of Alpaca's Trading API v2 for broker tests: an order book
 * of submitted orders with Alpaca's semantics, and the `trade_updates`
 * WebSocket stream.
 *
 * REST (every request must carry the `APCA-API-KEY-ID` and
 * `APCA-API-SECRET-KEY` headers, else 401):
 * - `POST /v2/orders`: validates like Alpaca (422 with `{code, message}`);
 *   a `client_order_id` already used answers 422 "client_order_id must be
 *   unique". Market orders fill at once at the symbol's price (in
 *   {@linkcode FakeAlpacaServer.marketFillParts} executions); other orders
 *   rest until the test calls {@linkcode FakeAlpacaServer.fillOrder}.
 * - `GET /v2/orders?status=open|closed|all&limit&after&direction` pages like
 *   Alpaca: ordered by `submitted_at` (`direction`, default `desc`), only
 *   orders submitted strictly after `after` (compared as times, to the
 *   nanosecond; 422 when it is not an RFC 3339 time), at most `limit`
 *   (default 50, at most 500);
 *   `GET /v2/orders/{id}`, `GET /v2/orders:by_client_order_id?client_order_id=`
 *   (404 when unknown), `DELETE /v2/orders/{id}` (204, then a `canceled`
 *   event; 422 "order is not cancelable" once terminal).
 * - `GET /v2/positions` and `GET /v2/account` computed from the fills,
 *   `GET /v2/clock` from {@linkcode FakeAlpacaServer.clock}.
 *
 * Stream (`/stream`): `authenticate` (or the newer `auth`) → `authorization`
 * (`authorized`, or `unauthorized` and the connection is closed); `listen`
 * before that → `authorization` `unauthorized` for action `listen`; `listen`
 * → `listening`; then `trade_updates` messages (`new`, `partial_fill`,
 * `fill`, `canceled`, `expired`, `rejected`) as the documentation shows them,
 * in binary frames like Alpaca's paper stream unless
 * {@linkcode FakeAlpacaServer.binaryFrames} is false.
 *
 * Controls: fail or hang the next requests (before or after the request took
 * effect), reject the next orders, expire or reject an order from the stream,
 * drop the stream connections, refuse new ones.
 *
 * @example
 * ```ts
 * import { startAlpacaTradingServer } from "./alpaca_trading_server.ts";
 *
 * await using fake = await startAlpacaTradingServer({ prices: { AAPL: "187.5" } });
 * fake.baseUrl; // "http://127.0.0.1:<port>"
 * fake.failNext(1, { status: 500, after: true }); // the next request takes effect, then answers 500
 * ```
 *
 * @module
 */

import { Decimal, parseDecimal, toJson, ZERO } from "../../trading/money.ts";
import { type FakeSocket, startWsServer } from "./ws_server.ts";

/** Default API key id the fake accepts. */
export const FAKE_ALPACA_KEY_ID = "PKTESTKEYID0000";
/** Default API secret the fake accepts. */
export const FAKE_ALPACA_SECRET_KEY = "fake-secret-5up3r-s3cr3t";
/** Price of symbols without one. */
export const FAKE_ALPACA_DEFAULT_PRICE = "100";
/** Starting cash of the fake account. */
export const FAKE_ALPACA_CASH = "100000";

/** Options of {@linkcode startAlpacaTradingServer}. */
export interface FakeAlpacaOptions {
  /** Key id it accepts. @default {FAKE_ALPACA_KEY_ID} */
  key_id?: string;
  /** Secret it accepts. @default {FAKE_ALPACA_SECRET_KEY} */
  secret_key?: string;
  /** Market prices by Alpaca symbol (`AAPL`, `BTC/USDT`). @default {{}} (every symbol at FAKE_ALPACA_DEFAULT_PRICE) */
  prices?: Record<string, string>;
  /** Starting cash. @default {FAKE_ALPACA_CASH} */
  cash?: string;
}

/** One order in the fake's book, as Alpaca would show it. */
export interface FakeOrder {
  id: string;
  client_order_id: string;
  symbol: string;
  asset_class: "us_equity" | "crypto";
  side: "buy" | "sell";
  type: string;
  time_in_force: string;
  qty: Decimal;
  limit_price: Decimal | null;
  stop_price: Decimal | null;
  status: string;
  filled_qty: Decimal;
  filled_avg_price: Decimal | null;
  created_at: string;
  submitted_at: string;
  updated_at: string;
  filled_at: string | null;
  canceled_at: string | null;
  expired_at: string | null;
  failed_at: string | null;
  /** The raw JSON body it was submitted with. */
  body: Record<string, unknown>;
}

/** A request the fake received. */
export interface FakeRequest {
  method: string;
  /** Path and query, e.g. `/v2/orders?status=open`. */
  path: string;
  /** Parsed JSON body, or null. */
  body: unknown;
}

/** Which requests a fault applies to: `"POST /v2/orders"`, or any request when absent. */
export interface FaultOptions {
  /** `METHOD /path` prefix the request must match. @default {every request} */
  route?: string;
  /** Let the request take effect first, then fail or hang its answer. @default {false} */
  after?: boolean;
}

/** Alpaca's market clock body. */
export interface FakeClock {
  timestamp: string;
  is_open: boolean;
  next_open: string;
  next_close: string;
}

/** A running fake. */
export interface FakeAlpacaServer extends AsyncDisposable {
  /** `http://127.0.0.1:<port>`: the REST base URL. */
  readonly baseUrl: string;
  /** `ws://127.0.0.1:<port>/stream`. */
  readonly streamUrl: string;
  /** Every order, oldest first (live objects: read, don't change). */
  readonly orders: readonly FakeOrder[];
  /** Every request received (REST), in order. */
  readonly requests: readonly FakeRequest[];
  /** Stream connections accepted since the start. */
  readonly streamConnections: number;
  /** Stream connections currently listening to trade_updates. */
  listeners(): number;
  /** Every stream message received from clients, in order. */
  readonly streamReceived: readonly string[];
  /** Executions per market order (1, or 2 to fill it in two partial fills). */
  marketFillParts: number;
  /** Send trade updates as binary frames (as Alpaca's paper stream does). */
  binaryFrames: boolean;
  /** Whether fill events carry `execution_id`. */
  executionIds: boolean;
  /** What `GET /v2/clock` answers. */
  clock: FakeClock;
  /**
   * The `submitted_at` (and `created_at`) of the orders submitted next — to give
   * several orders one instant — or null for the current time. @default {null}
   */
  submittedAt: string | null;
  /** Sets a symbol's market price (Alpaca symbol). */
  setPrice(symbol: string, price: string): void;
  /** The order with this Alpaca id or client order id. */
  order(id: string): FakeOrder | undefined;
  /** Executes `qty` of an open order at `price`: a `partial_fill` or `fill` event. */
  fillOrder(id: string, qty: string, price: string): void;
  /** Expires an open order (`expired` event). */
  expireOrder(id: string): void;
  /** Rejects an open, unfilled order from the stream (`rejected` event). */
  rejectOrder(id: string): void;
  /** Answers the next `count` matching requests with `status` (default 500). */
  failNext(count: number, options?: FaultOptions & { status?: number }): void;
  /** Never answers the next `count` matching requests (until the client gives up). */
  hangNext(count: number, options?: FaultOptions): void;
  /** Refuses the next `count` new orders with `status` (default 403) and `message`. */
  rejectNextOrders(count: number, options?: { status?: number; message?: string }): void;
  /** Cuts every stream connection without a close frame. */
  dropStream(): void;
  /** Turns new stream connections away until {@linkcode FakeAlpacaServer.acceptStream}. */
  refuseStream(): void;
  /** Accepts stream connections again. */
  acceptStream(): void;
  /** Sends a raw frame to every listening connection. */
  sendRaw(data: string | Uint8Array): void;
  /** Stops the server and releases hung requests. */
  stop(): Promise<void>;
}

interface Fault {
  kind: "fail" | "hang";
  status: number;
  route: string | undefined;
  after: boolean;
  remaining: number;
}

interface Position {
  symbol: string;
  asset_class: "us_equity" | "crypto";
  qty: Decimal;
  avg_entry_price: Decimal;
}

const encoder = new TextEncoder();

/** Starts the fake on a free loopback port. */
export async function startAlpacaTradingServer(
  options: FakeAlpacaOptions = {},
): Promise<FakeAlpacaServer> {
  const keyId = options.key_id ?? FAKE_ALPACA_KEY_ID;
  const secretKey = options.secret_key ?? FAKE_ALPACA_SECRET_KEY;
  const prices = new Map(Object.entries(options.prices ?? {}));
  const orders: FakeOrder[] = [];
  const byId = new Map<string, FakeOrder>();
  const byClientId = new Map<string, FakeOrder>();
  const positions = new Map<string, Position>();
  const requests: FakeRequest[] = [];
  const streamReceived: string[] = [];
  const faults: Fault[] = [];
  const rejections: Array<{ status: number; message: string; remaining: number }> = [];
  const sessions = new Map<FakeSocket, { authorized: boolean; listening: boolean }>();
  const hung = new Set<() => void>();
  let cash = parseDecimal(options.cash ?? FAKE_ALPACA_CASH);
  let stopping = false;

  const now = () => new Date().toISOString();
  const priceOf = (symbol: string) => parseDecimal(prices.get(symbol) ?? FAKE_ALPACA_DEFAULT_PRICE);

  const orderJson = (order: FakeOrder) => ({
    id: order.id,
    client_order_id: order.client_order_id,
    created_at: order.created_at,
    updated_at: order.updated_at,
    submitted_at: order.submitted_at,
    filled_at: order.filled_at,
    expired_at: order.expired_at,
    canceled_at: order.canceled_at,
    failed_at: order.failed_at,
    replaced_at: null,
    replaced_by: null,
    replaces: null,
    asset_id: crypto.randomUUID(),
    symbol: order.symbol,
    asset_class: order.asset_class,
    notional: null,
    qty: toJson(order.qty),
    filled_qty: toJson(order.filled_qty),
    filled_avg_price: order.filled_avg_price === null ? null : toJson(order.filled_avg_price),
    order_class: "",
    order_type: order.type,
    type: order.type,
    side: order.side,
    time_in_force: order.time_in_force,
    limit_price: order.limit_price === null ? null : toJson(order.limit_price),
    stop_price: order.stop_price === null ? null : toJson(order.stop_price),
    status: order.status,
    extended_hours: false,
    legs: null,
    trail_percent: null,
    trail_price: null,
    hwm: null,
  });

  const error = (status: number, code: number, message: string) =>
    Response.json({ code, message }, { status });

  const publish = (event: string, order: FakeOrder, extra: Record<string, unknown> = {}) => {
    const message = JSON.stringify({
      stream: "trade_updates",
      data: { event, ...extra, timestamp: extra.timestamp ?? now(), order: orderJson(order) },
    });
    const frame = server.binaryFrames ? encoder.encode(message) : message;
    for (const [socket, session] of sessions) {
      if (session.listening) socket.send(frame);
    }
  };

  const isOpen = (order: FakeOrder) =>
    !["filled", "canceled", "expired", "rejected", "replaced"].includes(order.status);

  const execute = (order: FakeOrder, qty: Decimal, price: Decimal) => {
    if (!isOpen(order)) throw new Error(`Fake Alpaca order ${order.id} is ${order.status}`);
    const remaining = order.qty.minus(order.filled_qty);
    if (!qty.gt(0) || qty.gt(remaining)) {
      throw new RangeError(`Fake Alpaca fill of ${toJson(qty)} exceeds ${toJson(remaining)} left`);
    }
    const filled = order.filled_qty.plus(qty);
    const notional = (order.filled_avg_price ?? ZERO).times(order.filled_qty).plus(
      qty.times(price),
    );
    order.filled_qty = filled;
    order.filled_avg_price = notional.dividedBy(filled);
    const done = filled.eq(order.qty);
    order.status = done ? "filled" : "partially_filled";
    order.updated_at = now();
    if (done) order.filled_at = order.updated_at;
    // Position and cash.
    const signed = order.side === "buy" ? qty : qty.negated();
    cash = cash.minus(signed.times(price));
    const key = order.symbol;
    const position = positions.get(key) ??
      { symbol: key, asset_class: order.asset_class, qty: ZERO, avg_entry_price: ZERO };
    const next = position.qty.plus(signed);
    if (position.qty.isZero() || position.qty.isNegative() === signed.isNegative()) {
      position.avg_entry_price = position.avg_entry_price.times(position.qty.abs())
        .plus(price.times(qty)).dividedBy(next.abs());
    } else if (!next.isZero() && next.isNegative() !== position.qty.isNegative()) {
      position.avg_entry_price = price; // Flipped through zero.
    }
    position.qty = next;
    if (next.isZero()) positions.delete(key);
    else positions.set(key, position);
    publish(done ? "fill" : "partial_fill", order, {
      ...(server.executionIds ? { execution_id: crypto.randomUUID() } : {}),
      price: toJson(price),
      qty: toJson(qty),
      position_qty: toJson(next),
      timestamp: order.updated_at,
    });
  };

  const find = (id: string) => byId.get(id) ?? byClientId.get(id);
  const must = (id: string) => {
    const order = find(id);
    if (!order) throw new Error(`Fake Alpaca has no order ${id}`);
    return order;
  };

  const validate = (body: Record<string, unknown>): string | null => {
    if (typeof body.symbol !== "string" || body.symbol === "") return "symbol is required";
    if (body.qty === undefined) return "qty is required";
    if (!["buy", "sell"].includes(String(body.side))) return "invalid side";
    if (!["market", "limit", "stop", "stop_limit"].includes(String(body.type))) {
      return "invalid order type";
    }
    if (!["day", "gtc", "opg", "cls", "ioc", "fok"].includes(String(body.time_in_force))) {
      return "invalid time_in_force";
    }
    for (const field of ["qty", "limit_price", "stop_price"]) {
      const value = body[field];
      if (value === undefined || value === null) continue;
      if (typeof value !== "string" && typeof value !== "number") return `invalid ${field}`;
      try {
        if (!parseDecimal(value).gt(0)) return `${field} must be > 0`;
      } catch {
        return `invalid ${field}`;
      }
    }
    if ((body.type === "limit" || body.type === "stop_limit") && body.limit_price == null) {
      return "limit_price is required";
    }
    if ((body.type === "stop" || body.type === "stop_limit") && body.stop_price == null) {
      return "stop_price is required";
    }
    if (body.client_order_id !== undefined && typeof body.client_order_id !== "string") {
      return "invalid client_order_id";
    }
    if (typeof body.client_order_id === "string" && body.client_order_id.length > 128) {
      return "client_order_id must be no more than 128 characters";
    }
    return null;
  };

  const submit = (body: Record<string, unknown>): Response => {
    const invalid = validate(body);
    if (invalid !== null) return error(422, 40010001, invalid);
    const clientOrderId = typeof body.client_order_id === "string"
      ? body.client_order_id
      : crypto.randomUUID();
    if (byClientId.has(clientOrderId)) {
      return error(422, 40010001, "client_order_id must be unique");
    }
    const rejection = rejections[0];
    if (rejection) {
      if (--rejection.remaining <= 0) rejections.shift();
      return error(rejection.status, 40310000, rejection.message);
    }
    const at = now();
    const submittedAt = server.submittedAt ?? at;
    const symbol = String(body.symbol);
    const order: FakeOrder = {
      id: crypto.randomUUID(),
      client_order_id: clientOrderId,
      symbol,
      asset_class: symbol.includes("/") ? "crypto" : "us_equity",
      side: body.side === "sell" ? "sell" : "buy",
      type: String(body.type),
      time_in_force: String(body.time_in_force),
      qty: parseDecimal(body.qty as string),
      limit_price: body.limit_price == null ? null : parseDecimal(body.limit_price as string),
      stop_price: body.stop_price == null ? null : parseDecimal(body.stop_price as string),
      status: "accepted",
      filled_qty: ZERO,
      filled_avg_price: null,
      created_at: submittedAt,
      submitted_at: submittedAt,
      updated_at: at,
      filled_at: null,
      canceled_at: null,
      expired_at: null,
      failed_at: null,
      body,
    };
    orders.push(order);
    byId.set(order.id, order);
    byClientId.set(clientOrderId, order);
    const response = Response.json(orderJson(order));
    // Alpaca routes the order after answering: `new`, then (market orders) the executions.
    queueMicrotask(() => {
      if (stopping) return;
      order.status = "new";
      publish("new", order);
      if (order.type !== "market") return;
      const price = priceOf(order.symbol);
      const parts = Math.max(1, Math.floor(server.marketFillParts));
      let left = order.qty;
      for (let part = parts; part > 1; part--) {
        const qty = left.dividedBy(part).toDecimalPlaces(
          order.qty.decimalPlaces(),
          Decimal.ROUND_DOWN,
        );
        if (!qty.gt(0)) continue;
        execute(order, qty, price);
        left = left.minus(qty);
      }
      execute(order, left, price);
    });
    return response;
  };

  const cancel = (id: string): Response => {
    const order = byId.get(id);
    if (!order) return error(404, 40410000, "order not found");
    if (!isOpen(order)) return error(422, 42210000, "order is not cancelable");
    order.status = "canceled";
    order.canceled_at = order.updated_at = now();
    queueMicrotask(() => publish("canceled", order));
    return new Response(null, { status: 204 });
  };

  const listOrders = (url: URL): Response => {
    const status = url.searchParams.get("status") ?? "open";
    const limit = Math.min(500, Number(url.searchParams.get("limit") ?? "50"));
    const afterText = url.searchParams.get("after");
    const after = afterText === null ? null : timestampNs(afterText);
    if (afterText !== null && after === null) {
      return error(422, 40010001, `invalid after: ${afterText}`);
    }
    const direction = url.searchParams.get("direction") ?? "desc";
    // Oldest submission first; `orders` is in submission order, which breaks ties (a stable sort).
    let list = orders
      .filter((order) => status === "all" || (status === "open" ? isOpen(order) : !isOpen(order)))
      .map((order) => ({ order, at: timestampNs(order.submitted_at) ?? 0n }))
      .filter((entry) => after === null || entry.at > after)
      .sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : 0));
    if (direction === "desc") list = list.reverse();
    return Response.json(list.slice(0, limit).map((entry) => orderJson(entry.order)));
  };

  const positionJson = (position: Position) => {
    const price = priceOf(position.symbol);
    const marketValue = position.qty.times(price);
    const costBasis = position.qty.times(position.avg_entry_price);
    return {
      asset_id: crypto.randomUUID(),
      symbol: position.symbol.replace("/", ""), // Alpaca lists crypto positions as BTCUSD.
      exchange: position.asset_class === "crypto" ? "CRYPTO" : "NASDAQ",
      asset_class: position.asset_class,
      avg_entry_price: toJson(position.avg_entry_price),
      qty: toJson(position.qty),
      qty_available: toJson(position.qty),
      side: position.qty.isNegative() ? "short" : "long",
      market_value: toJson(marketValue),
      cost_basis: toJson(costBasis),
      unrealized_pl: toJson(marketValue.minus(costBasis)),
      current_price: toJson(price),
    };
  };

  const accountJson = () => {
    let long = ZERO;
    let short = ZERO;
    for (const position of positions.values()) {
      const value = position.qty.times(priceOf(position.symbol));
      if (value.isNegative()) short = short.plus(value);
      else long = long.plus(value);
    }
    const equity = cash.plus(long).plus(short);
    return {
      id: "e6fe16f3-64a4-4921-8928-cadf02f92f98",
      account_number: "PA0000FAKE",
      status: "ACTIVE",
      currency: "USD",
      cash: toJson(cash),
      equity: toJson(equity),
      portfolio_value: toJson(equity),
      buying_power: toJson(cash.gt(0) ? cash : ZERO),
      long_market_value: toJson(long),
      short_market_value: toJson(short),
      trading_blocked: false,
      account_blocked: false,
      pattern_day_trader: false,
    };
  };

  const route = async (request: Request, url: URL, body: unknown): Promise<Response> => {
    const path = url.pathname;
    const method = request.method;
    if (method === "POST" && path === "/v2/orders") {
      if (body === null || typeof body !== "object" || Array.isArray(body)) {
        return error(400, 40010000, "request body format is invalid");
      }
      return submit(body as Record<string, unknown>);
    }
    if (method === "GET" && path === "/v2/orders") return listOrders(url);
    if (method === "GET" && path === "/v2/orders:by_client_order_id") {
      const order = byClientId.get(url.searchParams.get("client_order_id") ?? "");
      return order ? Response.json(orderJson(order)) : error(404, 40410000, "order not found");
    }
    const single = /^\/v2\/orders\/([^/]+)$/.exec(path);
    if (single) {
      const id = decodeURIComponent(single[1]!);
      if (method === "DELETE") return cancel(id);
      if (method === "GET") {
        const order = byId.get(id);
        return order ? Response.json(orderJson(order)) : error(404, 40410000, "order not found");
      }
    }
    if (method === "GET" && path === "/v2/positions") {
      return Response.json([...positions.values()].map(positionJson));
    }
    if (method === "GET" && path === "/v2/account") return Response.json(accountJson());
    if (method === "GET" && path === "/v2/clock") return Response.json(server.clock);
    await Promise.resolve();
    return error(404, 40410000, "endpoint not found");
  };

  const takeFault = (method: string, path: string): Fault | null => {
    const fault = faults.find((f) =>
      f.route === undefined || `${method} ${path}`.startsWith(f.route)
    );
    if (!fault) return null;
    if (--fault.remaining <= 0) faults.splice(faults.indexOf(fault), 1);
    return fault;
  };

  /** An answer that never comes: the client times out; {@linkcode FakeAlpacaServer.stop} releases it. */
  const hang = (): Promise<Response> =>
    new Promise((resolve) => {
      const release = () => {
        hung.delete(release);
        resolve(new Response(null, { status: 503 }));
      };
      hung.add(release);
    });

  const http = async (request: Request): Promise<Response> => {
    const url = new URL(request.url);
    const text = await request.text();
    let body: unknown = null;
    if (text !== "") {
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
    }
    requests.push({ method: request.method, path: url.pathname + url.search, body });
    if (
      request.headers.get("apca-api-key-id") !== keyId ||
      request.headers.get("apca-api-secret-key") !== secretKey
    ) {
      return error(401, 40110000, "request is not authorized");
    }
    const fault = takeFault(request.method, url.pathname);
    if (fault && !fault.after) {
      return fault.kind === "hang"
        ? await hang()
        : error(fault.status, 50010000, "internal server error");
    }
    const response = await route(request, url, body);
    if (fault) {
      await response.body?.cancel();
      return fault.kind === "hang"
        ? await hang()
        : error(fault.status, 50010000, "internal server error");
    }
    return response;
  };

  const onMessage = (socket: FakeSocket, text: string) => {
    streamReceived.push(text);
    const session = sessions.get(socket);
    if (!session) return;
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const send = (value: unknown) => {
      const json = JSON.stringify(value);
      socket.send(server.binaryFrames ? encoder.encode(json) : json);
    };
    const data = (message.data ?? {}) as Record<string, unknown>;
    if (message.action === "authenticate" || message.action === "auth") {
      const key = message.action === "auth" ? message.key : data.key_id;
      const secret = message.action === "auth" ? message.secret : data.secret_key;
      session.authorized = key === keyId && secret === secretKey;
      send({
        stream: "authorization",
        data: {
          status: session.authorized ? "authorized" : "unauthorized",
          action: message.action,
        },
      });
      if (!session.authorized) socket.close(1000, "unauthorized");
      return;
    }
    if (message.action === "listen") {
      if (!session.authorized) {
        send({ stream: "authorization", data: { status: "unauthorized", action: "listen" } });
        return;
      }
      const wanted = Array.isArray(data.streams) ? data.streams : [];
      const streams = wanted.filter((stream) => stream === "trade_updates");
      session.listening = streams.length > 0;
      send({ stream: "listening", data: { streams } });
    }
  };

  const ws = await startWsServer({
    http,
    onOpen: (socket) => sessions.set(socket, { authorized: false, listening: false }),
    onMessage,
    onClose: (socket) => sessions.delete(socket),
  });

  const server: FakeAlpacaServer = {
    baseUrl: ws.httpUrl,
    streamUrl: `${ws.url}/stream`,
    orders,
    requests,
    streamReceived,
    get streamConnections() {
      return ws.connections;
    },
    listeners: () => [...sessions.values()].filter((session) => session.listening).length,
    marketFillParts: 1,
    binaryFrames: true,
    executionIds: true,
    submittedAt: null,
    clock: {
      timestamp: "2022-04-28T14:07:04.451420928-04:00",
      is_open: true,
      next_open: "2022-04-29T09:30:00-04:00",
      next_close: "2022-04-28T16:00:00-04:00",
    },
    setPrice: (symbol, price) => void prices.set(symbol, price),
    order: find,
    fillOrder: (id, qty, price) => execute(must(id), parseDecimal(qty), parseDecimal(price)),
    expireOrder(id) {
      const order = must(id);
      if (!isOpen(order)) throw new Error(`Fake Alpaca order ${id} is ${order.status}`);
      order.status = "expired";
      order.expired_at = order.updated_at = now();
      publish("expired", order);
    },
    rejectOrder(id) {
      const order = must(id);
      if (!isOpen(order) || order.filled_qty.gt(0)) {
        throw new Error(`Fake Alpaca order ${id} cannot be rejected now`);
      }
      order.status = "rejected";
      order.failed_at = order.updated_at = now();
      publish("rejected", order);
    },
    failNext(count, faultOptions = {}) {
      faults.push({
        kind: "fail",
        status: faultOptions.status ?? 500,
        route: faultOptions.route,
        after: faultOptions.after ?? false,
        remaining: count,
      });
    },
    hangNext(count, faultOptions = {}) {
      faults.push({
        kind: "hang",
        status: 0,
        route: faultOptions.route,
        after: faultOptions.after ?? false,
        remaining: count,
      });
    },
    rejectNextOrders(count, rejectOptions = {}) {
      rejections.push({
        status: rejectOptions.status ?? 403,
        message: rejectOptions.message ?? "insufficient buying power",
        remaining: count,
      });
    },
    dropStream() {
      for (const socket of ws.openSockets()) {
        sessions.delete(socket);
        socket.drop();
      }
    },
    refuseStream: () => ws.refuse(),
    acceptStream: () => ws.accept(),
    sendRaw(data) {
      for (const [socket, session] of sessions) if (session.listening) socket.send(data);
    },
    async stop() {
      stopping = true;
      for (const release of [...hung]) release();
      await ws.stop();
    },
    [Symbol.asyncDispose]() {
      return server.stop();
    },
  };
  return server;
}

const TIMESTAMP = /^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/i;

/** Nanoseconds since the epoch of an RFC 3339 time, or null when it is not one. */
function timestampNs(text: string): bigint | null {
  const match = TIMESTAMP.exec(text);
  if (!match) return null;
  const secondMs = Date.parse(`${match[1]}${match[3]}`);
  if (!Number.isFinite(secondMs)) return null;
  return BigInt(secondMs) * 1_000_000n + BigInt((match[2] ?? "").padEnd(9, "0"));
}
