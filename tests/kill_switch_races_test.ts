/**
 * The kill switch's `cancel_open` against PostgreSQL faults: cancelling at a
 * broker needs no database, so the cancels go out even when the switch
 * cannot be stored (the error names them, and the switch then follows
 * PostgreSQL once it answers); and an order of a batch whose commit lost its
 * answer, still being read back when the kill switch was answered, is
 * cancelled once read back — never submitted.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { createPostgres } from "../adapters/postgres.ts";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { ExecutionEngine, type SignalInput } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { btcUsdtTop } from "./_execution_engine.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { migratedDatabase } from "./_postgres.ts";

const SIGNAL_STATEMENT = (q: string) => q.includes("INSERT INTO signals");
const SIGNAL_READ_BACK = (q: string) =>
  q.includes("FROM signals s LEFT JOIN orders o ON o.signal_id = s.id");

/**
 * An engine with a paper broker on a scratch database reached through a
 * PostgreSQL fault proxy; disposing of it stops everything.
 */
async function engineBehindProxy(unknownOutcomeWaitMs: number, retryMs = 5) {
  const db = await migratedDatabase();
  const proxy = startPgFaultProxy();
  const engineSql = createPostgres({
    url: proxy.urlFor(new URL(db.url).pathname.slice(1)),
    pool_size: 4,
    sslmode: "disable",
    statement_timeout_ms: 30_000,
    connect_timeout_s: 2,
  });
  const base = await loadConfig({ args: [], env: {} });
  const cache = new LatestCache();
  cache.update([btcUsdtTop()]);
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  const broker = paperBroker({ cache, options: base.brokers.paper, max_price_age_ms: 600_000 });
  const engine = new ExecutionEngine({
    sql: engineSql,
    brokers: new Map([["paper", broker]]),
    cache,
    state,
    config: {
      risk: noRiskLimits(base),
      execution: { ...base.execution, max_price_age_ms: 600_000 },
    },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    log: nullLogger,
    options: {
      submit_retry_initial_ms: retryMs,
      submit_retry_max_ms: Math.max(50, retryMs),
      unknown_outcome_wait_ms: unknownOutcomeWaitMs,
    },
  });
  await engine.start();
  return {
    db,
    sql: db.sql as Sql,
    proxy,
    broker,
    engine,
    async [Symbol.asyncDispose]() {
      proxy.restore();
      await engine.stop();
      await broker[Symbol.asyncDispose]();
      await engineSql.end({ timeout: 1 });
      await proxy.close();
      await db[Symbol.asyncDispose]();
    },
  };
}

async function statusOf(sql: Sql, id: string): Promise<{ status: string; reason: string | null }> {
  const [row] = await sql<{ status: string; status_reason: string | null }[]>`
    select status, status_reason from orders where id = ${id}`;
  return { status: row?.status ?? "missing", reason: row?.status_reason ?? null };
}

/** A market buy of 1 BTC-USDT with client signal id `id`, as REST hands it in. */
function buy(id: string): SignalInput {
  return {
    body: { id, symbol: "BTC-USDT", side: "buy", qty: "1" },
    strategy: "ks",
    source: "rest",
  };
}

/** One signal through to its fill and the engine settled: the start of the tests that cut a batch. */
async function warmUp(h: Awaited<ReturnType<typeof engineBehindProxy>>): Promise<void> {
  await h.engine.processSignals([buy("warm")]);
  await waitFor(
    async () => Number((await h.sql`select count(*)::int n from fills`)[0]?.n ?? 0) === 1,
    5_000,
    "warm",
  );
  await h.engine.settled();
}

Deno.test("kill switch with cancel_open while PostgreSQL is away still asks the broker to cancel open orders, and its error names them", async () => {
  await using h = await engineBehindProxy(500);
  const [outcome] = await h.engine.processSignals([{
    body: {
      id: "rest-1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "0.1",
      type: "limit",
      limit_price: "49000",
      time_in_force: "gtc",
    },
    strategy: "ks",
    source: "rest",
  }]);
  assert.ok(outcome?.status === "accepted", JSON.stringify(outcome));
  const id = outcome.order.id;
  await waitFor(async () => (await statusOf(h.sql, id)).status === "submitted", 5_000, "resting");
  await h.engine.settled();
  assert.equal((await h.broker.openOrders()).length, 1);

  h.proxy.cut();
  const error = await h.engine.setKillSwitch({ active: true, cancel_open: true, reason: "db down" })
    .then(() => null, (e: unknown) => e);
  assert.ok(error instanceof Error, "the switch could not be stored: the request fails");
  let open = (await h.broker.openOrders()).length;
  try {
    await waitFor(async () => (open = (await h.broker.openOrders()).length) === 0, 2_000, "cancel");
  } catch { /* asserted below */ }
  assert.equal(
    open,
    0,
    `the order is still resting at the broker (the request failed with: ${error.message})`,
  );
  assert.match(error.message, new RegExp(`cancel_open asked to cancel 1 open order\\(s\\): ${id}`));
  assert.equal(h.engine.killSwitch().active, true, "on in memory until PostgreSQL answers");

  // PostgreSQL answers again: the broker's cancel is stored, and the switch follows PostgreSQL
  // (the write never reached it: off).
  h.proxy.restore();
  await waitFor(async () => (await statusOf(h.sql, id)).status === "cancelled", 15_000, "stored");
  await waitFor(() => !h.engine.killSwitch().active, 15_000, "the switch follows PostgreSQL");
});

