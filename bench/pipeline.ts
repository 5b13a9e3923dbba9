// deno-lint-ignore-file no-console
/**
 * End-to-end market-data benchmark: a Binance-speaking venue in its own
 * process → feed actor → NATS → validator → NATS → batch writer → ClickHouse,
 * composed exactly as the engine does (`marketSupervisor`). Prints:
 * - trades/s from the first frame sent to the last row visible in ClickHouse
 *   (a burst of `--trades`, default 300,000), beside the floor of a bare
 *   ClickHouse insert of the same number of rows;
 * - the burst's CPU per trade, by engine thread and by process (venue,
 *   nats-server, ClickHouse — the whole server's: other clients' queries on
 *   the same server are counted too, there being no per-query figure to
 *   attribute it by);
 * - at a steady `--rate` for `--seconds` (default 20,000/s for 10 s): the
 *   rate sustained, tick-to-row latency p50/p99 (the age of the newest stored
 *   trade, now − ts_local, sampled every 20 ms), RSS at each quarter of the
 *   rows stored, and the cores each process used; `--progress` adds a line
 *   every 10 s (see {@linkcode Progress}).
 *
 * The writer and the validator keep their default settings unless
 * `--flush-interval-ms=N` or `--duplicate-window=N` sets one; the test
 * harness only points the engine at the venue and the test services and
 * shortens retry delays, which apply after failures.
 *
 * A burst or steady run in which no row is stored for
 * {@linkcode STALL_MS} fails with a message saying how many rows came.
 *
 * Run with `deno task bench` (after the Deno benchmarks) or
 * `deno run -A bench/pipeline.ts --trades=300000 --rate=150000 --seconds=300 --progress`.
 */

import { startMarketPipeline } from "../tests/_market_pipeline.ts";
import { literal, quoteIdentifier } from "../adapters/clickhouse.ts";
import { DEFAULT_CONFIG } from "../config/schema.ts";
import { pidsNamed, ticks } from "./_cpu.ts";
import { percentile } from "./_stats.ts";

const args = new Map(Deno.args.map((a) => a.replace(/^--/, "").split("=") as [string, string]));
/** The whole number `--name=N` (at least `min`), or `fallback`; exits naming the flag otherwise. */
function count(name: string, fallback: number, min: number): number {
  const text = args.get(name);
  const value = text === undefined ? fallback : Number(text);
  if (!Number.isSafeInteger(value) || value < min) {
    console.error(`--${name} must be a whole number of at least ${min}, got ${text}`);
    Deno.exit(2);
  }
  return value;
}
const BURST = count("trades", 300000, 1);
/** `--rate=0` or `--seconds=0` skips the steady run. */
const RATE = count("rate", 20000, 0);
const STEADY_S = count("seconds", 10, 0);
const SYMBOLS = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT"];
/** `--writer=main` runs the batch writer on the main thread instead of its own worker. */
const WRITER_WORKER = args.get("writer") !== "main";
/** `--progress` prints the steady run's figures every 10 s (see {@linkcode Progress}). */
const PROGRESS = args.has("progress");
/** `--flush-interval-ms=N`: the writer's flush interval (default: the engine's, not the tests'). */
const FLUSH_INTERVAL_MS = count("flush-interval-ms", DEFAULT_CONFIG.writer.flush_interval_ms, 1);
/** `--duplicate-window=N`: trade ids the validator remembers per symbol (default: the engine's). */
const DUPLICATE_WINDOW = count("duplicate-window", DEFAULT_CONFIG.validator.duplicate_window, 1);

async function startVenue(trades: number, rate: number) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      new URL("./_blast_venue.ts", import.meta.url).pathname,
      `--trades=${trades}`,
      `--rate=${rate}`,
      `--symbols=${SYMBOLS.map((s) => s.replace("-", "")).join(",")}`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!/listening (\d+)/.test(text)) {
    const { value, done } = await reader.read();
    if (done) throw new Error("venue exited early");
    text += value;
  }
  const drained = (async () => {
    while (!(await reader.read()).done) { /* discard */ }
  })();
  const port = Number(/listening (\d+)/.exec(text)![1]);
  return {
    url: `ws://127.0.0.1:${port}`,
    pid: child.pid,
    async [Symbol.asyncDispose]() {
      child.kill();
      await child.status;
      await drained;
    },
  };
}

