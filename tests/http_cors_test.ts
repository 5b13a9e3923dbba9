/**
 * A dashboard served from an origin in `http.allowed_origins` calls the
 * trading API from a browser (review 54). Before, the API sent no CORS
 * headers: the browser's preflight (OPTIONS, no API key) was answered 401,
 * and a keyed GET answered 200 was hidden from the page for want of
 * `Access-Control-Allow-Origin`. Now the preflight of an allowed origin is
 * answered 204 before the API key is asked for, and every answer to that
 * origin names it, errors included; other origins are refused as before.
 *
 * @module
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { createApp } from "../api/app.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { httpServer } from "../api/server.ts";
import { tradingRoutes } from "../api/trading.ts";
import { hashApiKey, loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { startTradingApi } from "./_trading_api.ts";
import { healthyServices } from "./_helpers.ts";

const KEY = "k".repeat(16) + "Zq3v9RtW2pLx8YbN4sDf";
const DASH = "https://dash.example.com";
const KILL_SWITCH = "/api/v1/trading/kill-switch";

/** What a browser sends first for `fetch(…, { method: "POST", headers: { Authorization, "content-type": "application/json" } })`. */
function preflight(
  origin: string,
  method = "POST",
  extra: Record<string, string> = {},
): RequestInit {
  return {
    method: "OPTIONS",
    headers: {
      ...extra,
      origin,
      "sec-fetch-site": "cross-site",
      "sec-fetch-mode": "cors",
      "access-control-request-method": method,
      "access-control-request-headers": "authorization,content-type",
    },
  };
}

/** The trading routes with an API key and `http.allowed_origins` (written as an operator might). */
async function dashboardApi(api: Awaited<ReturnType<typeof startTradingApi>>) {
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_HTTP__ALLOWED_ORIGINS: "https://Dash.example.com/" },
  });
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.notFound(notFound);
  app.route(
    "/api/v1/trading",
    tradingRoutes({
      sql: api.sql,
      engine: api.trading.engine,
      state: api.trading.state,
      cache: api.cache,
      maxPriceAgeMs: 60_000,
      apiKeyHashes: [await hashApiKey(KEY)],
      http: config.http,
    }),
  );
  return app;
}

Deno.test("the preflight of an origin in http.allowed_origins is answered 204 with CORS headers, without an API key", async () => {
  await using api = await startTradingApi();
  const app = await dashboardApi(api);
  for (const [path, method] of [[KILL_SWITCH, "POST"], ["/api/v1/trading/orders/7", "DELETE"]]) {
    const res = await app.request(path!, preflight(DASH, method));
    const text = await res.text();
    assert.equal(res.status, 204, `${method} ${path}: ${text}`);
    assert.equal(res.headers.get("access-control-allow-origin"), DASH);
    assert.equal(res.headers.get("access-control-allow-methods"), "GET, POST, DELETE");
    assert.equal(
      res.headers.get("access-control-allow-headers"),
      "authorization, x-api-key, content-type, idempotency-key",
    );
    assert.equal(res.headers.get("access-control-max-age"), "600");
    assert.match(res.headers.get("vary") ?? "", /\bOrigin\b/);
    // API keys are headers, not cookies: no credentials mode.
    assert.equal(res.headers.get("access-control-allow-credentials"), null);
  }
  assert.equal(api.trading.engine.killSwitch().active, false, "a preflight switches nothing");
});

