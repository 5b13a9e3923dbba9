/**
 * Input handling of the trading API (`/api/v1/trading`) on a running trading
 * subtree with a private NATS server and its own database: bad parameters and
 * bodies are answered with a 400 (or 404, 422) naming what is wrong, never a
 * 500 and never silently ignored or rounded.
 *
 * @module
 */
import assert from "node:assert/strict";
import { MAX_SIGNAL_BODY_DEPTH } from "../trading/signal.ts";
import { binanceTop } from "./_helpers.ts";
import { startTradingApi, type TradingApiOptions } from "./_trading_api.ts";

/** The trading API (no API key) on a running trading subtree, a private NATS and its own database. */
async function tradingApi(options: TradingApiOptions = {}) {
  const api = await startTradingApi(options);
  const { app } = api;
  const call = async (method: string, path: string, body?: string) => {
    const res = await app.request(`/api/v1/trading${path}`, {
      method,
      ...(body === undefined ? {} : { headers: { "content-type": "application/json" }, body }),
    });
    return { status: res.status, body: await res.json() };
  };
  return Object.assign(api, { call });
}

Deno.test("trading API answers bad input with 400 or 404 naming the parameter, never 500", async (t) => {
  await using api = await tradingApi();

  await t.step("an order id outside 1..2^63-1 is a 400; a valid unknown one a 404", async () => {
    for (const id of ["0", "9999999999999999999", "9223372036854775808"]) {
      for (const method of ["GET", "DELETE"]) {
        const res = await api.call(method, `/orders/${id}`);
        assert.equal(res.status, 400, `${method} /orders/${id}: ${JSON.stringify(res.body)}`);
        assert.match(res.body.error.message, /order id must be an integer from 1 to/);
      }
    }
    const unknown = await api.call("GET", "/orders/9223372036854775807");
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
  });

  await t.step("a cursor outside 1..2^63-1 is a 400 naming cursor", async () => {
    for (const list of ["/orders", "/signals", "/portfolio/history"]) {
      for (const cursor of ["0", "9999999999999999999"]) {
        const res = await api.call("GET", `${list}?cursor=${cursor}`);
        assert.equal(res.status, 400, `${list}?cursor=${cursor}: ${JSON.stringify(res.body)}`);
        assert.match(res.body.error.message, /^cursor must be an integer from 1 to/);
      }
    }
    const last = await api.call("GET", "/orders?cursor=9223372036854775807");
    assert.equal(last.status, 200, JSON.stringify(last.body));
    assert.deepEqual(last.body, { orders: [], next_cursor: null });
  });

  await t.step("from/to outside 1970..9999 or not ISO-8601 is a 400 naming it", async () => {
    for (
      const [path, name] of [
        ["/orders?from=-200000-01-01T00:00:00Z", "from"],
        ["/signals?from=99999-01-01", "from"],
        ["/signals?to=99999-01-01", "to"],
        ["/orders?to=275760-09-13", "to"],
        ["/orders?from=8640000000000000", "from"],
        ["/orders?from=253402300800000", "from"],
        ["/portfolio/history?to=%2B275760-09-13T00:00:00Z", "to"],
        ["/orders?from=May%201%2C%202024", "from"],
        ["/orders?from=2024-05-01T12:00:00", "from"],
      ] as const
    ) {
      const res = await api.call("GET", path);
      assert.equal(res.status, 400, `${path}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.error.message, new RegExp(`^${name} must be`), path);
    }
    for (
      const path of [
        "/orders?from=0&to=253402300799999",
        "/signals?from=1970-01-01&to=9999-12-31T23:59:59.999Z",
        "/orders?from=2024-05-01T12:00:00.123456%2B02:00",
      ]
    ) {
      const res = await api.call("GET", path);
      assert.equal(res.status, 200, `${path}: ${JSON.stringify(res.body)}`);
    }
  });

  await t.step("a symbol or strategy filter with U+0000 or a lone surrogate is a 400", async () => {
    for (
      const [path, name] of [
        ["/orders?symbol=%00", "symbol"],
        ["/signals?symbol=%00", "symbol"],
        ["/positions?symbol=%00", "symbol"],
        ["/positions?symbol=BTC-USD%ED%A0%80", "symbol"],
        ["/orders?strategy=a%00b", "strategy"],
        ["/signals?strategy=a%00b", "strategy"],
        ["/signals?strategy=a%ED%A0%80", "strategy"],
      ] as const
    ) {
      const res = await api.call("GET", path);
      assert.equal(res.status, 400, `${path}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.error.message, new RegExp(`^${name} must be`), path);
    }
    const good = await api.call("GET", "/orders?symbol=BRK.B&strategy=mean_rev-2");
    assert.equal(good.status, 200, JSON.stringify(good.body));
  });

  await t.step("a kill-switch reason with U+0000 or a lone surrogate is a 422", async () => {
    for (
      const body of [
        String.raw`{"active":true,"reason":"x\u0000"}`,
        String.raw`{"active":true,"reason":"a\ud800b"}`,
      ]
    ) {
      const res = await api.call("POST", "/kill-switch", body);
      assert.equal(res.status, 422, `${body}: ${JSON.stringify(res.body)}`);
      assert.deepEqual(res.body.error.details, [
        "reason: must not hold U+0000 or an unpaired surrogate",
      ]);
    }
    assert.equal(api.trading.engine.killSwitch().active, false);
    const ok = await api.call("POST", "/kill-switch", `{"active":false,"reason":"all clear"}`);
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
  });
});

