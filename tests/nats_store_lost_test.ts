/**
 * NATS back without its JetStream store (a nats-server redeployed without its
 * volume, its store lost): the streams and durable consumers the engine reads
 * and writes are gone. The engine creates them again — SIGNALS and the
 * execution consumer, FILLS and the position tracker's, ENGINE_EVENTS and
 * MD_CLEAN — and a NATS that simply went away and came back on its store
 * restarts nothing (review 19).
 *
 * @module
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { type Config, loadConfig } from "../config/mod.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { memoryLogger } from "../lib/log.ts";
import { streamsActor } from "../actors/streams.ts";
import { ENGINE_STREAMS } from "../adapters/nats.ts";
import { encodeJson } from "../adapters/codec.ts";
import { btcUsdtTop, primedCache } from "./_execution_engine.ts";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { freePort, type NatsServer, startNatsServer } from "./_nats_server.ts";
import { migratedDatabase, scratchDatabase } from "./_postgres.ts";
import { deadline, waitFor } from "./_helpers.ts";

const enc = new TextEncoder();
const BUY = `{"symbol":"BTC-USDT","side":"buy","qty":"0.5"}`;
const SELL = `{"symbol":"BTC-USDT","side":"sell","qty":"0.25"}`;

async function tradingConfig(): Promise<Config> {
  return await loadConfig({
    args: [],
    env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "10", TRADEWIRE_RISK__MARKET_HOURS: "always" },
  });
}

/** A client that reconnects at once and forever, as the engine's does. */
function connectFast(url: string): Promise<NatsConnection> {
  return connect({
    servers: url,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
    reconnectJitter: 0,
  });
}

/** Whether `stream` has the durable `consumer` (false when either is missing). */
async function hasConsumer(nc: NatsConnection, stream: string, consumer: string) {
  try {
    await (await jetstreamManager(nc)).consumers.info(stream, consumer);
    return true;
  } catch {
    return false;
  }
}

