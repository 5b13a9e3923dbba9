/**
 * A signal published on NATS under the key of a stored signal, with another
 * body, is refused on `signals.rejected` (`idempotency_key_reused`, naming the
 * stored signal), as `POST /signal` answers it 422 — it was acknowledged in
 * silence, so the strategy never learnt its order was not placed. A
 * redelivery, or the same body published again, stays a silent duplicate.
 * A private NATS server and a migrated database.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { decodeJson } from "../adapters/codec.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { listOrders, listSignals } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import type { SignalRejectEvent } from "../trading/signals_stream.ts";
import { waitFor } from "./_helpers.ts";
import { btcUsdtTop, primedCache } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

Deno.test("a NATS signal reusing a stored signal's id with another body is refused on signals.rejected; the same body again is not", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "10" } });
  const nc = await connect({ servers: server.url });
  const cache = primedCache({ askPrice: "50002" });
  const rejects: SignalRejectEvent[] = [];
  nc.subscribe("signals.rejected", {
    callback: (_error, msg) => {
      rejects.push(decodeJson<SignalRejectEvent>(msg.data));
    },
  });
  const trading = tradingSupervisor({ config, nats: nc, sql: db.sql, cache, log: nullLogger });
  const root = await startRoot({ name: "root" }, [trading]);
  const fresh = setInterval(() => cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
  try {
    const send = async (body: string) => {
      nc.publish("signals.momentum", new TextEncoder().encode(body));
      await nc.flush();
    };
    await send('{"id":"k-1","symbol":"BTC-USDT","side":"buy","qty":"0.5"}');
    await waitFor(
      async () => (await listOrders(db.sql, {})).items.length === 1,
      15_000,
      "the first signal's order",
    );
    // The same signal again (a strategy's retry): a silent duplicate. Then another body.
    await send('{"qty":"0.5","side":"buy","symbol":"BTC-USDT","id":"k-1"}');
    await send('{"id":"k-1","symbol":"BTC-USDT","side":"sell","qty":"0.2"}');
    // A marker after them: once it is recorded, both were handled.
    await send('{"id":"k-2","symbol":"BTC-USDT","side":"buy","qty":"0.1"}');
    await waitFor(
      async () => (await listSignals(db.sql, {})).items.length === 2 && rejects.length > 0,
      15_000,
      "the marker recorded and a reject event",
    );
    // The engine publishes on this connection: after a flush, every event it sent has arrived.
    await nc.flush();
    const [stored] = (await listSignals(db.sql, { status: "accepted" })).items.filter((s) =>
      s.client_signal_id === "k-1"
    );
    assert.equal(rejects.length, 1, JSON.stringify(rejects));
    const [event] = rejects;
    assert.equal(event!.signal_id, stored!.id);
    assert.equal(event!.strategy, "momentum");
    assert.equal(event!.client_signal_id, "k-1");
    assert.deepEqual(event!.reasons.map((r) => "rule" in r ? r.rule : r.path), [
      "idempotency_key_reused",
    ]);
    assert.match(
      event!.reasons[0]!.message,
      new RegExp(`^id "k-1" of strategy "momentum" was used before, for signal ${stored!.id} `),
    );
    // Nothing stored or placed for it: two signals, two orders (k-1's buy, k-2's).
    const orders = (await listOrders(db.sql, {})).items;
    assert.deepEqual(orders.map((o) => o.side).sort(), ["buy", "buy"]);
  } finally {
    clearInterval(fresh);
    await root.stop();
    await nc.close();
  }
});