Deno.test("GET /orders refuses a calendar date that does not exist instead of reading it as another day", async () => {
  await using api = await startTradingApi();
  for (const bad of ["2024-02-31", "2024-02-30T12:00:00Z", "2023-04-31"]) {
    const res = await api.app.request(`/api/v1/trading/orders?from=${bad}`);
    const body = await res.json();
    // README: from/to are ISO-8601 only; anything else gets 400 naming it.
    assert.equal(
      res.status,
      400,
      `from=${bad} is not an ISO-8601 date; got ${res.status} ${
        JSON.stringify(body).slice(0, 120)
      }`,
    );
    assert.match(body.error.message, /from/);
  }
});

Deno.test("GET /orders refuses an empty symbol or strategy filter instead of listing every order", async () => {
  await using api = await startTradingApi();
  for (const param of ["symbol=", "strategy="]) {
    const res = await api.app.request(`/api/v1/trading/orders?${param}`);
    const body = await res.json();
    // README: symbol is a canonical symbol, strategy 1–64 characters; anything else gets 400.
    assert.equal(
      res.status,
      400,
      `${param} is not a filter; got ${res.status} ${JSON.stringify(body).slice(0, 120)}`,
    );
  }
});

Deno.test("trading list from/to: an impossible calendar date is a 400, not silently the next month", async () => {
  await using api = await tradingApi();
  for (
    const path of [
      "/orders?from=2024-02-30",
      "/signals?to=2023-02-29",
      "/orders?to=2024-04-31T00:00:00Z",
      "/portfolio/history?from=2024-02-31",
    ]
  ) {
    const res = await api.call("GET", path);
    assert.equal(res.status, 400, `${path}: ${JSON.stringify(res.body)}`);
    assert.match(res.body.error.message, /^(from|to) must be/, path);
  }
});

Deno.test("GET /positions?all= takes only true or false; anything else is a 400 naming it", async () => {
  await using api = await tradingApi();
  for (const value of ["yes", "1", "TRUE", ""]) {
    const res = await api.call("GET", `/positions?all=${value}`);
    assert.equal(res.status, 400, `all=${value}: ${JSON.stringify(res.body)}`);
    assert.match(res.body.error.message, /^all must be true or false/);
  }
  for (const value of ["true", "false"]) {
    const res = await api.call("GET", `/positions?all=${value}`);
    assert.equal(res.status, 200, `all=${value}: ${JSON.stringify(res.body)}`);
  }
});

