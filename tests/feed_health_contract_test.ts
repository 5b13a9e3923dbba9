/**
 * README "HTTP API", on a real engine process fed by a fake Coinbase venue:
 * `/api/health/detailed` is `degraded` (503) "while a feed is not live" and
 * `ok` (200) otherwise, and reports per feed its connection state,
 * reconnects, last message time and lag (`market.feeds`).
 */
import assert from "node:assert/strict";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { startCoinbaseServer } from "./fakes/coinbase_server.ts";

type Feed = {
  exchange: string;
  state: string;
  reconnects: number;
  last_message_at: number | null;
  lag_ms: number | null;
};
const feedOf = (body: Record<string, unknown>) =>
  ((body.market as { feeds: Feed[] } | undefined)?.feeds ?? []).find((f) =>
    f.exchange === "coinbase"
  );

Deno.test("health follows a feed: ok while live, degraded (503) naming the feed while it cannot reconnect, ok again once it is back", async () => {
  await using nats = await startNatsServer();
  await using venue = await startCoinbaseServer({ products: ["BTC-USD"], heartbeatMs: 200 });
  venue.setBook("BTC-USD", [["100", "1"]], [["101", "1"]]);
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "true",
    TRADEWIRE_EXCHANGES__COINBASE__WS_URL: venue.url,
    TRADEWIRE_EXCHANGES__COINBASE__SYMBOLS: "BTC-USD",
    TRADEWIRE_EXCHANGES__COINBASE__STALE_AFTER_MS: "2000",
    TRADEWIRE_EXCHANGES__COINBASE__RECONNECT_INITIAL_MS: "100",
    TRADEWIRE_EXCHANGES__COINBASE__RECONNECT_MAX_MS: "300",
  });
  const ok = await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => status === 200 && b.status === "ok",
    60_000,
  );
  const live = feedOf(ok);
  assert.ok(live, "market.feeds has coinbase");
  assert.equal(live.state, "live");
  assert.equal(typeof live.last_message_at, "number");
  assert.equal(typeof live.reconnects, "number");
  assert.ok("lag_ms" in live);

  venue.ws.refuse();
  venue.drop();
  const degraded = await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => status === 503 && b.status === "degraded",
    20_000,
  );
  const problems = degraded.problems as string[];
  assert.ok(
    problems.some((p) => p.startsWith("feed coinbase is ")),
    `problems name the feed: ${JSON.stringify(problems)}`,
  );
  assert.ok(feedOf(degraded)!.reconnects >= 1, "reconnects counted");

  venue.ws.accept();
  await waitForJson(
    engine,
    "/api/health/detailed",
    (b, status) => status === 200 && b.status === "ok",
    20_000,
  );
});
