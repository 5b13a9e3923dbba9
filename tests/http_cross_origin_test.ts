/**
 * Web pages cannot drive the HTTP API through the user's browser. On the
 * default setup (development profile, loopback, no API key) a page of another
 * site could send a "simple" `text/plain` POST (no CORS preflight) that
 * switched the kill switch off or placed an order, and a page whose DNS name
 * was rebound to 127.0.0.1 could do the same, and read the answers, as the
 * API's own origin. Now a request with a foreign `Origin` (or `Sec-Fetch-Site:
 * cross-site`/`same-site`) is refused 403, and one naming a host other than a
 * loopback one 421 (keyless trading routes; every route when the server
 * listens on loopback). Command-line clients — curl with `-d` (form content
 * type), scripts, strategy code — send neither header and are served as before.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { createApp } from "../api/app.ts";
import {
  isLoopbackHost,
  requireApiKey,
  requireLoopbackHost,
  requireSameOrigin,
} from "../api/auth.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import type { HealthSource } from "../api/health.ts";
import { httpServer } from "../api/server.ts";
import { tradingRoutes } from "../api/trading.ts";
import { ConfigError, hashApiKey, loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { startRoot } from "../actors/supervisor.ts";
import { startTradingApi } from "./_trading_api.ts";

/** What a page on https://evil.example can send with `fetch(…, { mode: "no-cors" })`. */
const CROSS_SITE = {
  origin: "https://evil.example",
  "content-type": "text/plain;charset=UTF-8",
  "sec-fetch-site": "cross-site",
  "sec-fetch-mode": "no-cors",
};

const KILL_SWITCH = "/api/v1/trading/kill-switch";

Deno.test("a cross-origin text/plain POST from a web page cannot switch the kill switch off", async () => {
  await using api = await startTradingApi();
  const on = await api.app.request(KILL_SWITCH, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ active: true, reason: "operator stop" }),
  });
  assert.equal(on.status, 200, await on.text());

  const res = await api.app.request(KILL_SWITCH, {
    method: "POST",
    headers: CROSS_SITE,
    body: JSON.stringify({ active: false, reason: "pwned" }),
  });
  const body = await res.json();
  assert.equal(api.trading.engine.killSwitch().active, true, JSON.stringify(body));
  assert.equal(res.status, 403);
  assert.equal(body.error.code, "cross_origin");
  assert.match(body.error.message, /https:\/\/evil\.example.*http\.allowed_origins/);
  // Without Origin (an older browser), Sec-Fetch-Site alone gives the page away.
  for (const site of ["cross-site", "same-site"]) {
    const bare = await api.app.request(KILL_SWITCH, {
      method: "POST",
      headers: { "content-type": "text/plain", "sec-fetch-site": site },
      body: JSON.stringify({ active: false }),
    });
    assert.equal(bare.status, 403, site);
  }
  assert.equal(api.trading.engine.killSwitch().active, true);
});

Deno.test("a cross-origin text/plain POST from a web page cannot place an order", async () => {
  await using api = await startTradingApi({
    prime(cache) {
      const us = Date.now() * 1000;
      cache.update([{
        kind: "top",
        exchange: "binance",
        symbol: "BTC-USDT",
        venue_symbol: "BTCUSDT",
        ts_exchange: us,
        ts_local: us,
        bid_price: "60000",
        bid_qty: "100",
        ask_price: "60010",
        ask_qty: "100",
      }]);
    },
  });
  const order = JSON.stringify({ id: "csrf-1", symbol: "BTC-USDT", side: "buy", qty: "1" });
  const res = await api.app.request("/api/v1/trading/signal", {
    method: "POST",
    headers: CROSS_SITE,
    body: order,
  });
  const body = await res.text();
  const [row] = await api.sql`select count(*)::int as n from orders`;
  assert.equal(row!.n, 0, `an order was placed: ${res.status} ${body}`);
  assert.equal(res.status, 403, body);
  const [signals] = await api.sql`select count(*)::int as n from signals`;
  assert.equal(signals!.n, 0, "the refused request left no signal row");

  // `curl -d '{…}' localhost:8000/api/v1/trading/signal` (form content type, no Origin) still trades.
  const curl = await api.app.request("http://localhost:8000/api/v1/trading/signal", {
    method: "POST",
    headers: { host: "localhost:8000", "content-type": "application/x-www-form-urlencoded" },
    body: JSON.stringify({ id: "curl-1", symbol: "BTC-USDT", side: "buy", qty: "1" }),
  });
  assert.equal(curl.status, 201, await curl.text());
});

