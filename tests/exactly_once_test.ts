/**
 * The exactly-once kill test of the trading issue: the real engine (`main.ts`)
 * as a subprocess on a private nats-server (JetStream) and its own
 * PostgreSQL database, fed with fresh top-of-book prices for the paper
 * broker; a stream of signals is published, the engine is killed with
 * SIGKILL in the middle of it and started again on the same database and
 * NATS server; once every signal has an outcome the database must show each
 * signal processed exactly once — one row per signal, at most one order per
 * signal, every order filled exactly once, positions equal to the sum of the
 * fills.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { type EngineProcess, startEngineProcess } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

/** Signals published. */
const N = 2_000;
/** Every this many signals one is invalid (qty 0): it must be recorded as rejected, once. */
const INVALID_EVERY = 97;
/** Every this many signals one has no id: its idempotency key is its stream sequence. */
const NO_ID_EVERY = 10;
const STRATEGY = "killtest";
const SYMBOL = "BTC-USDT";

/** Waits until the engine's execution actor runs (the trading subtree is up). */
async function executionRunning(engine: EngineProcess, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    async () => {
      try {
        const res = await engine.get("/api/health/detailed");
        const body = await res.json() as { actors?: Array<{ name: string; status: string }> };
        return body.actors?.some((a) =>
          a.name === "root/trading/execution" && a.status === "running"
        ) ??
          false;
      } catch {
        return false;
      }
    },
    timeoutMs,
    `execution running (stderr: ${engine.stderr().slice(-2000)})`,
  );
}

function signalBody(i: number): Record<string, unknown> {
  const body: Record<string, unknown> = {
    symbol: SYMBOL,
    side: i % 2 === 0 ? "buy" : "sell",
    qty: i % INVALID_EVERY === 0 ? "0" : "0.01",
  };
  if (i % NO_ID_EVERY !== 0) body.id = `k-${i}`;
  return body;
}

