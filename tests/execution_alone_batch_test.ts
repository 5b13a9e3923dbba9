/**
 * The execution actor's `alone` set: a message of a batch that failed for a
 * reason of its own is handed in alone until acknowledged — never again
 * batched with the fresh signals queued behind it, which would fail with it.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { executionActor } from "../actors/execution.ts";
import { startRoot } from "../actors/supervisor.ts";
import { listSignals } from "../db/mod.ts";
import { nullLogger } from "../lib/log.ts";
import {
  type EnqueueSignalsOptions,
  ExecutionEngine,
  type SignalBatch,
  type SignalInput,
} from "../trading/execution.ts";
import { signalsStream } from "../trading/signals_stream.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { scratchEngine } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";

const idOf = (item: SignalInput) => String((item.body as { id?: unknown } | null)?.id);

/** Every batch holding "poison" fails (not the database's fault); the others are decided a little late. */
class PoisonedEngine extends ExecutionEngine {
  readonly batches: string[][] = [];
  override enqueueSignals(
    items: readonly SignalInput[],
    options?: EnqueueSignalsOptions,
  ): SignalBatch {
    this.batches.push(items.map(idOf));
    if (items.some((item) => idOf(item) === "poison")) {
      const failed = Promise.reject(new RangeError("Maximum call stack size exceeded"));
      failed.catch(() => {});
      return { decided: failed, outcomes: failed };
    }
    // A slower engine (a busy database): messages queue up in the actor's buffer meanwhile.
    const later = new Promise((resolve) => setTimeout(resolve, 60)).then(() =>
      super.enqueueSignals(items, options)
    );
    const decided = later.then((b) => b.decided);
    const outcomes = later.then((b) => b.outcomes);
    decided.catch(() => {});
    outcomes.catch(() => {});
    return { decided, outcomes };
  }
}

Deno.test("a message handed in alone is handed in alone: fresh signals behind it are not batched with it", async () => {
  await using server = await startNatsServer();
  await using h = await scratchEngine({
    startingCash: "100000000",
    maxPriceAgeMs: 600_000,
    askPrice: "50002",
    engine: PoisonedEngine,
  });
  const { db, engine } = h;
  const execution = h.config.execution;
  const nats = await connect({ servers: server.url });
  await ensureStreams(
    nats,
    [signalsStream({ max_age_s: execution.signals_max_age_s })],
    nullLogger,
  );
  const js = jetstream(nats);
  const signal = (id: string) => encodeJson({ id, symbol: "BTC-USDT", side: "buy", qty: "0.001" });
  await js.publish("signals.grid", signal("ok-0"));
  await js.publish("signals.grid", signal("poison"));
  const actor = executionActor({ nats, engine, config: { execution }, options: { warmup_ms: 0 } });
  const root = await startRoot({ name: "root" }, [actor]);
  const fresh: string[] = [];
  try {
    // The first batch fails; the poison is then handed in alone, failing again and again
    // (its delay growing by its delivery count: ~0.4, 0.8, 1.6, 3.2 s).
    await waitFor(
      () => engine.batches.filter((b) => b.includes("poison")).length >= 2,
      10_000,
      "the poison handed in alone",
    );
    // Meanwhile, a steady flow of fresh signals.
    const until = Date.now() + 7_000;
    for (let i = 1; Date.now() < until; i++) {
      const id = `f-${i}`;
      fresh.push(id);
      await js.publish("signals.grid", signal(id));
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await waitFor(
      async () => {
        const rows = await db.sql<{ n: number }[]>`
          select count(*)::int as n from signals where client_signal_id like 'f-%'`;
        return rows[0]!.n === fresh.length;
      },
      30_000,
      "every fresh signal recorded",
    );
    const poisonBatches = engine.batches.filter((b) => b.includes("poison"));
    const withPoison = new Set(
      poisonBatches.slice(1).flatMap((b) => b.filter((id) => id.startsWith("f-"))),
    );
    assert.ok(poisonBatches.length >= 3, `poison handed in ${poisonBatches.length} times`);
    assert.deepEqual(
      poisonBatches.slice(1).map((b) => b.length),
      poisonBatches.slice(1).map(() => 1),
      `after its batch failed, the poison was handed in with ${withPoison.size} fresh ` +
        `signal(s) (batches: ${JSON.stringify(poisonBatches.map((b) => b.length))}), failing them`,
    );
    assert.equal((await listSignals(db.sql, { limit: 1000 })).items.length, fresh.length + 1);
  } finally {
    await deadline(root.stop(), 20_000, "execution stop");
    await nats.close();
  }
});