/** The ClickHouse server's process id, from its pid file or the process list; null if unknown. */
function clickhousePid(): number | null {
  try {
    return Number(Deno.readTextFileSync("/run/clickhouse-server/clickhouse-server.pid").trim());
  } catch {
    return pidsNamed("clickhouse")[0] ?? null;
  }
}

/**
 * CPU seconds used so far by this process's threads other than the main one:
 * Web Workers (the batch writer and the validator; Deno names their threads
 * `worker-N`) and V8's helper threads (`V8 DefaultWorker`: concurrent GC and
 * compilation), which every isolate of the process shares.
 */
function helperThreadSeconds(): { workers: number; v8: number } {
  const seconds = { workers: 0, v8: 0 };
  for (const task of Deno.readDirSync("/proc/self/task")) {
    const comm = Deno.readTextFileSync(`/proc/self/task/${task.name}/comm`);
    if (comm.startsWith("worker-")) seconds.workers += ticks(`/proc/self/task/${task.name}/stat`);
    else if (comm.startsWith("V8 DefaultWorke")) {
      seconds.v8 += ticks(`/proc/self/task/${task.name}/stat`);
    }
  }
  return seconds;
}

/**
 * CPU seconds used so far by the engine (all threads, its main thread, its
 * workers and V8's helper threads), the venue, nats-server and ClickHouse;
 * null off Linux.
 */
function cpuSeconds(pids: { venue: number; nats: number }) {
  try {
    const clickhouse = clickhousePid();
    return {
      process: ticks("/proc/self/stat"),
      main: ticks(`/proc/self/task/${Deno.pid}/stat`),
      ...helperThreadSeconds(),
      venue: ticks(`/proc/${pids.venue}/stat`),
      nats: ticks(`/proc/${pids.nats}/stat`),
      clickhouse: clickhouse === null ? NaN : ticks(`/proc/${clickhouse}/stat`),
    };
  } catch {
    return null;
  }
}

/** The pipeline as the engine composes it, fed by the venue at `venueUrl`. */
function startPipeline(venueUrl: string) {
  return startMarketPipeline({
    symbols: SYMBOLS,
    // The writer talks to ClickHouse directly: the tests' proxy would copy every insert
    // through the engine's main thread.
    clickhouseProxy: false,
    env: {
      TRADEWIRE_EXCHANGES__BINANCE__WS_URL: venueUrl,
      TRADEWIRE_WRITER__WORKER: String(WRITER_WORKER),
      TRADEWIRE_WRITER__FLUSH_INTERVAL_MS: String(FLUSH_INTERVAL_MS),
      TRADEWIRE_VALIDATOR__DUPLICATE_WINDOW: String(DUPLICATE_WINDOW),
    },
  });
}

type Pipeline = Awaited<ReturnType<typeof startPipeline>>;

/**
 * Rows stored in `market_trades` so far, read off the table's active parts
 * (metadata: `count()` would read a column of every row on each poll, which
 * ClickHouse 18.16 does, and slows the inserts it is waiting for).
 */
async function storedRows(pipeline: Pipeline): Promise<number> {
  const result = await pipeline.clickhouse.query({
    query: `SELECT sum(rows) AS n FROM system.parts WHERE database = ${
      literal(pipeline.database)
    } AND table = 'market_trades' AND active`,
    format: "JSONEachRow",
  });
  const [row] = await result.json<{ n: string }>();
  return Number(row?.n ?? 0);
}

/** The largest merge of `market_trades` ClickHouse is running now, or null. */
async function largestMerge(pipeline: Pipeline): Promise<Merge | null> {
  const result = await pipeline.clickhouse.query({
    query: `SELECT total_size_bytes_compressed AS bytes, rows_read, progress, elapsed
      FROM system.merges WHERE database = ${literal(pipeline.database)}
        AND table = 'market_trades'
      ORDER BY total_size_bytes_compressed DESC LIMIT 1`,
    format: "JSONEachRow",
  });
  const [row] = await result.json<
    { bytes: string; rows_read: string; progress: number; elapsed: number }
  >();
  if (row === undefined) return null;
  const rowsRead = Number(row.rows_read);
  return {
    bytes: Number(row.bytes),
    // Rows read so far over the share done: the source parts' rows, once it is under way.
    rows: row.progress > 0 ? Math.round(rowsRead / row.progress) : rowsRead,
    seconds: row.elapsed,
  };
}

/** A ClickHouse merge: its source parts' compressed bytes and rows, and how long it has run. */
interface Merge {
  bytes: number;
  rows: number;
  seconds: number;
}