/** The trading subtree on `url`, with a second connection for the test's own requests. */
async function startTrading(url: string, db: Awaited<ReturnType<typeof migratedDatabase>>) {
  const config = await tradingConfig();
  const cache = primedCache({ askPrice: "50002" });
  const fresh = setInterval(() => cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
  const { log, lines } = memoryLogger();
  const nats = await connectFast(url);
  const trading = tradingSupervisor({
    config,
    nats,
    sql: db.sql,
    cache,
    log,
    execution: { warmup_ms: 0 },
  });
  const root = await startRoot({ name: "root", intensity: 5, periodMs: 30_000 }, [trading]);
  return {
    root,
    lines,
    row: (name: string) => root.inspect().find((r) => r.name === `root/trading/${name}`),
    async [Symbol.asyncDispose]() {
      clearInterval(fresh);
      await deadline(root.stop(), 20_000, "trading stop");
      await nats.close();
    },
  };
}

async function orders(db: Awaited<ReturnType<typeof migratedDatabase>>): Promise<string[]> {
  return (await db.sql<{ side: string; qty: string }[]>`
    select side::text as side, qty::text as qty from orders order by id`)
    .map((o) => `${o.side} ${o.qty}`);
}

async function signalKeys(db: Awaited<ReturnType<typeof migratedDatabase>>): Promise<string[]> {
  return (await db.sql<{ client_signal_id: string }[]>`
    select client_signal_id from signals order by id`).map((s) => s.client_signal_id);
}

Deno.test("after NATS comes back without its store, the execution actor creates SIGNALS and its consumer again and a new signal is processed", async () => {
  await using db = await migratedDatabase();
  const port = freePort();
  let server: NatsServer = await startNatsServer({ port });
  try {
    await using trading = await startTrading(server.url, db);
    const nc = await connectFast(server.url);
    try {
      await jetstream(nc).publish("signals.momentum", enc.encode(BUY));
      await waitFor(async () => (await orders(db)).length === 1, 15_000, "the buy's order");
      await server.stop(); // its store goes with it
      server = await startNatsServer({ port }); // same address, empty store
      await waitFor(
        () => hasConsumer(nc, "SIGNALS", "execution"),
        30_000,
        "SIGNALS and the execution consumer created again",
      ).catch(() => {});
      let publishError = "";
      await jetstream(nc).publish("signals.momentum", enc.encode(SELL)).catch((error) => {
        publishError = error instanceof Error ? error.message : String(error);
      });
      assert.equal(
        publishError,
        "",
        `a signal cannot be published once NATS is back without its store; execution is ${
          JSON.stringify(trading.row("execution"))
        }`,
      );
      await waitFor(async () => (await orders(db)).length === 2, 15_000, "the sell's order")
        .catch(() => {});
      assert.deepEqual(await orders(db), ["buy 0.50000000", "sell 0.25000000"]);
      const [first, second] = await signalKeys(db);
      assert.equal(first, "js-1");
      assert.match(second ?? "", /^js-\d{13}-1$/, "the new stream's life keys its signals");
      const execution = trading.row("execution");
      assert.equal(execution?.status, "running");
      assert.ok((execution?.restarts ?? 0) >= 1, JSON.stringify(execution));
    } finally {
      await nc.close();
    }
  } finally {
    await server.stop();
  }
});

Deno.test("after NATS comes back without its store, the position tracker creates its FILLS consumer again and applies the new fills' messages", async () => {
  await using db = await migratedDatabase();
  const port = freePort();
  let server: NatsServer = await startNatsServer({ port });
  try {
    await using trading = await startTrading(server.url, db);
    const nc = await connectFast(server.url);
    try {
      await jetstream(nc).publish("signals.momentum", enc.encode(BUY));
      await waitFor(async () => (await orders(db)).length === 1, 15_000, "the buy's order");
      await server.stop();
      server = await startNatsServer({ port });
      await waitFor(() => hasConsumer(nc, "SIGNALS", "execution"), 30_000, "SIGNALS again");
      await jetstream(nc).publish("signals.momentum", enc.encode(SELL));
      await waitFor(async () => (await orders(db)).length === 2, 15_000, "the sell's order");
      // The sell's fill is on the new FILLS stream: the tracker's new consumer acknowledges it.
      const acked = async () => {
        try {
          const info = await (await jetstreamManager(nc)).consumers.info(
            "FILLS",
            "position_tracker",
          );
          return info.ack_floor.stream_seq >= 1;
        } catch {
          return false;
        }
      };
      await waitFor(acked, 30_000, "the fill's message acknowledged").catch(() => {});
      const tracker = trading.row("position_tracker");
      assert.ok(
        await acked(),
        `no position_tracker consumer on FILLS acknowledged the sell's fill (tracker ${
          JSON.stringify(tracker)
        })`,
      );
      assert.equal(tracker?.status, "running");
      const [position] = await db.sql<{ qty: string }[]>`
        select qty::text as qty from positions where symbol = 'BTC-USDT'`;
      assert.equal(position?.qty, "0.25000000");
    } finally {
      await nc.close();
    }
  } finally {
    await server.stop();
  }
});

Deno.test("a NATS outage on its store restarts neither the execution actor nor the position tracker", async () => {
  await using db = await migratedDatabase();
  const port = freePort();
  const storeDir = await Deno.makeTempDir({ prefix: "tw-nats-outage-" });
  let server: NatsServer = await startNatsServer({ port, storeDir });
  try {
    await using trading = await startTrading(server.url, db);
    const nc = await connectFast(server.url);
    try {
      await jetstream(nc).publish("signals.momentum", enc.encode(BUY));
      await waitFor(async () => (await orders(db)).length === 1, 15_000, "the buy's order");
      await server.stop();
      await new Promise((resolve) => setTimeout(resolve, 3_000)); // the outage: NATS away 3 s
      server = await startNatsServer({ port, storeDir });
      await waitFor(() => hasConsumer(nc, "SIGNALS", "execution"), 20_000, "NATS back");
      await jetstream(nc).publish("signals.momentum", enc.encode(SELL));
      await waitFor(async () => (await orders(db)).length === 2, 20_000, "the sell's order");
      assert.deepEqual(await signalKeys(db), ["js-1", "js-2"], "the same stream life");
      for (const name of ["execution", "position_tracker"]) {
        const row = trading.row(name);
        assert.equal(row?.restarts, 0, `${name}: ${JSON.stringify(row)}`);
        assert.equal(row?.status, "running", name);
      }
    } finally {
      await nc.close();
    }
  } finally {
    await server.stop();
    await Deno.remove(storeDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("after NATS comes back without its store, the streams actor creates ENGINE_EVENTS again and reports the missing SIGNALS and consumer until they are there", async () => {
  const port = freePort();
  let server: NatsServer = await startNatsServer({ port });
  const nats = await connectFast(server.url);
  const streams = streamsActor({
    nats,
    streams: ENGINE_STREAMS,
    consumers: [{ stream: "SIGNALS", consumer: "execution" }],
    recheck_ms: 50,
  });
  const root = await startRoot({ name: "root" }, [streams]);
  const nc = await connectFast(server.url);
  try {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.info("ENGINE_EVENTS"); // created at start
    await server.stop();
    server = await startNatsServer({ port });
    await waitFor(
      () => streams.problems().includes("JetStream stream SIGNALS is missing"),
      15_000,
      "the missing SIGNALS reported once NATS is back",
    );
    await waitFor(
      async () => {
        try {
          return (await jsm.streams.info("ENGINE_EVENTS")).config.name === "ENGINE_EVENTS";
        } catch {
          return false;
        }
      },
      15_000,
      "ENGINE_EVENTS created again",
    );
    await jsm.streams.add({ name: "SIGNALS", subjects: ["signals.>"] });
    await waitFor(
      () =>
        streams.problems().includes("JetStream consumer execution of stream SIGNALS is missing"),
      5_000,
      "the missing consumer reported",
    );
    await jsm.consumers.add("SIGNALS", { durable_name: "execution", ack_policy: "explicit" });
    await waitFor(() => streams.problems().length === 0, 5_000, "no problem once all is there");
    assert.equal(root.inspect().find((r) => r.name === "root/streams")?.restarts, 0);
  } finally {
    await deadline(root.stop(), 10_000, "streams stop");
    await nc.close();
    await nats.close();
    await server.stop();
  }
});

Deno.test({
  name:
    "an engine on a NATS back with an empty store creates its streams and consumers again: signals are taken, health is ok only then",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const natsPort = freePort();
    let nats = await startNatsServer({ port: natsPort });
    const db = await scratchDatabase();
    const chDb = `tw_nsl_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
    try {
      await using engine = await startEngineProcess(
        { NATS_URL: nats.url, TRADEWIRE_CLICKHOUSE__DATABASE: chDb },
        [],
        { databaseUrl: db.url },
      );
      await waitForJson(engine, "/api/health/detailed", (b) => b.status === "ok", 90_000);
      await nats.stop(); // its temporary store is removed with it
      await waitForJson(engine, "/api/health/detailed", (b) => b.status === "down", 30_000);
      nats = await startNatsServer({ port: natsPort }); // same port, empty store
      const nc = await connect({ servers: nats.url });
      try {
        const jsm = await jetstreamManager(nc);
        const everything = async () => {
          const names: string[] = [];
          for await (const s of jsm.streams.list()) names.push(s.config.name);
          const consumers = await Promise.all([
            hasConsumer(nc, "SIGNALS", "execution"),
            hasConsumer(nc, "FILLS", "position_tracker"),
            hasConsumer(nc, "MD_CLEAN", "batch_writer"),
          ]);
          return { streams: names.sort(), consumers };
        };
        // Whenever health says ok, what it needs is there.
        const seen: unknown[] = [];
        await waitFor(
          async () => {
            const health = await (await engine.get("/api/health/detailed")).json();
            if (health.status !== "ok") return false;
            const found = await everything();
            seen.push(found);
            return true;
          },
          60_000,
          "health ok again",
        ).catch(() => {});
        const found = await everything();
        assert.deepEqual(
          found,
          {
            streams: ["ENGINE_EVENTS", "FILLS", "MD_CLEAN", "SIGNALS"],
            consumers: [true, true, true],
          },
          `streams and consumers a minute after NATS came back; when health said ok: ${
            JSON.stringify(seen)
          }`,
        );
        assert.deepEqual(seen[0], found, "health said ok before everything was there");
        await jetstream(nc).publish(
          "signals.nsl",
          encodeJson({ id: "nsl-after", symbol: "BTC-USDT", side: "buy", qty: "0.01" }),
        );
        const sql = postgres(db.url, { max: 1, onnotice: () => {} });
        try {
          await waitFor(
            async () =>
              (await sql`select 1 from signals where client_signal_id = 'nsl-after'`).length === 1,
            15_000,
            "the signal sent after NATS came back stored",
          );
        } finally {
          await sql.end();
        }
      } finally {
        await nc.close();
      }
      assert.equal(await engine.kill("SIGTERM"), 0);
    } finally {
      await nats.stop();
      await db.drop();
      await fetch(
        `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${chDb}`)}`,
        { method: "POST" },
      ).then((r) => r.body?.cancel()).catch(() => {});
    }
  },
});