Deno.test({
  name: "a SIGKILL in the middle of a stream of signals leaves every signal processed exactly once",
  // The engine subprocess and the services take their time; the body waits with deadlines.
  sanitizeResources: true,
  sanitizeOps: true,
  async fn() {
    await using server = await startNatsServer();
    const database = await scratchDatabase();
    const sql = postgres(database.url, { max: 2, onnotice: () => {} });
    const nc = await connect({ servers: server.url });
    const js = jetstream(nc);
    // A batch of signals opens up to execution.batch_max orders at once: lift max_open_orders.
    const configFile = await Deno.makeTempFile({ prefix: "tw-killtest-", suffix: ".yaml" });
    await Deno.writeTextFile(configFile, "risk:\n  max_open_orders: 1000000\n");
    const env = {
      NATS_URL: server.url,
      TRADEWIRE_CONFIG: configFile,
      TRADEWIRE_WRITER__ENABLED: "false",
    };
    // Fresh prices for the paper broker, every 100 ms, straight onto the validated subject.
    const quotes = setInterval(() => {
      const now = Date.now() * 1000;
      nc.publish(
        `clean.md.top.binance.${SYMBOL}`,
        encodeJson([{
          kind: "top",
          exchange: "binance",
          symbol: SYMBOL,
          venue_symbol: "BTCUSDT",
          ts_exchange: now,
          ts_local: now,
          bid_price: "50000",
          bid_qty: "5",
          ask_price: "50001",
          ask_qty: "5",
        }]),
      );
    }, 100);
    // Every order transition the engines publish, by client order id.
    const filledEvents = new Map<string, number>();
    const orderSub = nc.subscribe("orders.filled.>", {
      callback: (_, msg) => {
        const order = decodeJson<{ client_order_id: string }>(msg.data);
        filledEvents.set(order.client_order_id, (filledEvents.get(order.client_order_id) ?? 0) + 1);
      },
    });
    const count = async (query: string) => Number((await sql.unsafe(query))[0]?.n ?? 0);
    let first: EngineProcess | null = null;
    let second: EngineProcess | null = null;
    try {
      first = await startEngineProcess(env, [], { databaseUrl: database.url });
      await executionRunning(first);

      // Publish the stream in the background, in order, each stored by JetStream before the next
      // chunk (ids double as Nats-Msg-Id, as strategies are told to send them).
      let published = 0;
      const publishing = (async () => {
        for (let start = 0; start < N; start += 50) {
          const chunk: Promise<unknown>[] = [];
          for (let i = start; i < Math.min(N, start + 50); i++) {
            const body = signalBody(i);
            const id = body.id as string | undefined;
            chunk.push(
              js.publish(`signals.${STRATEGY}`, encodeJson(body), id ? { msgID: id } : {}),
            );
          }
          await Promise.all(chunk);
          published += chunk.length;
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
      })();

      // Kill the engine once about a third of the signals is recorded, while publishing goes on.
      await waitFor(
        async () => await count("select count(*)::int as n from signals") >= N / 3,
        60_000,
        "a third of the signals recorded",
      );
      const code = await first.kill("SIGKILL");
      assert.notEqual(code, 0);
      const atKill = await count("select count(*)::int as n from signals");
      assert.ok(atKill > 0 && atKill < N, `killed in the middle (${atKill} of ${N} recorded)`);
      await deadline(publishing, 60_000, "publishing");
      assert.equal(published, N);

      second = await startEngineProcess(env, [], { databaseUrl: database.url });
      await executionRunning(second);
      // Unacknowledged signals come back after the consumer's ack wait (10 s).
      await waitFor(
        async () =>
          await count("select count(*)::int as n from signals where status <> 'received'") === N &&
          await count(`select count(*)::int as n from orders
            where status in ('pending', 'submitted', 'partially_filled')`) === 0 &&
          await count("select count(*)::int as n from fills where realized_pnl is null") === 0,
        90_000,
        "every signal decided, every order closed, every fill applied",
      );

      // Exactly N signals, each with one outcome.
      assert.equal(await count("select count(*)::int as n from signals"), N);
      const invalid = Math.floor((N - 1) / INVALID_EVERY) + 1;
      const refused = await sql<{ reasons: unknown; n: number }[]>`
        select reasons, count(*)::int as n from signals
        where status = 'rejected' and payload->>'qty' <> '0' group by reasons`;
      assert.deepEqual([...refused], [], "only the invalid signals are rejected");
      assert.equal(
        await count("select count(*)::int as n from signals where status = 'rejected'"),
        invalid,
      );
      const accepted = await count(
        "select count(*)::int as n from signals where status = 'accepted'",
      );
      assert.equal(accepted, N - invalid);
      // At most one order per signal, and one for every accepted signal.
      assert.equal(await count("select count(*)::int as n from orders"), accepted);
      assert.equal(
        await count(`select count(*)::int as n from signals s join orders o on o.signal_id = s.id
          where s.status = 'accepted'`),
        accepted,
      );
      assert.equal(
        await count("select count(distinct client_order_id)::int as n from orders"),
        accepted,
      );
      // Every order filled exactly once: one fill each, of its whole quantity.
      assert.equal(
        await count("select count(*)::int as n from orders where status = 'filled'"),
        accepted,
      );
      assert.equal(await count("select count(*)::int as n from fills"), accepted);
      assert.equal(
        await count(`select count(*)::int as n from orders o
          where o.qty <> (select coalesce(sum(f.qty), 0) from fills f where f.order_id = o.id)
             or o.filled_qty <> o.qty`),
        0,
      );
      // Positions equal the sum of the fills.
      const [position] = await sql<{ qty: string; net: string }[]>`
        select p.qty::text as qty,
          (select sum(case when side = 'buy' then qty else -qty end) from fills
            where symbol = ${SYMBOL})::numeric(20,8)::text as net
        from positions p where p.symbol = ${SYMBOL}`;
      assert.ok(position, "a position row");
      assert.equal(position.qty, position.net);
      const [cash] = await sql<{ ok: boolean }[]>`
        select p.cash = 100000 - (select sum(case when side = 'buy' then qty * price else -qty * price end
          + commission) from fills) as ok
        from portfolios p where p.id = 'default'`;
      assert.equal(cash?.ok, true, "cash moved by exactly the fills");
      // The broker never reported one order filled twice.
      for (const [coid, times] of filledEvents) assert.equal(times, 1, `${coid} filled ${times}×`);
    } finally {
      clearInterval(quotes);
      orderSub.unsubscribe();
      await second?.[Symbol.asyncDispose]();
      await first?.[Symbol.asyncDispose]();
      await nc.close();
      await sql.end();
      await database.drop();
      await Deno.remove(configFile).catch(() => {});
    }
  },
});
