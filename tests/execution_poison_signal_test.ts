/**
 * Signals over NATS that could fail the batch they arrive in: a body nested
 * 20,000 levels deep (once a stack overflow in the statement storing the
 * batch) is recorded as rejected without being read, and a message that makes
 * every batch holding it fail is handed in alone, so the valid signals
 * published with it are recorded all the same; after
 * `execution.max_signal_attempts` deliveries it is recorded as rejected
 * (`processing_failed`) with a critical alert and acknowledged. Each test runs
 * a private NATS server and its own migrated database.
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
import { tradingSupervisor } from "../actors/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { listSignals, listUnresolvedAlerts } from "../db/mod.ts";
import { DbConnectionError } from "../db/errors.ts";
import { nullLogger } from "../lib/log.ts";
import { ExecutionEngine, type SignalBatch, type SignalInput } from "../trading/execution.ts";
import { MAX_SIGNAL_BODY_DEPTH } from "../trading/signal.ts";
import { DEFAULT_SIGNALS_STREAM, signalsStream } from "../trading/signals_stream.ts";
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

/** What the poisoned engine does with a batch holding the poison: the error it fails with, or null to take it. */
type Poison = (attempt: number) => Error | null;

const STACK_OVERFLOW: Poison = () => new RangeError("Maximum call stack size exceeded");

/**
 * An engine for which every batch holding the signal with `id` "poison" fails as `poison` says —
 * unless it is handed in as a `failure`, to be recorded as rejected.
 */
function poisonedEngine(poison: Poison) {
  return class PoisonedEngine extends ExecutionEngine {
    /** Batches holding the poison handed in (and failed). */
    handedIn = 0;
    override enqueueSignals(items: readonly SignalInput[]): SignalBatch {
      const poisoned = items.some((item) =>
        item.failure === undefined && (item.body as { id?: unknown } | null)?.id === "poison"
      );
      const error = poisoned ? poison(this.handedIn + 1) : null;
      if (error === null) return super.enqueueSignals(items);
      this.handedIn++;
      const failed = Promise.reject(error);
      failed.catch(() => {});
      return { decided: failed, outcomes: failed };
    }
  };
}

/**
 * A private NATS server, a poisoned engine on a scratch database and its execution actor, with
 * `ids` queued before the consumer starts (so that they are pulled and handed in as one batch).
 */
async function poisonedActor(
  ids: readonly string[],
  maxSignalAttempts: number,
  poison: Poison = STACK_OVERFLOW,
) {
  const server = await startNatsServer();
  const published: Array<{ subject: string; data: unknown }> = [];
  const h = await scratchEngine({
    maxPriceAgeMs: 60_000,
    askPrice: "50002",
    engine: poisonedEngine(poison),
    publish: (subject, data) => published.push({ subject, data }),
  });
  const execution = { ...h.config.execution, max_signal_attempts: maxSignalAttempts };
  const nats = await connect({ servers: server.url });
  await ensureStreams(
    nats,
    [signalsStream({ max_age_s: execution.signals_max_age_s })],
    nullLogger,
  );
  const js = jetstream(nats);
  const publish = (id: string) =>
    js.publish("signals.grid", encodeJson({ id, symbol: "BTC-USDT", side: "buy", qty: "0.1" }));
  for (const id of ids) await publish(id);
  const actor = executionActor({
    nats,
    engine: h.engine,
    config: { execution },
    options: { warmup_ms: 0 },
  });
  const root = await startRoot({ name: "root" }, [actor]);
  const signals = async (status: "accepted" | "rejected" | undefined = undefined) =>
    (await listSignals(h.db.sql, { limit: 100, ...(status ? { status } : {}) })).items;
  return {
    db: h.db,
    engine: h.engine,
    nats,
    actor,
    published,
    publish,
    signals,
    /** Client ids of the signals recorded, sorted. */
    recorded: async (status?: "accepted" | "rejected") =>
      (await signals(status)).map((s) => s.client_signal_id).sort(),
    async [Symbol.asyncDispose]() {
      try {
        await deadline(root.stop(), 20_000, "execution stop");
        await nats.close();
      } finally {
        await h[Symbol.asyncDispose]();
        await server[Symbol.asyncDispose]();
      }
    },
  };
}

