/**
 * Venue protocol logic: one {@linkcode VenueSession} per exchange, each run
 * by the generic feed runtime (`actors/feed.ts`), and
 * {@linkcode createSessions}, which makes the sessions of every enabled
 * exchange in the configuration.
 *
 * | exchange | session | protocol |
 * | --- | --- | --- |
 * | binance | {@linkcode binanceSession} | combined streams, REST depth snapshots |
 * | coinbase | {@linkcode coinbaseSession} | Advanced Trade: subscribe per channel, one `sequence_num` per connection |
 * | kraken | {@linkcode krakenSession} | WebSocket v2, CRC32-checked books |
 * | alpaca | {@linkcode alpacaSession} | market data v2: connected → auth → subscribe |
 *
 * @example
 * ```ts
 * import { configSchema } from "../config/mod.ts";
 * import { createSessions } from "./mod.ts";
 *
 * const sessions = createSessions(configSchema.parse({})); // the defaults
 * sessions.map((session) => session.exchange); // ["binance", "coinbase", "kraken"]
 * ```
 *
 * @module
 */

import type { Config } from "../config/mod.ts";
import { binanceSession } from "./binance/session.ts";
import { coinbaseSession } from "./coinbase/session.ts";
import { krakenSession } from "./kraken/session.ts";
import { alpacaSession } from "./alpaca/session.ts";
import type { VenueSession } from "./session.ts";

export type { SessionIO, VenueSession } from "./session.ts";
export { binanceSession } from "./binance/session.ts";
export { krakenSession } from "./kraken/session.ts";
export {
  COINBASE_CHANNEL_NAMES,
  CoinbaseSession,
  coinbaseSession,
  type CoinbaseSessionConfig,
  type CoinbaseSessionOptions,
  type CoinbaseSessionStatus,
  DEFAULT_COINBASE_BOOK_EVENT_MAX_LEVELS,
} from "./coinbase/session.ts";
export {
  ALPACA_MISSING_CREDENTIALS,
  ALPACA_REFUSAL_CODES,
  AlpacaCredentialsError,
  AlpacaSession,
  alpacaSession,
  type AlpacaSessionConfig,
  type AlpacaSessionState,
  type AlpacaSessionStatus,
} from "./alpaca/session.ts";

/**
 * One session per enabled exchange of `config.exchanges`, in the order
 * binance, coinbase, kraken, alpaca. A session's constructor throws (a
 * `TypeError` or `RangeError`) for a section it cannot run, e.g. a malformed
 * symbol.
 *
 * @example
 * ```ts
 * import { loadConfig } from "../config/mod.ts";
 * import { createSessions } from "./mod.ts";
 *
 * const [binance] = createSessions(await loadConfig());
 * binance?.url(); // "wss://stream.binance.com:9443/stream?streams=…"
 * ```
 */
export function createSessions(config: Pick<Config, "exchanges">): VenueSession[] {
  const { binance, coinbase, kraken, alpaca } = config.exchanges;
  const sessions: VenueSession[] = [];
  if (binance.enabled) sessions.push(binanceSession(binance));
  if (coinbase.enabled) sessions.push(coinbaseSession(coinbase));
  if (kraken.enabled) sessions.push(krakenSession(kraken));
  if (alpaca.enabled) sessions.push(alpacaSession(alpaca));
  return sessions;
}