Deno.test("every answer to an allowed origin names it, so the page reads successes and errors alike", async () => {
  await using api = await startTradingApi();
  const app = await dashboardApi(api);
  const from = { origin: DASH, "sec-fetch-site": "cross-site" };
  const keyed = { ...from, authorization: `Bearer ${KEY}` };
  const cases: [string, number, string, RequestInit][] = [
    ["keyed GET", 200, "/api/v1/trading/positions", { headers: keyed }],
    ["keyed POST", 200, KILL_SWITCH, {
      method: "POST",
      headers: { ...keyed, "content-type": "application/json" },
      body: JSON.stringify({ active: true, reason: "from the dashboard" }),
    }],
    ["no key", 401, "/api/v1/trading/positions", { headers: from }],
    ["a wrong key", 403, "/api/v1/trading/positions", {
      headers: { ...from, "x-api-key": "w".repeat(36) },
    }],
    ["a duplicated JSON key", 422, KILL_SWITCH, {
      method: "POST",
      headers: { ...keyed, "content-type": "application/json" },
      body: '{"active":true,"active":false}',
    }],
    ["a method the path does not serve", 405, KILL_SWITCH, { method: "PATCH", headers: keyed }],
    ["a path no route serves", 404, "/api/v1/trading/nope", { headers: keyed }],
  ];
  const problems: string[] = [];
  for (const [what, status, path, init] of cases) {
    const res = await app.request(path, init);
    const text = await res.text();
    if (res.status !== status) problems.push(`${what}: ${res.status} ${text}`);
    if (res.headers.get("access-control-allow-origin") !== DASH) {
      problems.push(
        `${what}: Access-Control-Allow-Origin ${res.headers.get("access-control-allow-origin")}`,
      );
    }
    if (!/\bOrigin\b/.test(res.headers.get("vary") ?? "")) {
      problems.push(`${what}: no Vary: Origin`);
    }
  }
  assert.deepEqual(problems, []);
  assert.equal(api.trading.engine.killSwitch().active, true);
  // A 405's Allow is readable by the page.
  const wrong = await app.request(KILL_SWITCH, { method: "PATCH", headers: keyed });
  await wrong.body?.cancel();
  assert.match(wrong.headers.get("access-control-expose-headers") ?? "", /\bAllow\b/);
  assert.match(wrong.headers.get("allow") ?? "", /POST/);
});

Deno.test("other origins stay refused, and clients without Origin get no CORS headers", async () => {
  await using api = await startTradingApi();
  const app = await dashboardApi(api);
  // A preflight of an origin not allowed: 403 cross_origin, nothing the browser would accept.
  for (const origin of ["https://evil.example", "https://dash.example.com.evil.example", "null"]) {
    const res = await app.request(KILL_SWITCH, preflight(origin));
    const body = await res.json();
    assert.equal(res.status, 403, origin);
    assert.equal(body.error.code, "cross_origin");
    assert.equal(res.headers.get("access-control-allow-origin"), null, origin);
    assert.equal(res.headers.get("access-control-allow-methods"), null, origin);
  }
  const evil = await app.request("/api/v1/trading/positions", {
    headers: { origin: "https://evil.example", authorization: `Bearer ${KEY}` },
  });
  await evil.body?.cancel();
  assert.equal(evil.status, 403);
  assert.equal(evil.headers.get("access-control-allow-origin"), null);
  // curl: no Origin, no CORS headers; an OPTIONS that is no preflight is a 405 naming the methods.
  const curl = await app.request("/api/v1/trading/positions", {
    headers: { authorization: `Bearer ${KEY}` },
  });
  await curl.body?.cancel();
  assert.equal(curl.status, 200);
  assert.equal(curl.headers.get("access-control-allow-origin"), null);
  const options = await app.request(KILL_SWITCH, {
    method: "OPTIONS",
    headers: { origin: DASH, authorization: `Bearer ${KEY}` },
  });
  await options.body?.cancel();
  assert.equal(options.status, 405);
  assert.match(options.headers.get("allow") ?? "", /GET.*POST/);
  assert.equal(options.headers.get("access-control-allow-origin"), DASH);
  // An OPTIONS without a key that is no preflight still asks for one.
  const bare = await app.request(KILL_SWITCH, { method: "OPTIONS" });
  await bare.body?.cancel();
  assert.equal(bare.status, 401);
});

