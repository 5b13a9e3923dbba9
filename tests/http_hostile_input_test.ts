/**
 * Request handling a hostile or careless client hits: a method a path does
 * not serve, bodies that are not UTF-8, duplicated JSON keys.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createApp } from "../api/app.ts";
import { nullLogger } from "../lib/log.ts";
import { startTradingApi } from "./_trading_api.ts";
import { healthyServices } from "./_helpers.ts";

const enc = new TextEncoder();

/** `prefix`, then bytes that are not UTF-8 (0xFF 0xFE), then `suffix`. */
function notUtf8(prefix: string, suffix: string): Uint8Array<ArrayBuffer> {
  return new Uint8Array([...enc.encode(prefix), 0xff, 0xfe, ...enc.encode(suffix)]);
}

Deno.test("a known path with a method it does not serve is a JSON 405 with Allow, not a 404 'No route'", async () => {
  await using api = await startTradingApi();
  const app = createApp({
    name: "tw",
    health: healthyServices(),
    log: nullLogger,
  });
  // The helper mounts the trading routes at /api/v1/trading, as the engine does.
  const cases: [string, string, string][] = [
    ["PUT", "/api/v1/trading/signal", "POST"],
    ["GET", "/api/v1/trading/signal", "POST"],
    ["PATCH", "/api/v1/trading/kill-switch", "GET"],
    ["POST", "/api/v1/trading/orders/1", "GET"],
  ];
  const problems: string[] = [];
  for (const [method, path, allowed] of cases) {
    const res = await api.app.request(path, method === "GET" ? { method } : { method, body: "{}" });
    const body = await res.json();
    if (res.status !== 405 || body?.error?.code !== "method_not_allowed") {
      problems.push(`${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
    } else if (!(res.headers.get("allow") ?? "").includes(allowed)) {
      problems.push(`${method} ${path}: 405 without Allow naming ${allowed}`);
    }
  }
  for (
    const [method, path] of [["POST", "/api/health"], ["DELETE", "/api/health/detailed"]] as const
  ) {
    const res = await app.request(path, { method });
    const body = await res.json();
    if (res.status !== 405 || body?.error?.code !== "method_not_allowed") {
      problems.push(`${method} ${path}: ${res.status} ${JSON.stringify(body)}`);
    }
  }
  // A path no route serves, under a mounted sub-app or not, stays a 404.
  for (const path of ["/api/v1/trading/nope", "/api/v1/nope", "/api/health/nope"]) {
    const res = await (path.startsWith("/api/v1/trading") ? api.app : app).request(path);
    await res.body?.cancel();
    if (res.status !== 404) problems.push(`GET ${path}: ${res.status}, expected 404`);
  }
  assert.deepEqual(
    problems,
    [],
    "wrong method on an existing resource must be 405 (RFC 9110 §15.5.6)",
  );
});
Deno.test("POST /kill-switch with a body that is not UTF-8 is a 400, not a reason silently rewritten with U+FFFD", async () => {
  await using api = await startTradingApi();
  const res = await api.app.request("/api/v1/trading/kill-switch", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: notUtf8('{"active":true,"reason":"halt ', '"}'),
  });
  const body = await res.json();
  const after = await (await api.app.request("/api/v1/trading/kill-switch")).json();
  assert.deepEqual(
    { status: res.status, code: body?.error?.code, stored_reason: after.kill_switch.reason },
    { status: 400, code: "bad_request", stored_reason: null },
    `answered ${res.status} ${JSON.stringify(body)}`,
  );
});

Deno.test("POST /signal with a body that is not UTF-8 is a 400, never stored with U+FFFD in its text", async () => {
  await using api = await startTradingApi();
  const res = await api.app.request("/api/v1/trading/signal", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: notUtf8(
      '{"id":"r38-utf8","strategy":"s1","symbol":"BTC-USDT","side":"buy","qty":"1","type":"market","reason":"x',
      '"}',
    ),
  });
  const body = await res.json();
  const listed = await (await api.app.request("/api/v1/trading/signals")).json();
  const stored = JSON.stringify(listed.signals);
  assert.deepEqual(
    { status: res.status, code: body?.error?.code, stored_has_fffd: stored.includes("\ufffd") },
    { status: 400, code: "bad_request", stored_has_fffd: false },
    `answered ${res.status} ${JSON.stringify(body)}`,
  );
});

Deno.test("POST /kill-switch with a duplicated key ({active:true, active:false}) is refused, not silently resolved to the last", async () => {
  await using api = await startTradingApi();
  const on = await api.app.request("/api/v1/trading/kill-switch", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"active":true}',
  });
  assert.equal(on.status, 200);
  const res = await api.app.request("/api/v1/trading/kill-switch", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"active":true,"active":false}',
  });
  const body = await res.json();
  const after = await (await api.app.request("/api/v1/trading/kill-switch")).json();
  assert.deepEqual(
    {
      status: res.status,
      details: body?.error?.details,
      still_active: after.kill_switch.active,
    },
    { status: 422, details: ["active: given more than once"], still_active: true },
    `answered ${res.status} ${JSON.stringify(body)}`,
  );
});
