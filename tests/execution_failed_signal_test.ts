/**
 * A NATS signal that fails every time it is handed in alone, not for want of
 * the database (an engine bug it triggers): after
 * `execution.max_signal_attempts` deliveries it is recorded as rejected for
 * `processing_failed` with the error, its reject event published, a critical
 * alert raised and the message acknowledged — instead of coming back forever.
 * Runs a private NATS server and its own migrated database.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { executionActor } from "../actors/execution.ts";
import { startRoot } from "../actors/supervisor.ts";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { listSignals, listUnresolvedAlerts } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine, type SignalBatch, type SignalInput } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { DEFAULT_SIGNALS_STREAM, signalsStream } from "../trading/signals_stream.ts";
import { deadline, noRiskLimits, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

/** Every batch holding the signal with `id` "poison" fails, unless it comes as a `failure`. */
class PoisonedEngine extends ExecutionEngine {
  handedIn = 0;
  override enqueueSignals(items: readonly SignalInput[]): SignalBatch {
    const poisoned = items.some((item) =>
      item.failure === undefined && (item.body as { id?: unknown } | null)?.id === "poison"
    );
    if (poisoned) this.handedIn++;
    if (!poisoned) return super.enqueueSignals(items);
    const failed = Promise.reject(new RangeError("Maximum call stack size exceeded"));
    failed.catch(() => {});
    return { decided: failed, outcomes: failed };
  }
}

async function setUp(maxAttempts: number) {
  const server = await startNatsServer();
  const db = await migratedDatabase();
  const base = await loadConfig({ args: [], env: {} });
  const nats = await connect({ servers: server.url });
  const cache = new LatestCache();
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  const execution = {
    ...base.execution,
    max_price_age_ms: 60_000,
    max_signal_attempts: maxAttempts,
  };
  const published: Array<{ subject: string; data: unknown }> = [];
  const engine = new PoisonedEngine({
    sql: db.sql,
    brokers: new Map([[
      "paper",
      paperBroker({ cache, options: base.brokers.paper, max_price_age_ms: 60_000 }),
    ]]),
    cache,
    state,
    config: { risk: noRiskLimits(base), execution },
    publish: (subject, data) => published.push({ subject, data }),
    publishFill: () => Promise.resolve(),
    log: nullLogger,
  });
  const us = Date.now() * 1000;
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: us,
    ts_local: us,
    bid_price: "50000",
    bid_qty: "10",
    ask_price: "50002",
    ask_qty: "10",
  }]);
  await ensureStreams(
    nats,
    [signalsStream({ max_age_s: execution.signals_max_age_s })],
    nullLogger,
  );
  const js = jetstream(nats);
  for (const id of ["ok-1", "poison", "ok-2"]) {
    await js.publish(
      "signals.grid",
      encodeJson({ id, symbol: "BTC-USDT", side: "buy", qty: "0.1" }),
    );
  }
  const actor = executionActor({ nats, engine, config: { execution }, options: { warmup_ms: 0 } });
  const root = await startRoot({ name: "root" }, [actor]);
  return {
    db,
    nats,
    engine,
    actor,
    published,
    async [Symbol.asyncDispose]() {
      await deadline(root.stop(), 20_000, "execution stop");
      await nats.close();
      await db[Symbol.asyncDispose]();
      await server[Symbol.asyncDispose]();
    },
  };
}

Deno.test("a signal failing every attempt alone is recorded as rejected (processing_failed) with an alert, and acknowledged", async () => {
  await using t = await setUp(3);
  const rejected = async () => (await listSignals(t.db.sql, { status: "rejected" })).items;
  await waitFor(async () => (await rejected()).length === 1, 20_000, "the poison recorded");
  const [poison] = await rejected();
  assert.equal(poison!.client_signal_id, "poison", "its own id is kept");
  assert.equal(poison!.strategy, "grid");
  assert.deepEqual(poison!.payload, { id: "poison", symbol: "BTC-USDT", side: "buy", qty: "0.1" });
  assert.equal(poison!.reasons?.length, 1);
  const [reason] = poison!.reasons as Array<{ rule?: string; message: string }>;
  assert.equal(reason!.rule, "processing_failed");
  assert.match(
    reason!.message,
    /^signal could not be processed in 3 attempts: RangeError: Maximum call stack size exceeded$/,
  );
  // Three deliveries processed and failed (one in its batch, two alone); the fourth recorded it.
  assert.equal(t.engine.handedIn, 3);
  // The valid signals went through.
  const accepted = (await listSignals(t.db.sql, { status: "accepted" })).items
    .map((s) => s.client_signal_id).sort();
  assert.deepEqual(accepted, ["ok-1", "ok-2"]);
  // Its reject event, and a critical alert naming it.
  const event = t.published.find((p) => p.subject === "signals.rejected");
  assert.ok(event, "a reject event on signals.rejected");
  assert.equal((event.data as { client_signal_id: string }).client_signal_id, "poison");
  await waitFor(
    async () => (await listUnresolvedAlerts(t.db.sql)).length === 1,
    5_000,
    "the alert raised",
  );
  const [alert] = await listUnresolvedAlerts(t.db.sql);
  assert.equal(alert!.severity, "critical");
  assert.equal((alert!.details as { client_signal_id: string }).client_signal_id, "poison");
  // Acknowledged: nothing left pending on the consumer, and it does not come back.
  const jsm = await jetstreamManager(t.nats);
  await waitFor(
    async () => {
      const consumers = await jsm.consumers.list(DEFAULT_SIGNALS_STREAM).next();
      return consumers.every((c) => c.num_ack_pending === 0 && c.num_pending === 0);
    },
    5_000,
    "every signal acknowledged",
  );
  assert.equal(t.engine.handedIn, 3);
  assert.equal((await rejected()).length, 1);
});

Deno.test("max_signal_attempts 0 keeps retrying a failing signal instead of recording it", async () => {
  await using t = await setUp(0);
  await waitFor(() => t.engine.handedIn >= 5, 20_000, "five failed attempts");
  assert.deepEqual((await listSignals(t.db.sql, { status: "rejected" })).items, []);
  const accepted = (await listSignals(t.db.sql, { status: "accepted" })).items
    .map((s) => s.client_signal_id).sort();
  assert.deepEqual(accepted, ["ok-1", "ok-2"]);
});