Deno.test("command-line clients and the API's own pages are served: no Origin, the same origin, an allowed one", async () => {
  await using api = await startTradingApi();
  const cases: [string, Record<string, string>][] = [
    ["curl -d (form content type, no Origin)", {
      host: "127.0.0.1:8000",
      "content-type": "application/x-www-form-urlencoded",
    }],
    ["a script (no content type)", { host: "localhost:8000" }],
    ["a page of the API's own origin", {
      host: "127.0.0.1:8000",
      origin: "http://127.0.0.1:8000",
      "sec-fetch-site": "same-origin",
      "content-type": "text/plain",
    }],
    ["a page over IPv6 loopback", { host: "[::1]:8000", origin: "http://[::1]:8000" }],
    ["a typed-in navigation", { host: "localhost:8000", "sec-fetch-site": "none" }],
  ];
  for (const [what, headers] of cases) {
    const res = await api.app.request(`http://${headers.host}${KILL_SWITCH}`, {
      method: "POST",
      headers,
      body: JSON.stringify({ active: true, reason: what }),
    });
    assert.equal(res.status, 200, `${what}: ${await res.text()}`);
  }
  // A GET of the trading routes from another site is refused as well.
  const read = await api.app.request("/api/v1/trading/positions", {
    headers: { origin: "https://evil.example", "sec-fetch-site": "cross-site" },
  });
  assert.equal(read.status, 403);
});

Deno.test("http.allowed_origins lets a dashboard of another origin call the trading routes", async () => {
  await using api = await startTradingApi();
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_HTTP__ALLOWED_ORIGINS: "https://Dash.example.com/, http://localhost:3000" },
  });
  assert.deepEqual(config.http.allowed_origins, [
    "https://dash.example.com",
    "http://localhost:3000",
  ]);
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.route(
    "/api/v1/trading",
    tradingRoutes({
      sql: api.sql,
      engine: api.trading.engine,
      state: api.trading.state,
      cache: api.cache,
      maxPriceAgeMs: 60_000,
      apiKeyHashes: [],
      http: config.http,
    }),
  );
  const from = (origin: string, site: string) =>
    app.request(KILL_SWITCH, {
      method: "POST",
      headers: { origin, "sec-fetch-site": site, "content-type": "application/json" },
      body: JSON.stringify({ active: true }),
    });
  assert.equal((await from("https://dash.example.com", "cross-site")).status, 200);
  assert.equal((await from("http://localhost:3000", "same-site")).status, 200);
  assert.equal((await from("http://localhost:3001", "same-site")).status, 403);
  assert.equal((await from("null", "cross-site")).status, 403);
});

Deno.test("a request for another host name (DNS rebinding) is refused by the keyless trading routes", async () => {
  await using api = await startTradingApi();
  // A page on http://evil.example:8000 whose name now resolves to 127.0.0.1 is same-origin
  // with itself: it reads the answers, and its POSTs need no preflight at all.
  const res = await api.app.request(`http://evil.example:8000${KILL_SWITCH}`, {
    method: "POST",
    headers: {
      host: "evil.example:8000",
      origin: "http://evil.example:8000",
      "content-type": "application/json",
    },
    body: JSON.stringify({ active: true, reason: "rebound" }),
  });
  const body = await res.json();
  assert.equal(api.trading.engine.killSwitch().active, false, JSON.stringify(body));
  assert.equal(res.status, 421);
  assert.equal(body.error.code, "misdirected_request");
  assert.match(body.error.message, /evil\.example:8000.*http\.allowed_hosts/);
  const read = await api.app.request("http://evil.example:8000/api/v1/trading/orders", {
    headers: { host: "evil.example:8000" },
  });
  assert.equal(read.status, 421, "the rebound page reads no orders either");
});

