/**
 * The execution engine (`trading/execution.ts`) with its pool behind a
 * PostgreSQL proxy that cuts the connection at a chosen statement
 * (`_pg_cut_proxy.ts`): the statement takes effect and its answer is lost
 * ("after"), so the engine cannot know it committed — or the database goes
 * away for a while (`cut`, `restore`). What PostgreSQL holds is read straight
 * from it, through its own pool.
 */

import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { paperBroker } from "../brokers/paper.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import {
  ExecutionEngine,
  type ExecutionEngineOptions,
  type SignalInput,
} from "../trading/execution.ts";
import type { FillMessage } from "../trading/fills_stream.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { migratedDatabase } from "./_postgres.ts";
import { deadline, noRiskLimits, waitFor } from "./_helpers.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";

/** The engine's fill statement on the usual path (fills and their orders in one statement). */
const FILL_STATEMENT = (q: string) => q.includes("INSERT INTO fills") && q.includes("tw_expect");

function quote(cache: LatestCache, symbol: string, bid: string, ask: string): void {
  const now = Date.now() * 1000;
  cache.update([{
    kind: "top",
    exchange: "binance",
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: now,
    ts_local: now,
    bid_price: bid,
    bid_qty: "10",
    ask_price: ask,
    ask_qty: "10",
  }]);
}

interface HarnessOptions {
  /** Risk limits beyond "none". */
  risk?: Partial<Config["risk"]>;
  /** Engine options beyond short submit retries. */
  engine?: ExecutionEngineOptions;
}

/** An engine on a fresh database reached through the proxy, the paper broker, one fresh quote. */
async function harness(options: HarnessOptions = {}) {
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
  const risk: Config["risk"] = {
    ...noRiskLimits(base),
    ...options.risk,
  };
  const cache = new LatestCache();
  quote(cache, "BTC-USDT", "50000", "50001");
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(db.sql);
  const broker = paperBroker({
    cache,
    options: base.brokers.paper,
    max_price_age_ms: 60_000,
  });
  const fills: FillMessage[] = [];
  const published: Array<{ subject: string; data: Record<string, unknown> }> = [];
  const engine = new ExecutionEngine({
    sql: engineSql,
    brokers: new Map([["paper", broker]]),
    cache,
    state,
    config: { risk, execution: { ...base.execution, max_price_age_ms: 60_000 } },
    publish: (subject, data) => published.push({ subject, data: data as Record<string, unknown> }),
    publishFill: (fill) => {
      fills.push(fill);
      return Promise.resolve();
    },
    log: nullLogger,
    options: { submit_retry_initial_ms: 5, submit_retry_max_ms: 50, ...options.engine },
  });
  await engine.start();
  const count = async (query: string) => Number((await db.sql.unsafe(query))[0]?.n ?? 0);
  return {
    sql: db.sql as Sql,
    /** The engine's pool, behind the proxy. */
    pool: engineSql,
    proxy,
    engine,
    state,
    cache,
    fills,
    published,
    count,
    /** One market buy end to end: symbols exist and the pool is connected. */
    async warm() {
      await engine.processSignals([buy("warm")]);
      await waitFor(async () => await count("select count(*)::int n from fills") === 1, 5_000);
      await engine.settled();
    },
    broker,
    [Symbol.asyncDispose]: async () => {
      proxy.restore();
      await engine.stop();
      await broker[Symbol.asyncDispose]();
      await engineSql.end({ timeout: 1 });
      await proxy.close();
      await db[Symbol.asyncDispose]();
    },
  };
}

function buy(id: string, source: "nats" | "rest" = "rest"): SignalInput {
  return { body: { id, symbol: "BTC-USDT", side: "buy", qty: "1" }, strategy: "faults", source };
}

