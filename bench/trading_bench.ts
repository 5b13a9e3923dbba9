// deno-lint-ignore-file no-console
/**
 * Trading benchmark: signal → order persisted → paper fill → position
 * updated, through the trading subtree composed exactly as the engine does
 * (`tradingSupervisor`: paper broker, position tracker, execution actor) on a
 * private nats-server (JetStream) and a fresh PostgreSQL database. Prints,
 * beside the floors measured in the same run:
 *
 * - latency p50/p99: one signal at a time published on `signals.bench` (core
 *   NATS, as `nats pub` does) by a client on its own connection (a strategy
 *   process's, subscribed to positions for the whole run) until its
 *   `positions.BTC-USDT` message arrives
 *   (the tracker publishes it after committing the position), split into
 *   three stages at the instants PostgreSQL records as `now()` of the
 *   statement storing the signal and order and of the one storing the fill;
 * - sustained signals/s: a burst published at once (`--burst`, default
 *   50,000: long enough for the fills, which trail the signals, to set the
 *   rate), from the first publish to the last fill applied to the position,
 *   with the engine's average batch size, the CPU each signal cost the
 *   engine, PostgreSQL and nats-server — and a check that exactly-once held
 *   (one signal row, one order, one fill per signal);
 * - floors: a NATS request round trip, a JetStream publish ack, one
 *   PostgreSQL insert + commit (p50/p99 each). The path above needs at least
 *   two commits (signal+order before the broker is called; fill, order and
 *   position together when the tracker is idle — a third, the tracker's own,
 *   otherwise) and one JetStream hop (SIGNALS).
 *
 * Run with `deno task bench` (a single `Deno.bench` that prints the table) or
 * `deno run -A bench/trading_bench.ts --latency=1000 --burst=20000`.
 */

import postgres, { type Sql } from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import { createPostgres } from "../adapters/postgres.ts";
import { Migrator } from "../adapters/migrator.ts";
import { encodeJson } from "../adapters/codec.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { startNatsServer } from "../tests/_nats_server.ts";
import { ticks, ticksNamed } from "./_cpu.ts";

const PG_ADMIN_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const SYMBOL = "BTC-USDT";

/** What the benchmark measures and how much. */
export interface TradingBenchOptions {
  /** Signals sent one at a time for the latency figures. */
  latency: number;
  /** Signals sent at once for the throughput figure. */
  burst: number;
  /** Samples of each floor. */
  floors: number;
  /** Most signals per engine batch (`execution.batch_max`). */
  batch: number;
}

/** p50 and p99 of `samples` (ms). */
function percentiles(samples: number[]): { p50: number; p99: number } {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

function ms(value: number): string {
  return `${value.toFixed(2).padStart(7)} ms`;
}

async function freshDatabase(): Promise<{ url: string; drop: () => Promise<void> }> {
  const name = `tw_bench_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin`create database ${admin(name)}`;
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    drop: async () => {
      const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name}`;
      await sql`drop database if exists ${sql(name)}`;
      await sql.end();
    },
  };
}

/** Times `fn` `n` times after `n / 10` warm-up runs; returns the samples in ms. */
async function sample(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < Math.max(1, Math.floor(n / 10)); i++) await fn();
  const samples: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  return samples;
}

/**
 * CPU seconds used so far by this process (the engine and the bench), every
 * PostgreSQL process and the bench's nats-server; null off Linux.
 */
function burstCpu(natsPid: number): { engine: number; postgres: number; nats: number } | null {
  try {
    return {
      engine: ticks("/proc/self/stat"),
      postgres: ticksNamed("postgres"),
      nats: ticks(`/proc/${natsPid}/stat`),
    };
  } catch {
    return null;
  }
}

/**
 * Splits each timed signal's latency (wall-clock ms by client signal id) at
 * two instants PostgreSQL recorded: when the statement storing its signal and
 * order started (`signals.decided_at`, `now()` of that statement) and when
 * the one storing its fill started (`fills.created_at`).
 */
async function latencyStages(
  sql: Sql,
  timed: ReadonlyMap<string, { published: number; arrived: number }>,
): Promise<{ toOrder: number[]; toFill: number[]; toPosition: number[] }> {
  const rows = await sql<{ id: string; decided_us: string; filled_us: string }[]>`
    select s.client_signal_id as id,
      (extract(epoch from s.decided_at) * 1e6)::bigint::text as decided_us,
      (extract(epoch from f.created_at) * 1e6)::bigint::text as filled_us
    from signals s join orders o on o.signal_id = s.id join fills f on f.order_id = o.id
    where s.client_signal_id = any(${[...timed.keys()]})`;
  const stages = { toOrder: [] as number[], toFill: [] as number[], toPosition: [] as number[] };
  for (const row of rows) {
    const { published, arrived } = timed.get(row.id)!;
    const decided = Number(row.decided_us) / 1000;
    const filled = Number(row.filled_us) / 1000;
    stages.toOrder.push(decided - published);
    stages.toFill.push(filled - decided);
    stages.toPosition.push(arrived - filled);
  }
  return stages;
}

