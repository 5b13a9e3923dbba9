import assert from "node:assert/strict";
import { Hono } from "hono";
import { BrokerRejectedError, BrokerUnavailableError } from "../brokers/broker.ts";
import { errorHandler } from "../api/errors.ts";
import { tradingRoutes } from "../api/trading.ts";
import { hashApiKey } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import type { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { binanceTop, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import { startTradingApi } from "./_trading_api.ts";

const KEY = "test-api-key-0123456789";

/** The trading API on a running trading subtree (paper broker, tracker, execution). */
async function tradingApi() {
  const api = await startTradingApi({
    env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "10" },
    apiKeyHashes: [await hashApiKey(KEY)],
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
  const { app } = api;
  const call = (
    method: string,
    path: string,
    body?: unknown,
    key: string | null = KEY,
    headers: Record<string, string> = {},
  ) =>
    app.request(`/api/v1/trading${path}`, {
      method,
      headers: {
        ...headers,
        ...(key === null ? {} : { authorization: `Bearer ${key}` }),
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      ...(body === undefined
        ? {}
        : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
  return Object.assign(api, { call });
}

Deno.test("POST /signal creates a filled order; the same id again returns it without a second order", async () => {
  await using api = await tradingApi();
  const body = { id: "rest-1", symbol: "BTC-USDT", side: "buy", qty: "0.5", strategy: "api" };
  const created = await api.call("POST", "/signal", body);
  assert.equal(created.status, 201);
  const first = await created.json();
  assert.equal(first.order.symbol, "BTC-USDT");
  assert.equal(first.order.qty, "0.5");
  assert.equal(first.signal.duplicate, false);

  const again = await api.call("POST", "/signal", body);
  assert.equal(again.status, 200);
  const second = await again.json();
  assert.equal(second.signal.duplicate, true);
  assert.equal(second.order.id, first.order.id);

  await waitFor(
    async () => {
      const res = await api.call("GET", `/orders/${first.order.id}`);
      return (await res.json()).order.status === "filled";
    },
    10_000,
    "order filled",
  );
  const orders = await (await api.call("GET", "/orders?symbol=BTC-USDT")).json();
  assert.equal(orders.orders.length, 1);
  assert.equal(orders.orders[0].avg_fill_price, "50002");

  await waitFor(
    async () => {
      const res = await (await api.call("GET", "/positions")).json();
      return res.positions.length === 1;
    },
    10_000,
    "position",
  );
  const { positions } = await (await api.call("GET", "/positions")).json();
  assert.equal(positions[0].symbol, "BTC-USDT");
  assert.equal(positions[0].qty, "0.5");
  assert.equal(positions[0].avg_entry_price, "50002");
  assert.equal(positions[0].mark_price, "50001");
  assert.equal(positions[0].unrealized_pnl, "-0.5");

  const { portfolio } = await (await api.call("GET", "/portfolio")).json();
  assert.equal(portfolio.cash, "74999");
  assert.equal(typeof portfolio.equity, "string");
});

Deno.test("an invalid or refused signal is answered 422 with every reason", async () => {
  await using api = await tradingApi();
  const invalid = await api.call("POST", "/signal", {
    symbol: "BTC-USDT",
    side: "hold",
    qty: "-1",
  });
  assert.equal(invalid.status, 422);
  const body = await invalid.json();
  assert.equal(body.error.code, "signal_rejected");
  const paths = body.error.details.map((r: { path?: string }) => r.path);
  assert.ok(paths.includes("side") && paths.includes("qty"), JSON.stringify(body));

  const tooBig = await api.call("POST", "/signal", { symbol: "BTC-USDT", side: "buy", qty: "11" });
  assert.equal(tooBig.status, 422);
  const refused = await tooBig.json();
  assert.deepEqual(refused.error.details.map((r: { rule?: string }) => r.rule), [
    "max_order_qty",
    "max_notional",
  ]);

  const notJson = await api.call("POST", "/signal", "{nope");
  assert.equal(notJson.status, 400);
  await notJson.body?.cancel();
});

Deno.test("signals list shows each outcome with its reasons, filters and paginates", async () => {
  await using api = await tradingApi();
  const sent: Array<[id: string, strategy: string, side: string, qty: string, status: number]> = [
    ["sig-ok", "alpha", "buy", "0.01", 201],
    ["sig-big", "alpha", "buy", "11", 422],
    ["sig-beta", "beta", "sell", "0.01", 201],
  ];
  for (const [id, strategy, side, qty, status] of sent) {
    const res = await api.call("POST", "/signal", { id, strategy, symbol: "BTC-USDT", side, qty });
    assert.equal(res.status, status, id);
    await res.body?.cancel();
  }

  type SignalsPage = {
    signals: Array<{
      client_signal_id: string;
      strategy: string;
      status: string;
      reasons: Array<{ rule: string }> | null;
      payload: { qty: string };
      received_at: string;
    }>;
    next_cursor: string | null;
  };
  const rejected: SignalsPage = await (await api.call("GET", "/signals?status=rejected")).json();
  assert.deepEqual(rejected.signals.map((s) => s.client_signal_id), ["sig-big"]);
  assert.deepEqual(rejected.signals[0]!.reasons!.map((r) => r.rule), [
    "max_order_qty",
    "max_notional",
  ]);
  assert.equal(rejected.signals[0]!.payload.qty, "11");
  assert.ok(!Number.isNaN(Date.parse(rejected.signals[0]!.received_at)));

  // Several statuses, comma-separated, as on /orders.
  const listed = async (path: string): Promise<SignalsPage> => {
    const res = await api.call("GET", path);
    const body = await res.json();
    assert.equal(res.status, 200, `${path}: ${JSON.stringify(body)}`);
    return body;
  };
  const decided = await listed("/signals?status=accepted,rejected");
  assert.deepEqual(decided.signals.map((s) => s.client_signal_id), [
    "sig-beta",
    "sig-big",
    "sig-ok",
  ]);
  const alphaOpen = await listed("/signals?strategy=alpha&status=received,%20rejected");
  assert.deepEqual(alphaOpen.signals.map((s) => s.client_signal_id), ["sig-big"]);

  const alpha: SignalsPage = await (await api.call("GET", "/signals?strategy=alpha")).json();
  assert.deepEqual(alpha.signals.map((s) => s.client_signal_id), ["sig-big", "sig-ok"]);
  assert.deepEqual(alpha.signals.map((s) => s.status), ["rejected", "accepted"]);

  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const page: SignalsPage = await (await api.call(
      "GET",
      `/signals?limit=1${cursor ? `&cursor=${cursor}` : ""}`,
    )).json();
    seen.push(...page.signals.map((s) => s.client_signal_id));
    cursor = page.next_cursor;
  } while (cursor);
  assert.deepEqual(seen, ["sig-beta", "sig-big", "sig-ok"]);

  for (
    const path of [
      "/signals?status=filled",
      "/signals?status=accepted,filled",
      "/signals?status=accepted,",
      "/signals?limit=0",
      "/signals?to=soon",
    ]
  ) {
    const res = await api.call("GET", path);
    assert.equal(res.status, 400, path);
    await res.body?.cancel();
  }
});

Deno.test("trading endpoints need the API key", async () => {
  await using api = await tradingApi();
  const missing = await api.call("GET", "/orders", undefined, null);
  assert.equal(missing.status, 401);
  await missing.body?.cancel();
  const wrong = await api.call("GET", "/orders", undefined, "wrong");
  assert.equal(wrong.status, 403);
  await wrong.body?.cancel();
});

Deno.test("orders list filters and paginates; bad parameters get 400; unknown orders 404", async () => {
  await using api = await tradingApi();
  for (let i = 0; i < 5; i++) {
    const res = await api.call("POST", "/signal", {
      id: `page-${i}`,
      symbol: "BTC-USDT",
      side: "buy",
      qty: "0.01",
      type: "limit",
      limit_price: "49000",
      time_in_force: "gtc",
    });
    assert.equal(res.status, 201);
    await res.body?.cancel();
  }
  const seen = new Set<string>();
  let cursor: string | null = null;
  do {
    const page: { orders: Array<{ id: string }>; next_cursor: string | null } = await (await api
      .call("GET", `/orders?limit=2${cursor ? `&cursor=${cursor}` : ""}`)).json();
    for (const order of page.orders) seen.add(order.id);
    cursor = page.next_cursor;
  } while (cursor);
  assert.equal(seen.size, 5);

  for (
    const path of [
      "/orders?limit=0",
      "/orders?status=nope",
      "/orders?from=yesterday",
      "/orders?x=1",
    ]
  ) {
    const res = await api.call("GET", path);
    assert.equal(res.status, 400, path);
    await res.body?.cancel();
  }
  const missing = await api.call("GET", "/orders/999999");
  assert.equal(missing.status, 404);
  await missing.body?.cancel();
});

Deno.test("DELETE cancels a resting order; the kill switch refuses new signals and cancels open orders", async () => {
  await using api = await tradingApi();
  const resting = await (await api.call("POST", "/signal", {
    id: "rest-limit",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.1",
    type: "limit",
    limit_price: "49000",
    time_in_force: "gtc",
  })).json();
  await waitFor(
    async () => {
      const res = await api.call("GET", `/orders/${resting.order.id}`);
      return (await res.json()).order.status === "submitted";
    },
    10_000,
    "submitted",
  );
  const cancel = await api.call("DELETE", `/orders/${resting.order.id}`);
  assert.equal(cancel.status, 202);
  await cancel.body?.cancel();
  await waitFor(
    async () => {
      const res = await api.call("GET", `/orders/${resting.order.id}`);
      return (await res.json()).order.status === "cancelled";
    },
    10_000,
    "cancelled",
  );

  const other = await (await api.call("POST", "/signal", {
    id: "rest-limit-2",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.1",
    type: "limit",
    limit_price: "49000",
    time_in_force: "gtc",
  })).json();
  await waitFor(
    async () => {
      const res = await api.call("GET", `/orders/${other.order.id}`);
      return (await res.json()).order.status === "submitted";
    },
    10_000,
    "second submitted",
  );
  const kill = await api.call("POST", "/kill-switch", {
    active: true,
    cancel_open: true,
    reason: "test",
  });
  assert.equal(kill.status, 200);
  assert.equal((await kill.json()).kill_switch.active, true);
  await waitFor(
    async () => {
      const res = await api.call("GET", `/orders/${other.order.id}`);
      return (await res.json()).order.status === "cancelled";
    },
    10_000,
    "cancelled by the kill switch",
  );
  const refused = await api.call("POST", "/signal", {
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.1",
  });
  assert.equal(refused.status, 422);
  assert.deepEqual(
    (await refused.json()).error.details.map((r: { rule?: string }) => r.rule),
    ["kill_switch"],
  );
  const state = await (await api.call("GET", "/kill-switch")).json();
  assert.equal(state.kill_switch.active, true);
  const bad = await api.call("POST", "/kill-switch", { active: "yes", extra: 1 });
  assert.equal(bad.status, 422);
  assert.equal((await bad.json()).error.details.length, 2);
});

Deno.test("DELETE says when the broker could not be asked to cancel: 503 when unreachable, 409 when it refuses", async () => {
  await using api = await tradingApi();
  const resting = await (await api.call("POST", "/signal", {
    id: "cancel-fails",
    symbol: "BTC-USDT",
    side: "buy",
    qty: "0.1",
    type: "limit",
    limit_price: "49000",
    time_in_force: "gtc",
  })).json();
  const status = async () =>
    (await (await api.call("GET", `/orders/${resting.order.id}`)).json()).order.status;
  await waitFor(async () => (await status()) === "submitted", 10_000, "submitted");
  const paper = api.trading.brokers.get("paper")!;
  const cancel = paper.cancel.bind(paper);
  try {
    paper.cancel = () => Promise.reject(new BrokerUnavailableError("connection refused"));
    const unreachable = await api.call("DELETE", `/orders/${resting.order.id}`);
    assert.equal(unreachable.status, 503);
    const body = await unreachable.json();
    assert.equal(body.error.code, "unavailable");
    assert.match(body.error.message, /still submitted: the broker could not be reached/);
    assert.equal(body.error.details.order.status, "submitted");
    paper.cancel = () => Promise.reject(new BrokerRejectedError("order is not cancelable"));
    const refused = await api.call("DELETE", `/orders/${resting.order.id}`);
    assert.equal(refused.status, 409);
    assert.match((await refused.json()).error.message, /the broker refused to cancel it/);
  } finally {
    paper.cancel = cancel;
  }
  const ok = await api.call("DELETE", `/orders/${resting.order.id}`);
  assert.equal(ok.status, 202);
  await ok.body?.cancel();
  await waitFor(async () => (await status()) === "cancelled", 10_000, "cancelled");
});

Deno.test("GET /portfolio is a 503 until the portfolio is loaded, not the starting figures", async () => {
  await using db = await migratedDatabase();
  await db.sql`update portfolios set cash = 50000 where id = 'default'`;
  const state = new PortfolioState({ starting_cash: "100000" });
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.route(
    "/api/v1/trading",
    tradingRoutes({
      sql: db.sql,
      engine: {} as ExecutionEngine, // not reached by these routes
      state,
      cache: new LatestCache(),
      maxPriceAgeMs: 60_000,
      apiKeyHashes: [await hashApiKey(KEY)],
    }),
  );
  const get = async () => {
    const res = await app.request("/api/v1/trading/portfolio", {
      headers: { authorization: `Bearer ${KEY}` },
    });
    return { status: res.status, body: await res.json() };
  };
  const before = await get();
  assert.equal(before.status, 503);
  assert.equal(before.body.error.code, "unavailable");
  await state.load(db.sql);
  const after = await get();
  assert.equal(after.status, 200);
  assert.equal(after.body.portfolio.cash, "50000");
});

Deno.test("GET /positions values a position against its exact cost basis, not its rounded average", async () => {
  await using api = await tradingApi();
  // 1e9 bought at 0.00001236 and 2e9 at 0.00001235: the average 0.0000123533… shows as 0.00001235.
  await api.sql`insert into symbols (symbol) values ('PEPE-USDT')`;
  await api.sql`
    insert into positions (portfolio_id, symbol, qty, avg_entry_price, cost_basis)
    values ('default', 'PEPE-USDT', 3000000000, 0.00001235, 37060)`;
  api.cache.update([binanceTop("PEPE-USDT", "0.00001235", "0.00001235")]);
  const res = await api.call("GET", "/positions?symbol=PEPE-USDT");
  assert.equal(res.status, 200);
  const [position] = (await res.json()).positions;
  assert.equal(position.avg_entry_price, "0.00001235");
  assert.equal(position.market_value, "37050");
  assert.equal(position.unrealized_pnl, "-10");
});

Deno.test("POST /signal without an id is recognised on retry by its Idempotency-Key header", async () => {
  await using api = await tradingApi();
  const body = { symbol: "BTC-USDT", side: "buy", qty: "0.1" };
  const send = (key?: string) =>
    api.call("POST", "/signal", body, KEY, key === undefined ? {} : { "Idempotency-Key": key });
  const first = await send("retry-7");
  assert.equal(first.status, 201);
  const created = await first.json();
  const again = await send("retry-7");
  assert.equal(again.status, 200);
  const repeated = await again.json();
  assert.equal(repeated.signal.duplicate, true);
  assert.equal(repeated.order.id, created.order.id);
  const bad = await send("has space");
  assert.equal(bad.status, 400);
  assert.match((await bad.json()).error.message, /Idempotency-Key must be/);
  // Without either, each request is a new signal: documented.
  assert.equal((await send()).status, 201);
  assert.equal((await send()).status, 201);
  const orders = await (await api.call("GET", "/orders?symbol=BTC-USDT")).json();
  assert.equal(orders.orders.length, 3);
});

Deno.test("trading list from/to keep microseconds: from is inclusive and to exclusive at that very instant", async () => {
  await using api = await startTradingApi();
  const call = async (path: string) => {
    const res = await api.app.request(`/api/v1/trading${path}`);
    return { status: res.status, body: await res.json() };
  };
  const before = "2024-05-01T12:00:00.123100Z";
  const after = "2024-05-01T12:00:00.123900Z";
  const bound = "2024-05-01T12:00:00.123456Z";
  await api.sql`insert into symbols (symbol) values ('ETH-USDT') on conflict do nothing`;
  const orders = await api.sql<{ id: string }[]>`
    insert into orders (symbol, side, qty, status, strategy, created_at)
    values ('ETH-USDT', 'buy', 1, 'cancelled', 'micros', ${before}::text::timestamptz),
           ('ETH-USDT', 'buy', 1, 'cancelled', 'micros', ${after}::text::timestamptz)
    returning id::text`;
  const signals = await api.sql<{ id: string }[]>`
    insert into signals (strategy, client_signal_id, source, payload, received_at)
    values ('micros', 'a', 'rest', '{}', ${before}::text::timestamptz),
           ('micros', 'b', 'rest', '{}', ${after}::text::timestamptz)
    returning id::text`;
  await api.sql`insert into portfolio_snapshots (portfolio_id, taken_at, cash, equity, market_value,
      gross_exposure, net_exposure, realized_pnl, unrealized_pnl)
    select 'default', t::timestamptz, 0, 0, 0, 0, 0, 0, 0
    from unnest(${[before, after]}::text[]) t`;
  // (Times go as text: postgres.js sends a timestamptz parameter through a Date, to the ms.)
  const ids = (rows: { id: string }[]) => rows.map((r) => r.id);

  const fromOrders = await call(`/orders?strategy=micros&from=${bound}`);
  assert.equal(fromOrders.status, 200, JSON.stringify(fromOrders.body));
  assert.deepEqual(ids(fromOrders.body.orders), [orders[1]!.id], "from=.123456 lists .1239 only");
  const toOrders = await call(`/orders?strategy=micros&to=${bound}`);
  assert.deepEqual(ids(toOrders.body.orders), [orders[0]!.id], "to=.123456 lists .1231 only");

  const fromSignals = await call(`/signals?strategy=micros&from=${bound}`);
  assert.equal(fromSignals.status, 200, JSON.stringify(fromSignals.body));
  assert.deepEqual(ids(fromSignals.body.signals), [signals[1]!.id]);
  const toSignals = await call(`/signals?strategy=micros&to=${bound}`);
  assert.deepEqual(ids(toSignals.body.signals), [signals[0]!.id]);

  const taken = (body: { snapshots: { taken_at: string }[] }) =>
    body.snapshots.map((s) => new Date(s.taken_at).toISOString());
  const fromHistory = await call(`/portfolio/history?from=${bound}`);
  assert.equal(fromHistory.status, 200, JSON.stringify(fromHistory.body));
  assert.deepEqual(taken(fromHistory.body), ["2024-05-01T12:00:00.123Z"]);
  assert.equal(fromHistory.body.snapshots.length, 1);
  const toHistory = await call(`/portfolio/history?to=${bound}`);
  assert.equal(toHistory.body.snapshots.length, 1);
  // An exact bound on a stored microsecond: from includes it, to excludes it.
  const exact = await call(`/orders?strategy=micros&from=${after}&to=2024-05-01T12:00:00.123901Z`);
  assert.deepEqual(ids(exact.body.orders), [orders[1]!.id]);
  const excluded = await call(`/orders?strategy=micros&to=${after}`);
  assert.deepEqual(ids(excluded.body.orders), [orders[0]!.id]);
});

Deno.test("a sub-microsecond from/to goes up to the next microsecond: it neither drops nor adds the order at the microsecond before it", async () => {
  await using api = await startTradingApi();
  const call = async (path: string) => {
    const res = await api.app.request(`/api/v1/trading${path}`);
    return { status: res.status, body: await res.json() };
  };
  const at = "2024-05-01T12:00:00.123456Z";
  await api.sql`insert into symbols (symbol) values ('ETH-USDT') on conflict do nothing`;
  const [order] = await api.sql<{ id: string }[]>`
    insert into orders (symbol, side, qty, status, strategy, created_at)
    values ('ETH-USDT', 'buy', 1, 'cancelled', 'nanos', ${at}::text::timestamptz)
    returning id::text`;
  const bound = "2024-05-01T12:00:00.1234565Z"; // 0.5 µs after the order
  const to = await call(`/orders?strategy=nanos&to=${bound}`);
  const from = await call(`/orders?strategy=nanos&from=${bound}`);
  const ids = (body: { orders?: { id: string | number }[] }) =>
    (body.orders ?? []).map((o) => String(o.id));
  assert.equal(to.status, 200, JSON.stringify(to.body));
  assert.equal(from.status, 200, JSON.stringify(from.body));
  assert.deepEqual(
    { to: ids(to.body), from: ids(from.body) },
    { to: [order!.id], from: [] },
    `order created at ${at}; bound ${bound}: to (exclusive) must list it, from (inclusive) must not`,
  );
});