Deno.test("a signal that fails every batch holding it holds back none of the signals batched with it", async () => {
  await using t = await poisonedActor(["ok-1", "poison", "ok-2", "ok-3"], 0);
  await waitFor(
    async () => (await t.recorded()).length === 3,
    10_000,
    "the three valid signals recorded",
  );
  assert.deepEqual(await t.recorded(), ["ok-1", "ok-2", "ok-3"]);
  assert.ok(t.actor.counters.failed_batches >= 2, "the batch failed, then the poison alone");
  // The poison keeps failing alone, with a growing delay, while new signals go through.
  await t.publish("ok-4");
  await waitFor(async () => (await t.recorded()).includes("ok-4"), 5_000, "ok-4 recorded");
  // With max_signal_attempts 0 it is retried on and on, never recorded.
  await waitFor(() => t.engine.handedIn >= 5, 20_000, "five failed attempts");
  assert.deepEqual(await t.recorded("rejected"), []);
});

Deno.test("a signal failing every attempt alone is recorded as rejected (processing_failed) with an alert, and acknowledged", async () => {
  await using t = await poisonedActor(["ok-1", "poison", "ok-2"], 3);
  await waitFor(async () => (await t.signals("rejected")).length === 1, 20_000, "poison recorded");
  const [poison] = await t.signals("rejected");
  assert.equal(poison!.client_signal_id, "poison", "its own id is kept");
  assert.equal(poison!.strategy, "grid");
  assert.deepEqual(poison!.payload, { id: "poison", symbol: "BTC-USDT", side: "buy", qty: "0.1" });
  assert.deepEqual(poison!.reasons, [{
    rule: "processing_failed",
    message:
      "signal could not be processed in 3 attempts: RangeError: Maximum call stack size exceeded",
  }]);
  // Failed once in its batch (not counted: maybe not its fault), then three times alone; the next
  // delivery recorded it.
  assert.equal(t.engine.handedIn, 4);
  assert.deepEqual(await t.recorded("accepted"), ["ok-1", "ok-2"]);
  // Its reject event, and a critical alert naming it.
  const event = t.published.find((p) => p.subject === "signals.rejected");
  assert.equal((event?.data as { client_signal_id?: string })?.client_signal_id, "poison");
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
  assert.equal(t.engine.handedIn, 4);
  assert.equal((await t.signals("rejected")).length, 1);
});

Deno.test("deliveries that failed for want of the database do not count as a signal's own failed attempts", async () => {
  // Three batches fail for the database, then one alone for an error of its own; then it goes.
  await using t = await poisonedActor(
    ["poison"],
    3,
    (attempt) =>
      attempt <= 3
        ? new DbConnectionError("connection refused (database down)")
        : attempt === 4
        ? new Error("one transient failure")
        : null,
  );
  await waitFor(async () => (await t.recorded()).length === 1, 20_000, "the signal recorded");
  assert.deepEqual(await t.recorded("accepted"), ["poison"]);
  assert.equal(t.engine.handedIn, 4);
});

Deno.test("a processing_failed reason is stored whatever the error's text: U+0000, or a surrogate pair at the cut", async () => {
  const prefix = "signal could not be processed in 2 attempts: Error: ";
  for (
    const message of [
      "[DecimalError] Invalid argument: 0.1\u0000",
      // The high half of the emoji is the last code unit kept at the cut.
      `${"x".repeat(398 - prefix.length)}🚀 tail`,
    ]
  ) {
    await using t = await poisonedActor(["poison"], 2, () => new Error(message));
    await waitFor(async () => (await t.signals("rejected")).length === 1, 20_000, "recorded");
    const [reason] = (await t.signals("rejected"))[0]!.reasons as Array<
      { rule: string; message: string }
    >;
    assert.equal(reason!.rule, "processing_failed");
    assert.ok(reason!.message.startsWith(prefix), reason!.message);
    assert.ok(reason!.message.length <= 400, String(reason!.message.length));
  }
});
