/**
 * The market-data pipeline on a capture: the engine's market supervisor
 * replaying capture lines (speed 0, recorded times) on a private
 * nats-server and a scratch ClickHouse database (dropped at dispose), with
 * the market-data routes on top.
 */

import { Hono } from "hono";
import { connect } from "@nats-io/transport-node";
import type { NatsConnection } from "@nats-io/nats-core";
import type { ClickHouseClient } from "@clickhouse/client";
import { Supervisor } from "../actors/supervisor.ts";
import { configuredSymbols, marketSupervisor } from "../actors/market.ts";
import { loadConfig } from "../config/mod.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import { nullLogger } from "../lib/log.ts";
import { marketDataRoutes } from "../api/market_data.ts";
import { errorHandler } from "../api/errors.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedClickHouse } from "./_market_pipeline.ts";

const CLICKHOUSE_URL = "http://127.0.0.1:8123";
const BASE = "/api/v1/market-data";

export interface ReplayPipeline extends AsyncDisposable {
  app: Hono;
  cache: LatestCache;
  status: MarketStatus;
  clickhouse: ClickHouseClient;
  database: string;
  // deno-lint-ignore no-explicit-any -- the API's JSON, read loosely
  get(path: string): Promise<{ status: number; body: any }>;
}

/** A capture line: a frame of `exchange` received at `t` µs. */
export function line(t: number, exchange: string, frame: unknown): string {
  return JSON.stringify({
    t,
    x: exchange,
    f: typeof frame === "string" ? frame : JSON.stringify(frame),
  });
}

/**
 * Plays `lines` (a capture) through the engine's market supervisor (replay
 * at speed 0, recorded times), with the market-data routes on top.
 */
export async function startReplayPipeline(
  lines: string[] | null,
  env: Record<string, string> = {},
  opts: { args?: string[]; plainEnv?: boolean; beforeStart?: (nc: NatsConnection) => void } = {},
): Promise<ReplayPipeline> {
  const database = `tw_test_replay_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  const cleanup = async () => {
    for (const step of cleanups.reverse()) {
      try {
        await step();
      } catch { /* keep cleaning */ }
    }
  };
  try {
    const dir = await Deno.makeTempDir({ prefix: "tw-replay-" });
    cleanups.push(() => Deno.remove(dir, { recursive: true }));
    const file = `${dir}/capture.ndjson`;
    if (lines !== null) await Deno.writeTextFile(file, lines.join("\n") + "\n");
    const nats = await startNatsServer();
    cleanups.push(() => nats.stop());
    const direct = await migratedClickHouse(database, cleanups);
    const config = await loadConfig({
      args: opts.args ?? [],
      env: {
        ...(lines !== null ? { TRADEWIRE_REPLAY__FILE: file } : {}),
        TRADEWIRE_REPLAY__SPEED: "0",
        ...(opts.plainEnv ? {} : {
          TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: "BTC-USDT",
          TRADEWIRE_EXCHANGES__COINBASE__SYMBOLS: "BTC-USD",
          TRADEWIRE_EXCHANGES__KRAKEN__ENABLED: "false",
          TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "false",
        }),
        TRADEWIRE_CLICKHOUSE__DATABASE: database,
        TRADEWIRE_NATS__URL: nats.url,
        TRADEWIRE_CLICKHOUSE__URL: CLICKHOUSE_URL,
        TRADEWIRE_WRITER__FLUSH_INTERVAL_MS: "100",
        ...env,
      },
    });
    const nc: NatsConnection = await connect({ servers: nats.url });
    cleanups.push(() => nc.close());
    opts.beforeStart?.(nc);
    const status = new MarketStatus();
    const cache = new LatestCache();
    const root = new Supervisor({ name: "pipeline", intensity: 10, periodMs: 10_000 }, [
      marketSupervisor({
        config,
        nats: nc,
        clickhouse: direct,
        clickhouseReady: Promise.resolve(),
        status,
        cache,
        log: nullLogger,
      }),
    ]);
    cleanups.push(() => root.stop());
    await root.ready;
    const app = new Hono();
    app.onError(errorHandler(nullLogger));
    app.route(
      BASE,
      marketDataRoutes({
        clickhouse: direct,
        database,
        cache,
        status,
        symbols: () => configuredSymbols(config),
      }),
    );
    return {
      app,
      cache,
      status,
      clickhouse: direct,
      database,
      async get(path: string) {
        const res = await app.request(`${BASE}${path}`);
        return { status: res.status, body: await res.json() };
      },
      [Symbol.asyncDispose]: cleanup,
    };
  } catch (error) {
    await cleanup();
    throw error;
  }
}