Deno.test("an order of a batch still being read back when a kill switch with cancel_open was answered is cancelled once read back, never submitted", async () => {
  await using h = await engineBehindProxy(200);
  await warmUp(h);

  // The batch commits and its answer is lost; every reading back loses its answer too.
  h.proxy.arm({
    match: (q) => SIGNAL_STATEMENT(q) || SIGNAL_READ_BACK(q),
    mode: "after",
    times: 100_000,
  });
  const error = await h.engine.processSignals([buy("unknown")]).then(() => null, (e) => e);
  assert.ok(error instanceof Error, "the caller gets the error");
  const [pending] = await h.sql<{ id: string; status: string }[]>`
    select o.id::text, o.status from orders o join signals s on s.id = o.signal_id
    where s.client_signal_id = 'unknown'`;
  assert.equal(pending?.status, "pending", "stored, open");

  // The operator pulls the kill switch and asks for every open order to be cancelled.
  const kill = await h.engine.setKillSwitch({ active: true, cancel_open: true, reason: "stop" });
  assert.equal(kill.active, true);

  // PostgreSQL answers again: the stored batch is read back.
  h.proxy.disarm();
  let after = await statusOf(h.sql, pending!.id);
  try {
    await waitFor(
      async () => (after = await statusOf(h.sql, pending!.id)).status !== "pending",
      5_000,
      "the pending order settled one way or the other",
    );
  } catch { /* asserted below */ }
  await h.engine.settled();
  after = await statusOf(h.sql, pending!.id);
  assert.deepEqual(
    { ...after, broker_submits: h.broker.stats().submitted - 1 },
    { status: "cancelled", reason: "kill switch: stop", broker_submits: 0 },
    `kill switch (cancel_open) answered with cancel_requested=${kill.cancel_requested}; the ` +
      `open order read back after it must not be submitted`,
  );
});

Deno.test("an order whose signal is handed in again while a kill switch with cancel_open is on, its first commit's answer lost, is cancelled rather than submitted", async () => {
  // Reading the batch back is retried only after 3 s: the signal comes again before.
  await using h = await engineBehindProxy(200, 3_000);
  await warmUp(h);

  // The batch commits and its answer is lost; so does its first reading back.
  h.proxy.arm({
    match: (q) => SIGNAL_STATEMENT(q) || SIGNAL_READ_BACK(q),
    mode: "after",
    times: 2,
  });
  const error = await h.engine.processSignals([buy("again")]).then(() => null, (e) => e);
  assert.ok(error instanceof Error, "the caller gets the error");
  h.proxy.disarm();
  const [pending] = await h.sql<{ id: string; status: string }[]>`
    select o.id::text, o.status from orders o join signals s on s.id = o.signal_id
    where s.client_signal_id = 'again'`;
  assert.equal(pending?.status, "pending", "stored, open");

  const kill = await h.engine.setKillSwitch({ active: true, cancel_open: true, reason: "stop" });
  assert.equal(kill.cancel_requested, 0, "the order is not tracked: the scan cannot see it");

  // The caller hands the signal in again: its stored outcome is taken over.
  const [outcome] = await h.engine.processSignals([{ ...buy("again"), redelivered: true }]);
  assert.equal(outcome?.duplicate, true, JSON.stringify(outcome));
  await waitFor(
    async () => (await statusOf(h.sql, pending!.id)).status !== "pending",
    5_000,
    "the pending order settled one way or the other",
  );
  await h.engine.settled();
  assert.deepEqual(
    { ...await statusOf(h.sql, pending!.id), broker_submits: h.broker.stats().submitted - 1 },
    { status: "cancelled", reason: "kill switch: stop", broker_submits: 0 },
  );
});
