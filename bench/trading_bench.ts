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
 *   engine, the bench database's PostgreSQL backends and nats-server — and a
 *   check that exactly-once held, per signal (see {@linkcode exactlyOnceProblems}):
 *   a run where it did not fails with {@linkcode ExactlyOnceError};
 * - floors: a NATS request round trip, a JetStream publish ack, one
 *   PostgreSQL insert + commit (p50/p99 each). The path above needs at least
 *   two commits (signal+order before the broker is called; fill, order and
 *   position together when the tracker is idle — a third, the tracker's own,
 *   otherwise) and one JetStream hop (SIGNALS).
 *
 * Run with `deno task bench` or
 * `deno run -A bench/trading_bench.ts --latency=1000 --burst=20000`; flags are
 * `--name=N` with N a whole number of at least 1 (see
 * {@linkcode parseTradingBenchArgs}), anything else exits 2.
 *
 * @module
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
import { type BackendSeconds, backendSeconds, backendSecondsBetween, ticks } from "./_cpu.ts";
import { percentile } from "./_stats.ts";

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

/** The options used without flags. */
export const DEFAULT_TRADING_BENCH_OPTIONS: Readonly<TradingBenchOptions> = {
  latency: 500,
  burst: 50_000,
  floors: 1000,
  batch: 500,
};

/**
 * The options set by command-line flags `--latency=N`, `--burst=N`,
 * `--floors=N`, `--batch=N` (whole numbers of at least 1), the others left at
 * their defaults. Throws a `TypeError` naming an unknown or malformed flag and
 * a `RangeError` naming a flag whose value is not such a number.
 *
 * @example
 * ```ts
 * parseTradingBenchArgs(["--burst=20000"]).burst; // 20000
 * ```
 */
export function parseTradingBenchArgs(args: readonly string[]): TradingBenchOptions {
  const options = { ...DEFAULT_TRADING_BENCH_OPTIONS };
  for (const arg of args) {
    const match = /^--([a-z]+)=(.*)$/.exec(arg);
    const name = match?.[1] as keyof TradingBenchOptions | undefined;
    if (match === null || name === undefined || !Object.hasOwn(options, name)) {
      throw new TypeError(
        `Unknown flag ${JSON.stringify(arg)}: expected --${Object.keys(options).join("=N, --")}=N`,
      );
    }
    const text = match[2]!;
    const value = /^\d+$/.test(text) ? Number(text) : NaN;
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`--${name} must be a whole number of at least 1, got ${text}`);
    }
    options[name] = value;
  }
  return options;
}

/** A run where a signal did not come out as exactly one order, filled once and applied. */
export class ExactlyOnceError extends Error {
  /** What was wrong, one line each. */
  readonly problems: readonly string[];
  /** Makes the error listing `problems`. */
  constructor(problems: readonly string[]) {
    super(`Exactly-once broken: ${problems.join("; ")}`);
    this.name = "ExactlyOnceError";
    this.problems = problems;
  }
}

/**
 * What breaks exactly-once in the bench's database after `sent` signals
 * `b-0` … `b-(sent-1)` on `symbol`, one line each (empty when it held): a
 * signal with other than one order, a signal that is not one of them, an
 * order whose filled quantity is not the sum of its fills, an order left
 * pending, a fill not applied, the position not the signed sum of the fills.
 */
