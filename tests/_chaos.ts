/**
 * Exactly-once under kills and outages: helpers shared by tests/chaos_*_test.ts (no
 * tests of its own): a private nats-server, a scratch database, engines
 * started on them, a quoter, and the invariants of the issue read from
 * PostgreSQL.
 */

import postgres from "postgres";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { type EngineProcess, startEngineProcess } from "./_engine_process.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { waitFor } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

/** How long a chaos test's JetStream publish waits for its ack, ms. */
export const CHAOS_PUBLISH_TIMEOUT_MS = 30_000;

export const SYMBOL = "BTC-USDT";

/** Waits until the engine's execution actor runs (the trading subtree is up). */
export async function executionRunning(engine: EngineProcess, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    async () => {
      try {
        const res = await engine.get("/api/health/detailed");
        const body = await res.json() as { actors?: Array<{ name: string; status: string }> };
        return body.actors?.some((a) =>
          a.name === "root/trading/execution" && a.status === "running"
        ) ?? false;
      } catch {
        return false;
      }
    },
    timeoutMs,
    `execution running (stderr: ${engine.stderr().slice(-2000)})`,
  );
}

/** Publishes a top of book every 100 ms at the current bid/ask. */
export function quoter(nc: NatsConnection, bid = "50000", ask = "50001") {
  const prices = { bid, ask };
  const publish = () => {
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
        bid_price: prices.bid,
        bid_qty: "5",
        ask_price: prices.ask,
        ask_qty: "5",
      }]),
    );
  };
  const timer = setInterval(publish, 100);
  return {
    set(b: string, a: string) {
      prices.bid = b;
      prices.ask = a;
      publish();
    },
    stop: () => clearInterval(timer),
  };
}

/** Every invariant of the issue, read from PostgreSQL; returns the violations. */
export async function violations(sql: postgres.Sql): Promise<string[]> {
  const out: string[] = [];
  const rows = async (q: string) => [...await sql.unsafe(q)];
  const check = async (label: string, q: string) => {
    const r = await rows(q);
    if (r.length > 0) out.push(`${label}: ${JSON.stringify(r.slice(0, 5))}`);
  };
  await check(
    "more than one order per signal",
    "select signal_id, count(*) n from orders group by signal_id having count(*) > 1",
  );
  await check(
    "a fill twice",
    "select order_id, broker_fill_id, count(*) n from fills group by 1, 2 having count(*) > 1",
  );
  await check(
    "orders.filled_qty <> Σ fills",
    `select o.id, o.client_order_id, o.status, o.qty::text, o.filled_qty::text,
       (select coalesce(sum(f.qty), 0) from fills f where f.order_id = o.id)::text as fills_qty
     from orders o
     where o.filled_qty <> (select coalesce(sum(f.qty), 0) from fills f where f.order_id = o.id)`,
  );
  await check(
    "positions.qty <> Σ signed fills",
    `select p.symbol, p.qty::text,
       (select coalesce(sum(case when side = 'buy' then qty else -qty end), 0) from fills f
         where f.symbol = p.symbol)::text as net
     from positions p
     where p.qty <> (select coalesce(sum(case when side = 'buy' then qty else -qty end), 0)
       from fills f where f.symbol = p.symbol)`,
  );
  await check(
    "a symbol with fills and no position",
    `select distinct f.symbol from fills f where not exists
       (select 1 from positions p where p.symbol = f.symbol)
     and (select sum(case when side = 'buy' then qty else -qty end) from fills g
       where g.symbol = f.symbol) <> 0`,
  );
  await check(
    "cash <> starting − Σ signed notional − Σ commission",
    `select p.cash::text, p.starting_cash::text,
       (p.starting_cash - coalesce((select sum(round(case when side = 'buy' then qty * price
         else -qty * price end, 8) + commission) from fills), 0))::text as expected
     from portfolios p where p.id = 'default' and p.cash <> p.starting_cash -
       coalesce((select sum(round(case when side = 'buy' then qty * price else -qty * price end, 8)
         + commission) from fills), 0)`,
  );
  await check(
    "strategy_performance fills <> count(fills)",
    `select (select coalesce(sum(fills), 0) from strategy_performance) as perf,
       (select count(*) from fills) as fills
     where (select coalesce(sum(fills), 0) from strategy_performance) <> (select count(*) from fills)`,
  );
  await check(
    "a fill not applied",
    "select id, order_id from fills where realized_pnl is null",
  );
  await check(
    "an order pending",
    "select id, client_order_id from orders where status = 'pending'",
  );
  return out;
}

/** A private nats-server, a database, the engine config; `start()` starts an engine on them. */
export async function world(
  config = "risk:\n  max_open_orders: 1000000\n",
  options: { pgProxy?: boolean } = {},
) {
  const storeDir = await Deno.makeTempDir({ prefix: "tw-chaos-nats-" });
  const natsPort = freePort();
  let server = await startNatsServer({ port: natsPort, storeDir });
  const database = await scratchDatabase();
  const proxy = options.pgProxy ? startPgFaultProxy() : null;
  const engineDbUrl = proxy === null
    ? database.url
    : proxy.urlFor(new URL(database.url).pathname.slice(1));
  const sql = postgres(database.url, { max: 2, onnotice: () => {} });
  const nc = await connect({
    servers: server.url,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 200,
  });
  // A publish's ack waits up to 30 s (nats.js's default is 5): on a loaded CI machine, with an
  // engine, PostgreSQL and ClickHouse busy beside it, chaos_pg_drops_test once saw its first
  // publish of a chunk time out while the server was up.
  const js = jetstream(nc, { timeout: CHAOS_PUBLISH_TIMEOUT_MS });
  const configFile = await Deno.makeTempFile({ prefix: "tw-chaos-", suffix: ".yaml" });
  await Deno.writeTextFile(configFile, config);
  const env = {
    NATS_URL: server.url,
    TRADEWIRE_CONFIG: configFile,
    TRADEWIRE_WRITER__ENABLED: "false",
  };
  const engines: EngineProcess[] = [];
  const quotes = quoter(nc);
  const count = async (q: string) => Number((await sql.unsafe(q))[0]?.n ?? 0);
  return {
    get server() {
      return server;
    },
    proxy,
    /** Stops the nats-server (its JetStream store kept). */
    async stopNats() {
      await server.stop();
    },
    /** Starts it again on the same port and store. */
    async startNats() {
      server = await startNatsServer({ port: natsPort, storeDir });
    },
    sql,
    nc,
    js,
    quotes,
    count,
    async start(extra: Record<string, string> = {}) {
      const engine = await startEngineProcess({ ...env, ...extra }, [], {
        databaseUrl: engineDbUrl,
      });
      engines.push(engine);
      return engine;
    },
    async [Symbol.asyncDispose]() {
      quotes.stop();
      for (const e of engines) await Promise.resolve(e[Symbol.asyncDispose]()).catch(() => {});
      await nc.close().catch(() => {});
      await sql.end();
      proxy?.restore();
      await proxy?.close();
      await database.drop();
      await server.stop();
      await Deno.remove(storeDir, { recursive: true }).catch(() => {});
      await Deno.remove(configFile).catch(() => {});
    },
  };
}
