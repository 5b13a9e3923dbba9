/**
 * Signals over NATS while PostgreSQL refuses writes — read-only, as a standby
 * during a failover onto it (SQLSTATE 25006), simulated on the scratch
 * database with `ALTER DATABASE … SET default_transaction_read_only = on` and
 * its backends ended so that the pool reconnects read-only. That is the
 * database's failure, not the signals': their batches are held as in an
 * outage, no failure counts toward `execution.max_signal_attempts`, and every
 * signal is recorded once PostgreSQL takes writes again; meanwhile the
 * actor's problems (health) say since when and how many are held. Each test
 * runs a private NATS server and its own migrated database.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { executionActor } from "../actors/execution.ts";
import { startRoot } from "../actors/supervisor.ts";
import { listSignals, listUnresolvedAlerts } from "../db/mod.ts";
import { memoryLogger, nullLogger } from "../lib/log.ts";
import { signalsStream } from "../trading/signals_stream.ts";
import { collectUncaught, deadline, notPeerGone, waitFor } from "./_helpers.ts";
import { scratchEngine } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";
import { ADMIN_URL, setReadOnly } from "./_postgres.ts";

const IDS = ["ro-1", "ro-2", "ro-3"] as const;

/**
 * A private NATS server, an engine on a scratch database and its execution
 * actor (running, `max_signal_attempts` 2), with `readOnly(on)` turning the
 * database read-only or back and ending its connections.
 */
async function readOnlyWorld() {
  const server = await startNatsServer();
  const h = await scratchEngine({ maxPriceAgeMs: 120_000, askPrice: "50002" });
  const execution = { ...h.config.execution, max_signal_attempts: 2 };
  const nats = await connect({ servers: server.url });
  await ensureStreams(
    nats,
    [signalsStream({ max_age_s: execution.signals_max_age_s })],
    nullLogger,
  );
  const { log, lines } = memoryLogger("warn");
  const actor = executionActor({ nats, engine: h.engine, config: { execution }, log });
  const root = await startRoot({ name: "root" }, [actor]);
  const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
  const readOnly = (on: boolean) => setReadOnly(admin, h.db.url, on);
  const js = jetstream(nats);
  return {
    actor,
    readOnly,
    /** How many times a batch failed as read-only (logged, whatever the actor made of it). */
    readOnlyFailures: () =>
      lines.filter((line) => JSON.stringify(line.error ?? "").includes("read-only transaction"))
        .length,
    /** The signals recorded, read on a connection of its own (the pool's were ended). */
    signals: async () => {
      const sql = postgres(h.db.url, { max: 1, onnotice: () => {} });
      try {
        return (await listSignals(sql, { limit: 10 })).items;
      } finally {
        await sql.end();
      }
    },
    /** Unresolved alerts, read so too. */
    alerts: async () => {
      const sql = postgres(h.db.url, { max: 1, onnotice: () => {} });
      try {
        return await listUnresolvedAlerts(sql);
      } finally {
        await sql.end();
      }
    },
    publish: async (id: string) => {
      await js.publish(
        "signals.grid",
        encodeJson({ id, symbol: "BTC-USDT", side: "buy", qty: "0.1" }),
      );
    },
    async [Symbol.asyncDispose]() {
      try {
        await deadline(root.stop(), 20_000, "execution stop");
        await nats.close();
        await readOnly(false);
      } finally {
        await admin.end();
        await h[Symbol.asyncDispose]();
        await server[Symbol.asyncDispose]();
      }
    },
  };
}

Deno.test("signals received while PostgreSQL is read-only are held as in an outage, not rejected as processing_failed, and recorded once it takes writes", async () => {
  // Ending the backends may leave postgres.js's write to a closed connection uncaught (main.ts
  // lets it pass); nothing else may be.
  using uncaught = collectUncaught();
  {
    await using t = await readOnlyWorld();
    await t.readOnly(true);
    for (const id of IDS) await t.publish(id);
    // Five batches refused as read-only: were that the signals' own failure, the batch would have
    // been handed in again one signal at a time, and with max_signal_attempts 2 the first signal
    // rejected after its second failure alone.
    await waitFor(() => t.readOnlyFailures() >= 5, 30_000, "five batches refused as read-only");
    assert.equal((await t.signals()).length, 0, "nothing could be recorded");
    await t.readOnly(false);
    await waitFor(
      async () => (await t.signals()).length === IDS.length,
      30_000,
      "the signals recorded once PostgreSQL takes writes",
    );
    const signals = await t.signals();
    assert.deepEqual(
      signals.map((s) => [s.client_signal_id, s.status]).sort(),
      IDS.map((id) => [id, "accepted"]),
      JSON.stringify(signals.map((s) => s.reasons)),
    );
    assert.deepEqual(await t.alerts(), [], "no processing_failed alert");
  }
  assert.deepEqual(notPeerGone(uncaught), []);
});

Deno.test("the execution actor reports signals held while PostgreSQL refuses them, until a batch commits", async () => {
  // Ending the backends may leave postgres.js's write to a closed connection uncaught (main.ts
  // lets it pass); nothing else may be.
  using uncaught = collectUncaught();
  {
    await using t = await readOnlyWorld();
    assert.deepEqual(t.actor.problems(), []);
    const before = Date.now();
    await t.readOnly(true);
    for (const id of IDS) await t.publish(id);
    await waitFor(
      () =>
        t.actor.problems().some((p) =>
          p.includes(`(${IDS.length} held`) && p.includes("read-only transaction")
        ),
      30_000,
      "the problem with every signal held, refused as read-only",
    );
    const [problem] = t.actor.problems();
    const match =
      /^execution cannot record signals since (\S+) \(3 held, the database unavailable\): (.*)$/
        .exec(problem ?? "");
    assert.ok(match !== null, problem);
    const since = Date.parse(match[1]!);
    assert.ok(since >= before - 1_000 && since <= Date.now(), match[1]);
    assert.match(match[2]!, /read-only transaction/);
    await t.readOnly(false);
    await waitFor(
      () => t.actor.problems().length === 0,
      30_000,
      "the problem gone once a batch commits",
    );
    assert.deepEqual((await t.signals()).map((s) => s.status), IDS.map(() => "accepted"));
  }
  assert.deepEqual(notPeerGone(uncaught), []);
});
