/**
 * Signals over NATS that could fail the batch they arrive in: a body nested
 * 20,000 levels deep (once a stack overflow in the statement storing the
 * batch) is recorded as rejected without being read, and a message that makes
 * every batch holding it fail is handed in alone, so the valid signals
 * published with it are recorded all the same. Each test runs a private NATS
 * server and its own migrated database.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { executionActor } from "../actors/execution.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { listSignals } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { ExecutionEngine, type SignalBatch, type SignalInput } from "../trading/execution.ts";
import { MAX_SIGNAL_BODY_DEPTH } from "../trading/signal.ts";
import { signalsStream } from "../trading/signals_stream.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { btcUsdtTop, primedCache, scratchEngine } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

const DEPTH = 20_000;

function deepBody(id: string): string {
  return `{"id":"${id}","symbol":"BTC-USDT","side":"buy","qty":"0.01","junk":${"[".repeat(DEPTH)}${
    "]".repeat(DEPTH)
  }}`;
}

Deno.test("a deeply nested signal on NATS does not hold back the valid signals published with it", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "10" } });
  const nc = await connect({ servers: server.url });
  const cache = primedCache({ askPrice: "50002" });
  const trading = tradingSupervisor({ config, nats: nc, sql: db.sql, cache, log: nullLogger });
  const root = await startRoot({ name: "root" }, [trading]);
  try {
    const enc = new TextEncoder();
    // Keep the quote fresh while waiting.
    const fresh = setInterval(() => cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
    try {
      nc.publish("signals.momentum", enc.encode(deepBody("deep-1")));
      nc.publish(
        "signals.momentum",
        enc.encode(`{"id":"ok-1","symbol":"BTC-USDT","side":"buy","qty":"0.5"}`),
      );
      await nc.flush();
      const deadline = Date.now() + 15_000;
      let found = false;
      while (Date.now() < deadline) {
        const rows = await db.sql<{ n: number }[]>`
          select count(*)::int as n from signals where client_signal_id = 'ok-1'`;
        if ((rows[0]?.n ?? 0) > 0) {
          found = true;
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      assert.ok(found, "the valid signal ok-1 was never recorded within 15 s");
      await waitFor(
        async () => (await listSignals(db.sql, { status: "rejected" })).items.length === 1,
        15_000,
        "the deep signal recorded",
      );
      const [deep] = (await listSignals(db.sql, { status: "rejected" })).items;
      assert.equal(deep!.client_signal_id.startsWith("js-"), true, "its id was not read");
      assert.deepEqual(deep!.reasons, [{
        path: "",
        message: `signal must not nest arrays or objects more than ${MAX_SIGNAL_BODY_DEPTH} deep`,
      }]);
      assert.deepEqual(deep!.payload, { raw: deepBody("deep-1") });
    } finally {
      clearInterval(fresh);
    }
  } finally {
    await root.stop();
    await nc.close();
  }
});

/** An engine for which every batch holding a signal with `id` "poison" fails. */
class PoisonedEngine extends ExecutionEngine {
  override enqueueSignals(items: readonly SignalInput[]): SignalBatch {
    const poisoned = items.some((item) => (item.body as { id?: unknown } | null)?.id === "poison");
    if (!poisoned) return super.enqueueSignals(items);
    const failed = Promise.reject(new RangeError("Maximum call stack size exceeded"));
    failed.catch(() => {});
    return { decided: failed, outcomes: failed };
  }
}

Deno.test("a signal that fails every batch holding it holds back none of the signals batched with it", async () => {
  await using server = await startNatsServer();
  await using h = await scratchEngine({
    maxPriceAgeMs: 60_000,
    askPrice: "50002",
    engine: PoisonedEngine,
  });
  const { db, engine } = h;
  const execution = h.config.execution;
  const nats = await connect({ servers: server.url });
  // Queued before the consumer starts, so that they are pulled and handed in as one batch.
  await ensureStreams(
    nats,
    [signalsStream({ max_age_s: execution.signals_max_age_s })],
    nullLogger,
  );
  const js = jetstream(nats);
  const ids = ["ok-1", "poison", "ok-2", "ok-3"];
  for (const id of ids) {
    await js.publish(
      "signals.grid",
      encodeJson({ id, symbol: "BTC-USDT", side: "buy", qty: "0.1" }),
    );
  }
  const actor = executionActor({
    nats,
    engine,
    config: { execution },
    options: { warmup_ms: 0 },
  });
  const root = await startRoot({ name: "root" }, [actor]);
  try {
    const recorded = async () =>
      (await listSignals(db.sql, { limit: 100 })).items.map((s) => s.client_signal_id).sort();
    await waitFor(
      async () => (await recorded()).length === 3,
      10_000,
      "the three valid signals recorded",
    );
    assert.deepEqual(await recorded(), ["ok-1", "ok-2", "ok-3"]);
    assert.ok(actor.counters.failed_batches >= 2, "the batch failed, then the poison alone");
    // The poison keeps failing alone, with a growing delay, while new signals go through.
    await js.publish(
      "signals.grid",
      encodeJson({ id: "ok-4", symbol: "BTC-USDT", side: "buy", qty: "0.1" }),
    );
    await waitFor(async () => (await recorded()).includes("ok-4"), 5_000, "ok-4 recorded");
  } finally {
    await deadline(root.stop(), 20_000, "execution stop");
    await nats.close();
  }
});