Deno.test("a fill statement that commits but whose answer is lost: the order is closed in memory and its fill sent on", async () => {
  await using h = await harness({ risk: { max_open_orders: 1 } });
  await h.warm();
  const cut = h.proxy.arm({ match: FILL_STATEMENT, mode: "after" });
  const [outcome] = await h.engine.processSignals([buy("lost-answer")]);
  if (outcome?.status !== "accepted") throw new Error("accepted");
  await deadline(cut, 5_000, "the fill statement cut");
  await waitFor(async () => await h.count("select count(*)::int n from fills") === 2, 5_000);
  await h.engine.settled();
  const [row] = await h.sql<{ status: string }[]>`
    select status from orders where id = ${outcome.order.id}`;
  assert.equal(row?.status, "filled");
  assert.equal(await h.count("select count(*)::int n from fills"), 2, "one fill per order");
  // The engine holds the order as PostgreSQL does: closed, and published as filled.
  assert.equal(h.engine.stats().open_orders, 0);
  assert.ok(
    h.published.some((p) =>
      p.subject === "orders.filled.BTC-USDT" && p.data.id === outcome.order.id
    ),
    "the stored status published",
  );
  // Its fill, stored without its position, goes on to the position tracker.
  assert.deepEqual(h.fills.map((f) => f.client_order_id).slice(1), [
    outcome.order.client_order_id,
  ]);
  assert.equal(h.state.unappliedFillCount(), 2, "counted until the tracker applies it");
  // max_open_orders 1 counts nothing open: the next signal passes.
  const [next] = await h.engine.processSignals([buy("next")]);
  assert.equal(next?.status, "accepted");
});

/** The insert of a signal batch (signals and the orders of the accepted ones, one statement). */
const SIGNAL_STATEMENT = (q: string) => q.includes("INSERT INTO signals");
/** The engine reading a batch's signals back by key (`findSignalsByKeys`). */
const SIGNAL_READ_BACK = (q: string) =>
  q.includes("FROM signals s LEFT JOIN orders o ON o.signal_id = s.id");

Deno.test("a signal batch that commits but whose answer is lost is answered with what was stored, and its order submitted", async () => {
  await using h = await harness();
  await h.warm();
  const cut = h.proxy.arm({ match: SIGNAL_STATEMENT, mode: "after" });
  const [outcome] = await h.engine.processSignals([buy("lost-commit")]);
  await deadline(cut, 1_000, "the signal statement cut");
  if (outcome?.status !== "accepted") throw new Error(`accepted, not ${outcome?.status}`);
  assert.equal(outcome.duplicate, false, "stored by this call");
  const [stored] = await h.sql<{ id: string; status: string }[]>`
    select o.id::text as id, o.status from orders o join signals s on s.id = o.signal_id
    where s.client_signal_id = 'lost-commit'`;
  assert.equal(stored?.id, outcome.order.id);
  // Submitted and filled without anyone sending the signal again.
  await waitFor(
    async () => await h.count("select count(*)::int n from orders where status = 'filled'") === 2,
    5_000,
    "the stored order filled",
  );
  await h.engine.settled();
  assert.equal(await h.count("select count(*)::int n from orders"), 2);
  assert.equal(h.engine.stats().open_orders, 0);
  assert.ok(h.published.some((p) => p.subject === "orders.pending.BTC-USDT"));
});

Deno.test("a signal batch whose outcome stays unknown past the wait: the caller gets the error, the stored order is submitted once PostgreSQL answers", async () => {
  await using h = await harness({ engine: { unknown_outcome_wait_ms: 200 } });
  await h.warm();
  // The batch commits and its answer is lost; then every reading back loses its answer too.
  h.proxy.arm({
    match: (q) => SIGNAL_STATEMENT(q) || SIGNAL_READ_BACK(q),
    mode: "after",
    times: 100_000,
  });
  const error = await h.engine.processSignals([buy("unknown")]).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(error instanceof Error);
  assert.equal(error.name, "DbConnectionError");
  // It did commit: the order is pending, and nobody sends the signal again.
  const pending = await h.sql<{ status: string }[]>`
    select o.status from orders o join signals s on s.id = o.signal_id
    where s.client_signal_id = 'unknown'`;
  assert.deepEqual(pending.map((o) => o.status), ["pending"]);
  h.proxy.disarm();
  await waitFor(
    async () => await h.count("select count(*)::int n from orders where status = 'filled'") === 2,
    5_000,
    "the stored order submitted and filled",
  );
  await h.engine.settled();
  assert.equal(await h.count("select count(*)::int n from orders"), 2);
  assert.equal(h.engine.stats().open_orders, 0);
});