Deno.test("trading routes with an API key take any Host unless the server listens on loopback", async () => {
  await using api = await startTradingApi();
  const key = "k".repeat(40);
  const routes = (http: { host: string }) => {
    const app = new Hono();
    app.onError(errorHandler(nullLogger));
    return hashApiKey(key).then((hash) => {
      app.route(
        "/t",
        tradingRoutes({
          sql: api.sql,
          engine: api.trading.engine,
          state: api.trading.state,
          cache: api.cache,
          maxPriceAgeMs: 60_000,
          apiKeyHashes: [hash],
          http,
        }),
      );
      return app;
    });
  };
  const ask = (app: Hono) =>
    app.request("http://api.example.com/t/kill-switch", {
      headers: { host: "api.example.com", authorization: `Bearer ${key}` },
    });
  assert.equal((await ask(await routes({ host: "0.0.0.0" }))).status, 200);
  assert.equal((await ask(await routes({ host: "127.0.0.1" }))).status, 421);
});

/** A health source that answers without services. */
function health(): HealthSource {
  return {
    version: "1",
    startedAt: Date.now(),
    probes: {
      postgres: () => Promise.resolve(1),
      nats: () => Promise.resolve(1),
      clickhouse: () => Promise.resolve(1),
    },
    actors: () => [],
    sections: () => ({}),
    probeTimeoutMs: 100,
  };
}

/** The app with a stand-in market-data route, listening (as configured) on `host`. */
function appOn(host: string, allowed_hosts: string[] = []) {
  const marketData = new Hono();
  marketData.get("/stream_status", (c) => c.json({ streams: [] }));
  return createApp({
    name: "tw",
    health: health(),
    log: nullLogger,
    routes: { "/api/v1/market-data": marketData },
    http: { host, allowed_hosts },
  });
}

Deno.test("every route refuses a rebound host name when the server listens on loopback", async () => {
  const app = appOn("127.0.0.1", ["tradewire-engine"]);
  const get = (host: string, path = "/api/v1/market-data/stream_status") =>
    app.request(`http://${host}${path}`, { headers: { host } });
  for (const path of ["/api/v1/market-data/stream_status", "/api/health", "/", "/nowhere"]) {
    const res = await get("evil.example:8000", path);
    assert.equal(res.status, 421, path);
    assert.equal((await res.json()).error.code, "misdirected_request");
  }
  for (
    const host of [
      "127.0.0.1:8000",
      "127.0.0.1",
      "127.1.2.3:8000",
      "localhost:8000",
      "LOCALHOST",
      "[::1]:8000",
      "tradewire-engine:8000",
    ]
  ) {
    assert.equal((await get(host)).status, 200, host);
  }
  for (const host of ["localhost.evil.example", "127.0.0.1.evil.example:8000", "0.0.0.0:8000"]) {
    assert.equal((await get(host)).status, 421, host);
  }
  // No Host at all (app.request): the URL's host, localhost.
  assert.equal((await app.request("/api/health")).status, 200);
  // Listening on every interface: any Host (the API key guards trading; market data is public).
  const open = appOn("0.0.0.0");
  assert.equal(
    (await open.request("http://api.example.com/api/health", {
      headers: { host: "api.example.com" },
    })).status,
    200,
  );
});

Deno.test("keyless trading routes answer only loopback clients unless http.allow_keyless_remote", async () => {
  const app = (allowKeylessRemote: boolean) => {
    const a = new Hono();
    a.onError(errorHandler(nullLogger));
    a.notFound(notFound);
    a.use("*", requireApiKey({ hashes: [], allowKeylessRemote }));
    a.get("/x", (c) => c.text("ok"));
    return a;
  };
  const peer = (hostname: string) => ({ remoteAddr: { transport: "tcp", hostname, port: 50000 } });
  const refused = await app(false).request("/x", {}, peer("192.168.1.7"));
  assert.equal(refused.status, 403);
  assert.match((await refused.json()).error.message, /192\.168\.1\.7.*http\.allow_keyless_remote/);
  for (const address of ["127.0.0.1", "::1", "::ffff:127.0.0.1"]) {
    assert.equal((await app(false).request("/x", {}, peer(address))).status, 200, address);
  }
  assert.equal((await app(true).request("/x", {}, peer("192.168.1.7"))).status, 200);
});