Deno.test("trading list limit must be a plain integer 1..1000: 1e2, 0x10 or ' 5' are 400s", async () => {
  await using api = await tradingApi();
  for (const list of ["/orders", "/signals", "/portfolio/history"]) {
    for (const value of ["1e2", "0x10", "%205", "5%20", "5.0", "+5", "0", "1001", ""]) {
      const res = await api.call("GET", `${list}?limit=${value}`);
      assert.equal(res.status, 400, `${list}?limit=${value}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.error.message, /^limit must be/);
    }
    for (const value of ["1", "0100", "1000"]) {
      const res = await api.call("GET", `${list}?limit=${value}`);
      assert.equal(res.status, 200, `${list}?limit=${value}: ${JSON.stringify(res.body)}`);
    }
  }
});

Deno.test("trading list parameters given empty (from=, to=, symbol=, strategy=) are 400s, not ignored", async () => {
  await using api = await tradingApi();
  for (
    const path of [
      "/orders?from=",
      "/orders?to=",
      "/signals?symbol=",
      "/signals?status=",
      "/orders?status=",
      "/orders?strategy=",
      "/portfolio/history?from=",
      "/portfolio/history?to=",
      "/positions?symbol=",
    ]
  ) {
    const res = await api.call("GET", path);
    assert.equal(res.status, 400, `${path}: ${JSON.stringify(res.body)}`);
  }
});

/** The trading API with a fresh BTC-USDT quote and room for orders of up to 10. */
function pricedTradingApi() {
  return tradingApi({
    env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "10" },
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
}

Deno.test("POST /signal: a JSON-number price or qty is taken exactly, never rounded through a float", async () => {
  await using api = await pricedTradingApi();
  // A limit price with 12 decimals is refused as a string and as a JSON number alike (JSON.parse
  // would have rounded the number to 49000 and placed the order there).
  for (const price of [`"49000.000000000001"`, "49000.000000000001"]) {
    const res = await api.call(
      "POST",
      "/signal",
      `{"symbol":"BTC-USDT","side":"buy","qty":"0.01","type":"limit","limit_price":${price}}`,
    );
    assert.equal(res.status, 422, `${price}: ${JSON.stringify(res.body)}`);
    assert.deepEqual(res.body.error.details, [{
      path: "limit_price",
      message:
        "limit_price must have at most 8 decimal places and 12 integer digits, got 49000.000000000001",
    }]);
  }
  const wide = await api.call(
    "POST",
    "/signal",
    `{"symbol":"BTC-USDT","side":"sell","qty":0.100000000000000001}`,
  );
  assert.equal(wide.status, 422, JSON.stringify(wide.body));
  assert.match(wide.body.error.message, /^qty must have at most 8 decimal places/);
  // Numbers that fit are taken as written, an exponent too; the body is stored as sent.
  const exact = await api.call(
    "POST",
    "/signal",
    `{"id":"n-1","symbol":"BTC-USDT","side":"buy","qty":1.5E-1,"type":"limit",` +
      `"limit_price":49000.12345678}`,
  );
  assert.equal(exact.status, 201, JSON.stringify(exact.body));
  assert.equal(exact.body.order.qty, "0.15");
  assert.equal(exact.body.order.limit_price, "49000.12345678");
  const listed = await api.call("GET", "/signals?strategy=default");
  const stored = listed.body.signals.find((s: { client_signal_id: string }) =>
    s.client_signal_id === "n-1"
  );
  assert.deepEqual(stored.payload, {
    id: "n-1",
    symbol: "BTC-USDT",
    side: "buy",
    qty: 0.15,
    type: "limit",
    limit_price: 49000.12345678,
  });
});

Deno.test("POST /signal: a deeply nested (40 KB) body is a 422 naming the nesting, never a 500", async () => {
  await using api = await pricedTradingApi();
  const depth = 20_000;
  const body = `{"symbol":"BTC-USDT","side":"buy","qty":"0.01","junk":${"[".repeat(depth)}${
    "]".repeat(depth)
  }}`;
  assert.ok(body.length < 1_048_576, "well under http.max_body_bytes");
  const res = await api.call("POST", "/signal", body);
  assert.equal(res.status, 422, JSON.stringify(res.body).slice(0, 300));
  assert.deepEqual(res.body.error.details, [{
    path: "",
    message: `signal must not nest arrays or objects more than ${MAX_SIGNAL_BODY_DEPTH} deep`,
  }]);
  // Recorded as rejected, its body kept as text; a body just within the limit is read.
  const listed = await api.call("GET", "/signals?status=rejected");
  assert.deepEqual(listed.body.signals.map((s: { payload: unknown }) => s.payload), [{
    raw: body,
  }]);
  const within = `{"symbol":"BTC-USDT","side":"buy","qty":"0.01","junk":${
    "[".repeat(MAX_SIGNAL_BODY_DEPTH - 1)
  }${"]".repeat(MAX_SIGNAL_BODY_DEPTH - 1)}}`;
  const known = await api.call("POST", "/signal", within);
  assert.equal(known.status, 422, JSON.stringify(known.body));
  assert.deepEqual(known.body.error.details, [{ path: "", message: 'unknown field "junk"' }]);
  const notJson = await api.call("POST", "/signal", `{"symbol":"BTC-USDT",`);
  assert.equal(notJson.status, 400, JSON.stringify(notJson.body));
});

Deno.test("a trading list parameter given more than once is a 400 naming it, never half-read", async () => {
  await using api = await tradingApi();
  await api
    .sql`insert into symbols (symbol) values ('ETH-USDT'), ('SOL-USDT') on conflict do nothing`;
  await api
    .sql`insert into orders (symbol, side, type, qty, limit_price, status, filled_qty, avg_fill_price, strategy)
    values ('ETH-USDT', 'buy', 'limit', 1, 10, 'filled', 1, 10, 'repeat'),
           ('SOL-USDT', 'sell', 'limit', 1, 10, 'cancelled', 0, null, 'repeat')`;
  const cases: [string, string][] = [
    ["/orders?strategy=repeat&status=filled&status=cancelled", "status"],
    ["/orders?symbol=ETH-USDT&symbol=SOL-USDT", "symbol"],
    ["/orders?limit=1&limit=2", "limit"],
    ["/orders?from=2024-01-01&from=2025-01-01", "from"],
    ["/signals?status=accepted&status=rejected", "status"],
    ["/signals?strategy=a&strategy=b", "strategy"],
    ["/positions?symbol=ETH-USDT&symbol=SOL-USDT", "symbol"],
    ["/positions?all=true&all=false", "all"],
    ["/portfolio/history?to=2024-01-01&to=2025-01-01", "to"],
    ["/portfolio/history?cursor=1&cursor=2", "cursor"],
  ];
  for (const [path, name] of cases) {
    const res = await api.call("GET", path);
    assert.equal(res.status, 400, `${path}: ${JSON.stringify(res.body)}`);
    assert.match(
      res.body.error.message,
      new RegExp(`^Parameter "${name}" is given 2 times; give it once`),
      path,
    );
  }
  // Several statuses are given once, comma-separated, as the 400 advises: on each list.
  const both = await api.call("GET", "/orders?strategy=repeat&status=filled,cancelled");
  assert.equal(both.status, 200, JSON.stringify(both.body));
  assert.deepEqual(both.body.orders.map((o: { status: string }) => o.status).sort(), [
    "cancelled",
    "filled",
  ]);
  const twice = await api.call("GET", "/signals?status=accepted&status=rejected");
  assert.match(twice.body.error.message, /several statuses: status=a,b/);
  const sent = await api.call(
    "POST",
    "/signal",
    JSON.stringify({ id: "repeat-1", symbol: "ETH-USDT", side: "buy", qty: "0.01" }),
  );
  assert.equal(sent.status, 422, JSON.stringify(sent.body));
  const signals = await api.call("GET", "/signals?status=accepted,rejected");
  assert.equal(signals.status, 200, JSON.stringify(signals.body));
  assert.deepEqual(
    signals.body.signals.map((s: { client_signal_id: string }) => s.client_signal_id),
    ["repeat-1"],
  );
});
