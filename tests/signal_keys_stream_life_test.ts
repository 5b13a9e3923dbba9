/**
 * A NATS signal without `id` is keyed by its `SIGNALS` stream sequence. When
 * the stream starts over (NATS moved to a new host or its JetStream store
 * lost, `nats stream rm SIGNALS`) with the same database, sequence 1 comes
 * again: a new signal was taken for a duplicate of an unrelated old one and
 * silently swallowed — no order, no reject event (review 18). Keys now name
 * the stream's life (`js-<created ms>-<seq>` for any life but the one keyed
 * `js-<seq>`), while a message of the current life redelivered after a
 * restart or across the upgrade is still recognised.
 *
 * @module
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { type Config, loadConfig } from "../config/mod.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { nullLogger } from "../lib/log.ts";
import { plainSignalKeys, signalKeysConfigKey } from "../db/config.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import { btcUsdtTop, primedCache } from "./_execution_engine.ts";
import { type NatsServer, startNatsServer } from "./_nats_server.ts";
import { type MigratedDatabase, migratedDatabase } from "./_postgres.ts";
import { deadline, waitFor } from "./_helpers.ts";

const enc = new TextEncoder();

interface World {
  db: MigratedDatabase;
  config: Config;
  cache: LatestCache;
}

/**
 * Runs the trading subtree on `server` until `check` holds (or 15 s), after
 * publishing `body` on `signals.momentum` when given; returns its sequence.
 */
async function run(
  world: World,
  server: NatsServer,
  body: string | null,
  check: (nc: NatsConnection) => Promise<boolean>,
): Promise<{ seq: number | null; events: string[] }> {
  const nc: NatsConnection = await connect({ servers: server.url });
  const events: string[] = [];
  nc.subscribe("orders.>", { callback: (_e, m) => void events.push(m.subject) });
  nc.subscribe("signals.rejected", { callback: (_e, m) => void events.push(m.subject) });
  const trading = tradingSupervisor({
    config: world.config,
    nats: nc,
    sql: world.db.sql,
    cache: world.cache,
    log: nullLogger,
    execution: { warmup_ms: 0 },
  });
  const root = await startRoot({ name: "root" }, [trading]);
  try {
    const seq = body === null
      ? null
      : (await jetstream(nc).publish("signals.momentum", enc.encode(body))).seq;
    await waitFor(() => check(nc), 15_000, `signal handled`).catch(() => {});
    return { seq, events };
  } finally {
    await deadline(root.stop(), 20_000, "trading stop");
    await nc.close();
  }
}

async function world(db: MigratedDatabase): Promise<World> {
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_RISK__MAX_ORDER_QTY: "10", TRADEWIRE_RISK__MARKET_HOURS: "always" },
  });
  return { db, config, cache: primedCache({ askPrice: "50002" }) };
}

async function orders(db: MigratedDatabase): Promise<string[]> {
  return (await db.sql<{ side: string; qty: string }[]>`
    select side::text as side, qty::text as qty from orders order by id`)
    .map((o) => `${o.side} ${o.qty}`);
}

async function keys(db: MigratedDatabase): Promise<string[]> {
  return (await db.sql<{ client_signal_id: string }[]>`
    select client_signal_id from signals order by id`).map((s) => s.client_signal_id);
}

/** Deletes the durable consumer: the next start creates it again and gets every message again. */
async function deleteConsumer(server: NatsServer): Promise<void> {
  const nc = await connect({ servers: server.url });
  try {
    await (await jetstreamManager(nc)).consumers.delete("SIGNALS", "execution");
  } finally {
    await nc.close();
  }
}

const BUY = `{"symbol":"BTC-USDT","side":"buy","qty":"0.5"}`;
const SELL = `{"symbol":"BTC-USDT","side":"sell","qty":"0.25"}`;