Deno.test("without http.allowed_origins the trading routes send no CORS headers and refuse preflights", async () => {
  await using api = await startTradingApi({ apiKeyHashes: [await hashApiKey(KEY)] });
  const res = await api.app.request(KILL_SWITCH, preflight(DASH));
  await res.body?.cancel();
  assert.equal(res.status, 403);
  assert.equal(res.headers.get("access-control-allow-origin"), null);
  const own = await api.app.request("/api/v1/trading/positions", {
    headers: { authorization: `Bearer ${KEY}` },
  });
  await own.body?.cancel();
  assert.equal(own.status, 200);
  assert.equal(own.headers.get("access-control-allow-origin"), null);
});

Deno.test("as the engine mounts them (loopback listener), the trading routes answer a dashboard's preflight and request", async () => {
  await using api = await startTradingApi();
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_HTTP__ALLOWED_ORIGINS: DASH, TRADEWIRE_HTTP__HOST: "127.0.0.1" },
  });
  const app = createApp({
    name: "tw",
    health: healthyServices(),
    log: nullLogger,
    http: config.http,
    routes: {
      "/api/v1/trading": tradingRoutes({
        sql: api.sql,
        engine: api.trading.engine,
        state: api.trading.state,
        cache: api.cache,
        maxPriceAgeMs: 60_000,
        apiKeyHashes: [await hashApiKey(KEY)],
        http: config.http,
      }),
    },
  });
  const url = `http://127.0.0.1:8000${KILL_SWITCH}`;
  const host = { host: "127.0.0.1:8000" };
  const pre = await app.request(url, preflight(DASH, "POST", host));
  await pre.body?.cancel();
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("access-control-allow-origin"), DASH);
  const post = await app.request(url, {
    method: "POST",
    headers: {
      ...host,
      origin: DASH,
      "sec-fetch-site": "cross-site",
      authorization: `Bearer ${KEY}`,
      "content-type": "application/json",
    },
    body: JSON.stringify({ active: true, reason: "dashboard" }),
  });
  assert.equal(post.status, 200, await post.text());
  assert.equal(post.headers.get("access-control-allow-origin"), DASH);
  assert.equal(api.trading.engine.killSwitch().active, true);
});

Deno.test("a body too large is a 413 the dashboard's page can read: the server's limit sends the CORS headers too", async () => {
  await using api = await startTradingApi();
  const app = await dashboardApi(api);
  let port = 0;
  const ac = new AbortController();
  const running = httpServer(app, {
    host: "127.0.0.1",
    port: 0,
    max_body_bytes: 64,
    allowed_origins: ["https://Dash.example.com/"],
  }, { onListen: (a) => port = a.port }).start(ac.signal);
  await running.ready;
  try {
    const post = (origin: string) =>
      fetch(`http://127.0.0.1:${port}${KILL_SWITCH}`, {
        method: "POST",
        headers: {
          origin,
          "sec-fetch-site": "cross-site",
          authorization: `Bearer ${KEY}`,
          "content-type": "application/json",
        },
        body: JSON.stringify({ active: true, reason: "x".repeat(200) }),
      });
    const res = await post(DASH);
    const body = await res.json();
    assert.equal(res.status, 413, JSON.stringify(body));
    assert.equal(body.error.code, "payload_too_large");
    assert.equal(res.headers.get("access-control-allow-origin"), DASH);
    assert.match(res.headers.get("vary") ?? "", /\bOrigin\b/);
    assert.match(res.headers.get("access-control-expose-headers") ?? "", /\bAllow\b/);
    // Another origin's page still reads nothing.
    const other = await post("https://evil.example.com");
    await other.body?.cancel();
    assert.equal(other.status, 413);
    assert.equal(other.headers.get("access-control-allow-origin"), null);
    assert.equal(api.trading.engine.killSwitch().active, false, "the refused body changed nothing");
  } finally {
    ac.abort();
    await running.done;
  }
});
