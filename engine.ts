/**
 * The engine: connections, the supervision tree, and their orderly shutdown.
 *
 * Start order: NATS (waiting while it is down), the PostgreSQL pool, the
 * ClickHouse client, then the root supervisor, whose first
 * child takes the database's instance lock (one engine per database:
 * `actors/instance_lock.ts`), whose next create or update the JetStream
 * streams and apply migrations before any other child starts, and whose last
 * child is the HTTP server. The streams child (`actors/streams.ts`) stays:
 * it creates the engine's streams again when NATS lost them (back without
 * its JetStream store) and makes health degraded while a stream or durable
 * consumer the engine needs is missing. Shutdown runs the other way round:
 * the HTTP server stops accepting work, actors drain, then connections close.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import type { ClickHouseClient } from "@clickhouse/client";
import type { Sql } from "postgres";
import { type Config, redactConfig } from "./config/mod.ts";
import type { ActorInfo, ChildSpec } from "./actors/types.ts";
import { restartLimits, Supervisor } from "./actors/supervisor.ts";
import { isConnected } from "./actors/actor.ts";
import { migrationsActor, MigrationsState } from "./actors/migrations.ts";
import { INSTANCE_LOCK_KEY_OFFSET, instanceLockActor } from "./actors/instance_lock.ts";
import { connectNats, ENGINE_STREAMS, pingNats, subject } from "./adapters/nats.ts";
import { encodeJson } from "./adapters/codec.ts";
import { createPostgres, probePostgres } from "./adapters/postgres.ts";
import { createClickHouse, pingClickHouse } from "./adapters/clickhouse.ts";
import { createApp } from "./api/app.ts";
import { httpServer } from "./api/server.ts";
import { type HealthSource, UnusableServiceError } from "./api/health.ts";
import { configuredSymbols, marketSupervisor } from "./actors/market.ts";
import { type TradingChildSpec, tradingSupervisor } from "./actors/trading.ts";
import { executionProblems } from "./actors/execution.ts";
import { type Broker, type BrokerStreamStatus, streamProblem } from "./brokers/broker.ts";
import { tradingRoutes } from "./api/trading.ts";
import { DEFAULT_BATCH_WRITER_CONSUMER, mdCleanStream } from "./market/md_stream.ts";
import { type NeededConsumer, streamsActor } from "./actors/streams.ts";
import { DEFAULT_EXECUTION_CONSUMER, DEFAULT_SIGNALS_STREAM } from "./trading/signals_stream.ts";
import { DEFAULT_FILLS_STREAM, DEFAULT_POSITION_TRACKER_CONSUMER } from "./trading/fills_stream.ts";
import { MarketStatus } from "./market/status.ts";
import { LatestCache } from "./market/latest_cache.ts";
import { marketDataRoutes } from "./api/market_data.ts";
import { type Logger, nullLogger } from "./lib/log.ts";
import { systemClock } from "./lib/clock.ts";
import { sha256Hex } from "./lib/hash.ts";
import { VERSION } from "./version.ts";

/**
 * Longest wait for the NATS connection's drain when the engine stops, in
 * milliseconds (at most a quarter of `engine.shutdown_timeout_ms`): then it
 * is closed.
 */
export const DEFAULT_NATS_DRAIN_MS = 2_000;

/**
 * Closes the engine's NATS connection: drains it (what was published is
 * flushed, what was received is delivered) while it is connected, for at most
 * `drainMs`, and closes it at once while it is down — a drain would wait for
 * the server to come back.
 */
async function closeNats(nats: NatsConnection, drainMs: number, log: Logger): Promise<void> {
  if (nats.isClosed()) return;
  if (isConnected(nats)) {
    const timer = new AbortController();
    const drained = await Promise.race([
      nats.drain().then(() => true, () => true),
      systemClock.sleep(drainMs, timer.signal).then(() => false, () => false),
    ]);
    timer.abort();
    if (drained) return;
    log.warn("NATS drain timed out; closing the connection", { drain_ms: drainMs });
  } else {
    log.warn("NATS is down: its connection is closed without draining");
  }
  await nats.close().catch(() => {});
}

/** Options for {@linkcode startEngine}. */
export interface StartEngineOptions {
  /** @default {nullLogger} */
  log?: Logger;
  /** Aborting it while the engine starts gives up starting. */
  signal?: AbortSignal;
  /**
   * Whether giving up is for a failure (an uncaught error) rather than a
   * request: asked when a start given up after the database was taken is
   * recorded in `engine_runs`, with exit code 1 when it says so, 0 otherwise.
   * @default {() => false}
   */
  failed?: () => boolean;
  /** Called with the HTTP server's bound address. */
  onListen?: (address: { hostname: string; port: number }) => void;
}