/** How long a run waits without a new row stored before it fails. */
const STALL_MS = 60_000;

/**
 * Throws when `stored` rows of `total` have not grown for {@linkcode STALL_MS}:
 * call it on each poll with the rows stored so far.
 */
function stallGuard(run: string, total: number): (stored: number) => void {
  let last = -1;
  let since = Date.now();
  return (stored) => {
    if (stored !== last) {
      last = stored;
      since = Date.now();
    } else if (Date.now() - since > STALL_MS) {
      throw new Error(
        `${run}: ${stored.toLocaleString("en")} of ${total.toLocaleString("en")} rows stored, ` +
          `none for ${STALL_MS / 1000} s: rows lost or the pipeline stalled`,
      );
    }
  };
}

async function burst() {
  await using venue = await startVenue(BURST, 0);
  await using pipeline = await startPipeline(venue.url);
  let received = 0;
  let validated = 0;
  // When the connection that carried the burst opened: a later reconnect (the staleness
  // watchdog, once the venue falls silent) moves the feed's connected_at.
  let connected = 0;
  const pids = { venue: venue.pid, nats: pipeline.nats.pid };
  const cpuStart = cpuSeconds(pids);
  const stalled = stallGuard("burst", BURST);
  for (;;) {
    const n = await storedRows(pipeline);
    stalled(n);
    const feed = pipeline.status.feed("binance");
    if (!connected && feed.frames > 0) connected = feed.connected_at ?? 0;
    if (!received && feed.frames >= BURST) received = Date.now();
    if (!validated && pipeline.status.validator.accepted >= BURST) validated = Date.now();
    if (n >= BURST) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  console.log(
    `  (all frames received after ${received - connected} ms, validated after ${
      validated - connected
    } ms)`,
  );
  // From the connection that received the first frame to the last row stored.
  const seconds = (Date.now() - connected) / 1000;
  const cpuEnd = cpuSeconds(pids);
  const rows = await pipeline.countFinal("market_trades");

  // Floor: the same number of rows inserted into ClickHouse straight, as one prepared body.
  const table = `${quoteIdentifier(pipeline.database)}.market_trades`;
  let body = "";
  for (let i = 0; i < BURST; i++) {
    body += `{"exchange":"floor","symbol":"BTC-USDT","venue_symbol":"BTCUSDT","ts_exchange":${
      1_700_000_000_000_000 + i
    },"ts_local":${
      1_700_000_000_000_000 + i
    },"trade_id":"${i}","price":100.5,"qty":0.01,"side":"buy"}\n`;
  }
  const t0 = performance.now();
  const response = await fetch(
    `http://127.0.0.1:8123/?query=${encodeURIComponent(`INSERT INTO ${table} FORMAT JSONEachRow`)}`,
    { method: "POST", body },
  );
  await response.text();
  const floorSeconds = (performance.now() - t0) / 1000;
  const cpu = cpuStart && cpuEnd
    ? {
      process: cpuEnd.process - cpuStart.process,
      main: cpuEnd.main - cpuStart.main,
      workers: cpuEnd.workers - cpuStart.workers,
      v8: cpuEnd.v8 - cpuStart.v8,
      venue: cpuEnd.venue - cpuStart.venue,
      nats: cpuEnd.nats - cpuStart.nats,
      clickhouse: cpuEnd.clickhouse - cpuStart.clickhouse,
    }
    : null;
  return { rows, seconds, floorSeconds, cpu, feed: pipeline.status.feed("binance") };
}

/**
 * `--progress`: every 10 s of a steady run, on stderr, the worst tick-to-row
 * latency seen, RSS, and how far each stage is behind what the venue has
 * sent by then (frames received, events published, validated, rows stored)
 * and the CPU each part used over those 10 s — where a stall starts — and
 * the largest merge of `market_trades` ClickHouse ran in them: at 150k
 * trades/s, a merge of most of the table's rows comes every few minutes and
 * takes a core for many seconds.
 */
class Progress {
  #window = 0;
  #worst = 0;
  #merge: Merge | null = null;
  #cpu: ReturnType<typeof cpuSeconds>;
  constructor(
    readonly pipeline: Pipeline,
    readonly connected: number,
    readonly pids: { venue: number; nats: number },
  ) {
    this.#cpu = cpuSeconds(pids);
  }

  sample(ms: number, stored: number): void {
    const now = Date.now();
    const window = Math.floor((now - this.connected) / 10_000);
    if (window !== this.#window) {
      const sent = Math.min(RATE * STEADY_S, Math.round((now - this.connected) * RATE / 1000));
      const status = this.pipeline.status;
      const behind = (n: number) => (sent - n).toLocaleString("en");
      const cpu = cpuSeconds(this.pids);
      const was = this.#cpu;
      const cores = (key: keyof NonNullable<typeof cpu>) =>
        cpu && was ? ((cpu[key] - was[key]) / 10).toFixed(2) : "?";
      this.#cpu = cpu;
      const feed = status.feed("binance");
      console.error(
        `  [${this.#window * 10}–${window * 10} s] worst tick-to-row ${
          this.#worst.toFixed(0)
        } ms; RSS ${(Deno.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB; behind the venue: ` +
          `received ${behind(feed.frames)}, published ${behind(feed.events)}, validated ${
            behind(status.validator.accepted)
          }, stored ${behind(stored)}; cores: main ${cores("main")}, workers ${
            cores("workers")
          }, V8 ${cores("v8")}, nats-server ${cores("nats")}, ClickHouse (whole server) ${
            cores("clickhouse")
          }; largest merge ${describeMerge(this.#merge)}`,
      );
      this.#window = window;
      this.#worst = 0;
      this.#merge = null;
    }
    this.#worst = Math.max(this.#worst, ms);
  }

  /** Keeps the largest merge seen running in this window. */
  merge(merge: Merge | null): void {
    if (merge !== null && (this.#merge === null || merge.bytes >= this.#merge.bytes)) {
      this.#merge = merge;
    }
  }
}

function describeMerge(merge: Merge | null): string {
  if (merge === null) return "none";
  const rows = merge.rows >= 1e6
    ? `${(merge.rows / 1e6).toFixed(1)}M`
    : `${Math.round(merge.rows / 1e3)}k`;
  return `${rows} rows (${(merge.bytes / 2 ** 20).toFixed(0)} MiB), running ${
    merge.seconds.toFixed(1)
  } s`;
}

async function steady() {
  const total = RATE * STEADY_S;
  await using venue = await startVenue(total, RATE);
  await using pipeline = await startPipeline(venue.url);
  const samples: number[] = [];
  const rssStart = Deno.memoryUsage().rss;
  const table = `${quoteIdentifier(pipeline.database)}.market_trades`;
  let connected = 0;
  /** RSS when a quarter, half and three quarters of the rows were stored. */
  const rssAt: number[] = [];
  // The newest stored trade is looked for only among trades at most 200 ms older than the
  // newest one seen before: `timestamp` and `ts_exchange` are in the table's sorting key, so
  // ClickHouse reads those granules and not the whole table (a scan of every row every 20 ms
  // grows with the table and took as much CPU as the inserts it measures).
  let fromUs = 0;
  const pids = { venue: venue.pid, nats: pipeline.nats.pid };
  const cpuStart = cpuSeconds(pids);
  let progress: Progress | null = null;
  let mergeCheckedUs = 0;
  const stalled = stallGuard("steady run", total);
  for (;;) {
    const feed = pipeline.status.feed("binance");
    if (!connected && feed.frames > 0) connected = feed.connected_at ?? 0;
    if (PROGRESS && connected && !progress) progress = new Progress(pipeline, connected, pids);
    const result = await pipeline.clickhouse.query({
      query: `SELECT max(ts_local) AS t, max(ts_exchange) AS e, count() AS n FROM ${table}
        WHERE timestamp >= toDateTime(${Math.floor(fromUs / 1e6)}) AND ts_exchange >= ${fromUs}`,
      format: "JSONEachRow",
    });
    const [row] = await result.json<{ t: string; e: string; n: string }>();
    const nowUs = Date.now() * 1000;
    const stored = await storedRows(pipeline);
    stalled(stored);
    if (progress !== null && nowUs - mergeCheckedUs >= 500_000) {
      mergeCheckedUs = nowUs;
      progress.merge(await largestMerge(pipeline));
    }
    if (Number(row?.n) > 0) {
      const ms = (nowUs - Number(row!.t)) / 1000;
      samples.push(ms);
      progress?.sample(ms, stored);
      fromUs = Math.max(fromUs, Number(row!.e) - 200_000);
    }
    while (rssAt.length < 3 && stored >= total * (rssAt.length + 1) / 4) {
      rssAt.push(Deno.memoryUsage().rss);
    }
    if (stored >= total) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // The venue's pace bounds this from above: at a rate the pipeline keeps up with, the last row
  // lands within a tick-to-row latency of the last frame.
  const seconds = (Date.now() - connected) / 1000;
  const cpuEnd = cpuSeconds(pids);
  samples.sort((a, b) => a - b);
  return {
    rate: total / seconds,
    seconds,
    rows: await pipeline.countFinal("market_trades"),
    cpu: cpuStart && cpuEnd
      ? {
        engine: cpuEnd.process - cpuStart.process,
        venue: cpuEnd.venue - cpuStart.venue,
        nats: cpuEnd.nats - cpuStart.nats,
        clickhouse: cpuEnd.clickhouse - cpuStart.clickhouse,
      }
      : null,
    p50: percentile(samples, 0.5),
    p99: percentile(samples, 0.99),
    rssStartMb: rssStart / 2 ** 20,
    rssQuartersMb: rssAt.map((rss) => rss / 2 ** 20),
    rssEndMb: Deno.memoryUsage().rss / 2 ** 20,
  };
}

const b = await burst();
console.log("\nmarket-data pipeline (feed → NATS → validator → NATS → writer → ClickHouse)");
console.log(
  `  burst of ${BURST} trades: ${b.rows} rows in ${b.seconds.toFixed(2)} s = ${
    Math.round(b.rows / b.seconds).toLocaleString("en")
  } trades/s end to end` +
    `   (floor: bare ClickHouse insert of the same rows ${
      Math.round(BURST / b.floorSeconds).toLocaleString("en")
    } rows/s)`,
);
if (b.cpu) {
  // CPU time is steadier than wall time on a shared machine: the engine's cost per trade.
  const us = (seconds: number) => (seconds * 1e6 / BURST).toFixed(1);
  console.log(
    `  engine CPU: ${us(b.cpu.process)} µs per trade (all threads) = main thread ${
      us(b.cpu.main)
    } + worker threads (writer, validator) ${
      us(b.cpu.workers)
    } + V8 helper threads (GC, compilation) ${us(b.cpu.v8)} + other ${
      us(Math.max(0, b.cpu.process - b.cpu.main - b.cpu.workers - b.cpu.v8))
    }`,
  );
  // The rest of the machine's CPU in the same interval: 150k trades/s on 2 cores leaves 13.3 µs.
  const total = b.cpu.process + b.cpu.venue + b.cpu.nats + b.cpu.clickhouse;
  console.log(
    `  machine CPU: ${us(total)} µs per trade = engine ${us(b.cpu.process)} + venue ${
      us(b.cpu.venue)
    } + nats-server ${us(b.cpu.nats)} + ClickHouse ${us(b.cpu.clickhouse)}` +
      ` (in ${b.seconds.toFixed(2)} s on ${navigator.hardwareConcurrency} cores; ClickHouse: ` +
      `the whole server, other clients' queries included)`,
  );
}
const sent = RATE * STEADY_S;
const s = sent === 0 ? null : await steady();
if (s === null) console.log("  steady run skipped (--rate=0 or --seconds=0)");
else {
  console.log(
    `  steady ${RATE.toLocaleString("en")} trades/s for ${STEADY_S} s: ${
      s.rows === sent ? "all " : `${s.rows.toLocaleString("en")} of `
    }${sent.toLocaleString("en")} rows stored ${s.seconds.toFixed(2)} s after the first frame (${
      Math.round(s.rate).toLocaleString("en")
    } trades/s end to end); tick-to-row p50 ${s.p50.toFixed(0)} ms, p99 ${
      s.p99.toFixed(0)
    } ms; RSS ${s.rssStartMb.toFixed(0)} → ${
      s.rssQuartersMb.map((mb) => mb.toFixed(0)).join(" → ")
    } (each quarter) → ${s.rssEndMb.toFixed(0)} MiB`,
  );
  if (s.cpu) {
    const cores = (seconds: number) => (seconds / s.seconds).toFixed(2);
    console.log(
      `  machine CPU in the steady run (cores): engine ${cores(s.cpu.engine)}, venue ${
        cores(s.cpu.venue)
      }, nats-server ${cores(s.cpu.nats)}, ClickHouse ${
        cores(s.cpu.clickhouse)
      } (the whole server, other clients' queries included)`,
    );
  }
}
