/**
 * The README's NATS subject map, end to end on a real
 * engine process (private nats-server): a stock with a dot (`BRK.B`) priced
 * through `md.quote.alpaca.BRK_B`, a signal through REST, and what the engine
 * publishes about it; a refused signal; the kill switch's request/reply;
 * `portfolio.snapshot`; `engine.events.started`.
 */
import assert from "node:assert/strict";
import { connect, type Msg } from "@nats-io/transport-node";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { waitFor } from "./_helpers.ts";

const enc = new TextEncoder();

Deno.test("the subject map: BRK.B's quote, order transitions, fill, position, snapshot, reject event and kill switch travel on the documented subjects with the documented shapes", async () => {
  await using nats = await startNatsServer();
  const watcher = await connect({ servers: nats.url });
  const seen: Array<{ subject: string; data: unknown }> = [];
  watcher.subscribe(">", {
    callback: (_e, msg: Msg) => {
      if (msg.subject.startsWith("$JS") || msg.subject.startsWith("_INBOX")) return;
      let data: unknown;
      try {
        data = msg.json();
      } catch {
        data = msg.string();
      }
      seen.push({ subject: msg.subject, data });
    },
  });
  await watcher.flush();
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    // BRK.B is bought and filled whatever the hour: neither the risk check nor the paper broker
    // waits for the NYSE regular session.
    TRADEWIRE_RISK__EXCHANGES__ALPACA__MARKET_HOURS: "always",
    TRADEWIRE_BROKERS__PAPER__US_EQUITY_SESSION: "always",
    TRADEWIRE_PORTFOLIO__SNAPSHOT_INTERVAL_MS: "1000",
  });
  try {
    await waitForJson(engine, "/api/health/detailed", (_b, status) => status === 200, 60_000);
    const started = seen.find((m) => m.subject === "engine.events.started");
    assert.ok(started, "engine.events.started published");
    assert.deepEqual(Object.keys(started.data as object).sort(), ["instance_id", "version"]);

    // A quote of BRK.B, as the Alpaca feed would publish it.
    const nowUs = Date.now() * 1000;
    const quote = {
      kind: "quote",
      exchange: "alpaca",
      symbol: "BRK.B",
      venue_symbol: "BRK.B",
      ts_exchange: nowUs,
      ts_local: nowUs,
      bid_price: "470.10",
      bid_qty: "100",
      ask_price: "470.20",
      ask_qty: "100",
      bid_exchange: "V",
      ask_exchange: "V",
    };
    const waitLatest = async () => {
      await waitFor(
        async () => {
          watcher.publish("md.quote.alpaca.BRK_B", enc.encode(JSON.stringify([quote])));
          const res = await engine.get("/api/v1/market-data/latest/BRK.B");
          await res.body?.cancel();
          return res.status === 200;
        },
        20_000,
        "BRK.B priced in the latest-price cache",
      );
    };
    await waitLatest();
    assert.ok(
      seen.some((m) => m.subject === "clean.md.quote.alpaca.BRK_B"),
      "clean.md.quote.alpaca.BRK_B published",
    );

    const res = await fetch(`http://127.0.0.1:${engine.port}/api/v1/trading/signal`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        id: "subject-map-1",
        symbol: "BRK.B",
        side: "buy",
        qty: "1",
        exchange: "alpaca",
      }),
    });
    const body = await res.json();
    assert.equal(res.status, 201, JSON.stringify(body));
    await waitFor(
      () =>
        seen.some((m) => m.subject === "orders.filled.BRK_B") &&
        seen.some((m) => m.subject === "fills.BRK_B") &&
        seen.some((m) => m.subject === "positions.BRK_B"),
      20_000,
      `orders.filled.BRK_B, fills.BRK_B and positions.BRK_B (seen: ${
        JSON.stringify([...new Set(seen.map((m) => m.subject))])
      })`,
    );
    for (const subject of ["orders.filled.BRK_B", "fills.BRK_B", "positions.BRK_B"]) {
      const msg = seen.find((m) => m.subject === subject)!;
      assert.equal((msg.data as { symbol: string }).symbol, "BRK.B", subject);
    }
    const order = seen.find((m) => m.subject === "orders.filled.BRK_B")!.data as Record<
      string,
      unknown
    >;
    assert.equal(typeof order.filled_qty, "string", "money as decimal strings");
    // Each transition is published: pending → submitted → filled, in that order.
    const transitions = seen.filter((m) => m.subject.startsWith("orders.")).map((m) => m.subject);
    assert.deepEqual(
      transitions,
      ["orders.pending.BRK_B", "orders.submitted.BRK_B", "orders.filled.BRK_B"],
    );
    assert.equal(typeof order.avg_fill_price, "string", "money as decimal strings");

    // A refused signal over NATS: the reject event's documented shape.
    watcher.publish(
      "signals.subject_map",
      enc.encode(
        JSON.stringify({ id: "subject-map-bad", symbol: "BRK.B", side: "buy", qty: "-1" }),
      ),
    );
    await waitFor(
      () => seen.some((m) => m.subject === "signals.rejected"),
      20_000,
      "signals.rejected",
    );
    const reject = seen.find((m) => m.subject === "signals.rejected")!.data as Record<
      string,
      unknown
    >;
    assert.deepEqual(
      Object.keys(reject).sort(),
      ["client_signal_id", "reasons", "received_at", "signal_id", "strategy"],
    );
    assert.equal(reject.strategy, "subject_map");
    assert.equal(reject.client_signal_id, "subject-map-bad");

    // The kill switch: request/reply, errors included.
    const bad = await watcher.request("control.kill_switch", enc.encode("not json"), {
      timeout: 5_000,
    });
    const badReply = bad.json<Record<string, unknown>>();
    assert.equal(badReply.ok, false);
    assert.equal(typeof badReply.error, "string");
    const good = await watcher.request(
      "control.kill_switch",
      enc.encode(JSON.stringify({ active: true, reason: "subject map test" })),
      { timeout: 10_000 },
    );
    const goodReply = good.json<Record<string, unknown>>();
    assert.deepEqual(
      Object.keys(goodReply).sort(),
      ["active", "cancel_requested", "changed_at", "changed_by", "not_cancelled", "ok", "reason"],
    );
    assert.equal(goodReply.ok, true);
    assert.equal(goodReply.active, true);

    await waitFor(
      () => seen.some((m) => m.subject === "portfolio.snapshot"),
      10_000,
      "portfolio.snapshot",
    );
    const snap = seen.find((m) => m.subject === "portfolio.snapshot")!.data as Record<
      string,
      unknown
    >;
    for (
      const key of [
        "cash",
        "equity",
        "gross_exposure",
        "net_exposure",
        "realized_pnl",
        "unrealized_pnl",
      ]
    ) {
      assert.ok(key in snap, `portfolio.snapshot has ${key}: ${JSON.stringify(Object.keys(snap))}`);
    }

    const code = await engine.kill("SIGTERM");
    assert.equal(code, 0);
    await waitFor(
      () => seen.some((m) => m.subject === "engine.events.stopped"),
      5_000,
      "engine.events.stopped",
    );
    const stopped = seen.find((m) => m.subject === "engine.events.stopped")!.data;
    assert.deepEqual(Object.keys(stopped as object).sort(), ["exit_code", "instance_id"]);
  } finally {
    await watcher.close();
  }
});