/** A running engine. */
export interface Engine extends AsyncDisposable {
  /** This run's id (also the `engine_runs.instance_id`). */
  readonly instanceId: string;
  /** Rows of the supervision tree. */
  inspect(): ActorInfo[];
  /**
   * Stops the tree and closes connections; resolves with the exit code. A
   * stop for a failure outside the tree (`failed`: an uncaught error) exits
   * 1, recorded so in `engine_runs` and `engine.events.stopped` — also when
   * it comes while a stop is under way, until that stop is recorded.
   */
  stop(options?: EngineStopOptions): Promise<number>;
  /**
   * Resolves with the process exit code once the engine has stopped: 0 after
   * a requested stop, 1 when the root supervisor failed or the stop was for a
   * failure.
   */
  closed(): Promise<number>;
}

/** Options of {@linkcode Engine.stop}. */
export interface EngineStopOptions {
  /** The stop is for a failure (an uncaught error): exit code 1. @default {false} */
  failed?: boolean;
}

/** What the supervision tree's children share. */
export interface EngineContext {
  /** The configuration. */
  config: Config;
  /** The NATS connection. */
  nats: NatsConnection;
  /** The PostgreSQL pool. */
  sql: Sql;
  /** The ClickHouse client (bound to `default`; qualify table names with the database). */
  clickhouse: ClickHouseClient;
  /** Migration progress; `clickhouseReady` resolves once ClickHouse's schema is there. */
  migrations: MigrationsState;
  /** Live figures of the market-data pipeline. */
  market: MarketStatus;
  /** Latest trade, top of book and bar per venue and symbol. */
  cache: LatestCache;
  /** The engine's logger. */
  log: Logger;
}

/**
 * Starts the engine and resolves once every child of the root supervisor is
 * ready. Rejects (after closing what it opened) when a child fails to start,
 * e.g. a migration's checksum changed or the HTTP port is taken.
 *
 * @example
 * ```ts
 * await using engine = await startEngine(config, { log });
 * Deno.exit(await engine.closed());
 * ```
 */
