/**
 * The execution engine's process with the real Alpaca adapter against the
 * loopback fake of Alpaca's Trading API: health while Alpaca refuses the
 * stream.
 */

import assert from "node:assert/strict";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import {
  FAKE_ALPACA_KEY_ID,
  FAKE_ALPACA_SECRET_KEY,
  startAlpacaTradingServer,
} from "./fakes/alpaca_trading_server.ts";
import { type FakeSocket, startWsServer } from "./fakes/ws_server.ts";

Deno.test("alpaca engine: health is degraded while Alpaca refuses the trade_updates stream's keys", async () => {
  await using nats = await startNatsServer();
  await using fake = await startAlpacaTradingServer();
  let authorized = true;
  let refusedAuths = 0;
  const listening = new Set<FakeSocket>();
  // Alpaca's /stream handshake, able to start refusing the keys; REST goes to the fake.
  await using alpaca = await startWsServer({
    http: async (request) => {
      const url = new URL(request.url);
      const body = request.method === "GET" || request.method === "HEAD"
        ? null
        : await request.text();
      return await fetch(`${fake.baseUrl}${url.pathname}${url.search}`, {
        method: request.method,
        headers: request.headers,
        body,
      });
    },
    onMessage: (socket, text) => {
      const message = JSON.parse(text);
      if (message.action === "authenticate") {
        socket.send(JSON.stringify({
          stream: "authorization",
          data: { status: authorized ? "authorized" : "unauthorized", action: message.action },
        }));
        if (!authorized) {
          refusedAuths++;
          socket.close(1000, "unauthorized");
        }
      } else if (message.action === "listen") {
        listening.add(socket);
        socket.send(JSON.stringify({ stream: "listening", data: { streams: ["trade_updates"] } }));
      }
    },
    onClose: (socket) => void listening.delete(socket),
  });
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    TRADEWIRE_BROKERS__ALPACA__ENABLED: "true",
    TRADEWIRE_BROKERS__ALPACA__BASE_URL: alpaca.httpUrl,
    TRADEWIRE_BROKERS__ALPACA__KEY_ID: FAKE_ALPACA_KEY_ID,
    TRADEWIRE_BROKERS__ALPACA__SECRET_KEY: FAKE_ALPACA_SECRET_KEY,
  });
  const ok = await waitForJson(
    engine,
    "/api/health/detailed",
    (body) => body.status === "ok",
    60_000,
  );
  await waitFor(() => listening.size === 1, 30_000, "the engine listens to trade_updates");

  // The keys are revoked: the connection is lost and every reconnect is refused.
  authorized = false;
  for (const socket of alpaca.openSockets()) socket.drop();
  await waitFor(() => refusedAuths >= 1, 30_000, "a refused reconnect");
  const body = await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => b.status === "degraded" && status === 503,
    10_000,
  );
  assert.equal((ok.brokers as Record<string, { state: string }>).alpaca?.state, "listening");
  const problems = body.problems as string[];
  assert.ok(
    problems.some((p) => p.startsWith("broker alpaca: event stream refused the API keys")),
    JSON.stringify(problems),
  );
  const stream = (body.brokers as Record<string, Record<string, unknown>>).alpaca!;
  assert.equal(stream.auth_error, true);
  assert.notEqual(stream.state, "listening");
});