Deno.test("a signal batch stored in a transaction whose COMMIT answer is lost is answered with what was stored", async () => {
  await using h = await harness();
  await h.warm();
  // A new symbol: the batch creates its row in the same transaction.
  quote(h.cache, "ETH-USDT", "3000", "3001");
  const cut = h.proxy.arm({ match: (q) => q.trim().toLowerCase() === "commit", mode: "after" });
  const [outcome] = await h.engine.processSignals([{
    body: { id: "eth-1", symbol: "ETH-USDT", side: "buy", qty: "1" },
    strategy: "faults",
    source: "nats",
  }]);
  await deadline(cut, 1_000, "the commit cut");
  if (outcome?.status !== "accepted") throw new Error(`accepted, not ${outcome?.status}`);
  assert.equal(outcome.duplicate, false);
  await waitFor(
    async () => await h.count("select count(*)::int n from orders where status = 'filled'") === 2,
    5_000,
    "the stored order filled",
  );
  // The symbol is known to exist: the next order for it takes the one-statement path.
  const [next] = await h.engine.processSignals([{
    body: { id: "eth-2", symbol: "ETH-USDT", side: "sell", qty: "1" },
    strategy: "faults",
    source: "nats",
  }]);
  assert.equal(next?.status, "accepted");
  await waitFor(
    async () => await h.count("select count(*)::int n from orders where status = 'filled'") === 3,
    5_000,
  );
});

Deno.test("a signal batch whose connection cannot be opened fails at once: nothing was sent, nothing is read back", async () => {
  await using h = await harness({ engine: { unknown_outcome_wait_ms: 30_000 } });
  await h.warm();
  // The port closed: connections are refused (ECONNREFUSED), so no statement leaves. (The
  // pool's connections open before fail first, with an outcome unknown to their query.)
  await h.proxy.close();
  await waitFor(
    () =>
      h.pool`select 1`.then(
        () => false,
        (e: { code?: string }) => e.code === "ECONNREFUSED",
      ),
    5_000,
    "the pool connecting anew",
  );
  const started = Date.now();
  const error = await h.engine.processSignals([buy("refused")]).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(error instanceof Error);
  assert.equal(error.name, "DbConnectionError");
  assert.ok(Date.now() - started < 10_000, "not held for unknown_outcome_wait_ms");
  assert.equal(
    await h.count("select count(*)::int n from signals where client_signal_id = 'refused'"),
    0,
  );
});

/** The kill switch's write (`setConfig`) and read (`getConfig`). */
const CONFIG_STATEMENT = (q: string) =>
  q.includes("INSERT INTO config") || q.includes("SELECT * FROM config");

async function storedKillSwitch(sql: Sql): Promise<boolean | null> {
  const [row] = await sql<{ active: boolean }[]>`
    select (value->>'active')::boolean as active from config where key = 'kill_switch'`;
  return row?.active ?? null;
}

Deno.test("a kill switch stored but whose answer is lost: the engine holds it on, as PostgreSQL does", async () => {
  await using h = await harness();
  await h.warm();
  const cut = h.proxy.arm({ match: (q) => q.includes("INSERT INTO config"), mode: "after" });
  const state = await h.engine.setKillSwitch({ active: true, reason: "lost answer" });
  await deadline(cut, 1_000, "the kill switch's write cut");
  assert.equal(state.active, true);
  assert.equal(state.reason, "lost answer");
  assert.equal(await storedKillSwitch(h.sql), true);
  assert.equal(h.engine.killSwitch().active, true);
  const [next] = await h.engine.processSignals([buy("after-kill")]);
  assert.equal(next?.status, "rejected");
});

