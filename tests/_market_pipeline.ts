/**
 * The market-data pipeline as the engine composes it (`marketSupervisor`):
 * a fake Binance venue → feed → NATS → validator → NATS → batch writer →
 * ClickHouse, on a private nats-server, a fresh ClickHouse database and
 * (unless `clickhouseProxy` is false) a TCP proxy in front of ClickHouse that
 * tests can cut. Used by the end-to-end test and the pipeline benchmark.
 *
 * @module
 */

import postgres from "postgres";
import type { ClickHouseClient } from "@clickhouse/client";
import type { NatsConnection } from "@nats-io/nats-core";
import { connect } from "@nats-io/transport-node";
import { createClickHouse, quoteIdentifier } from "../adapters/clickhouse.ts";
import { Migrator } from "../adapters/migrator.ts";
import { Supervisor } from "../actors/supervisor.ts";
import { marketSupervisor } from "../actors/market.ts";
import { loadConfig } from "../config/mod.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import { nullLogger } from "../lib/log.ts";
import {
  FakeBinanceMarket,
  type FakeBinanceServer,
  startBinanceServer,
} from "./fakes/binance_server.ts";
import { type NatsServer, startNatsServer } from "./_nats_server.ts";
import { startTcpProxy, type TcpProxy } from "./_tcp_proxy.ts";
import { waitFor } from "./_helpers.ts";

const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres";
const CLICKHOUSE_URL = "http://127.0.0.1:8123";

/** A running pipeline and its parts. */
export interface MarketPipeline extends AsyncDisposable {
  /** The fake venue. */
  venue: FakeBinanceServer;
  /** The proxy between the writer and ClickHouse; null when started without one. */
  proxy: TcpProxy | null;
  /** A direct ClickHouse client (not through the proxy), for assertions. */
  clickhouse: ClickHouseClient;
  /** The pipeline's ClickHouse database. */
  database: string;
  /** The pipeline's figures. */
  status: MarketStatus;
  /** The private NATS server. */
  nats: NatsServer;
  /** Rows of `table` with FINAL (duplicates collapsed). */
  countFinal(table: string): Promise<number>;
  /** Rows of `table` without FINAL (duplicates counted). */
  countAll(table: string): Promise<number>;
}

/** Options of {@linkcode startMarketPipeline}. */
export interface MarketPipelineOptions {
  /** Canonical symbols the fake venue trades. @default {["BTC-USDT", "ETH-USDT"]} */
  symbols?: string[];
  /** Extra `TRADEWIRE_*` environment for the configuration. */
  env?: Record<string, string>;
  /**
   * Puts a TCP proxy that tests can cut between the writer and ClickHouse.
   * The proxy copies every byte in JavaScript on this thread — the engine's
   * main thread here — so a benchmark leaves it out. @default {true}
   */
  clickhouseProxy?: boolean;
}

/** Starts the pipeline and waits until the feed is live. */
export async function startMarketPipeline(
  options: MarketPipelineOptions = {},
): Promise<MarketPipeline> {
  const symbols = options.symbols ?? ["BTC-USDT", "ETH-USDT"];
  const database = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) await step();
  };
  try {
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const venue = await startBinanceServer({ market: new FakeBinanceMarket(symbols) });
    cleanups.push(() => venue.stop());
    const direct = await migratedClickHouse(database, cleanups);
    // The writer's way to ClickHouse: through the proxy, or straight.
    let proxy: TcpProxy | null = null;
    let writerClient = direct;
    if (options.clickhouseProxy !== false) {
      const started = startTcpProxy({ hostname: "127.0.0.1", port: 8123 });
      proxy = started;
      cleanups.push(() => started.close());
      const client = createClickHouse({ url: started.url, database: "default" });
      writerClient = client;
      cleanups.push(() => client.close());
    }

    const config = await loadConfig({
      args: [],
      env: {
        TRADEWIRE_EXCHANGES__BINANCE__WS_URL: venue.wsUrl,
        TRADEWIRE_EXCHANGES__BINANCE__REST_URL: venue.restUrl,
        TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: symbols.join(","),
        TRADEWIRE_EXCHANGES__BINANCE__CHANNELS: "trades",
        TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "false",
        TRADEWIRE_EXCHANGES__KRAKEN__ENABLED: "false",
        TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "false",
        TRADEWIRE_CLICKHOUSE__DATABASE: database,
        // The writer's thread connects on its own: to the private NATS and through the proxy.
        TRADEWIRE_NATS__URL: nats.url,
        TRADEWIRE_CLICKHOUSE__URL: proxy?.url ?? CLICKHOUSE_URL,
        TRADEWIRE_WRITER__FLUSH_INTERVAL_MS: "100",
        TRADEWIRE_WRITER__RETRY_INITIAL_MS: "50",
        TRADEWIRE_WRITER__RETRY_MAX_MS: "500",
        ...options.env,
      },
    });
    const nc: NatsConnection = await connect({ servers: nats.url });
    cleanups.push(() => nc.close());
    const status = new MarketStatus();
    const root = new Supervisor({ name: "pipeline", intensity: 10, periodMs: 10_000 }, [
      marketSupervisor({
        config,
        nats: nc,
        clickhouse: writerClient,
        clickhouseReady: Promise.resolve(),
        status,
        cache: new LatestCache(),
        log: nullLogger,
      }),
    ]);
    cleanups.push(() => root.stop());
    await root.ready;
    const feed = status.feed("binance");
    await waitFor(
      () => feed.state === "subscribing" || feed.state === "live",
      10_000,
      "feed connected",
    );
    if (!options.env?.TRADEWIRE_EXCHANGES__BINANCE__WS_URL) {
      await waitFor(() => venue.ws.openSockets().length > 0, 10_000, "venue connection open");
    }

    const count = async (table: string, final: boolean) => {
      const result = await direct.query({
        query: `SELECT count() AS n FROM ${quoteIdentifier(database)}.${quoteIdentifier(table)}${
          final ? " FINAL" : ""
        }`,
        format: "JSONEachRow",
      });
      const [row] = await result.json<{ n: string }>();
      return Number(row?.n ?? 0);
    };
    return {
      venue,
      proxy,
      clickhouse: direct,
      database,
      status,
      nats,
      countFinal: (table) => count(table, true),
      countAll: (table) => count(table, false),
      [Symbol.asyncDispose]: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}

/** Sends `n` trades alternating over the venue's symbols, prices within a narrow band. */
export function sendTrades(pipeline: MarketPipeline, n: number, offset = 0): void {
  const symbols = [...pipeline.venue.market.books.keys()];
  for (let i = offset; i < offset + n; i++) {
    const symbol = symbols[i % symbols.length]!;
    const price = (100 + (i % 50) / 100).toFixed(2);
    pipeline.venue.trade(symbol, price, "0.01000000", i % 2 === 0);
  }
}

/**
 * A direct client to the local ClickHouse with scratch database `database`
 * created by the ClickHouse migrations; `cleanups` gets the steps that drop
 * the database and close the client (run in reverse order).
 */
export async function migratedClickHouse(
  database: string,
  cleanups: Array<() => Promise<unknown> | unknown>,
): Promise<ClickHouseClient> {
  const direct = createClickHouse({ url: CLICKHOUSE_URL, database: "default" });
  cleanups.push(() => direct.close());
  cleanups.push(() =>
    direct.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` })
  );
  const pg = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  try {
    await new Migrator(pg, { dir: MIGRATIONS, clickhouse: { client: direct, database } })
      .up(undefined, { only: "clickhouse" });
  } finally {
    await pg.end({ timeout: 5 });
  }
  return direct;
}