export async function exactlyOnceProblems(
  sql: Sql,
  sent: number,
  symbol: string,
): Promise<string[]> {
  const ids = Array.from({ length: sent }, (_, i) => `b-${i}`);
  const example = (rows: readonly { id: string }[]) =>
    rows.slice(0, 5).map((r) => r.id).join(", ") + (rows.length > 5 ? ", …" : "");
  const problems: string[] = [];
  const notOne = await sql<{ id: string; orders: number }[]>`
    select sent.id, count(o.id)::int as orders
    from unnest(${ids}::text[]) as sent (id)
      left join signals s on s.client_signal_id = sent.id
      left join orders o on o.signal_id = s.id
    group by sent.id having count(o.id) <> 1 order by sent.id`;
  if (notOne.length > 0) {
    problems.push(`${notOne.length} signals without exactly one order (${example(notOne)})`);
  }
  const strangers = await sql<{ id: string }[]>`
    select client_signal_id as id from signals
    where client_signal_id <> all(${ids}::text[]) order by id`;
  if (strangers.length > 0) {
    problems.push(`${strangers.length} signals not sent (${example(strangers)})`);
  }
  const misfilled = await sql<{ id: string }[]>`
    select o.id::text as id from orders o left join fills f on f.order_id = o.id
    group by o.id having o.filled_qty <> coalesce(sum(f.qty), 0) order by o.id`;
  if (misfilled.length > 0) {
    problems.push(
      `${misfilled.length} orders whose filled qty is not the sum of their fills ` +
        `(order ids ${example(misfilled)})`,
    );
  }
  const pending = await sql<{ id: string }[]>`
    select id::text as id from orders where status = 'pending' order by id`;
  if (pending.length > 0) {
    problems.push(`${pending.length} orders left pending (order ids ${example(pending)})`);
  }
  const [unapplied] = await sql<{ n: number }[]>`
    select count(*)::int as n from fills where realized_pnl is null`;
  if ((unapplied?.n ?? 0) > 0) problems.push(`${unapplied!.n} fills not applied to the position`);
  const [position] = await sql<{ held: string; filled: string; equal: boolean }[]>`
    select held::text, filled::text, held = filled as equal from (
      select coalesce((select sum(qty) from positions where symbol = ${symbol}), 0) as held,
        coalesce((select sum(case side when 'buy' then qty else -qty end) from fills
          where symbol = ${symbol}), 0) as filled) as totals`;
  if (position !== undefined && !position.equal) {
    problems.push(
      `position ${position.held} ${symbol}, the fills' signed sum ${position.filled}`,
    );
  }
  return problems;
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
 * CPU seconds used so far by this process (the engine and the bench), the
 * backends of the bench's database (by pid: the pool's connections persist)
 * and the bench's nats-server; null off Linux.
 */
async function burstCpu(
  sql: Sql,
  natsPid: number,
): Promise<{ engine: number; postgres: BackendSeconds; nats: number } | null> {
  try {
    return {
      postgres: await backendSeconds(sql),
      engine: ticks("/proc/self/stat"),
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
    const cpuStart = await burstCpu(sql, server.pid);
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
    const cpuEnd = await burstCpu(sql, server.pid);
    recordedAt ||= performance.now();
    filledAt ||= performance.now();
    const statsAfter = trading.engine.stats();
    const batches = statsAfter.batches - statsBefore.batches;
    const [counts] = await sql<{ signals: number; orders: number; fills: number }[]>`
      select (select count(*)::int from signals) as signals,
        (select count(*)::int from orders) as orders,
        (select count(*)::int from fills) as fills`;
    const problems = await exactlyOnceProblems(sql, n, SYMBOL);

    const lines: string[] = [];
    const row = (name: string, samples: number[]) => {
      const sorted = [...samples].sort((a, b) => a - b);
      const [p50, p99] = [percentile(sorted, 0.5), percentile(sorted, 0.99)];
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
        `floor: ${
          Math.round(1000 / percentile(pgCommit.toSorted((a, b) => a - b), 0.5))
            .toLocaleString("en")
        } ` +
        `sequential commits/s`,
    );
    lines.push(
      `  stages done after: signals recorded ${((recordedAt - t0) / 1000).toFixed(2)} s, ` +
        `fills recorded ${((filledAt - t0) / 1000).toFixed(2)} s, positions ${
          seconds.toFixed(2)
        } s`,
    );
    if (cpuStart !== null && cpuEnd !== null) {
      const backends = backendSecondsBetween(cpuStart.postgres, cpuEnd.postgres);
      const each = (name: string, used: number) =>
        `${name} ${(used / options.burst * 1e6).toFixed(0)} µs (${
          (used / seconds).toFixed(2)
        } cores)`;
      lines.push(
        `  CPU per signal in the burst: ${each("engine", cpuEnd.engine - cpuStart.engine)}, ${
          each("postgres", backends.seconds)
        } (the bench database's ${cpuEnd.postgres.size} backends${
          backends.ended > 0 ? `; ${backends.ended} ended during the burst, not counted` : ""
        }), ${each("nats", cpuEnd.nats - cpuStart.nats)} ` +
          `(the engine's process also runs this bench's publisher)`,
      );
    }
    lines.push(
      `  exactly-once: ${problems.length === 0 ? "ok" : "BROKEN"} (${counts?.signals} signals, ` +
        `${counts?.orders} orders, ${counts?.fills} fills; ${n} sent)`,
      ...problems.map((problem) => `    ${problem}`),
      "",
    );
    console.log(lines.join("\n"));
    if (problems.length > 0) throw new ExactlyOnceError(problems);
  } finally {
    clearInterval(quotes.timer);
    await root?.stop();
    await client.close();
    await nc.close();
    await sql.end({ timeout: 5 });
    await database.drop();
  }
}

if (import.meta.main) {
  let options: TradingBenchOptions;
  try {
    options = parseTradingBenchArgs(Deno.args);
  } catch (error) {
    console.error((error as Error).message);
    Deno.exit(2);
  }
  await runTradingBench(options);
}