Deno.test("a kill switch that cannot be stored holds in the engine (fail safe); a deactivation that cannot be stored leaves it on", async () => {
  await using h = await harness({ engine: { unknown_outcome_wait_ms: 200 } });
  await h.warm();
  // Every write and read of the kill switch loses its answer (each write commits).
  h.proxy.arm({ match: CONFIG_STATEMENT, mode: "after", times: 100_000 });
  const on = await h.engine.setKillSwitch({ active: true, reason: "db flaky" }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(on instanceof Error);
  assert.equal(on.name, "DbConnectionError");
  assert.equal(h.engine.killSwitch().active, true, "on in the engine");
  const [refused] = await h.engine.processSignals([buy("while-unknown")]);
  assert.equal(refused?.status, "rejected");
  const off = await h.engine.setKillSwitch({ active: false }).then(() => null, (e: unknown) => e);
  assert.ok(off instanceof Error);
  assert.equal(h.engine.killSwitch().active, true, "still on: its deactivation was not confirmed");
  // PostgreSQL answers again: the deactivation takes.
  h.proxy.disarm();
  const state = await h.engine.setKillSwitch({ active: false });
  assert.equal(state.active, false);
  assert.equal(await storedKillSwitch(h.sql), false);
  const [accepted] = await h.engine.processSignals([buy("after")]);
  assert.equal(accepted?.status, "accepted");
});

Deno.test("a kill switch asked for while PostgreSQL is away holds until PostgreSQL answers, then as PostgreSQL holds it", async () => {
  await using h = await harness({ engine: { unknown_outcome_wait_ms: 1_000 } });
  await h.warm();
  h.proxy.cut();
  const error = await h.engine.setKillSwitch({ active: true, reason: "away" }).then(
    () => null,
    (e: unknown) => e,
  );
  assert.ok(error instanceof Error);
  assert.equal(h.engine.killSwitch().active, true, "on while PostgreSQL cannot say");
  h.proxy.restore();
  // It never reached PostgreSQL: the next signal, decided once the engine read the switch back,
  // sees it off, as PostgreSQL holds it.
  const [next] = await h.engine.processSignals([buy("after")]);
  assert.equal(next?.status, "accepted");
  assert.equal(h.engine.killSwitch().active, false);
  assert.equal(await storedKillSwitch(h.sql), null);
});

Deno.test("a lone fill of a resting order whose statement commits but loses its answer: the order is closed in memory", async () => {
  await using h = await harness({ risk: { max_open_orders: 1 } });
  await h.warm();
  // A resting gtc limit buy below the ask: submitted, open, no fill yet.
  const [outcome] = await h.engine.processSignals([{
    body: {
      id: "resting",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "1",
      type: "limit",
      limit_price: "49000",
      time_in_force: "gtc",
    },
    strategy: "faults",
    source: "rest",
  }]);
  if (outcome?.status !== "accepted") throw new Error(`accepted, not ${outcome?.status}`);
  await waitFor(
    async () =>
      (await h.sql<{ status: string }[]>`select status from orders where id = ${outcome.order.id}`)[
        0
      ]
        ?.status === "submitted",
    5_000,
    "resting order submitted",
  );
  await h.engine.settled();
  assert.equal(h.engine.stats().open_orders, 1);
  // The market comes down to it: its fill (the only update of the batch) is stored, the answer lost.
  const cut = h.proxy.arm({ match: FILL_STATEMENT, mode: "after" });
  quote(h.cache, "BTC-USDT", "48980", "48990");
  h.broker.onPrice("binance", "BTC-USDT");
  await deadline(cut, 5_000, "the fill statement cut");
  await waitFor(async () => await h.count("select count(*)::int n from fills") === 2, 5_000);
  await waitFor(() => h.fills.length === 2, 5_000, "its fill sent on");
  await h.engine.settled();
  const [row] = await h.sql<
    { status: string }[]
  >`select status from orders where id = ${outcome.order.id}`;
  assert.equal(row?.status, "filled", "PostgreSQL: filled");
  // The engine must hold it as PostgreSQL does: closed.
  assert.equal(h.engine.stats().open_orders, 0, "the engine holds the order as stored: closed");
  assert.equal(h.state.openOrderCount(), 0, "the risk state no longer counts it open");
  // max_open_orders 1: the next signal must pass.
  const [next] = await h.engine.processSignals([buy("next")]);
  assert.equal(next?.status, "accepted", JSON.stringify(next));
});