export async function startEngine(
  config: Config,
  { log = nullLogger, signal, failed = () => false, onListen }: StartEngineOptions = {},
): Promise<Engine> {
  const instanceId = crypto.randomUUID();
  const startedAt = Date.now();
  log.info("engine starting", { version: VERSION, instance_id: instanceId, pid: Deno.pid });

  const nats = await connectNats(config.nats, { log: log.child({ component: "nats" }), signal });
  const sql = createPostgres(config.postgres, log.child({ component: "postgres" }));
  // Its own connections: a migration run waits for the migration lock and runs long statements
  // with statement_timeout off, which the pool's answer deadline would cut.
  const migrationsSql = createPostgres(
    { ...config.postgres, pool_size: 2, answer_deadline_ms: null },
    log.child({ component: "postgres" }),
  );
  const clickhouse = createClickHouse(config.clickhouse, {
    database: "default",
    log: log.child({ component: "clickhouse" }),
  });
  const closeConnections = async () => {
    await Promise.allSettled([
      closeNats(nats, Math.min(DEFAULT_NATS_DRAIN_MS, config.engine.shutdown_timeout_ms / 4), log),
      sql.end({ timeout: 5 }),
      migrationsSql.end({ timeout: 5 }),
      clickhouse.close(),
    ]);
  };

  let root: Supervisor;
  const migrations = new MigrationsState();
  try {
    const market = new MarketStatus();
    const cache = new LatestCache();
    const context: EngineContext = {
      config,
      nats,
      sql,
      clickhouse,
      migrations,
      market,
      cache,
      log,
    };
    const trading = tradingSupervisor({ config, nats, sql, cache, log });
    const streams = streamsActor({
      nats,
      streams: engineStreams(config),
      consumers: neededConsumers(config),
      log,
    });
    const health: HealthSource = {
      version: VERSION,
      startedAt,
      probes: {
        postgres: () => postgresProbe(sql),
        nats: () => pingNats(nats),
        // As the engine's user: ClickHouse answers GET /ping to anyone, a wrong password too.
        clickhouse: () => pingClickHouse(clickhouse, { authenticated: true }),
      },
      actors: () => root?.inspect() ?? [],
      sections: () => ({
        instance_id: instanceId,
        migrations: migrations.snapshot(),
        market: market.snapshot(),
        brokers: brokerStreams(trading.brokers),
      }),
      degraded: () => [
        ...migrationProblems(migrations),
        ...marketProblems(config, market),
        ...brokerProblems(trading.brokers),
        ...streams.problems(),
        ...executionProblems(trading.engine),
      ],
    };
    const children: ChildSpec[] = [
      instanceLockActor({
        postgres: config.postgres,
        key: config.migrations.lock_key + INSTANCE_LOCK_KEY_OFFSET,
        log,
      }),
      // Only under the lock: an engine refused by it must not reconfigure the running one's.
      streams,
      migrationsActor({
        sql: migrationsSql,
        clickhouse,
        options: { ...config.migrations, database: config.clickhouse.database },
        log,
        state: migrations,
      }),
      ...featureChildren(context, trading),
    ];
    if (config.http.enabled) {
      const app = createApp({
        name: config.engine.name,
        health,
        log,
        http: config.http,
        routes: {
          "/api/v1/market-data": marketDataRoutes({
            clickhouse,
            database: config.clickhouse.database,
            cache,
            status: market,
            symbols: () => configuredSymbols(config),
            log: log.child({ component: "market-data-api" }),
          }),
          "/api/v1/trading": tradingRoutes({
            sql,
            engine: trading.engine,
            state: trading.state,
            cache,
            maxPriceAgeMs: config.execution.max_price_age_ms,
            apiKeyHashes: config.http.api_key_hashes,
            http: config.http,
          }),
        },
      });
      children.push(
        httpServer(app, config.http, {
          log: log.child({ actor: "http" }),
          shutdownMs: config.supervisor.child_shutdown_ms,
          ...(onListen ? { onListen } : {}),
        }),
      );
    }
    root = new Supervisor({
      name: "root",
      strategy: "rest_for_one",
      ...restartLimits(config.supervisor),
      log: log.child({ component: "supervisor" }),
    }, children);
    const abandon = () => root.stop(signal?.reason);
    signal?.addEventListener("abort", abandon, { once: true });
    // Aborted before the listener was there (while connecting or creating streams).
    if (signal?.aborted) abandon();
    try {
      await root.ready;
    } finally {
      signal?.removeEventListener("abort", abandon);
    }
  } catch (error) {
    if (signal?.aborted) log.info("engine start cancelled");
    else log.error("engine failed to start", { error });
    if (migrations.postgres === "applied") {
      // It held the database (lock taken, schema in place): its run is recorded too, exit code 0
      // only when it was given up on request (a signal), not for a failure (an uncaught error).
      const runId = await recordStart(sql, instanceId, await configChecksum(config), log);
      await recordStop(sql, runId, signal?.aborted && !failed() ? 0 : 1, log);
    }
    await closeConnections();
    throw error;
  }

  const runId = await recordStart(sql, instanceId, await configChecksum(config), log);
  publishEvent(nats, "started", { instance_id: instanceId, version: VERSION }, log);
  log.info("engine started", {
    instance_id: instanceId,
    startup_ms: Date.now() - startedAt,
    actors: root.inspect().length,
  });

  let stopRequested = false;
  let stoppedForFailure = false;
  const closed = root.closed().then(async (failure) => {
    // A stop on request resolves the root's `done` without an error, so a failure is the root's
    // own — also when a stop was requested while the failed root was stopping its children.
    const code = failure || stoppedForFailure ? 1 : 0;
    if (failure) log.error("root supervisor failed; engine stopping", { error: failure });
    publishEvent(nats, "stopped", { instance_id: instanceId, exit_code: code }, log);
    await recordStop(sql, runId, code, log);
    await closeConnections();
    log.info("engine stopped", { instance_id: instanceId, exit_code: code });
    return code;
  });
  const stop = (options: EngineStopOptions = {}) => {
    if (options.failed) stoppedForFailure = true;
    if (!stopRequested) {
      stopRequested = true;
      log.info("engine stopping", { instance_id: instanceId });
      root.stop();
    }
    return closed;
  };
  return {
    instanceId,
    inspect: () => root.inspect(),
    stop,
    closed: () => closed,
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
}

/**
 * The children of the root supervisor between migrations and HTTP: the
 * market-data and trading subtrees. Started in this order, stopped in reverse.
 */
function featureChildren(context: EngineContext, trading: TradingChildSpec): ChildSpec[] {
  const { config, nats, clickhouse, migrations, market, cache, log } = context;
  return [
    marketSupervisor({
      config,
      nats,
      clickhouse,
      clickhouseReady: migrations.clickhouseReady,
      status: market,
      cache,
      log,
    }),
    trading,
  ];
}

/** JetStream streams the engine creates itself (the trading actors create theirs). */
function engineStreams(config: Config) {
  return [...ENGINE_STREAMS, mdCleanStream(config.writer)];
}

/**
 * The durable consumers (and so their streams) the engine needs with this
 * configuration, each created by its actor: health is degraded while one is
 * missing.
 */
function neededConsumers(config: Config): NeededConsumer[] {
  const needed: NeededConsumer[] = [
    { stream: DEFAULT_FILLS_STREAM, consumer: DEFAULT_POSITION_TRACKER_CONSUMER },
  ];
  if (config.execution.enabled) {
    needed.push({ stream: DEFAULT_SIGNALS_STREAM, consumer: DEFAULT_EXECUTION_CONSUMER });
  }
  if (config.writer.enabled) {
    needed.push({
      stream: mdCleanStream(config.writer).name,
      consumer: DEFAULT_BATCH_WRITER_CONSUMER,
    });
  }
  return needed;
}

/**
 * ClickHouse's migrations not applied (pending at start, unavailable while
 * ClickHouse is away, failed): market data has no tables to go to, whatever
 * the ClickHouse ping says. (PostgreSQL's are applied before anything else
 * starts.)
 */
function migrationProblems(migrations: MigrationsState): string[] {
  return migrations.clickhouse === "applied"
    ? []
    : [`clickhouse migrations not applied (${migrations.clickhouse})`];
}

/**
 * Why the market-data pipeline is not healthy: feeds not live, ClickHouse
 * refusing inserts, market data the stream discarded before it was written in
 * the last `DROPPED_DEGRADED_MS` (10 minutes; see `MarketStatus.droppedRecently`).
 */
function marketProblems(config: Config, market: MarketStatus): string[] {
  const problems: string[] = [];
  if (config.replay.file === "") {
    for (const feed of market.feeds.values()) {
      if (feed.state !== "live") problems.push(`feed ${feed.exchange} is ${feed.state}`);
    }
  }
  if (market.writer.clickhouse === "down") {
    problems.push("batch writer cannot insert into ClickHouse");
  }
  const dropped = market.droppedRecently(Date.now());
  if (dropped !== null) problems.push(`batch writer: ${dropped}`);
  return problems;
}

/**
 * Health's PostgreSQL probe: the round trip, in ms, of a query that also asks
 * whether the server takes writes. It rejects when PostgreSQL does not answer,
 * and when it answers read-only (a standby, as after a failover onto it; a
 * database set `default_transaction_read_only`) — the engine can record no
 * signal, order or fill then: `postgres is read-only (…)`, health down.
 */
async function postgresProbe(sql: Sql): Promise<number> {
  const { latency_ms, read_only } = await probePostgres(sql);
  if (read_only !== null) throw new UnusableServiceError(`read-only (${read_only})`);
  return latency_ms;
}

/** Each broker's event stream as health reports it (brokers without a stream are left out). */
function brokerStreams(brokers: ReadonlyMap<string, Broker>): Record<string, BrokerStreamStatus> {
  const streams: Record<string, BrokerStreamStatus> = {};
  for (const [name, broker] of brokers) {
    if (broker.streamStatus !== undefined) streams[name] = broker.streamStatus();
  }
  return streams;
}

/**
 * Why the brokers make the engine degraded: a broker's event stream refused
 * the API keys, or has not been listening for longer than
 * `DEFAULT_STREAM_DOWN_GRACE_MS` (see `streamProblem`) — no order update can
 * arrive meanwhile.
 */
function brokerProblems(brokers: ReadonlyMap<string, Broker>): string[] {
  const problems: string[] = [];
  for (const [name, status] of Object.entries(brokerStreams(brokers))) {
    const problem = streamProblem(name, status);
    if (problem !== null) problems.push(problem);
  }
  return problems;
}

/** SHA-256 of the redacted configuration: which settings a run used, without its secrets. */
function configChecksum(config: Config): Promise<string> {
  return sha256Hex(JSON.stringify(redactConfig(config)));
}

async function recordStart(
  sql: Sql,
  instanceId: string,
  checksum: string,
  log: Logger,
): Promise<number | null> {
  try {
    const [row] = await sql<{ id: string }[]>`
      insert into engine_runs (instance_id, version, host, pid, config_checksum)
      values (${instanceId}, ${VERSION}, ${Deno.hostname()}, ${Deno.pid}, ${checksum})
      returning id`;
    return row ? Number(row.id) : null;
  } catch (error) {
    log.warn("could not record the engine run", { error });
    return null;
  }
}

async function recordStop(sql: Sql, runId: number | null, code: number, log: Logger) {
  if (runId === null) return;
  try {
    await sql`update engine_runs set stopped_at = now(), exit_code = ${code} where id = ${runId}`;
  } catch (error) {
    log.warn("could not record the engine stop", { error });
  }
}

function publishEvent(nats: NatsConnection, name: string, data: unknown, log: Logger): void {
  try {
    nats.publish(subject("engine", "events", name), encodeJson(data));
  } catch (error) {
    log.warn("could not publish engine event", { event: name, error });
  }
}