Deno.test("over a real socket the guards see the client's address and headers", async () => {
  const guarded = new Hono();
  guarded.use("*", requireSameOrigin());
  guarded.use("*", requireLoopbackHost());
  guarded.use("*", requireApiKey({ hashes: [] }));
  guarded.post("/switch", (c) => c.json({ switched: true }));
  const app = createApp({
    name: "tw",
    health: health(),
    log: nullLogger,
    routes: { "/t": guarded },
    http: { host: "127.0.0.1" },
  });
  let port = 0;
  const root = await startRoot({ name: "root" }, [
    httpServer(app, { host: "127.0.0.1", port: 0 }, { onListen: (a) => port = a.port }),
  ]);
  try {
    const post = (headers: Record<string, string>) =>
      fetch(`http://127.0.0.1:${port}/t/switch`, { method: "POST", headers, body: "{}" });
    const plain = await post({ "content-type": "application/x-www-form-urlencoded" });
    assert.equal(plain.status, 200, await plain.text());
    const csrf = await post({ origin: "https://evil.example", "content-type": "text/plain" });
    assert.equal(csrf.status, 403, await csrf.text());
  } finally {
    await root.stop();
  }
});

/** An IPv4 address of this machine that is not a loopback one, if it has one. */
const OTHER_ADDRESS = Deno.networkInterfaces()
  .find((i) => i.family === "IPv4" && !i.address.startsWith("127."))?.address;

Deno.test({
  name: "a keyless API listening on every interface refuses a client that is not on loopback",
  ignore: OTHER_ADDRESS === undefined,
  async fn() {
    const guarded = new Hono();
    guarded.use("*", requireApiKey({ hashes: [] }));
    guarded.get("/positions", (c) => c.json({ positions: [] }));
    const app = createApp({
      name: "tw",
      health: health(),
      log: nullLogger,
      routes: { "/t": guarded },
      http: { host: "0.0.0.0" },
    });
    let port = 0;
    const root = await startRoot({ name: "root" }, [
      httpServer(app, { host: "0.0.0.0", port: 0 }, { onListen: (a) => port = a.port }),
    ]);
    try {
      const remote = await fetch(`http://${OTHER_ADDRESS}:${port}/t/positions`);
      const body = await remote.json();
      assert.equal(remote.status, 403, JSON.stringify(body));
      assert.match(body.error.message, /http\.allow_keyless_remote/);
      const local = await fetch(`http://127.0.0.1:${port}/t/positions`);
      assert.equal(local.status, 200, await local.text());
    } finally {
      await root.stop();
    }
  },
});

Deno.test("isLoopbackHost names loopback hosts and addresses, not every interface", () => {
  for (const host of ["127.0.0.1", "127.9.9.9", "localhost", "LocalHost", "::1", "[::1]"]) {
    assert.ok(isLoopbackHost(host), host);
  }
  for (const host of ["0.0.0.0", "::", "[::]", "10.0.0.1", "localhost.example", "128.0.0.1"]) {
    assert.ok(!isLoopbackHost(host), host);
  }
});

Deno.test("http.allowed_origins and http.allowed_hosts are checked at load, naming the key", async () => {
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_HTTP__ALLOWED_HOSTS: "Tradewire-Engine,[::1],10.0.0.5" },
  });
  assert.deepEqual(config.http.allowed_hosts, ["tradewire-engine", "[::1]", "10.0.0.5"]);
  assert.equal(config.http.allow_keyless_remote, false);
  for (
    const [key, value] of [
      ["TRADEWIRE_HTTP__ALLOWED_ORIGINS", "https://dash.example.com/app"],
      ["TRADEWIRE_HTTP__ALLOWED_ORIGINS", "dash.example.com"],
      ["TRADEWIRE_HTTP__ALLOWED_ORIGINS", "ftp://dash.example.com"],
      ["TRADEWIRE_HTTP__ALLOWED_HOSTS", "engine:8000"],
      ["TRADEWIRE_HTTP__ALLOWED_HOSTS", "not a host"],
    ] as const
  ) {
    let error: unknown;
    try {
      await loadConfig({ args: [], env: { [key]: value } });
    } catch (e) {
      error = e;
    }
    assert.ok(error instanceof ConfigError, `${key}=${value} was accepted`);
    assert.match(error.message, new RegExp(key.slice(10).toLowerCase().replace("__", "\\.")));
  }
});
