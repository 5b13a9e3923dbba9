/**
 * The market-data subtree: the batch writer, the latest-price cache and the
 * validator start first (consumers before producers), then one feed per
 * enabled venue — or a replay of a capture. Stopped in reverse: feeds stop
 * first, the validator drains, the writer flushes.
 *
 * @module
 */

import type { NatsConnection } from "@nats-io/nats-core";
import type { ClickHouseClient } from "@clickhouse/client";
import type { Config } from "../config/mod.ts";
import type { ChildSpec } from "./types.ts";
import { restartLimits, supervisor } from "./supervisor.ts";
import { feedActor } from "./feed.ts";
import { validatorActor } from "./validator.ts";
import { validatorWorker } from "./validator_worker.ts";
import { batchWriterActor } from "./batch_writer.ts";
import { batchWriterWorker } from "./batch_writer_worker.ts";
import { latestCacheActor } from "./latest_cache.ts";
import { replayActor } from "../venues/replay.ts";
import { createSessions, type VenueSession } from "../venues/mod.ts";
import type { LatestCache } from "../market/latest_cache.ts";
import type { MarketStatus } from "../market/status.ts";
import type { Exchange } from "../market/events.ts";
import type { Logger } from "../lib/log.ts";

/** What the market-data subtree needs. */
export interface MarketDeps {
  /** The configuration. */
  config: Config;
  /** The NATS connection. */
  nats: NatsConnection;
  /** ClickHouse client bound to `default`. */
  clickhouse: ClickHouseClient;
  /** Resolves once ClickHouse's migrations are applied. */
  clickhouseReady: Promise<void>;
  /** Shared pipeline figures. */
  status: MarketStatus;
  /** The latest-price cache (also read by the API and the paper broker). */
  cache: LatestCache;
  /** The engine's logger. */
  log: Logger;
  /** The venue sessions. @default {createSessions(config)} */
  sessions?: VenueSession[];
}

/** Time windows that let any exchange time through. */
const UNLIMITED_TIME_WINDOWS = { max_lag_ms: Infinity, max_future_ms: Infinity } as const;

/**
 * `validator` with its time windows (`max_lag_ms`, `max_future_ms`) lifted:
 * the defaults and those of every override, since an override wins over the
 * defaults for its exchange or symbol.
 */
function withoutTimeWindows(validator: Config["validator"]): Config["validator"] {
  const overrides: Config["validator"]["overrides"] = {};
  for (const [key, override] of Object.entries(validator.overrides)) {
    overrides[key] = { ...override, ...UNLIMITED_TIME_WINDOWS };
  }
  return { ...validator, ...UNLIMITED_TIME_WINDOWS, overrides };
}

/** Configured symbols of every enabled exchange. */
export function configuredSymbols(config: Pick<Config, "exchanges">): Map<Exchange, string[]> {
  const symbols = new Map<Exchange, string[]>();
  for (const [exchange, section] of Object.entries(config.exchanges)) {
    if (section.enabled) symbols.set(exchange as Exchange, [...section.symbols]);
  }
  return symbols;
}

/** The market-data supervisor (`one_for_one`: one venue's trouble never restarts another). */
export function marketSupervisor(deps: MarketDeps): ChildSpec {
  const { config, nats, status, log } = deps;
  const sessions = deps.sessions ?? createSessions(config);
  const replaying = config.replay.file !== "";
  const children: ChildSpec[] = [];
  if (config.writer.enabled && config.writer.worker) {
    children.push(batchWriterWorker({
      nats: config.nats,
      clickhouse: config.clickhouse,
      database: config.clickhouse.database,
      options: config.writer,
      status,
      clickhouseReady: deps.clickhouseReady,
      log,
    }));
  } else if (config.writer.enabled) {
    children.push(batchWriterActor({
      nats,
      clickhouse: deps.clickhouse,
      database: config.clickhouse.database,
      status,
      options: config.writer,
      clickhouseReady: deps.clickhouseReady,
      log,
    }));
  }
  children.push(latestCacheActor({ nats, cache: deps.cache, log }));
  // A capture's exchange times are as old as the capture: in replay only the
  // time-window checks are lifted, every other check still applies — unless
  // `retime` moves the events to the time they are played. Overrides win over
  // the defaults, so their windows are lifted too.
  const validatorOptions = replaying && !config.replay.retime
    ? withoutTimeWindows(config.validator)
    : config.validator;
  children.push(
    config.validator.worker
      ? validatorWorker({ nats: config.nats, options: validatorOptions, status, log })
      : validatorActor({ nats, status, options: validatorOptions, log }),
  );
  const batching = {
    publish_batch_ms: config.feeds.publish_batch_ms,
    publish_batch_max: config.feeds.publish_batch_max,
  };
  if (replaying) {
    children.push(replayActor(config.replay.file, sessions, {
      nats,
      status,
      log,
      speed: config.replay.speed,
      loop: config.replay.loop,
      retime: config.replay.retime,
      ...batching,
    }));
  } else {
    for (const session of sessions) {
      const venue = config.exchanges[session.exchange];
      children.push(feedActor(session, {
        nats,
        status,
        log,
        options: {
          stale_after_ms: venue.stale_after_ms,
          reconnect_initial_ms: venue.reconnect_initial_ms,
          reconnect_max_ms: venue.reconnect_max_ms,
          ...batching,
        },
      }));
    }
  }
  return supervisor({
    name: "market",
    strategy: "one_for_one",
    ...restartLimits(config.supervisor),
    log: log.child({ component: "supervisor" }),
  }, children);
}