/**
 * The strategy's side of the latency run, on its own connection as a
 * strategy process would be: one subscription to `subject`, held for the
 * run; `next(trigger)` runs `trigger` and resolves on the next message.
 */
function messages(nc: NatsConnection, subject: string) {
  let waiting: (() => void) | null = null;
  nc.subscribe(subject, {
    callback: () => {
      const resolve = waiting;
      waiting = null;
      resolve?.();
    },
  });
  return {
    next(trigger: () => void): Promise<void> {
      return new Promise((resolve) => {
        waiting = resolve;
        trigger();
      });
    },
  };
}

/** Runs the benchmark and prints its table. */
export async function runTradingBench(options: TradingBenchOptions): Promise<void> {
  await using server = await startNatsServer();
  const database = await freshDatabase();
  const sql = createPostgres({ url: database.url, pool_size: 10, sslmode: "disable" });
  const nc = await connect({ servers: server.url });
  // The strategy publishing signals and watching positions: its own connection, as its own
  // process would have.
  const client = await connect({ servers: server.url });
  const positions = messages(client, `positions.${SYMBOL}`);
  const quotes: { timer?: ReturnType<typeof setInterval> } = {};
  let root: Awaited<ReturnType<typeof startRoot>> | null = null;
  try {
    await new Migrator(sql, { dir: MIGRATIONS, clickhouse: null }).up(undefined, {
      only: "postgres",
    });
    const base = await loadConfig({ args: [], env: {} });
    const config = {
      ...base,
      execution: { ...base.execution, batch_max: options.batch },
      // Orders of a burst are open while they queue: only the per-order limits stay on.
      risk: {
        ...base.risk,
        max_open_orders: null,
        max_position_qty: null,
        max_gross_exposure: null,
        daily_loss_limit: null,
      },
    };
    const cache = new LatestCache();
    const refresh = () => {
      const now = Date.now() * 1000;
      cache.update([{
        kind: "top",
        exchange: "binance",
        symbol: SYMBOL,
        venue_symbol: "BTCUSDT",
        ts_exchange: now,
        ts_local: now,
        bid_price: "50000",
        bid_qty: "100",
        ask_price: "50001",
        ask_qty: "100",
      }]);
    };
    refresh();
    quotes.timer = setInterval(refresh, 200);
    const trading = tradingSupervisor({
      config,
      nats: nc,
      sql,
      cache,
      log: nullLogger,
      execution: { warmup_ms: 0 },
    });
    root = await startRoot({ name: "bench" }, [trading]);
    let n = 0;
    const signal = () =>
      encodeJson({
        id: `b-${n}`,
        symbol: SYMBOL,
        side: n++ % 2 === 0 ? "buy" : "sell",
        qty: "0.01",
      });
    const payload = encodeJson({ id: "floor", symbol: SYMBOL, side: "buy", qty: "0.01" });

    // Floors.
    nc.subscribe("bench.echo", {
      callback: (_, msg) => {
        msg.respond(msg.data);
      },
    });
    await nc.flush();
    const natsRtt = await sample(options.floors, () => client.request("bench.echo", payload));
    await ensureStreams(nc, [{ name: "BENCH_FLOOR", subjects: ["bench.js"] }]);
    const js = jetstream(nc);
    const jsAck = await sample(options.floors, () => js.publish("bench.js", payload));
    await sql`create table bench_floor (id bigint generated always as identity primary key, v text)`;
    const pgCommit = await sample(
      options.floors,
      () => sql`insert into bench_floor (v) values ('x')`,
    );

    // Latency: one signal at a time, until the tracker publishes the position. The wall-clock
    // publish and arrival times of each signal, by id, split it into stages below.
    const wall = () => performance.timeOrigin + performance.now();
    const timed = new Map<string, { published: number; arrived: number }>();
    const latency = await sample(options.latency, async () => {
      const id = `b-${n}`;
      const published = wall();
      await positions.next(() => client.publish("signals.bench", signal()));
      timed.set(id, { published, arrived: wall() });
    });
    // sample() warms up with a tenth of the runs first: those are not split either.
    for (const id of [...timed.keys()].slice(0, timed.size - options.latency)) timed.delete(id);
    const stages = await latencyStages(sql, timed);

    // Throughput: a burst, until every fill is applied to the position.
    await trading.engine.settled();
    const before = trading.state.version;
    const statsBefore = trading.engine.stats();
    const cpuStart = burstCpu(server.pid);
    const t0 = performance.now();
    for (let i = 0; i < options.burst; i++) client.publish("signals.bench", signal());
    await client.flush();
    const giveUpAt = Date.now() + 120_000;
    let recordedAt = 0;
    let filledAt = 0;
    while (trading.state.version - before < options.burst) {
      const stats = trading.engine.stats();
      if (!recordedAt && stats.signals - statsBefore.signals >= options.burst) {
        recordedAt = performance.now();
      }
      if (!filledAt && stats.fills - statsBefore.fills >= options.burst) {
        filledAt = performance.now();
      }
      if (Date.now() > giveUpAt) {
        const outcomes = await sql`
          select status, reasons, count(*)::int as n from signals group by status, reasons`;
        throw new Error(
          `Only ${trading.state.version - before} of ${options.burst} fills applied in 120 s: ` +
            JSON.stringify(outcomes),
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    const seconds = (performance.now() - t0) / 1000;
    const cpuEnd = burstCpu(server.pid);
    recordedAt ||= performance.now();
    filledAt ||= performance.now();
    const statsAfter = trading.engine.stats();
    const batches = statsAfter.batches - statsBefore.batches;
    const [counts] = await sql<
      { signals: number; orders: number; fills: number; unapplied: number }[]
    >`
      select (select count(*)::int from signals) as signals,
        (select count(*)::int from orders) as orders,
        (select count(*)::int from fills) as fills,
        (select count(*)::int from fills where realized_pnl is null) as unapplied`;
    const exactlyOnce = counts !== undefined && counts.signals === n && counts.orders === n &&
      counts.fills === n && counts.unapplied === 0;

    const lines: string[] = [];
    const row = (name: string, samples: number[]) => {
      const { p50, p99 } = percentiles(samples);
      lines.push(`  ${name.padEnd(52)} p50 ${ms(p50)}   p99 ${ms(p99)}`);
    };
    lines.push("", "trading: signal → order persisted → paper fill → position updated");
    row("NATS request round trip (floor)", natsRtt);
    row("JetStream publish ack (floor)", jsAck);
    row("PostgreSQL insert + commit (floor)", pgCommit);
    row(`signal → position updated, one at a time (${options.latency})`, latency);
    row("  publish → order statement starts (C1)", stages.toOrder);
    row("  C1 starts → fill statement starts (C2)", stages.toFill);
    row("  C2 starts → position message (C2 commit, publish)", stages.toPosition);
    lines.push(
      `  sustained: ${Math.round(options.burst / seconds).toLocaleString("en")} signals/s ` +
        `(${options.burst.toLocaleString("en")} signals in ${seconds.toFixed(2)} s, ` +
        `${batches} signal batches, ${
          (options.burst / Math.max(1, batches)).toFixed(0)
        } per batch); ` +
        `floor: ${Math.round(1000 / percentiles(pgCommit).p50).toLocaleString("en")} ` +
        `sequential commits/s`,
    );
    lines.push(
      `  stages done after: signals recorded ${((recordedAt - t0) / 1000).toFixed(2)} s, ` +
        `fills recorded ${((filledAt - t0) / 1000).toFixed(2)} s, positions ${
          seconds.toFixed(2)
        } s`,
    );
    if (cpuStart !== null && cpuEnd !== null) {
      const used = (part: keyof typeof cpuEnd) => cpuEnd[part] - cpuStart[part];
      const each = (part: keyof typeof cpuEnd) =>
        `${part} ${(used(part) / options.burst * 1e6).toFixed(0)} µs (${
          (used(part) / seconds).toFixed(2)
        } cores)`;
      lines.push(
        `  CPU per signal in the burst: ${each("engine")}, ${each("postgres")}, ` +
          `${each("nats")} (the engine's process also runs this bench's publisher)`,
      );
    }
    lines.push(
      `  exactly-once: ${exactlyOnce ? "ok" : "BROKEN"} (${counts?.signals} signals, ` +
        `${counts?.orders} orders, ${counts?.fills} fills, ${counts?.unapplied} not applied; ` +
        `${n} sent)`,
      "",
    );
    console.log(lines.join("\n"));
  } finally {
    clearInterval(quotes.timer);
    await root?.stop();
    await client.close();
    await nc.close();
    await sql.end({ timeout: 5 });
    await database.drop();
  }
}

const args = new Map(
  Deno.args.map((a) => a.replace(/^--/, "").split("=") as [string, string]),
);
const options: TradingBenchOptions = {
  latency: Number(args.get("latency") ?? "500"),
  burst: Number(args.get("burst") ?? "50000"),
  floors: Number(args.get("floors") ?? "1000"),
  batch: Number(args.get("batch") ?? "500"),
};

if (import.meta.main) {
  await runTradingBench(options);
} else {
  // One run prints the table; `deno bench` may call the function more than once.
  let ran = false;
  Deno.bench("trading (table printed above)", { n: 1, warmup: 0 }, async () => {
    if (ran) return;
    ran = true;
    await runTradingBench(options);
  });
}