Deno.test("a signal without id published after the SIGNALS stream started over is processed, not taken for an old one", async () => {
  await using db = await migratedDatabase();
  const w = await world(db);
  const fresh = setInterval(() => w.cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
  try {
    // First NATS server: a buy without id (the README's `echo … | deno task signal momentum`).
    {
      await using first = await startNatsServer();
      const out = await run(w, first, BUY, async () => (await orders(db)).length === 1);
      assert.equal(out.seq, 1);
    }
    assert.equal((await orders(db)).length, 1);
    // NATS starts over (a new server, its JetStream store empty): a new, different signal.
    {
      await using second = await startNatsServer();
      const out = await run(w, second, SELL, async () => (await orders(db)).length === 2);
      assert.equal(out.seq, 1, "the new stream numbers from 1 again");
      assert.deepEqual(
        await orders(db),
        ["buy 0.50000000", "sell 0.25000000"],
        `the sell signal was swallowed as a duplicate of the old buy (stored signal keys: ${
          JSON.stringify(await keys(db))
        }; events published for it: ${JSON.stringify(out.events)})`,
      );
    }
  } finally {
    clearInterval(fresh);
  }
});

Deno.test("a SIGNALS stream deleted and created again on the same server keys its signals apart: the new one is processed", async () => {
  await using db = await migratedDatabase();
  const w = await world(db);
  const fresh = setInterval(() => w.cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
  await using server = await startNatsServer();
  try {
    await run(w, server, BUY, async () => (await orders(db)).length === 1);
    const nc = await connect({ servers: server.url });
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete("SIGNALS");
    await nc.close();
    // The actor creates the stream again at start; the sell is its sequence 1.
    const out = await run(w, server, SELL, async () => (await orders(db)).length === 2);
    assert.equal(out.seq, 1);
    assert.deepEqual(await orders(db), ["buy 0.50000000", "sell 0.25000000"]);
    const [first, second] = await keys(db);
    assert.equal(first, "js-1", "the first life keeps plain keys");
    assert.match(second ?? "", /^js-\d{13}-1$/, "a later life's keys name it");
  } finally {
    clearInterval(fresh);
  }
});

Deno.test("a message of the current stream delivered again after a restart is recognised: once, after NATS restarts on its store too, and across the upgrade", async () => {
  await using db = await migratedDatabase();
  const w = await world(db);
  const fresh = setInterval(() => w.cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
  const storeDir = await Deno.makeTempDir({ prefix: "tw-nats-keys-" });
  // The buy delivered to the new consumer and acknowledged.
  const delivered = async (nc: NatsConnection) =>
    (await (await jetstreamManager(nc)).consumers.info("SIGNALS", "execution")).ack_floor
      .stream_seq >= 1;
  try {
    {
      await using server = await startNatsServer({ storeDir });
      await run(w, server, BUY, async () => (await orders(db)).length === 1);
      // The consumer forgets it was acknowledged: the next start gets the buy again.
      await deleteConsumer(server);
      const again = await run(w, server, null, delivered);
      assert.deepEqual(again.events, [], "no new order, no reject");
    }
    {
      // NATS restarted on its store: the same stream life, the same keys.
      await using server = await startNatsServer({ storeDir });
      await deleteConsumer(server);
      const again = await run(w, server, null, delivered);
      assert.deepEqual(again.events, []);
      // The upgrade: a database whose signals were stored with js-<seq> keys and no marker.
      await db.sql`delete from config where key = ${signalKeysConfigKey("SIGNALS")}`;
      await deleteConsumer(server);
      const upgraded = await run(w, server, null, delivered);
      assert.deepEqual(upgraded.events, []);
    }
    assert.deepEqual(await orders(db), ["buy 0.50000000"]);
    assert.deepEqual(await keys(db), ["js-1"]);
  } finally {
    clearInterval(fresh);
    await Deno.remove(storeDir, { recursive: true }).catch(() => {});
  }
});

Deno.test("at the upgrade, plain keys of an earlier stream life make the current one key its signals apart", async () => {
  await using db = await migratedDatabase();
  const w = await world(db);
  const fresh = setInterval(() => w.cache.update([btcUsdtTop({ askPrice: "50002" })]), 200);
  try {
    {
      await using first = await startNatsServer();
      await run(w, first, BUY, async () => (await orders(db)).length === 1);
    }
    // Before the upgrade no marker was stored; the stream started over meanwhile.
    await db.sql`delete from config where key = ${signalKeysConfigKey("SIGNALS")}`;
    {
      await using second = await startNatsServer();
      await run(w, second, SELL, async () => (await orders(db)).length === 2);
    }
    assert.deepEqual(await orders(db), ["buy 0.50000000", "sell 0.25000000"]);
  } finally {
    clearInterval(fresh);
  }
});

Deno.test("plainSignalKeys: the first life stored wins a race, is kept, and no other life is plain", async () => {
  await using db = await migratedDatabase();
  const created = new Date("2026-12-01T10:00:00.123Z");
  const racing = await Promise.all(
    Array.from({ length: 4 }, () => plainSignalKeys(db.sql, "SIGNALS", created)),
  );
  assert.deepEqual(racing, [true, true, true, true]);
  assert.equal(await plainSignalKeys(db.sql, "SIGNALS", created), true);
  assert.equal(await plainSignalKeys(db.sql, "SIGNALS", new Date(created.getTime() + 1)), false);
  assert.equal(await plainSignalKeys(db.sql, "SIGNALS", created), true, "the marker is not moved");
  // Another stream name has its own marker.
  assert.equal(await plainSignalKeys(db.sql, "OTHER", new Date(created.getTime() + 1)), true);
});
