/**
 * Health while PostgreSQL answers but refuses every write — read-only, as a
 * standby during a failover onto it; simulated on the engine's scratch
 * database with `ALTER DATABASE … SET default_transaction_read_only = on` and
 * its backends ended so that the engine reconnects read-only. A real engine
 * process: its health is `down`, naming PostgreSQL read-only and the signals
 * held, and `ok` again once PostgreSQL takes writes, when the signals are
 * recorded as accepted (none rejected as `processing_failed`).
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { PG_ADMIN_URL, startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { setReadOnly } from "./_postgres.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { quoter } from "./_chaos.ts";

const IDS = ["ro-1", "ro-2", "ro-3"] as const;

Deno.test({
  name:
    "health is down while PostgreSQL is read-only, naming it and the signals held, and ok again once it takes writes",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    await using nats = await startNatsServer();
    const name = `tw_test_ro_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
    const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
    await admin`create database ${admin(name)}`;
    const url = `postgres://postgres@127.0.0.1:5432/${name}`;
    const readOnly = (on: boolean) => setReadOnly(admin, url, on);
    const nc = await connect({ servers: nats.url });
    const quotes = quoter(nc);
    try {
      await using engine = await startEngineProcess(
        {
          NATS_URL: nats.url,
          TRADEWIRE_CLICKHOUSE__DATABASE: name,
          TRADEWIRE_WRITER__ENABLED: "false",
          // A signal failing for itself would be rejected after its second failure alone.
          TRADEWIRE_EXECUTION__MAX_SIGNAL_ATTEMPTS: "2",
        },
        [],
        { databaseUrl: url },
      );
      await waitForJson(engine, "/api/health/detailed", (b) => b.status === "ok", 60_000);
      await readOnly(true);
      const problems = (body: Record<string, unknown>) => (body.problems ?? []) as string[];
      const down = await waitForJson(
        engine,
        "/api/health/detailed",
        (body, status) =>
          status === 503 && body.status === "down" &&
          problems(body).includes("postgres is read-only (transaction_read_only is on)"),
        30_000,
      );
      assert.deepEqual((down.components as Record<string, unknown>).postgres, {
        status: "down",
        latency_ms: null,
        error: "read-only (transaction_read_only is on)",
      });
      const js = jetstream(nc);
      for (const id of IDS) {
        await js.publish(
          "signals.ro",
          encodeJson({ id, symbol: "BTC-USDT", side: "buy", qty: "0.01" }),
          { msgID: id },
        );
      }
      const held = await waitForJson(
        engine,
        "/api/health/detailed",
        (body) =>
          problems(body).some((p) =>
            p.startsWith("execution cannot record signals since ") &&
            p.includes(`(${IDS.length} held, the database unavailable)`) &&
            p.includes("read-only transaction")
          ),
        30_000,
      );
      assert.equal(held.status, "down");
      // Refused often enough that a signal failing for itself would have been rejected.
      await waitFor(
        () =>
          engine.lines.filter((l) =>
            l.message === "signal batch failed; its messages come back later" &&
            JSON.stringify(l).includes("read-only transaction")
          ).length >= 4,
        30_000,
        "four batches refused as read-only",
      );
      await readOnly(false);
      const ok = await waitForJson(
        engine,
        "/api/health/detailed",
        (body, status) => status === 200 && body.status === "ok",
        60_000,
      );
      assert.deepEqual(ok.problems, []);
      const sql = postgres(url, { max: 1, onnotice: () => {} });
      try {
        const rows = await sql<{ client_signal_id: string; status: string }[]>`
          select client_signal_id, status from signals order by client_signal_id`;
        assert.deepEqual(
          rows.map((r) => [r.client_signal_id, r.status]),
          IDS.map((id) => [id, "accepted"]),
        );
      } finally {
        await sql.end();
      }
      assert.equal(await deadline(engine.kill("SIGTERM"), 20_000, "exit"), 0);
    } finally {
      quotes.stop();
      await nc.close();
      await readOnly(false).catch(() => {});
      await admin`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name}`;
      await admin`drop database if exists ${admin(name)}`;
      await admin.end();
      await fetch(
        `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${name}`)}`,
        { method: "POST" },
      ).then((r) => r.body?.cancel()).catch(() => {});
    }
  },
});
