import assert from "node:assert/strict";
import {
  AlpacaAuthError,
  type AlpacaBroker,
  alpacaBroker,
  type AlpacaBrokerOptions,
  alpacaOrderBody,
  alpacaOrderStatus,
  alpacaRefusals,
  alpacaStreamUrl,
  fromAlpacaSymbol,
  parseAlpacaAccount,
  parseAlpacaClock,
  parseAlpacaOrder,
  parseAlpacaPosition,
  parseTimestampMs,
  toAlpacaSymbol,
  toBrokerOrderState,
  tradeUpdateEvent,
} from "../brokers/alpaca.ts";
import {
  type BrokerEvent,
  type BrokerOrderRequest,
  BrokerRejectedError,
  BrokerUnavailableError,
  DEFAULT_STREAM_DOWN_GRACE_MS,
  streamProblem,
} from "../brokers/broker.ts";
import { type Clock, systemClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import { parseDecimal, toJson } from "../trading/money.ts";
import { waitFor } from "./_helpers.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  type FakeAlpacaOptions,
  type FakeAlpacaServer,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";
import { type FakeSocket, type FakeWsServer, startWsServer } from "./fakes/ws_server.ts";

const FIXTURES = new URL("../../shared/fixtures/alpaca/", import.meta.url);

async function fixtureLines(name: string): Promise<unknown[]> {
  const text = await Deno.readTextFile(new URL(name, FIXTURES));
  return text.split("\n").filter((line) => line.trim() !== "").map((line) => JSON.parse(line));
}

function orderRequest(overrides: Partial<BrokerOrderRequest> = {}): BrokerOrderRequest {
  return {
    client_order_id: `tw-${crypto.randomUUID()}`,
    symbol: "AAPL",
    side: "buy",
    type: "market",
    time_in_force: "day",
    qty: parseDecimal("10"),
    limit_price: null,
    stop_price: null,
    exchange: null,
    ...overrides,
  };
}

interface Setup extends AsyncDisposable {
  fake: FakeAlpacaServer;
  broker: AlpacaBroker;
  events: BrokerEvent[];
  lines: Array<Record<string, unknown>>;
  /** A second broker on the same fake (no cached ids). */
  another(options?: Partial<AlpacaBrokerOptions>): AlpacaBroker;
}

async function setup(
  options: Partial<AlpacaBrokerOptions> = {},
  fakeOptions: FakeAlpacaOptions = {},
): Promise<Setup> {
  const fake = await startAlpacaTradingServer(fakeOptions);
  const { log, lines } = memoryLogger("debug");
  const extra: AlpacaBroker[] = [];
  const make = (more: Partial<AlpacaBrokerOptions>) =>
    alpacaBroker({
      base_url: fake.baseUrl,
      key_id: FAKE_ALPACA_KEY_ID,
      secret_key: FAKE_ALPACA_SECRET_KEY,
      request_timeout_ms: 2_000,
      handshake_timeout_ms: 2_000,
      reconnect_initial_ms: 20,
      reconnect_max_ms: 100,
      ...options,
      ...more,
    }, { log });
  const broker = make({});
  const events: BrokerEvent[] = [];
  broker.onEvent((event) => void events.push(event));
  return {
    fake,
    broker,
    events,
    lines,
    another(more = {}) {
      const created = make(more);
      extra.push(created);
      return created;
    },
    async [Symbol.asyncDispose]() {
      for (const other of extra) await other[Symbol.asyncDispose]();
      await broker[Symbol.asyncDispose]();
      await fake.stop();
    },
  };
}

function assertNoSecrets(lines: Array<Record<string, unknown>>, ...secrets: string[]): void {
  const text = JSON.stringify(lines);
  for (const secret of secrets) assert.ok(!text.includes(secret), `a log line holds ${secret}`);
}

function fillsOf(events: BrokerEvent[], clientOrderId: string) {
  return events.filter((event): event is Extract<BrokerEvent, { type: "fill" }> =>
    event.type === "fill" && event.client_order_id === clientOrderId
  );
}

function started(s: Setup): Promise<void> {
  return s.broker.start(AbortSignal.timeout(60_000));
}

// ---- Pure mapping ----

Deno.test("alpaca symbols: crypto pairs take a slash both ways, stocks stay", () => {
  assert.equal(toAlpacaSymbol("BTC-USDT"), "BTC/USDT");
  assert.equal(toAlpacaSymbol("AAPL"), "AAPL");
  assert.equal(toAlpacaSymbol("BRK.B"), "BRK.B");
  assert.equal(fromAlpacaSymbol("BTC/USDT"), "BTC-USDT");
  assert.equal(fromAlpacaSymbol("SOLUSD", "crypto"), "SOL-USD");
  assert.equal(fromAlpacaSymbol("BTCUSDT", "crypto"), "BTC-USDT");
  assert.equal(fromAlpacaSymbol("ETHBTC", "crypto"), "ETH-BTC");
  assert.equal(fromAlpacaSymbol("AAPL ", "us_equity"), "AAPL");
  assert.equal(
    alpacaStreamUrl("https://paper-api.alpaca.markets/"),
    "wss://paper-api.alpaca.markets/stream",
  );
  assert.equal(alpacaStreamUrl("http://127.0.0.1:1234"), "ws://127.0.0.1:1234/stream");
});

Deno.test("alpaca order body carries decimals as strings and only the prices the type uses", () => {
  const body = alpacaOrderBody(orderRequest({
    client_order_id: "c-1",
    symbol: "ETH-USD",
    type: "stop_limit",
    time_in_force: "gtc",
    qty: parseDecimal("0.00000001"),
    limit_price: parseDecimal("3500.10"),
    stop_price: parseDecimal("3499.9"),
  }));
  assert.deepEqual(body, {
    symbol: "ETH/USD",
    qty: "0.00000001",
    side: "buy",
    type: "stop_limit",
    time_in_force: "gtc",
    client_order_id: "c-1",
    limit_price: "3500.1",
    stop_price: "3499.9",
  });
  assert.deepEqual(Object.keys(alpacaOrderBody(orderRequest())).sort(), [
    "client_order_id",
    "qty",
    "side",
    "symbol",
    "time_in_force",
    "type",
  ]);
});

Deno.test("alpaca order statuses map onto broker statuses", () => {
  const zero = parseDecimal("0");
  const some = parseDecimal("2");
  const all = parseDecimal("5");
  const cases: Array<[string, typeof zero, string]> = [
    ["new", zero, "accepted"],
    ["accepted", zero, "accepted"],
    ["pending_new", zero, "accepted"],
    ["accepted_for_bidding", zero, "accepted"],
    ["partially_filled", some, "partially_filled"],
    ["done_for_day", some, "partially_filled"],
    ["done_for_day", zero, "accepted"],
    ["pending_cancel", some, "partially_filled"],
    ["pending_replace", zero, "accepted"],
    ["stopped", zero, "accepted"],
    ["suspended", zero, "accepted"],
    ["calculated", all, "filled"],
    ["calculated", some, "partially_filled"],
    ["filled", all, "filled"],
    ["canceled", some, "cancelled"],
    ["replaced", zero, "cancelled"],
    ["expired", zero, "expired"],
    ["rejected", zero, "rejected"],
    ["some_new_status", zero, "accepted"],
  ];
  for (const [status, filled, expected] of cases) {
    assert.equal(alpacaOrderStatus(status, filled, all), expected, status);
  }
});

Deno.test("alpaca fixtures: order, clock, position and account parse exactly", async () => {
  const [order, clock, position, account] = await fixtureLines(
    "docs_rest_entities_order_clock_position_account.jsonl",
  );
  const parsed = parseAlpacaOrder(order);
  assert.equal(parsed.qty, null); // A notional order.
  assert.deepEqual(toBrokerOrderState(parsed), {
    client_order_id: "eb9e2aaa-f71a-4f51-b5b4-52a6c565dad4",
    broker_order_id: "61e69015-8549-4bfd-b9c3-01e75843f47d",
    status: "accepted",
    filled_qty: parseDecimal("0"),
    avg_fill_price: null,
  });
  assert.deepEqual(parseAlpacaClock(clock), {
    is_open: true,
    next_open: Date.parse("2022-04-29T09:30:00-04:00"),
    next_close: Date.parse("2022-04-28T16:00:00-04:00"),
    timestamp: Date.parse("2022-04-28T14:07:04.451-04:00"),
  });
  const pos = parseAlpacaPosition(position);
  assert.equal(pos.symbol, "AAPL");
  assert.equal(pos.side, "long");
  assert.equal(toJson(pos.qty), "5");
  assert.equal(toJson(pos.avg_entry_price), "100");
  assert.equal(toJson(pos.unrealized_pl!), "100");
  const acct = parseAlpacaAccount(account);
  assert.equal(toJson(acct.cash), "-23140.2");
  assert.equal(toJson(acct.equity), "103820.56");
  assert.equal(toJson(acct.buying_power), "262113.632");
  assert.equal(acct.trading_blocked, false);
});

Deno.test("alpaca fixture fill event becomes one fill of the execution's qty and price", async () => {
  const lines = await fixtureLines("docs_trade_updates_stream_messages.jsonl");
  const message = lines.at(-1) as { stream: string; data: unknown };
  assert.equal(message.stream, "trade_updates");
  const event = tradeUpdateEvent(message.data, null, 0);
  assert.deepEqual(event, {
    type: "fill",
    client_order_id: "4642fd68-d59a-47d7-a9ac-e22f536828d1",
    broker_order_id: "a5be8f5e-fdfa-41f5-a644-7a74fe947a8f",
    fill_id: "2f63ea93-423d-4169-b3f6-3fdafc10c418",
    qty: parseDecimal("1790.86"),
    price: parseDecimal("105.8988475"),
    fee: parseDecimal("0"),
    cum_qty: parseDecimal("1790.86"),
    cum_avg_price: parseDecimal("105.8988475"),
    at_ms: Date.parse("2022-04-19T17:45:05.024Z"),
  });
});

Deno.test("alpaca fill without qty or execution_id is derived from the cumulative quantity", () => {
  const data = {
    event: "partial_fill",
    price: "10.5",
    order: {
      id: "o-1",
      client_order_id: "c-1",
      symbol: "AAPL",
      status: "partially_filled",
      side: "buy",
      qty: "10",
      filled_qty: "7",
      filled_avg_price: "10.4",
    },
  };
  const event = tradeUpdateEvent(data, parseDecimal("4"), 123);
  assert.ok(event?.type === "fill");
  assert.equal(toJson(event.qty), "3");
  assert.equal(toJson(event.price), "10.5");
  assert.equal(event.fill_id, "o-1:7");
  assert.equal(event.at_ms, 123);
  // Marked: the engine counts the cumulative quantity minus what it holds instead.
  assert.equal(event.qty_derived, true);
  assert.equal(toJson(event.cum_qty!), "7");
  // Same input, same id: a redelivered update is recognisable.
  assert.equal((tradeUpdateEvent(data, parseDecimal("4"), 456) as typeof event).fill_id, "o-1:7");
  assert.equal(tradeUpdateEvent({ ...data, event: "done_for_day" }, null, 0), null);
  assert.throws(() => tradeUpdateEvent({ event: "fill" }, null, 0), TypeError);
});

Deno.test("alpaca fill without qty after a restart carries the whole cumulative quantity, marked derived", () => {
  const data = {
    event: "partial_fill",
    execution_id: "e-2",
    price: "50",
    order: {
      id: "o-1",
      client_order_id: "c-1",
      symbol: "AAPL",
      status: "partially_filled",
      side: "buy",
      qty: "20",
      filled_qty: "7",
      filled_avg_price: "50",
    },
  };
  // Nothing seen before (a new process): the adapter cannot know this execution's quantity.
  const event = tradeUpdateEvent(data, null, 0);
  assert.ok(event?.type === "fill");
  assert.equal(toJson(event.qty), "7");
  assert.equal(event.qty_derived, true);
  assert.equal(toJson(event.cum_qty!), "7");
  // Already seen up to 7: nothing new.
  assert.equal(tradeUpdateEvent(data, parseDecimal("7"), 0), null);
  // With the execution's qty, as usual: not derived.
  const given = tradeUpdateEvent({ ...data, qty: "3" }, null, 0);
  assert.ok(given?.type === "fill");
  assert.equal(toJson(given.qty), "3");
  assert.equal(given.qty_derived, undefined);
});

Deno.test("alpaca canceled, replaced, expired and rejected updates carry the order's filled quantity and average price", () => {
  const update = (event: string, filled: string, avg: string | null) => ({
    event,
    timestamp: "2022-04-19T13:45:05.024Z",
    order: {
      id: "o-1",
      client_order_id: "c-1",
      symbol: "AAPL",
      status: event,
      side: "buy",
      qty: "10",
      filled_qty: filled,
      filled_avg_price: avg,
    },
  });
  const at_ms = Date.parse("2022-04-19T13:45:05.024Z");
  const ids = { client_order_id: "c-1", broker_order_id: "o-1" };
  assert.deepEqual(tradeUpdateEvent(update("canceled", "4", "50.25"), null, 0), {
    type: "cancelled",
    ...ids,
    reason: "canceled at Alpaca",
    filled_qty: parseDecimal("4"),
    avg_fill_price: parseDecimal("50.25"),
    at_ms,
  });
  assert.deepEqual(tradeUpdateEvent(update("replaced", "1", "50"), null, 0), {
    type: "cancelled",
    ...ids,
    reason: "replaced at Alpaca",
    filled_qty: parseDecimal("1"),
    avg_fill_price: parseDecimal("50"),
    at_ms,
  });
  assert.deepEqual(tradeUpdateEvent(update("expired", "2.5", "49.1"), null, 0), {
    type: "expired",
    ...ids,
    reason: "expired at Alpaca",
    filled_qty: parseDecimal("2.5"),
    avg_fill_price: parseDecimal("49.1"),
    at_ms,
  });
  assert.deepEqual(tradeUpdateEvent(update("rejected", "0", null), null, 0), {
    type: "rejected",
    ...ids,
    reason: "rejected by Alpaca",
    filled_qty: parseDecimal("0"),
    avg_fill_price: null,
    at_ms,
  });
});

Deno.test("alpaca timestamps keep ms precision of nanosecond times with offsets", () => {
  assert.equal(
    parseTimestampMs("2022-04-19T13:45:04.981350886-04:00"),
    Date.parse("2022-04-19T17:45:04.981Z"),
  );
  assert.equal(parseTimestampMs("2022-04-19T17:45:05Z"), Date.parse("2022-04-19T17:45:05Z"));
  assert.equal(parseTimestampMs("yesterday"), null);
});

// ---- Against the fake ----

Deno.test("alpaca broker submits a market order and streams accepted then a fill with exact decimals", async () => {
  await using s = await setup({}, { prices: { "BTC/USDT": "64123.45678901" } });
  await started(s);
  const request = orderRequest({
    symbol: "BTC-USDT",
    qty: parseDecimal("0.12345678"),
    time_in_force: "gtc",
  });
  const { broker_order_id } = await s.broker.submit(request);
  const [post] = s.fake.requests.filter((r) => r.method === "POST");
  assert.deepEqual(post?.body, {
    symbol: "BTC/USDT",
    qty: "0.12345678",
    side: "buy",
    type: "market",
    time_in_force: "gtc",
    client_order_id: request.client_order_id,
  });
  await waitFor(() => s.events.length >= 2, 5_000, "accepted and fill");
  const [accepted, fill] = s.events;
  assert.equal(accepted?.type, "accepted");
  assert.equal(accepted?.client_order_id, request.client_order_id);
  assert.equal(accepted?.broker_order_id, broker_order_id);
  assert.ok(fill?.type === "fill");
  assert.equal(fill.broker_order_id, broker_order_id);
  assert.equal(toJson(fill.qty), "0.12345678");
  assert.equal(toJson(fill.price), "64123.45678901");
  assert.equal(toJson(fill.fee), "0");
  assert.match(fill.fill_id, /^[0-9a-f-]{36}$/); // Alpaca's execution_id.
  assert.equal(s.fake.orders.length, 1);
  assert.equal(s.fake.binaryFrames, true); // The events above came in binary frames.
  assert.equal(s.events.length, 2);
  assert.equal(s.broker.streamStatus().malformed, 0);
});

Deno.test("alpaca broker reports partial fills one execution at a time", async () => {
  await using s = await setup({}, { prices: { AAPL: "187.25" } });
  await started(s);
  s.fake.marketFillParts = 2;
  const market = orderRequest({ qty: parseDecimal("3") });
  await s.broker.submit(market);
  await waitFor(() => fillsOf(s.events, market.client_order_id).length === 2, 5_000, "2 fills");
  const marketFills = fillsOf(s.events, market.client_order_id);
  assert.deepEqual(marketFills.map((f) => toJson(f.qty)), ["1", "2"]);
  assert.deepEqual(marketFills.map((f) => toJson(f.price)), ["187.25", "187.25"]);
  assert.notEqual(marketFills[0]!.fill_id, marketFills[1]!.fill_id);

  // A resting limit order filled by the test, without execution ids.
  s.fake.executionIds = false;
  const limit = orderRequest({
    qty: parseDecimal("1"),
    type: "limit",
    limit_price: parseDecimal("10.75"),
  });
  const { broker_order_id } = await s.broker.submit(limit);
  assert.equal((s.fake.requests.at(-1)?.body as Record<string, unknown>).limit_price, "10.75");
  s.fake.fillOrder(broker_order_id, "0.4", "10.5");
  await waitFor(() => fillsOf(s.events, limit.client_order_id).length === 1, 5_000, "first fill");
  assert.deepEqual(await s.broker.getOrder(limit.client_order_id), {
    client_order_id: limit.client_order_id,
    broker_order_id,
    status: "partially_filled",
    filled_qty: parseDecimal("0.4"),
    avg_fill_price: parseDecimal("10.5"),
    // Partly filled: when it was last filled is its updated_at.
    filled_at_ms: Date.parse(s.fake.order(broker_order_id)!.updated_at),
  });
  s.fake.fillOrder(broker_order_id, "0.6", "10.25");
  await waitFor(() => fillsOf(s.events, limit.client_order_id).length === 2, 5_000, "second fill");
  const limitFills = fillsOf(s.events, limit.client_order_id);
  assert.deepEqual(limitFills.map((f) => [toJson(f.qty), toJson(f.price), f.fill_id]), [
    ["0.4", "10.5", `${broker_order_id}:0.4`],
    ["0.6", "10.25", `${broker_order_id}:1`],
  ]);
  const state = await s.broker.getOrder(limit.client_order_id);
  assert.equal(state?.status, "filled");
  assert.equal(toJson(state!.avg_fill_price!), "10.35"); // (0.4 × 10.5 + 0.6 × 10.25) / 1
});

Deno.test("alpaca broker submitting the same client_order_id twice returns the one order", async () => {
  await using s = await setup();
  const request = orderRequest({ type: "limit", limit_price: parseDecimal("50") });
  const first = await s.broker.submit(request);
  const second = await s.broker.submit(request);
  assert.deepEqual(second, first);
  assert.equal(s.fake.orders.length, 1);
  // The second POST was refused by Alpaca as a duplicate and resolved by lookup.
  assert.equal(s.fake.requests.filter((r) => r.method === "POST").length, 2);
  assert.ok(s.fake.requests.some((r) => r.path.startsWith("/v2/orders:by_client_order_id")));

  // A different order under a used client_order_id is refused, not merged.
  await assert.rejects(
    s.broker.submit({ ...request, qty: parseDecimal("11") }),
    (error: unknown) =>
      error instanceof BrokerRejectedError && error.reason.includes("already used"),
  );
  assert.equal(s.fake.orders.length, 1);
});

Deno.test("alpaca broker recovers the order when a 500 answers a submit that took effect", async () => {
  await using s = await setup();
  s.fake.failNext(1, { status: 500, route: "POST /v2/orders", after: true });
  const request = orderRequest();
  const { broker_order_id } = await s.broker.submit(request);
  assert.equal(s.fake.orders.length, 1);
  assert.equal(s.fake.orders[0]!.id, broker_order_id);
});

Deno.test("alpaca broker: a 5xx before the order landed is retryable and the retry places one order", async () => {
  await using s = await setup();
  s.fake.failNext(1, { status: 503, route: "POST /v2/orders" });
  const request = orderRequest();
  await assert.rejects(s.broker.submit(request), BrokerUnavailableError);
  assert.equal(s.fake.orders.length, 0);
  const { broker_order_id } = await s.broker.submit(request); // The caller's retry.
  assert.equal(s.fake.orders.length, 1);
  assert.equal(s.fake.orders[0]!.id, broker_order_id);
  assert.equal((await s.broker.submit(request)).broker_order_id, broker_order_id);
  assert.equal(s.fake.orders.length, 1);
});

Deno.test("alpaca broker: a timed-out submit finds the order it placed", async () => {
  await using s = await setup({ request_timeout_ms: 300 });
  s.fake.hangNext(1, { route: "POST /v2/orders", after: true });
  const request = orderRequest();
  const { broker_order_id } = await s.broker.submit(request);
  assert.equal(s.fake.orders.length, 1);
  assert.equal(s.fake.orders[0]!.id, broker_order_id);
});

Deno.test("alpaca broker: a timed-out submit that never landed is retryable, then placed once", async () => {
  await using s = await setup({ request_timeout_ms: 300 });
  s.fake.hangNext(1, { route: "POST /v2/orders" });
  const request = orderRequest();
  await assert.rejects(
    s.broker.submit(request),
    (error: unknown) => error instanceof BrokerUnavailableError && /timed out/.test(error.message),
  );
  assert.equal(s.fake.orders.length, 0);
  await s.broker.submit(request);
  await s.broker.submit(request);
  assert.equal(s.fake.orders.length, 1);
});

Deno.test("alpaca broker rejections carry Alpaca's reason", async () => {
  await using s = await setup();
  await started(s);
  s.fake.rejectNextOrders(1, { status: 403, message: "insufficient buying power" });
  await assert.rejects(
    s.broker.submit(orderRequest()),
    (error: unknown) =>
      error instanceof BrokerRejectedError && error.reason === "insufficient buying power",
  );
  // A 422 validation failure (no order exists under the id): rejected with the message.
  await assert.rejects(
    s.broker.submit(orderRequest({ client_order_id: "x".repeat(129) })),
    (error: unknown) =>
      error instanceof BrokerRejectedError &&
      error.reason === "client_order_id must be no more than 128 characters",
  );
  assert.equal(s.fake.orders.length, 0);

  // Rejected later, on the stream.
  const request = orderRequest({ type: "limit", limit_price: parseDecimal("1") });
  const { broker_order_id } = await s.broker.submit(request);
  await waitFor(() => s.events.some((e) => e.type === "accepted"), 5_000, "accepted");
  s.fake.rejectOrder(broker_order_id);
  await waitFor(() => s.events.some((e) => e.type === "rejected"), 5_000, "rejected");
  const rejected = s.events.find((e) => e.type === "rejected");
  assert.deepEqual(
    rejected && { ...rejected, at_ms: 0 },
    {
      type: "rejected",
      client_order_id: request.client_order_id,
      broker_order_id,
      reason: "rejected by Alpaca",
      filled_qty: parseDecimal("0"),
      avg_fill_price: null,
      at_ms: 0,
    },
  );
});

Deno.test("alpaca broker cancel sends DELETE and the cancellation arrives as an event", async () => {
  await using s = await setup();
  await started(s);
  const request = orderRequest({ type: "limit", limit_price: parseDecimal("99.5") });
  const { broker_order_id } = await s.broker.submit(request);
  await s.broker.cancel(request.client_order_id);
  assert.ok(
    s.fake.requests.some((r) =>
      r.method === "DELETE" && r.path === `/v2/orders/${broker_order_id}`
    ),
  );
  await waitFor(() => s.events.some((e) => e.type === "cancelled"), 5_000, "cancelled");
  const cancelled = s.events.find((e) => e.type === "cancelled");
  assert.equal(cancelled?.client_order_id, request.client_order_id);
  assert.equal(cancelled?.broker_order_id, broker_order_id);
  assert.equal(s.fake.order(broker_order_id)?.status, "canceled");
  // Already terminal: no error, no second event.
  await s.broker.cancel(request.client_order_id);
  assert.equal(s.events.filter((e) => e.type === "cancelled").length, 1);

  // A broker that never saw the order looks it up by client order id.
  const other = orderRequest({ type: "limit", limit_price: parseDecimal("1") });
  const placed = await s.broker.submit(other);
  const fresh = s.another();
  await fresh.cancel(other.client_order_id);
  assert.equal(s.fake.order(placed.broker_order_id)?.status, "canceled");

  // A filled order cannot be cancelled, which is no error; an unknown one is.
  const market = orderRequest();
  await s.broker.submit(market);
  await waitFor(() => s.fake.order(market.client_order_id)?.status === "filled", 5_000, "filled");
  await s.broker.cancel(market.client_order_id);
  await assert.rejects(s.broker.cancel("never-submitted"), BrokerRejectedError);

  // Time in force ran out.
  const gtc = orderRequest({ type: "limit", limit_price: parseDecimal("2"), time_in_force: "gtc" });
  await s.broker.submit(gtc);
  s.fake.expireOrder(gtc.client_order_id);
  await waitFor(() => s.events.some((e) => e.type === "expired"), 5_000, "expired");
  assert.equal(s.events.find((e) => e.type === "expired")?.client_order_id, gtc.client_order_id);
});

Deno.test("alpaca broker openOrders and getOrder reflect the broker's book", async () => {
  await using s = await setup();
  const resting = orderRequest({ type: "limit", limit_price: parseDecimal("5") });
  const partial = orderRequest({
    type: "limit",
    limit_price: parseDecimal("6"),
    qty: parseDecimal("4"),
  });
  const market = orderRequest({ qty: parseDecimal("2") });
  const a = await s.broker.submit(resting);
  const b = await s.broker.submit(partial);
  await s.broker.submit(market);
  await waitFor(() => s.fake.order(market.client_order_id)?.status === "filled", 5_000, "filled");
  await waitFor(() => s.fake.order(b.broker_order_id)?.status === "new", 5_000, "routed");
  s.fake.fillOrder(b.broker_order_id, "1.5", "6");
  const open = await s.broker.openOrders();
  assert.deepEqual(
    open.sort((x, y) => x.broker_order_id.localeCompare(y.broker_order_id)),
    [
      {
        client_order_id: resting.client_order_id,
        broker_order_id: a.broker_order_id,
        status: "accepted",
        filled_qty: parseDecimal("0"),
        avg_fill_price: null,
      },
      {
        client_order_id: partial.client_order_id,
        broker_order_id: b.broker_order_id,
        status: "partially_filled",
        filled_qty: parseDecimal("1.5"),
        avg_fill_price: parseDecimal("6"),
        filled_at_ms: Date.parse(s.fake.order(b.broker_order_id)!.updated_at),
      },
    ].sort((x, y) => x.broker_order_id.localeCompare(y.broker_order_id)),
  );
  const query = s.fake.requests.find((r) => r.path.startsWith("/v2/orders?"))!.path;
  assert.match(query, /status=open/);
  assert.match(query, /limit=500/);
  const filled = await s.broker.getOrder(market.client_order_id);
  assert.equal(filled?.status, "filled");
  assert.equal(toJson(filled!.filled_qty), "2");
  assert.equal(await s.broker.getOrder("unknown-order"), null);
});

Deno.test("alpaca broker openOrders returns every open order when orders of one instant straddle a page", async () => {
  await using s = await setup();
  const placed: string[] = [];
  const place = async (count: number, submittedAt: (i: number) => string) => {
    for (let start = 0; start < count; start += 50) {
      const batch = [];
      for (let i = start; i < Math.min(count, start + 50); i++) {
        s.fake.submittedAt = submittedAt(i);
        const request = orderRequest({ type: "limit", limit_price: parseDecimal("5") });
        placed.push(request.client_order_id);
        batch.push(s.broker.submit(request));
      }
      await Promise.all(batch);
    }
  };
  const openIds = async () => (await s.broker.openOrders()).map((o) => o.client_order_id).sort();
  const afters = () =>
    s.fake.requests.filter((r) => r.path.startsWith("/v2/orders?")).map((r) =>
      new URL(r.path, "http://x").searchParams.get("after")
    );
  // 499 orders a microsecond apart, then three sharing 15:00:01 — the 500th ends the first page.
  await place(499, (i) => `2026-03-10T15:00:00.${String(i + 1).padStart(6, "0")}Z`);
  await place(3, () => "2026-03-10T11:00:01-04:00");
  await place(1, () => "2026-03-10T15:00:02.000000Z");
  assert.deepEqual(await openIds(), [...placed].sort());
  // The second page starts a microsecond before the first page's last order: inclusive of it.
  assert.deepEqual(afters(), [null, "2026-03-10T15:00:00.999999Z"]);

  // More orders of one instant than a page holds: the page repeats, so it steps past the instant.
  await place(600, () => "2026-03-10T15:00:03.000000Z");
  await place(1, () => "2026-03-10T15:00:04.000000Z");
  const open = await openIds();
  assert.equal(new Set(open).size, open.length, "an order listed twice");
  assert.equal(open.length, 503 + 500 + 1); // 100 of the 600 cannot be reached by `after`
  assert.ok(open.includes(placed.at(-1)!), "the order after the crowded instant was skipped");
  assert.ok(
    s.lines.some((line) =>
      line.message === "more open orders share one submitted_at than an Alpaca page holds" &&
      line.submitted_at === "2026-03-10T15:00:03.000000Z"
    ),
  );
});

Deno.test("alpaca broker reads the clock, positions and account", async () => {
  await using s = await setup({}, { prices: { "BTC/USD": "60000.5", AAPL: "200" } });
  const clock = await s.broker.clock();
  assert.deepEqual(clock, {
    is_open: true,
    next_open: Date.parse("2022-04-29T09:30:00-04:00"),
    next_close: Date.parse("2022-04-28T16:00:00-04:00"),
    timestamp: Date.parse("2022-04-28T14:07:04.451-04:00"),
  });
  s.fake.clock = { ...s.fake.clock, is_open: false };
  assert.equal((await s.broker.clock()).is_open, false);

  const btc = orderRequest({ symbol: "BTC-USD", qty: parseDecimal("0.25"), time_in_force: "gtc" });
  const aapl = orderRequest({ symbol: "AAPL", side: "sell", qty: parseDecimal("3") });
  await s.broker.submit(btc);
  await s.broker.submit(aapl);
  await waitFor(
    () => s.fake.orders.every((order) => order.status === "filled"),
    5_000,
    "both filled",
  );
  const positions = (await s.broker.positions()).sort((x, y) => x.symbol.localeCompare(y.symbol));
  assert.deepEqual(
    positions.map((
      p,
    ) => [p.symbol, p.asset_class, p.side, toJson(p.qty), toJson(p.avg_entry_price)]),
    [
      ["AAPL", "us_equity", "short", "-3", "200"],
      ["BTC-USD", "crypto", "long", "0.25", "60000.5"],
    ],
  );
  const account = await s.broker.account();
  // 100000 − 0.25 × 60000.5 + 3 × 200
  assert.equal(toJson(account.cash), "85599.875");
  assert.equal(toJson(account.equity), "100000");
  assert.equal(account.status, "ACTIVE");
});

Deno.test("alpaca broker reconnects a dropped stream, calls onReconnect and keeps delivering", async () => {
  await using s = await setup();
  let reconnects = 0;
  s.broker.onReconnect(() => void reconnects++);
  await started(s);
  assert.equal(s.broker.streamStatus().state, "listening");
  assert.equal(s.fake.listeners(), 1);
  // The first listen calls it too: nothing from before it is replayed.
  await waitFor(() => reconnects === 1, 5_000, "onReconnect of the first listen");

  s.fake.refuseStream();
  s.fake.dropStream();
  await waitFor(() => s.broker.streamStatus().reconnects >= 3, 5_000, "retries while refused");
  assert.equal(reconnects, 1);
  s.fake.acceptStream();
  await waitFor(() => reconnects === 2, 5_000, "onReconnect");
  assert.equal(s.broker.streamStatus().state, "listening");
  assert.equal(s.fake.listeners(), 1);

  const request = orderRequest();
  await s.broker.submit(request);
  await waitFor(() => fillsOf(s.events, request.client_order_id).length === 1, 5_000, "fill");

  // Reconnect callbacks run after the events received before them.
  s.fake.dropStream();
  await waitFor(() => reconnects === 3, 5_000, "second onReconnect");
  assert.ok(s.lines.some((line) => line.message === "alpaca stream lost, reconnecting"));
});

Deno.test("alpaca broker reads text frames and survives a malformed stream message", async () => {
  await using s = await setup();
  s.fake.binaryFrames = false;
  await started(s);
  s.fake.sendRaw("not json");
  s.fake.sendRaw('{"stream":"trade_updates","data":{"event":"fill","order":{"id":"x"}}}');
  await waitFor(() => s.broker.streamStatus().malformed === 2, 5_000, "malformed counted");
  const request = orderRequest();
  await s.broker.submit(request);
  await waitFor(() => fillsOf(s.events, request.client_order_id).length === 1, 5_000, "fill");
  assert.equal(s.broker.streamStatus().state, "listening");
});

Deno.test("alpaca broker authenticates the stream in the documented form, or the newer auth form", async () => {
  {
    await using s = await setup();
    await started(s);
    assert.deepEqual(JSON.parse(s.fake.streamReceived[0]!), {
      action: "authenticate",
      data: { key_id: FAKE_ALPACA_KEY_ID, secret_key: FAKE_ALPACA_SECRET_KEY },
    });
    assert.deepEqual(JSON.parse(s.fake.streamReceived[1]!), {
      action: "listen",
      data: { streams: ["trade_updates"] },
    });
  }
  {
    await using s = await setup({ stream_auth: "auth" });
    await started(s);
    assert.deepEqual(JSON.parse(s.fake.streamReceived[0]!), {
      action: "auth",
      key: FAKE_ALPACA_KEY_ID,
      secret: FAKE_ALPACA_SECRET_KEY,
    });
    const request = orderRequest();
    await s.broker.submit(request);
    await waitFor(() => fillsOf(s.events, request.client_order_id).length === 1, 5_000, "fill");
  }
});

Deno.test("alpaca broker surfaces refused keys clearly and places nothing", async () => {
  const wrongSecret = "wrong-secret-do-not-log";
  await using s = await setup({ secret_key: wrongSecret });
  await assert.rejects(
    started(s),
    (error: unknown) =>
      error instanceof AlpacaAuthError && /authorization failed: unauthorized/.test(error.message),
  );
  assert.equal(s.broker.streamStatus().state, "failed");
  await assert.rejects(
    s.broker.submit(orderRequest()),
    (error: unknown) =>
      error instanceof BrokerRejectedError && error.cause instanceof AlpacaAuthError &&
      /refused the API keys/.test(error.reason),
  );
  await assert.rejects(s.broker.getOrder("any"), AlpacaAuthError);
  await assert.rejects(s.broker.clock(), AlpacaAuthError);
  assert.equal(s.fake.orders.length, 0);
  assertNoSecrets(s.lines, wrongSecret, FAKE_ALPACA_SECRET_KEY, FAKE_ALPACA_KEY_ID);
});

Deno.test("alpaca broker: start fails clearly when the stream cannot be reached", async () => {
  await using s = await setup({ stream_url: "ws://127.0.0.1:1/stream" });
  await assert.rejects(started(s), BrokerUnavailableError);
  assert.equal(s.broker.streamStatus().state, "failed");
});

Deno.test("alpaca broker never logs the key or the secret", async () => {
  await using s = await setup({ request_timeout_ms: 300 });
  await started(s);
  const request = orderRequest();
  s.fake.failNext(1, { status: 500, route: "POST /v2/orders" });
  await assert.rejects(s.broker.submit(request), BrokerUnavailableError);
  s.fake.hangNext(1, { route: "POST /v2/orders", after: true });
  await s.broker.submit(request);
  s.fake.rejectNextOrders(1);
  await assert.rejects(s.broker.submit(orderRequest()), BrokerRejectedError);
  s.fake.sendRaw("garbage");
  s.fake.dropStream();
  await waitFor(() => s.broker.streamStatus().reconnects === 1, 5_000, "reconnect");
  await waitFor(() => s.broker.streamStatus().state === "listening", 5_000, "listening");
  const bad = s.another({ key_id: "PKWRONGKEY", secret_key: "wrong-secret" });
  await assert.rejects(bad.start(AbortSignal.timeout(5_000)), AlpacaAuthError);
  await assert.rejects(bad.openOrders(), AlpacaAuthError);
  assert.ok(s.lines.length > 5);
  assertNoSecrets(
    s.lines,
    FAKE_ALPACA_SECRET_KEY,
    FAKE_ALPACA_KEY_ID,
    "wrong-secret",
    "PKWRONGKEY",
  );
});

Deno.test("alpaca broker stops streaming when the start signal aborts", async () => {
  await using s = await setup();
  const controller = new AbortController();
  await s.broker.start(controller.signal);
  controller.abort();
  await s.broker.closed();
  assert.equal(s.broker.streamStatus().state, "stopped");
  await waitFor(() => s.fake.listeners() === 0, 5_000, "stream closed");
});

Deno.test("Alpaca refuses in advance crypto orders of a type or time in force it does not take", () => {
  assert.deepEqual(alpacaRefusals({ symbol: "BTC-USD", type: "market", time_in_force: "gtc" }), []);
  assert.deepEqual(
    alpacaRefusals({ symbol: "ETH-USD", type: "stop_limit", time_in_force: "ioc" }),
    [],
  );
  assert.deepEqual(alpacaRefusals({ symbol: "BTC-USD", type: "market", time_in_force: "day" }), [
    {
      path: "time_in_force",
      message: "alpaca: crypto orders take time_in_force gtc or ioc, not day",
    },
  ]);
  assert.deepEqual(alpacaRefusals({ symbol: "SOL-USDT", type: "stop", time_in_force: "fok" }), [
    { path: "type", message: "alpaca: crypto orders are market, limit, stop_limit, not stop" },
    {
      path: "time_in_force",
      message: "alpaca: crypto orders take time_in_force gtc or ioc, not fok",
    },
  ]);
  // Stocks take every type and time in force.
  assert.deepEqual(alpacaRefusals({ symbol: "AAPL", type: "stop", time_in_force: "day" }), []);
  assert.deepEqual(alpacaRefusals({ symbol: "BRK.B", type: "market", time_in_force: "fok" }), []);
});

/**
 * A bare trade_updates endpoint: authorizes while `authorized()` says so,
 * answers `listen`, and calls `onListen` for each connection that listens.
 */
function streamServer(
  authorized: () => boolean,
  onListen: (socket: FakeSocket) => void = () => {},
): Promise<FakeWsServer> {
  return startWsServer({
    onMessage: (socket, text) => {
      const message = JSON.parse(text);
      if (message.action === "authenticate") {
        const ok = authorized();
        socket.send(JSON.stringify({
          stream: "authorization",
          data: { status: ok ? "authorized" : "unauthorized", action: "authenticate" },
        }));
        if (!ok) socket.close(1000, "unauthorized");
      } else if (message.action === "listen") {
        socket.send(JSON.stringify({ stream: "listening", data: { streams: ["trade_updates"] } }));
        onListen(socket);
      }
    },
  });
}

Deno.test("alpaca broker backs off more and more from a stream cut right after each listen, and starts over after a lasting connection", async () => {
  const HANDSHAKE_MS = 4_321;
  let flap = true;
  let listens = 0;
  await using server = await streamServer(() => true, (socket) => {
    listens++;
    // Kicked out at once (another connection with the same keys, a proxy resetting).
    if (flap) setTimeout(() => socket.drop(), 5);
  });
  const delays: number[] = [];
  let offset = 0;
  const clock: Clock = {
    now: () => Date.now() + offset,
    // The handshake deadline runs for real; backoff sleeps are recorded and cut short.
    sleep: (ms, signal) =>
      ms === HANDSHAKE_MS
        ? systemClock.sleep(ms, signal)
        : (delays.push(ms), systemClock.sleep(1, signal)),
  };
  await using broker = alpacaBroker({
    base_url: server.httpUrl,
    key_id: "k",
    secret_key: "s",
    handshake_timeout_ms: HANDSHAKE_MS,
    reconnect_initial_ms: 500,
    reconnect_max_ms: 8_000,
  }, { clock, random: () => 0.5 }); // no jitter
  let reconnects = 0;
  broker.onReconnect(() => void reconnects++);
  await broker.start(AbortSignal.timeout(10_000));
  await waitFor(() => delays.length >= 6, 10_000, "six reconnects");
  assert.deepEqual(delays.slice(0, 6), [500, 1_000, 2_000, 4_000, 8_000, 8_000]);
  assert.ok(reconnects >= 5, `onReconnect ran ${reconnects} times`);

  // A connection that stays: once it has listened for reconnect_max_ms, a loss starts over.
  flap = false;
  const seen = listens;
  await waitFor(() => listens > seen, 5_000, "a lasting connection");
  await waitFor(() => broker.streamStatus().state === "listening", 5_000, "listening");
  const before = delays.length;
  offset += 8_000;
  for (const socket of server.openSockets()) socket.drop();
  await waitFor(() => delays.length > before, 5_000, "a reconnect");
  assert.equal(delays[before], 500);
});

Deno.test("alpaca stream status says how long the stream has not listened and whether the keys were refused", async () => {
  let authorized = true;
  await using server = await streamServer(() => authorized);
  let offset = 0;
  const clock: Clock = { now: () => Date.now() + offset, sleep: systemClock.sleep };
  await using broker = alpacaBroker({
    base_url: server.httpUrl,
    key_id: "k",
    secret_key: "s",
    reconnect_initial_ms: 20,
    reconnect_max_ms: 50,
  }, { clock });
  assert.equal(broker.streamStatus().state, "idle");
  assert.equal(typeof broker.streamStatus().down_for_ms, "number");
  await broker.start(AbortSignal.timeout(10_000));
  assert.deepEqual(
    { ...broker.streamStatus(), last_error: null },
    {
      state: "listening",
      down_for_ms: null,
      auth_error: false,
      last_error: null,
      connections: 1,
      reconnects: 0,
      malformed: 0,
    },
  );
  assert.equal(streamProblem("alpaca", broker.streamStatus()), null);

  // Lost, and refused: at once a problem, whatever the grace period.
  authorized = false;
  for (const socket of server.openSockets()) socket.drop();
  await waitFor(() => broker.streamStatus().auth_error, 5_000, "the refusal seen");
  const refused = broker.streamStatus();
  assert.notEqual(refused.state, "listening");
  assert.ok(refused.down_for_ms !== null && refused.down_for_ms < DEFAULT_STREAM_DOWN_GRACE_MS);
  assert.match(
    streamProblem("alpaca", refused) ?? "",
    /^broker alpaca: event stream refused the API keys \(Alpaca stream authorization failed: unauthorized/,
  );

  // The keys work again: listening, nothing to report.
  authorized = true;
  await waitFor(() => broker.streamStatus().state === "listening", 5_000, "listening again");
  assert.equal(broker.streamStatus().auth_error, false);
  assert.equal(broker.streamStatus().down_for_ms, null);

  // Down for longer than the grace period, without a refusal.
  server.refuse();
  for (const socket of server.openSockets()) socket.drop();
  await waitFor(() => broker.streamStatus().state === "reconnecting", 5_000, "reconnecting");
  assert.equal(streamProblem("alpaca", broker.streamStatus()), null, "within the grace period");
  offset += DEFAULT_STREAM_DOWN_GRACE_MS + 1_000;
  const down = broker.streamStatus();
  assert.equal(down.auth_error, false);
  assert.ok(down.down_for_ms! > DEFAULT_STREAM_DOWN_GRACE_MS);
  assert.match(
    streamProblem("alpaca", down) ?? "",
    /^broker alpaca: event stream reconnecting, not listening for 1\d s/,
  );
});

Deno.test("stream problems: none while listening or within the grace period, at once for refused keys", () => {
  const status = {
    state: "reconnecting" as const,
    down_for_ms: 3_000,
    auth_error: false,
    last_error: "Alpaca stream closed (code 1006)",
  };
  assert.equal(streamProblem("alpaca", { ...status, state: "listening", down_for_ms: null }), null);
  assert.equal(streamProblem("alpaca", status), null);
  assert.equal(
    streamProblem("alpaca", { ...status, down_for_ms: 42_000 }),
    "broker alpaca: event stream reconnecting, not listening for 42 s (Alpaca stream closed (code 1006))",
  );
  assert.equal(
    streamProblem("alpaca", { ...status, auth_error: true, last_error: "unauthorized" }),
    "broker alpaca: event stream refused the API keys (unauthorized)",
  );
  assert.equal(streamProblem("alpaca", { ...status, down_for_ms: 42_000 }, 60_000), null);
});
