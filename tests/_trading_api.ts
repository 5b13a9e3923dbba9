/**
 * The trading API for tests: the routes of `api/trading.ts` mounted as the
 * engine mounts them, on a running trading subtree (paper broker, position
 * tracker, execution engine) with a private nats-server and a fresh
 * database.
 *
 * @module
 */

import { Hono } from "hono";
import { connect } from "@nats-io/transport-node";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { errorHandler, notFound } from "../api/errors.ts";
import { tradingRoutes } from "../api/trading.ts";
import { loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";

/** What {@linkcode startTradingApi} sets up. */
export interface TradingApiOptions {
  /** Config overrides, as environment variables. @default {{}} */
  env?: Record<string, string>;
  /** Hashes of the API keys the routes take; none: no key needed. @default {[]} */
  apiKeyHashes?: string[];
  /** Called with the market-data cache before the subtree starts (prices to trade at). */
  prime?: (cache: LatestCache) => void;
}

/** Starts the trading subtree and mounts its routes at `/api/v1/trading` of `app`. */
export async function startTradingApi(options: TradingApiOptions = {}) {
  const nats = await startNatsServer();
  const db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: options.env ?? {} });
  const nc = await connect({ servers: nats.url });
  const cache = new LatestCache();
  options.prime?.(cache);
  const trading = tradingSupervisor({ config, nats: nc, sql: db.sql, cache, log: nullLogger });
  const root = await startRoot({ name: "root" }, [trading]);
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.notFound(notFound);
  app.route(
    "/api/v1/trading",
    tradingRoutes({
      sql: db.sql,
      engine: trading.engine,
      state: trading.state,
      cache,
      maxPriceAgeMs: 60_000,
      apiKeyHashes: options.apiKeyHashes ?? [],
    }),
  );
  /**
   * Sends `method path` (under `/api/v1/trading`) with `body` — text as it
   * is, anything else as its JSON — and returns the status and the JSON
   * answer.
   */
  const send = async (method: string, path: string, body?: unknown) => {
    const res = await app.request(`/api/v1/trading${path}`, {
      method,
      ...(body === undefined ? {} : {
        headers: { "content-type": "application/json" },
        body: typeof body === "string" ? body : JSON.stringify(body),
      }),
    });
    return { status: res.status, body: await res.json() };
  };
  return {
    app,
    send,
    trading,
    cache,
    /** A NATS connection to the subtree's server (`control.kill_switch` requests). */
    nc,
    sql: db.sql,
    async [Symbol.asyncDispose]() {
      await root.stop();
      await nc.close();
      await db[Symbol.asyncDispose]();
      await nats.stop();
    },
  };
}
