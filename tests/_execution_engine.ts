/**
 * An {@linkcode ExecutionEngine} on a scratch database, for tests that drive
 * the engine directly: the configuration with every risk limit off, a market
 * data cache holding a fresh BTC-USDT top of book, a loaded portfolio, a paper
 * broker (or a broker made from it) and the engine — and a broker wrapper
 * whose submits can be held on their way to the paper broker.
 *
 * @module
 */

import type {
  Broker,
  BrokerEvent,
  BrokerOrderRequest,
  BrokerOrderState,
} from "../brokers/broker.ts";
import { type PaperBroker, paperBroker } from "../brokers/paper.ts";
import { type Config, loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import type { TopEvent } from "../market/events.ts";
import { LatestCache } from "../market/latest_cache.ts";
import {
  ExecutionEngine,
  type ExecutionEngineDeps,
  type ExecutionEngineOptions,
} from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { noRiskLimits } from "./_helpers.ts";
import { type MigratedDatabase, migratedDatabase } from "./_postgres.ts";

/** Best ask of {@linkcode btcUsdtTop} unless told otherwise (the bid is 50000). */
export const DEFAULT_ASK_PRICE = "50001";
/** Starting cash of {@linkcode scratchEngine}'s portfolio unless told otherwise. */
export const DEFAULT_STARTING_CASH = "100000";

/** Engine settings retrying a failed submit after 5 ms, then at most every 20 ms. */
export const FAST_SUBMIT_RETRIES: Readonly<ExecutionEngineOptions> = {
  submit_retry_initial_ms: 5,
  submit_retry_max_ms: 20,
};

/** What {@linkcode btcUsdtTop} and {@linkcode primedCache} quote. */
export interface TopOfBookOptions {
  /** When the quote was taken, in ms since the epoch. @default {Date.now()} */
  nowMs?: number;
  /** Best ask (decimal text). @default {DEFAULT_ASK_PRICE} */
  askPrice?: string;
  /** Best bid (decimal text). @default {"50000"} */
  bidPrice?: string;
}

/**
 * A binance BTC-USDT top of book: 10 bid at `bidPrice`, 10 offered at `askPrice`.
 *
 * @example
 * ```ts
 * setInterval(() => cache.update([btcUsdtTop()]), 200); // keep the quote fresh
 * ```
 */
export function btcUsdtTop(options: TopOfBookOptions = {}): TopEvent {
  const us = (options.nowMs ?? Date.now()) * 1000;
  return {
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: us,
    ts_local: us,
    bid_price: options.bidPrice ?? "50000",
    bid_qty: "10",
    ask_price: options.askPrice ?? DEFAULT_ASK_PRICE,
    ask_qty: "10",
  };
}

/** A market-data cache holding {@linkcode btcUsdtTop}: a price to trade BTC-USDT at. */
export function primedCache(options: TopOfBookOptions = {}): LatestCache {
  const cache = new LatestCache();
  cache.update([btcUsdtTop(options)]);
  return cache;
}

/**
 * A broker in front of a paper broker whose submits can be held before they
 * reach it (`holdSubmits`, then `releaseSubmits()`), and whose stream can
 * "come back" (`reconnected()` calls the `onReconnect` listeners).
 */
export class SlowSubmitBroker implements Broker {
  /** The paper broker's name. */
  readonly name: string;
  /** The paper broker behind it. */
  readonly inner: PaperBroker;
  /** Whether submits wait for {@linkcode SlowSubmitBroker.releaseSubmits}. */
  holdSubmits = false;
  readonly #gate = Promise.withResolvers<void>();
  /** Submits begun. */
  submitsStarted = 0;
  /** Submits the paper broker answered (either way). */
  submitsDone = 0;
  readonly #reconnect = new Set<() => void | Promise<void>>();

  /** Wraps `inner`. */
  constructor(inner: PaperBroker) {
    this.inner = inner;
    this.name = inner.name;
  }
  /** Lets every held submit, and every later one, through. */
  releaseSubmits(): void {
    this.#gate.resolve();
  }
  /** The stream came back: calls the `onReconnect` listeners, one after another. */
  async reconnected(): Promise<void> {
    for (const l of [...this.#reconnect]) await l();
  }
  /** Calls `listener` on {@linkcode SlowSubmitBroker.reconnected}; returns the unsubscribe. */
  onReconnect(listener: () => void | Promise<void>): () => void {
    this.#reconnect.add(listener);
    return () => this.#reconnect.delete(listener);
  }
  /** Submits to the paper broker, once released when submits are held. */
  async submit(order: BrokerOrderRequest): Promise<{ broker_order_id: string }> {
    this.submitsStarted++;
    if (this.holdSubmits) await this.#gate.promise;
    try {
      return await this.inner.submit(order);
    } finally {
      this.submitsDone++;
    }
  }
  /** The paper broker's. */
  cancel(coid: string): Promise<void> {
    return this.inner.cancel(coid);
  }
  /** The paper broker's. */
  getOrder(coid: string): Promise<BrokerOrderState | null> {
    return this.inner.getOrder(coid);
  }
  /** The paper broker's. */
  openOrders(): Promise<BrokerOrderState[]> {
    return this.inner.openOrders();
  }
  /** The paper broker's. */
  onEvent(listener: (event: BrokerEvent) => void | Promise<void>): () => void {
    return this.inner.onEvent(listener);
  }
  /** The paper broker's. */
  start(signal: AbortSignal): Promise<void> {
    return this.inner.start(signal);
  }
  /** Nothing: the paper broker is its owner's to dispose. */
  [Symbol.asyncDispose](): Promise<void> {
    return Promise.resolve();
  }
}

/** What {@linkcode scratchEngine} sets up. */
export interface ScratchEngineOptions<B extends Broker, E extends ExecutionEngine> {
  /** The portfolio's starting cash (decimal text). @default {DEFAULT_STARTING_CASH} */
  startingCash?: string;
  /**
   * A price older than this (ms) is no price, to the engine and the paper
   * broker (`execution.max_price_age_ms`). @default {the configuration's}
   */
  maxPriceAgeMs?: number;
  /** Best ask of the primed top of book. @default {DEFAULT_ASK_PRICE} */
  askPrice?: string;
  /** The engine's `paper` broker, made from the paper broker. @default {the paper broker} */
  broker?: (paper: PaperBroker) => B;
  /** The engine's class (a subclass, for tests that fail its batches). @default {ExecutionEngine} */
  engine?: new (deps: ExecutionEngineDeps) => E;
  /** The engine's settings beyond the configuration ({@linkcode FAST_SUBMIT_RETRIES}, say). @default {{}} */
  options?: Readonly<ExecutionEngineOptions>;
  /** The engine's core NATS publish. @default {drops the message} */
  publish?: ExecutionEngineDeps["publish"];
  /** The engine's fill publish. @default {resolves at once} */
  publishFill?: ExecutionEngineDeps["publishFill"];
}

/** What {@linkcode scratchEngine} made; disposing stops the engine and drops the database. */
export interface ScratchEngine<B extends Broker, E extends ExecutionEngine>
  extends AsyncDisposable {
  /** The migrated scratch database. */
  db: MigratedDatabase;
  /** The default configuration with every risk limit off (and `maxPriceAgeMs` applied). */
  config: Config;
  /** The market-data cache, primed with {@linkcode btcUsdtTop}. */
  cache: LatestCache;
  /** The portfolio, loaded from the database. */
  state: PortfolioState;
  /** The paper broker (disposed with the rest). */
  paper: PaperBroker;
  /** The engine's `paper` broker. */
  broker: B;
  /** The engine, not started. */
  engine: E;
}

/**
 * An execution engine (not started) on a fresh migrated database, trading
 * through a paper broker at a fresh BTC-USDT price with every risk limit off.
 *
 * @example
 * ```ts
 * await using h = await scratchEngine({ broker: (paper) => new SlowSubmitBroker(paper) });
 * await h.engine.start();
 * h.broker.holdSubmits = true;
 * ```
 */
export async function scratchEngine<
  B extends Broker = PaperBroker,
  E extends ExecutionEngine = ExecutionEngine,
>(options: ScratchEngineOptions<B, E> = {}): Promise<ScratchEngine<B, E>> {
  const db = await migratedDatabase();
  try {
    const base = await loadConfig({ args: [], env: {} });
    const execution = options.maxPriceAgeMs === undefined
      ? base.execution
      : { ...base.execution, max_price_age_ms: options.maxPriceAgeMs };
    const config: Config = { ...base, risk: noRiskLimits(base), execution };
    const cache = primedCache(options.askPrice === undefined ? {} : { askPrice: options.askPrice });
    const state = new PortfolioState({
      starting_cash: options.startingCash ?? DEFAULT_STARTING_CASH,
    });
    await state.load(db.sql);
    const paper = paperBroker({
      cache,
      options: config.brokers.paper,
      max_price_age_ms: execution.max_price_age_ms,
    });
    const broker = options.broker?.(paper) ?? (paper as Broker as B);
    const Engine = options.engine ??
      (ExecutionEngine as new (deps: ExecutionEngineDeps) => E);
    const engine = new Engine({
      sql: db.sql,
      brokers: new Map([["paper", broker]]),
      cache,
      state,
      config: { risk: config.risk, execution },
      publish: options.publish ?? (() => {}),
      publishFill: options.publishFill ?? (() => Promise.resolve()),
      log: nullLogger,
      options: { ...options.options },
    });
    return {
      db,
      config,
      cache,
      state,
      paper,
      broker,
      engine,
      async [Symbol.asyncDispose]() {
        try {
          await engine.stop();
          await paper[Symbol.asyncDispose]();
        } finally {
          await db[Symbol.asyncDispose]();
        }
      },
    };
  } catch (error) {
    await db[Symbol.asyncDispose]();
    throw error;
  }
}
