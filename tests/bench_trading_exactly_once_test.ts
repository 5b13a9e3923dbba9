// deno-lint-ignore-file no-console -- captures the table the bench prints
/**
 * bench/trading_bench.ts's exactly-once check. Review 50: when it failed the
 * bench only printed `exactly-once: BROKEN` and resolved, so `deno task bench`
 * exited 0 with the figures beside it; and it compared totals (signals,
 * orders, fills), not each signal.
 *
 * The run tests use the bench itself with tiny parameters (its scratch
 * database `tw_bench_*`, dropped at the end); the check's own tests use a
 * migrated scratch database `tw_test_*` with rows written by hand.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import type { Sql } from "postgres";
import { ExactlyOnceError, exactlyOnceProblems, runTradingBench } from "../bench/trading_bench.ts";
import { migratedDatabase } from "./_postgres.ts";

const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const TINY = { latency: 20, burst: 200, floors: 5, batch: 50 };

/** The bench's scratch databases now. */
async function benchDatabases(admin: Sql): Promise<string[]> {
  return (await admin<{ datname: string }[]>`
    select datname from pg_database where datname like 'tw_bench_%'`).map((r) => r.datname);
}

/** Runs the bench with its printing captured; `during` gets the new bench database's URL. */
async function runBench(during?: (url: string) => Promise<void>) {
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  const before = new Set(await benchDatabases(admin));
  const printed: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => printed.push(args.join(" "));
  const controller = new AbortController();
  const side = during === undefined ? Promise.resolve(false) : (async () => {
    const until = Date.now() + 60_000;
    while (Date.now() < until && !controller.signal.aborted) {
      const name = (await benchDatabases(admin)).find((d) => !before.has(d));
      if (name !== undefined) {
        const url = new URL(PG_ADMIN_URL);
        url.pathname = `/${name}`;
        await during(url.toString());
        return true;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return false;
  })();
  let error: unknown = null;
  try {
    await runTradingBench(TINY);
  } catch (e) {
    error = e;
  } finally {
    console.log = log;
    controller.abort();
  }
  const sideDone = await side;
  const leftover = (await benchDatabases(admin)).filter((d) => !before.has(d));
  await admin.end({ timeout: 5 });
  return { error, printed: printed.join("\n"), sideDone, leftover };
}

Deno.test({
  name: "trading bench run passes its exactly-once check and leaves no database behind",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { error, printed, leftover } = await runBench();
    assert.equal(error, null, String(error));
    assert.match(printed, /exactly-once: ok/);
    assert.deepEqual(leftover, []);
  },
});

Deno.test({
  name: "trading bench run fails with ExactlyOnceError when a signal gets no order",
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const { error, printed, sideDone, leftover } = await runBench(async (url) => {
      const db = postgres(url, { max: 1, onnotice: () => {} });
      try {
        // A signal recorded without an order: what a lost signal looks like.
        const until = Date.now() + 30_000;
        while (Date.now() < until) {
          const [row] = await db<{ n: number }[]>`select count(*)::int as n from signals`
            .catch(() => [{ n: 0 }]);
          if ((row?.n ?? 0) > 0) break;
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
        await db`
          insert into signals (strategy, client_signal_id, source, symbol, payload)
          select strategy, 'lost', source, symbol, payload from signals limit 1`;
      } finally {
        await db.end({ timeout: 5 });
      }
    });
    assert.ok(sideDone, "the lost signal was not recorded in time");
    assert.deepEqual(leftover, [], "the bench left its scratch database behind");
    assert.match(printed, /exactly-once: BROKEN/);
    assert.ok(error instanceof ExactlyOnceError, `the run did not fail: ${error}`);
    assert.match(error.message, /1 signals not sent \(lost\)/);
  },
});

/** A migrated scratch database with a paper order for each of `b-0` … `b-(n-1)`, filled. */
async function filledOrders(n: number) {
  const db = await migratedDatabase(2);
  const { sql } = db;
  await sql`insert into symbols (symbol) values ('BTC-USDT') on conflict do nothing`;
  for (let i = 0; i < n; i++) {
    const side = i % 2 === 0 ? "buy" : "sell";
    const [signal] = await sql<{ id: string }[]>`
      insert into signals (strategy, client_signal_id, source, symbol, payload, status, decided_at)
      values ('bench', ${`b-${i}`}, 'nats', 'BTC-USDT', '{}', 'accepted', now()) returning id`;
    const [order] = await sql<{ id: string }[]>`
      insert into orders (signal_id, symbol, side, qty, status, filled_qty, avg_fill_price,
        strategy)
      values (${signal!.id}, 'BTC-USDT', ${side}, 0.01, 'filled', 0.01, 50000, 'bench')
      returning id`;
    await sql`
      insert into fills (order_id, broker_fill_id, symbol, side, qty, price, realized_pnl,
        filled_at)
      values (${order!.id}, 'f', 'BTC-USDT', ${side}, 0.01, 50000, 0, now())`;
  }
  const held = n % 2 === 0 ? "0" : "0.01";
  await sql`
    insert into positions (symbol, qty, avg_entry_price, cost_basis)
    values ('BTC-USDT', ${held}, ${held === "0" ? "0" : "50000"}, ${held === "0" ? "0" : "500"})`;
  return db;
}

Deno.test("exactlyOnceProblems: none when every signal has one filled, applied order", async () => {
  await using db = await filledOrders(3);
  assert.deepEqual(await exactlyOnceProblems(db.sql, 3, "BTC-USDT"), []);
});

Deno.test("exactlyOnceProblems names a signal sent but not recorded", async () => {
  await using db = await filledOrders(3);
  const problems = await exactlyOnceProblems(db.sql, 4, "BTC-USDT");
  assert.deepEqual(problems, ["1 signals without exactly one order (b-3)"]);
});

Deno.test("exactlyOnceProblems names an order whose filled qty is not its fills' sum", async () => {
  await using db = await filledOrders(2);
  await db.sql`
    insert into fills (order_id, broker_fill_id, symbol, side, qty, price, realized_pnl,
      filled_at)
    select id, 'again', symbol, side, qty, 50000, 0, now() from orders
    where signal_id = (select id from signals where client_signal_id = 'b-0')`;
  const problems = await exactlyOnceProblems(db.sql, 2, "BTC-USDT");
  assert.equal(problems.length, 2, problems.join("; "));
  assert.match(problems[0]!, /^1 orders whose filled qty is not the sum of their fills/);
  assert.match(problems[1]!, /^position 0\.00000000 BTC-USDT, the fills' signed sum 0\.01/);
});

Deno.test("exactlyOnceProblems names an order left pending and a fill not applied", async () => {
  await using db = await filledOrders(2);
  await db.sql`
    update orders set status = 'pending', filled_qty = 0, avg_fill_price = null
    where signal_id = (select id from signals where client_signal_id = 'b-1')`;
  await db.sql`delete from fills where order_id = (select o.id from orders o
    join signals s on s.id = o.signal_id where s.client_signal_id = 'b-1')`;
  await db.sql`update fills set realized_pnl = null`;
  await db.sql`update positions set qty = 0.01, avg_entry_price = 50000, cost_basis = 500`;
  const problems = await exactlyOnceProblems(db.sql, 2, "BTC-USDT");
  assert.deepEqual(problems.map((p) => p.replace(/ \(.*\)$/, "")), [
    "1 orders left pending",
    "1 fills not applied to the position",
  ]);
});
