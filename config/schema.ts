/**
 * The one zod schema for Tradewire's merged configuration, its defaults, the
 * production profile's refusals of insecure settings, and API key hashing.
 *
 * The reference users read is `config/default.yaml`; {@linkcode DEFAULT_CONFIG}
 * holds the same values (a test keeps the two equal).
 *
 * @module
 */

import { createHash } from "node:crypto";
import { z } from "zod";
import { LEVELS } from "../lib/log.ts";
import { sha256Hex as sha256 } from "../lib/hash.ts";
import { urlCredentials } from "../adapters/nats.ts";
import { EXCHANGES } from "../market/events.ts";
import { DB_INTEGER_DIGITS, DB_SCALE, Decimal, fitsDb } from "../trading/money.ts";
import {
  BINANCE_MAX_URL_LENGTH,
  binanceChannelStreams,
  binanceCombinedUrlLength,
} from "../venues/binance/symbols.ts";
import { DEFAULT_RISK_CONFIG } from "../trading/risk.ts";

/** Deployment profiles; `production` refuses insecure settings. */
export const PROFILES = ["development", "production"] as const;
/** One of {@linkcode PROFILES}. */
export type Profile = typeof PROFILES[number];

/** PostgreSQL `sslmode` values Tradewire accepts: libpq's, weakest first. */
export const SSL_MODES = [
  "disable",
  "allow",
  "prefer",
  "require",
  "verify-ca",
  "verify-full",
] as const;
/** One of {@linkcode SSL_MODES}. */
export type SslMode = typeof SSL_MODES[number];

/** URL schemes accepted in `nats.url`. */
export const NATS_URL_SCHEMES = ["nats:", "tls:", "ws:", "wss:"] as const;
/** URL schemes accepted in `postgres.url`. */
export const POSTGRES_URL_SCHEMES = ["postgres:", "postgresql:"] as const;
/** URL schemes accepted in `clickhouse.url`. */
export const CLICKHOUSE_URL_SCHEMES = ["http:", "https:"] as const;

/**
 * Largest delay a timer can take: `setTimeout` fires at once for anything
 * longer, so `*_ms` settings are capped here.
 */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * Longest age of a JetStream stream, in seconds (`execution.signals_max_age_s`,
 * `writer.stream_max_age_s`): NATS holds `max_age` in nanoseconds as a signed
 * 64-bit integer, about 292 years, and refuses to make a stream with more.
 */
export const MAX_STREAM_AGE_S = 9_223_372_036;

/** Passwords the production profile refuses (compared case-insensitively). */
export const WEAK_PASSWORDS: readonly string[] = [
  "postgres",
  "password",
  "changeme",
  "tradewire",
  "admin",
  "secret",
  "default",
  "clickhouse",
  "nats",
];

/**
 * SHA-256 hashes (as `http.api_key_hashes` holds them) of the
 * {@linkcode WEAK_PASSWORDS} in lower case, upper case and capitalised: the
 * production profile refuses them as API key hashes. A hash of a guessable
 * key is as good as the key in clear: unsalted SHA-256 is reversed in seconds.
 */
export const WEAK_API_KEY_HASHES: ReadonlySet<string> = new Set(
  WEAK_PASSWORDS.flatMap((
    word,
  ) => [word, word.toUpperCase(), word[0]!.toUpperCase() + word.slice(1)])
    .map((key) => createHash("sha256").update(key, "utf8").digest("hex")),
);

/** Liquid Binance spot pairs, in canonical `BASE-QUOTE` form. */
export const BINANCE_SYMBOLS = [
  "BTC-USDT",
  "ETH-USDT",
  "BNB-USDT",
  "SOL-USDT",
  "XRP-USDT",
  "DOGE-USDT",
  "ADA-USDT",
  "TRX-USDT",
  "AVAX-USDT",
  "LINK-USDT",
  "DOT-USDT",
  "LTC-USDT",
  "BCH-USDT",
  "TON-USDT",
  "NEAR-USDT",
  "UNI-USDT",
  "ATOM-USDT",
  "XLM-USDT",
  "ETC-USDT",
  "FIL-USDT",
  "APT-USDT",
  "ARB-USDT",
  "OP-USDT",
  "ETH-BTC",
] as const;
/** Liquid Coinbase products. */
export const COINBASE_SYMBOLS = [
  "BTC-USD",
  "ETH-USD",
  "SOL-USD",
  "XRP-USD",
  "DOGE-USD",
  "ADA-USD",
  "AVAX-USD",
  "LINK-USD",
  "DOT-USD",
  "LTC-USD",
  "BCH-USD",
  "UNI-USD",
  "ATOM-USD",
  "XLM-USD",
  "ETC-USD",
  "FIL-USD",
  "NEAR-USD",
  "APT-USD",
  "ARB-USD",
  "OP-USD",
  "SHIB-USD",
  "ETH-BTC",
] as const;
/** Liquid Kraken pairs (v2 names `BTC/USD` become `BTC-USD`). */
export const KRAKEN_SYMBOLS = [
  "BTC-USD",
  "ETH-USD",
  "SOL-USD",
  "XRP-USD",
  "DOGE-USD",
  "ADA-USD",
  "AVAX-USD",
  "LINK-USD",
  "DOT-USD",
  "LTC-USD",
  "BCH-USD",
  "UNI-USD",
  "ATOM-USD",
  "XLM-USD",
  "ETC-USD",
  "FIL-USD",
  "USDT-USD",
  "USDC-USD",
  "BTC-EUR",
  "ETH-EUR",
  "ETH-BTC",
] as const;
/** A handful of liquid US stocks and ETFs. */
export const ALPACA_SYMBOLS = ["AAPL", "MSFT", "NVDA", "AMZN", "TSLA", "SPY", "QQQ"] as const;

/** Market-data channels a crypto feed can subscribe to. */
export const CRYPTO_CHANNELS = ["trades", "book", "top"] as const;
/** Alpaca market-data channels. */
export const ALPACA_CHANNELS = ["trades", "quotes", "bars"] as const;
/** Kraken v2 book depths. */
export const KRAKEN_BOOK_DEPTHS = [10, 25, 100, 500, 1000] as const;
/** Alpaca stock data feeds. */
export const ALPACA_FEEDS = ["iex", "sip"] as const;

/**
 * Every default, the same values as `config/default.yaml`.
 *
 * @example
 * ```ts
 * DEFAULT_CONFIG.http.port; // 8000
 * ```
 */
export const DEFAULT_CONFIG = {
  engine: { name: "tradewire", profile: "development", shutdown_timeout_ms: 10_000 },
  log: { level: "info" },
  http: {
    enabled: true,
    host: "127.0.0.1",
    port: 8000,
    api_key_hashes: [],
    allow_keyless_remote: false,
    allowed_hosts: [],
    allowed_origins: [],
    max_body_bytes: 1_048_576,
  },
  nats: {
    url: "nats://127.0.0.1:4222",
    name: "tradewire",
    user: "",
    password: "",
    token: "",
    allow_anonymous: false,
    connect_timeout_ms: 5000,
    reconnect_wait_ms: 250,
    reconnect_max_wait_ms: 10_000,
    reconnect_jitter_ms: 250,
  },
  postgres: {
    url: "postgres://postgres@127.0.0.1:5432/tradewire",
    pool_size: 10,
    statement_timeout_ms: 30_000,
    connect_timeout_s: 10,
    sslmode: "disable",
    application_name: "tradewire",
  },
  clickhouse: {
    url: "http://127.0.0.1:8123",
    database: "tradewire",
    user: "default",
    password: "",
    request_timeout_ms: 30_000,
  },
  supervisor: {
    intensity: 5,
    period_ms: 30_000,
    backoff_initial_ms: 100,
    backoff_max_ms: 10_000,
    backoff_jitter: 0.2,
    child_shutdown_ms: 5000,
  },
  migrations: { dir: "migrations", apply_on_start: true, lock_key: 727374 },
  exchanges: {
    binance: {
      enabled: true,
      ws_url: "wss://stream.binance.com:9443",
      rest_url: "https://api.binance.com",
      symbols: BINANCE_SYMBOLS,
      channels: ["trades", "book", "top"],
      snapshot_limit: 1000,
      stale_after_ms: 30_000,
      reconnect_initial_ms: 500,
      reconnect_max_ms: 30_000,
    },
    coinbase: {
      enabled: true,
      ws_url: "wss://advanced-trade-ws.coinbase.com",
      symbols: COINBASE_SYMBOLS,
      channels: ["trades", "book", "top"],
      stale_after_ms: 30_000,
      reconnect_initial_ms: 500,
      reconnect_max_ms: 30_000,
    },
    kraken: {
      enabled: true,
      ws_url: "wss://ws.kraken.com/v2",
      symbols: KRAKEN_SYMBOLS,
      channels: ["trades", "book"],
      book_depth: 10,
      stale_after_ms: 30_000,
      reconnect_initial_ms: 500,
      reconnect_max_ms: 30_000,
    },
    alpaca: {
      enabled: false,
      ws_url: "wss://stream.data.alpaca.markets/v2",
      feed: "iex",
      key_id: "",
      secret_key: "",
      symbols: ALPACA_SYMBOLS,
      channels: ["trades", "quotes", "bars"],
      stale_after_ms: 60_000,
      reconnect_initial_ms: 1000,
      reconnect_max_ms: 60_000,
    },
  },
  feeds: { publish_batch_ms: 2, publish_batch_max: 500 },
  validator: {
    enabled: true,
    worker: true,
    spike_pct: 10,
    reference_window_ms: 60_000,
    max_future_ms: 5000,
    max_lag_ms: 120_000,
    duplicate_window: 10_000,
    overrides: {},
  },
  writer: {
    enabled: true,
    worker: true,
    batch_rows: 50_000,
    flush_interval_ms: 250,
    stream_max_bytes: 1_073_741_824,
    stream_max_age_s: 604_800,
    retry_initial_ms: 500,
    retry_max_ms: 30_000,
  },
  replay: { file: "", speed: 0, loop: false, retime: false },
  risk: DEFAULT_RISK_CONFIG,
  execution: {
    enabled: true,
    default_broker: "paper",
    batch_max: 500,
    max_price_age_ms: 5000,
    signals_max_age_s: 604_800,
    reconcile_on_start: true,
    max_signal_attempts: 10,
  },
  brokers: {
    paper: {
      commission_bps: "0",
      commission_min: "0",
      slippage_bps: "0",
      us_equity_session: "regular",
    },
    alpaca: {
      enabled: false,
      base_url: "https://paper-api.alpaca.markets",
      key_id: "",
      secret_key: "",
      request_timeout_ms: 10_000,
    },
  },
  portfolio: { starting_cash: "100000", snapshot_interval_ms: 60_000 },
} as const;

// ---------------------------------------------------------------------------
// Field builders: each carries one "expected …" message for every way it can fail;
// the loader appends what it got and where that came from.

/**
 * An integer from `min` to `max`. Not `z.int()`: a fractional value fails its
 * check with an abort, which skips the checks across keys and the production
 * profile's refusals, so their problems would go unreported until this one is
 * fixed. One check also gives one message for a value both fractional and out
 * of range.
 */
function int(min: number = Number.MIN_SAFE_INTEGER, max: number = Number.MAX_SAFE_INTEGER) {
  const error = min === Number.MIN_SAFE_INTEGER && max === Number.MAX_SAFE_INTEGER
    ? "expected an integer"
    : max === Number.MAX_SAFE_INTEGER
    ? (min === 1 ? "expected a positive integer" : `expected an integer >= ${min}`)
    : `expected an integer from ${min} to ${max}`;
  return z.number({ error })
    .refine((value) => Number.isInteger(value) && value >= min && value <= max, { error });
}

function ms(min: 0 | 1) {
  return int(min, MAX_TIMER_MS);
}

function text(options: { nonEmpty?: boolean; max?: number } = {}) {
  const error = options.nonEmpty ? "expected a non-empty string" : "expected a string";
  let schema = z.string({ error });
  if (options.nonEmpty) schema = schema.min(1, { error });
  if (options.max !== undefined) {
    schema = schema.max(options.max, { error: `expected at most ${options.max} characters` });
  }
  return schema;
}

function bool() {
  return z.boolean({ error: "expected true or false" });
}

const HOST_ERROR =
  "expected an IP address or a host name to listen on, such as 127.0.0.1, 0.0.0.0, :: or localhost";

/** A label of a host name: letters, digits, `-` and `_` (not at its ends for `-`), 1 to 63. */
const HOST_LABEL = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/**
 * Whether the HTTP server can be told to listen on `host`: an IPv4 address
 * (`0.0.0.0`), an IPv6 one, bare or in brackets (`::`, `[::1]`), or a host
 * name (`localhost`, `api.internal`: dot-separated labels of letters, digits,
 * `-` and `_`, at most 63 characters each and 253 in all). Whether a name
 * resolves to an address of this machine is only known when the server starts.
 */
function isListenHost(host: string): boolean {
  const bracketed = host.startsWith("[") && host.endsWith("]");
  const bare = bracketed ? host.slice(1, -1) : host;
  if (bracketed || bare.includes(":")) {
    return /^[0-9A-Fa-f:.]+$/.test(bare) && parseUrl(`http://[${bare}]/`) !== undefined;
  }
  if (bare.length === 0 || bare.length > 253) return false;
  const labels = bare.split(".");
  // A name whose last label is a number is an IPv4 address, or nothing.
  if (/^\d+$/.test(labels.at(-1)!)) return IPV4.test(bare);
  return labels.every((label) => HOST_LABEL.test(label));
}

const listenHost = z.string({ error: HOST_ERROR }).refine(isListenHost, { error: HOST_ERROR });

const HOST_NAMES_ERROR = "expected a list of host names or IP addresses, without ports";
/** A name a request's `Host` may carry (`http.allowed_hosts`): lower-cased, IPv6 in brackets. */
const hostName = z.string({ error: HOST_NAMES_ERROR })
  .refine(isListenHost, { error: HOST_NAMES_ERROR })
  .transform((host) => {
    const bare = host.toLowerCase().replace(/^\[(.*)\]$/, "$1");
    return bare.includes(":") ? parseUrl(`http://[${bare}]/`)!.hostname : bare;
  });

const ORIGINS_ERROR =
  "expected a list of web origins: http:// or https://, a host and an optional port, no path";
/** A web page's origin (`http.allowed_origins`), as a browser sends it: `https://host[:port]`. */
const webOrigin = z.string({ error: ORIGINS_ERROR })
  .refine((text) => {
    const url = parseUrl(text.trim());
    // No path, query, fragment or user: what is left is the origin (a default port dropped).
    return url !== undefined && (url.protocol === "http:" || url.protocol === "https:") &&
      url.href === `${url.origin}/`;
  }, { error: ORIGINS_ERROR })
  .transform((text) => parseUrl(text.trim())!.origin);

function oneOf<const T extends readonly [string, ...string[]]>(values: T) {
  return z.enum(values, { error: `expected one of ${values.join(", ")}` });
}

function section<T extends z.core.$ZodLooseShape>(shape: T) {
  const schema = z.object(shape, { error: "expected a mapping of keys" }).strict();
  // Every key has a default, so an absent section parses as if empty.
  return schema.prefault({} as z.input<typeof schema>);
}

function parseUrl(text: string): URL | undefined {
  try {
    return new URL(text);
  } catch {
    return undefined;
  }
}

function urlWith(schemes: readonly string[], text: string): boolean {
  const url = parseUrl(text.trim());
  return url !== undefined && schemes.includes(url.protocol) && url.hostname !== "";
}

function url(schemes: readonly string[]) {
  const names = schemes.map((scheme) => `${scheme}//`);
  const error = `expected a ${names.join(" or ")} URL`;
  return z.string({ error }).refine((value) => urlWith(schemes, value), { error });
}

const natsUrl = z.string({
  error: "expected nats://, tls://, ws:// or wss:// URLs, comma-separated",
})
  .refine(
    (value) =>
      natsServers(value).length > 0 &&
      value.split(",").every((part) => urlWith(NATS_URL_SCHEMES, part)),
    { error: "expected nats://, tls://, ws:// or wss:// URLs, comma-separated" },
  );

const SHA256_HEX = /^[0-9a-f]{64}$/i;
const sha256Hex = z.string({ error: "expected a sha256 hash: 64 hex characters" })
  .regex(SHA256_HEX, { error: "expected a sha256 hash: 64 hex characters" })
  .transform((hash) => hash.toLowerCase());

const identifier = z.string({ error: "expected an identifier ([A-Za-z_][A-Za-z0-9_]*)" })
  .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: "expected an identifier ([A-Za-z_][A-Za-z0-9_]*)" });

const D = DEFAULT_CONFIG;

/** URL schemes accepted for venue WebSocket endpoints. */
export const WS_URL_SCHEMES = ["ws:", "wss:"] as const;
/** URL schemes accepted for venue REST endpoints. */
export const HTTP_URL_SCHEMES = ["http:", "https:"] as const;

/** A Kraken book depth: one of {@linkcode KRAKEN_BOOK_DEPTHS} (so an integer). */
const bookDepth = z.number({ error: `expected one of ${KRAKEN_BOOK_DEPTHS.join(", ")}` })
  .refine((depth) => (KRAKEN_BOOK_DEPTHS as readonly number[]).includes(depth), {
    error: `expected one of ${KRAKEN_BOOK_DEPTHS.join(", ")}`,
  });

const cryptoSymbol = z.string({ error: "expected a BASE-QUOTE symbol such as BTC-USDT" })
  .regex(/^[A-Z0-9]{1,15}-[A-Z0-9]{1,15}$/, {
    error: "expected a BASE-QUOTE symbol such as BTC-USDT",
  });
const stockSymbol = z.string({ error: "expected a stock ticker such as AAPL" })
  .regex(/^[A-Z][A-Z0-9.]{0,9}$/, { error: "expected a stock ticker such as AAPL" });

/** Keys every exchange section has. */
function feedCommon<const C extends readonly [string, ...string[]]>(
  defaults: {
    enabled: boolean;
    ws_url: string;
    symbols: readonly string[];
    channels: readonly C[number][];
    stale_after_ms: number;
    reconnect_initial_ms: number;
    reconnect_max_ms: number;
  },
  channels: C,
  symbol: z.ZodString,
) {
  return {
    enabled: bool().default(defaults.enabled),
    ws_url: url(WS_URL_SCHEMES).default(defaults.ws_url),
    symbols: z.array(symbol, { error: "expected a list of symbols" })
      .refine((list) => new Set(list).size === list.length, { error: "expected no duplicates" })
      .default(() => [...defaults.symbols]),
    channels: z.array(oneOf(channels), { error: `expected a list of ${channels.join(", ")}` })
      .default(() => [...defaults.channels]),
    stale_after_ms: ms(1).default(defaults.stale_after_ms),
    reconnect_initial_ms: ms(1).default(defaults.reconnect_initial_ms),
    reconnect_max_ms: ms(1).default(defaults.reconnect_max_ms),
  };
}

/** Brokers orders can be routed to. */
export const BROKERS = ["paper", "alpaca"] as const;
/** Market-hours modes of the risk checks. */
export const MARKET_HOURS = ["always", "us_equity"] as const;
/**
 * When the paper broker matches US equity orders: `regular` only in the NYSE
 * regular session (as Alpaca without `extended_hours`), `always` at any hour
 * (demos and tests outside market hours).
 */
export const PAPER_US_EQUITY_SESSIONS = ["regular", "always"] as const;

const DECIMAL_TEXT = /^\d+(\.\d+)?$/;

/**
 * A canonical symbol as `risk.symbols` and `validator.overrides` key it: a
 * crypto pair `BASE-QUOTE` or a stock ticker, upper case like the events'.
 */
const SYMBOL_PATTERN = "(?:[A-Z0-9]{1,15}-[A-Z0-9]{1,15}|[A-Z][A-Z0-9.]{0,9})";

/** A `validator.overrides` key: a known exchange, optionally `/SYMBOL`. */
const OVERRIDE_KEY = new RegExp(`^(?:${EXCHANGES.join("|")})(?:/${SYMBOL_PATTERN})?$`);
const OVERRIDE_KEY_ERROR = `expected an override key \`exchange\` or \`exchange/SYMBOL\` ` +
  `(exchange one of ${EXCHANGES.join(", ")}; SYMBOL upper case such as BTC-USDT or AAPL)`;

/**
 * Most significant digits a decimal written as a number (YAML, a flag, an
 * environment value read as one) may have: any decimal of up to 15 digits
 * survives the float it is read into (IEEE 754's DBL_DIG); more may not, and
 * must be written as a string.
 */
const MAX_NUMBER_DIGITS = 15;

/** A decimal number's exact text (`1e-7` → `"0.0000001"`), or null when it may have lost digits. */
function numberText(value: number): string | null {
  if (!Number.isFinite(value)) return String(value);
  const decimal = new Decimal(value);
  return decimal.sd() > MAX_NUMBER_DIGITS ? null : decimal.toFixed();
}

/** A non-negative decimal written as a string or a number; kept as its text. */
function decimalText() {
  const error = "expected a non-negative decimal such as 100 or 0.5";
  return z.union([z.string(), z.number()], { error })
    .transform((value, ctx) => {
      if (typeof value === "string") return value;
      const text = numberText(value);
      if (text === null) {
        ctx.addIssue({
          code: "custom",
          message: `a number with more than ${MAX_NUMBER_DIGITS} significant digits loses some ` +
            `as a float: write it as a string ("${value}" is what was read)`,
        });
        return z.NEVER;
      }
      return text;
    })
    .refine((value) => DECIMAL_TEXT.test(value), { error });
}

/** Whether `value` is decimal text (a refinement also sees the values the union refused). */
function isDecimalText(value: unknown): value is string {
  return typeof value === "string" && DECIMAL_TEXT.test(value);
}

/**
 * A risk limit: a decimal, or null for no limit. It must fit `NUMERIC(20,8)`
 * (12 integer digits, 8 decimals): snapshots store it in `risk_metrics`.
 */
function limit() {
  return z.union([decimalText(), z.null()], {
    error: "expected a non-negative decimal (written as a string when it has more than " +
      `${MAX_NUMBER_DIGITS} significant digits) or null (no limit)`,
  }).refine((value) => !isDecimalText(value) || fitsDb(new Decimal(value)), {
    error: `expected at most ${DB_INTEGER_DIGITS} integer digits and ${DB_SCALE} decimals ` +
      "(NUMERIC(20,8)), or null (no limit)",
  });
}

/** An amount of money: a decimal that fits `NUMERIC(20,8)` (12 integer digits, 8 decimals). */
function money() {
  return decimalText().refine((value) => !isDecimalText(value) || fitsDb(new Decimal(value)), {
    error: `expected at most ${DB_INTEGER_DIGITS} integer digits and ${DB_SCALE} decimals ` +
      "(NUMERIC(20,8))",
  });
}

/** Most basis points a paper commission may be: 100% of the notional. */
const MAX_BPS = 10_000;

/** Most integer a `NUMERIC(20,8)` column holds (`risk_metrics.limit_value` for max_open_orders). */
const MAX_DB_INTEGER = 999_999_999_999;

/** Basis points of a price, from 0 to {@linkcode MAX_BPS}; below it when `below` (a slippage). */
function bps(below = false) {
  return decimalText().refine(
    (value) => {
      if (!isDecimalText(value)) return true;
      const bps = new Decimal(value);
      return below ? bps.lt(MAX_BPS) : bps.lte(MAX_BPS);
    },
    {
      error: below
        ? `expected basis points from 0 to below ${MAX_BPS} (a slippage of 100% fills a sell at 0)`
        : `expected basis points from 0 to ${MAX_BPS} (100%)`,
    },
  );
}

/** Per-symbol risk keys. */
function riskKeys() {
  return {
    max_order_qty: limit(),
    max_order_notional: limit(),
    max_position_qty: limit(),
    price_collar_pct: limit(),
    market_hours: oneOf(MARKET_HOURS),
  };
}

/** Per-symbol risk keys with their defaults, for the top of the `risk` section. */
function riskDefaults() {
  const keys = riskKeys();
  const d = DEFAULT_CONFIG.risk;
  return {
    max_order_qty: keys.max_order_qty.default(d.max_order_qty),
    max_order_notional: keys.max_order_notional.default(d.max_order_notional),
    max_position_qty: keys.max_position_qty.default(d.max_position_qty),
    price_collar_pct: keys.price_collar_pct.default(d.price_collar_pct),
    market_hours: keys.market_hours.default(d.market_hours),
  };
}

/** Per-symbol risk keys, each optional, for exchange and symbol overrides. */
function riskOverrides() {
  const keys = riskKeys();
  return {
    max_order_qty: keys.max_order_qty.optional(),
    max_order_notional: keys.max_order_notional.optional(),
    max_position_qty: keys.max_position_qty.optional(),
    price_collar_pct: keys.price_collar_pct.optional(),
    market_hours: keys.market_hours.optional(),
  };
}

function percent() {
  return z.number({ error: "expected a percentage > 0" }).gt(0, {
    error: "expected a percentage > 0",
  });
}

/** Validator thresholds, the defaults and each override's keys. */
function thresholds(defaults: typeof D.validator) {
  return {
    spike_pct: percent().default(defaults.spike_pct),
    reference_window_ms: ms(1).default(defaults.reference_window_ms),
    max_future_ms: ms(0).default(defaults.max_future_ms),
    max_lag_ms: ms(1).default(defaults.max_lag_ms),
  };
}

function partialThresholds() {
  return {
    spike_pct: percent().optional(),
    reference_window_ms: ms(1).optional(),
    max_future_ms: ms(0).optional(),
    max_lag_ms: ms(1).optional(),
  };
}

/**
 * The schema of the merged configuration. Every object is strict, so unknown
 * keys are errors; every key has a default, so `configSchema.parse({})` gives
 * {@linkcode DEFAULT_CONFIG}. Under `engine.profile: production` it also
 * refuses insecure settings (see {@linkcode productionProblems}).
 *
 * @example
 * ```ts
 * const config = configSchema.parse({ http: { port: 9000 } });
 * config.http.port; // 9000
 * config.nats.url; // "nats://127.0.0.1:4222"
 * ```
 */
export const configSchema = z.object({
  engine: section({
    name: text({ nonEmpty: true }).default(D.engine.name),
    profile: oneOf(PROFILES).default(D.engine.profile),
    shutdown_timeout_ms: ms(1).default(D.engine.shutdown_timeout_ms),
  }),
  log: section({
    level: oneOf(LEVELS).default(D.log.level),
  }),
  http: section({
    enabled: bool().default(D.http.enabled),
    host: listenHost.default(D.http.host),
    port: int(1, 65535).default(D.http.port),
    api_key_hashes: z.array(sha256Hex, { error: "expected a list of sha256 hashes" })
      .default(() => []),
    allow_keyless_remote: bool().default(D.http.allow_keyless_remote),
    allowed_hosts: z.array(hostName, { error: HOST_NAMES_ERROR }).default(() => []),
    allowed_origins: z.array(webOrigin, { error: ORIGINS_ERROR }).default(() => []),
    max_body_bytes: int(1, 1_073_741_824).default(D.http.max_body_bytes),
  }),
  nats: section({
    url: natsUrl.default(D.nats.url),
    name: text({ nonEmpty: true }).default(D.nats.name),
    user: text().default(D.nats.user),
    password: text().default(D.nats.password),
    token: text().default(D.nats.token),
    allow_anonymous: bool().default(D.nats.allow_anonymous),
    connect_timeout_ms: ms(1).default(D.nats.connect_timeout_ms),
    reconnect_wait_ms: ms(0).default(D.nats.reconnect_wait_ms),
    reconnect_max_wait_ms: ms(0).default(D.nats.reconnect_max_wait_ms),
    reconnect_jitter_ms: ms(0).default(D.nats.reconnect_jitter_ms),
  }),
  postgres: section({
    url: url(POSTGRES_URL_SCHEMES).default(D.postgres.url),
    pool_size: int(1, 200).default(D.postgres.pool_size),
    statement_timeout_ms: ms(0).default(D.postgres.statement_timeout_ms),
    connect_timeout_s: int(1, Math.floor(MAX_TIMER_MS / 1000)).default(
      D.postgres.connect_timeout_s,
    ),
    sslmode: oneOf(SSL_MODES).default(D.postgres.sslmode),
    application_name: text({ max: 63 }).default(D.postgres.application_name),
  }),
  clickhouse: section({
    url: url(CLICKHOUSE_URL_SCHEMES).default(D.clickhouse.url),
    database: identifier.default(D.clickhouse.database),
    user: text({ nonEmpty: true }).default(D.clickhouse.user),
    password: text().default(D.clickhouse.password),
    request_timeout_ms: ms(1).default(D.clickhouse.request_timeout_ms),
  }),
  supervisor: section({
    intensity: int(0).default(D.supervisor.intensity),
    period_ms: ms(1).default(D.supervisor.period_ms),
    backoff_initial_ms: ms(0).default(D.supervisor.backoff_initial_ms),
    backoff_max_ms: ms(0).default(D.supervisor.backoff_max_ms),
    backoff_jitter: z.number({ error: "expected a number from 0 to 1" })
      .min(0, { error: "expected a number from 0 to 1" })
      .max(1, { error: "expected a number from 0 to 1" })
      .default(D.supervisor.backoff_jitter),
    child_shutdown_ms: ms(1).default(D.supervisor.child_shutdown_ms),
  }),
  migrations: section({
    dir: text({ nonEmpty: true }).default(D.migrations.dir),
    apply_on_start: bool().default(D.migrations.apply_on_start),
    lock_key: int().default(D.migrations.lock_key),
  }),
  exchanges: section({
    binance: section({
      ...feedCommon(D.exchanges.binance, CRYPTO_CHANNELS, cryptoSymbol),
      rest_url: url(HTTP_URL_SCHEMES).default(D.exchanges.binance.rest_url),
      snapshot_limit: int(5, 5000).default(D.exchanges.binance.snapshot_limit),
    }),
    coinbase: section(feedCommon(D.exchanges.coinbase, CRYPTO_CHANNELS, cryptoSymbol)),
    kraken: section({
      ...feedCommon(D.exchanges.kraken, CRYPTO_CHANNELS, cryptoSymbol),
      book_depth: bookDepth.default(D.exchanges.kraken.book_depth),
    }),
    alpaca: section({
      ...feedCommon(D.exchanges.alpaca, ALPACA_CHANNELS, stockSymbol),
      feed: oneOf(ALPACA_FEEDS).default(D.exchanges.alpaca.feed),
      key_id: text().default(D.exchanges.alpaca.key_id),
      secret_key: text().default(D.exchanges.alpaca.secret_key),
    }),
  }),
  feeds: section({
    publish_batch_ms: ms(0).default(D.feeds.publish_batch_ms),
    publish_batch_max: int(1, 100_000).default(D.feeds.publish_batch_max),
  }),
  validator: section({
    enabled: bool().default(D.validator.enabled),
    worker: bool().default(D.validator.worker),
    ...thresholds(D.validator),
    duplicate_window: int(1, 10_000_000).default(D.validator.duplicate_window),
    overrides: z.record(
      z.string().regex(OVERRIDE_KEY, { error: OVERRIDE_KEY_ERROR }),
      z.object(partialThresholds(), { error: "expected a mapping of thresholds" }).strict(),
      { error: "expected a mapping of overrides" },
    ).default(() => ({})),
  }),
  writer: section({
    enabled: bool().default(D.writer.enabled),
    worker: bool().default(D.writer.worker),
    batch_rows: int(1, 10_000_000).default(D.writer.batch_rows),
    flush_interval_ms: ms(1).default(D.writer.flush_interval_ms),
    stream_max_bytes: int(1024 * 1024).default(D.writer.stream_max_bytes),
    stream_max_age_s: int(60, MAX_STREAM_AGE_S).default(D.writer.stream_max_age_s),
    retry_initial_ms: ms(1).default(D.writer.retry_initial_ms),
    retry_max_ms: ms(1).default(D.writer.retry_max_ms),
  }),
  risk: section({
    ...riskDefaults(),
    max_gross_exposure: limit().default(D.risk.max_gross_exposure),
    max_open_orders: z.union([int(0, MAX_DB_INTEGER), z.null()], {
      error: `expected an integer from 0 to ${MAX_DB_INTEGER} or null`,
    })
      .default(D.risk.max_open_orders),
    daily_loss_limit: limit().default(D.risk.daily_loss_limit),
    exchanges: z.partialRecord(
      oneOf(EXCHANGES),
      z.object(riskOverrides(), { error: "expected a mapping of limits" }).strict(),
      { error: "expected a mapping of exchange overrides" },
    ).default(() => ({ alpaca: { market_hours: "us_equity" as const } })),
    symbols: z.record(
      z.string().regex(new RegExp(`^${SYMBOL_PATTERN}$`), {
        error: "expected a symbol such as BTC-USDT or AAPL",
      }),
      z.object(riskOverrides(), { error: "expected a mapping of limits" }).strict(),
      { error: "expected a mapping of symbol overrides" },
    ).default(() => ({})),
  }),
  execution: section({
    enabled: bool().default(D.execution.enabled),
    default_broker: oneOf(BROKERS).default(D.execution.default_broker),
    batch_max: int(1, 10_000).default(D.execution.batch_max),
    max_price_age_ms: ms(1).default(D.execution.max_price_age_ms),
    signals_max_age_s: int(60, MAX_STREAM_AGE_S).default(D.execution.signals_max_age_s),
    reconcile_on_start: bool().default(D.execution.reconcile_on_start),
    max_signal_attempts: int(0, 1_000).default(D.execution.max_signal_attempts),
  }),
  brokers: section({
    paper: section({
      commission_bps: bps().default(D.brokers.paper.commission_bps),
      commission_min: money().default(D.brokers.paper.commission_min),
      slippage_bps: bps(true).default(D.brokers.paper.slippage_bps),
      us_equity_session: oneOf(PAPER_US_EQUITY_SESSIONS).default(
        D.brokers.paper.us_equity_session,
      ),
    }),
    alpaca: section({
      enabled: bool().default(D.brokers.alpaca.enabled),
      base_url: url(HTTP_URL_SCHEMES).default(D.brokers.alpaca.base_url),
      key_id: text().default(D.brokers.alpaca.key_id),
      secret_key: text().default(D.brokers.alpaca.secret_key),
      request_timeout_ms: ms(1).default(D.brokers.alpaca.request_timeout_ms),
    }),
  }),
  portfolio: section({
    starting_cash: money().default(D.portfolio.starting_cash),
    snapshot_interval_ms: ms(1).default(D.portfolio.snapshot_interval_ms),
  }),
  replay: section({
    file: text().default(D.replay.file),
    speed: z.number({ error: "expected a number >= 0 (0 = as fast as possible)" })
      .min(0, { error: "expected a number >= 0 (0 = as fast as possible)" })
      .default(D.replay.speed),
    loop: bool().default(D.replay.loop),
    retime: bool().default(D.replay.retime),
  }),
}, { error: "expected a mapping of sections" }).strict().superRefine((config, ctx) => {
  for (const problem of [...consistencyProblems(config), ...productionProblems(config)]) {
    // `params.complete`: the message needs no "got …" appended.
    ctx.addIssue({
      code: "custom",
      path: problem.path,
      message: problem.message,
      input: config,
      params: { complete: true },
    });
  }
}, { when: () => true });

/** The validated configuration. */
export type Config = z.infer<typeof configSchema>;
/** What {@linkcode configSchema} accepts: every key optional. */
export type ConfigInput = z.input<typeof configSchema>;
/** The `engine` section of {@linkcode Config}. */
export type EngineConfig = Config["engine"];
/** The `log` section of {@linkcode Config}. */
export type LogConfig = Config["log"];
/** The `http` section of {@linkcode Config}. */
export type HttpConfig = Config["http"];
/** The `nats` section of {@linkcode Config}. */
export type NatsConfig = Config["nats"];
/** The `postgres` section of {@linkcode Config}. */
export type PostgresConfig = Config["postgres"];
/** The `clickhouse` section of {@linkcode Config}. */
export type ClickhouseConfig = Config["clickhouse"];
/** The `supervisor` section of {@linkcode Config}. */
export type SupervisorConfig = Config["supervisor"];
/** The `migrations` section of {@linkcode Config}. */
export type MigrationsConfig = Config["migrations"];
/** The `exchanges` section of {@linkcode Config}. */
export type ExchangesConfig = Config["exchanges"];
/** The `feeds` section of {@linkcode Config}. */
export type FeedsConfig = Config["feeds"];
/** The `validator` section of {@linkcode Config}. */
export type ValidatorConfig = Config["validator"];
/** The `writer` section of {@linkcode Config}. */
export type WriterConfig = Config["writer"];
/** The `replay` section of {@linkcode Config}. */
export type ReplayConfig = Config["replay"];
/** The `risk` section of {@linkcode Config}. */
export type RiskSection = Config["risk"];
/** The `execution` section of {@linkcode Config}. */
export type ExecutionConfig = Config["execution"];
/** The `brokers` section of {@linkcode Config}. */
export type BrokersConfig = Config["brokers"];
/** The `portfolio` section of {@linkcode Config}. */
export type PortfolioConfig = Config["portfolio"];

/**
 * Splits `nats.url` (one URL or a comma-separated list) into server URLs.
 *
 * @example
 * ```ts
 * natsServers("nats://a:4222, nats://b:4222"); // ["nats://a:4222", "nats://b:4222"]
 * ```
 */
export function natsServers(url: string): string[] {
  return url.split(",").map((part) => part.trim()).filter((part) => part !== "");
}

/** A refusal found in a (possibly partly invalid) configuration. */
export interface SettingProblem {
  /** Path of the offending key, e.g. `["postgres", "url"]`. */
  path: string[];
  /** Why it is refused. */
  message: string;
}

/** Reads a nested value without trusting its shape (the config may be partly invalid). */
function at(config: unknown, section: string, key: string): unknown {
  if (config === null || typeof config !== "object") return undefined;
  const inner = (config as Record<string, unknown>)[section];
  if (inner === null || typeof inner !== "object") return undefined;
  return (inner as Record<string, unknown>)[key];
}

function consistencyProblems(config: unknown): SettingProblem[] {
  const problems: SettingProblem[] = [];
  const pairs = [
    ["nats", "reconnect_wait_ms", "reconnect_max_wait_ms"],
    ["supervisor", "backoff_initial_ms", "backoff_max_ms"],
    ["writer", "retry_initial_ms", "retry_max_ms"],
  ] as const;
  for (const [section, low, high] of pairs) {
    const min = at(config, section, low);
    const max = at(config, section, high);
    if (typeof min === "number" && typeof max === "number" && max < min) {
      problems.push({
        path: [section, high],
        message: `must be at least ${section}.${low} (${min}), got ${max}`,
      });
    }
  }
  const binance = binanceUrlProblem(config);
  if (binance !== null) problems.push(binance);
  const sslmode = urlSslModeProblem(at(config, "postgres", "url"));
  if (sslmode !== null) problems.push({ path: ["postgres", "url"], message: sslmode });
  const replay = replayFileProblem(at(config, "replay", "file"));
  if (replay !== null) problems.push({ path: ["replay", "file"], message: replay });
  problems.push(...venueSymbolProblems(config));
  const broker = defaultBrokerProblem(config);
  if (broker !== null) problems.push(broker);
  return problems;
}

/**
 * `execution.default_broker` naming a broker that is not enabled: every
 * signal naming no broker would be refused. The paper broker is always there;
 * another only with its `brokers.<name>.enabled`. Not checked while execution
 * is disabled (no signal is handled).
 */
function defaultBrokerProblem(config: unknown): SettingProblem | null {
  if (at(config, "execution", "enabled") === false) return null;
  const name = at(config, "execution", "default_broker");
  if (typeof name !== "string" || name === "paper") return null;
  const section = at(config, "brokers", name);
  const enabled = section !== null && typeof section === "object"
    ? (section as Record<string, unknown>).enabled
    : undefined;
  if (enabled === true) return null;
  return {
    path: ["execution", "default_broker"],
    message: `names the broker ${name}, which is not enabled: every signal naming no broker ` +
      `would be refused; set brokers.${name}.enabled to true, or name an enabled broker (paper)`,
  };
}

/**
 * Symbols a venue would serve under another name, refused at load: Coinbase
 * serves the market data of an `X-USDC` product as `X-USD` ("-USDC products
 * … Other channels will return the same data as the corresponding '-USD'
 * based products", USDT-USDC and EURC-USDC aside), so its events would be
 * published under a symbol nobody configured and its book never arrive; and
 * Kraken's WebSocket v2 names Bitcoin and Dogecoin BTC and DOGE, refusing
 * its legacy XBT and XDG.
 */
function venueSymbolProblems(config: unknown): SettingProblem[] {
  const problems: SettingProblem[] = [];
  const symbolsOf = (venue: string): unknown[] => {
    const section = at(config, "exchanges", venue);
    const symbols = section !== null && typeof section === "object"
      ? (section as Record<string, unknown>).symbols
      : undefined;
    return Array.isArray(symbols) ? symbols : [];
  };
  symbolsOf("coinbase").forEach((symbol) => {
    if (typeof symbol !== "string" || !symbol.endsWith("-USDC")) return;
    if (COINBASE_OWN_USDC_PRODUCTS.has(symbol)) return;
    problems.push({
      path: ["exchanges", "coinbase", "symbols"],
      message: `Coinbase serves the market data of ${symbol} as ${
        symbol.replace(/-USDC$/, "-USD")
      }: configure ${symbol.replace(/-USDC$/, "-USD")}`,
    });
  });
  symbolsOf("kraken").forEach((symbol) => {
    if (typeof symbol !== "string") return;
    const renamed = symbol.split("-").map((part) => KRAKEN_V2_NAMES[part] ?? part).join("-");
    if (renamed === symbol) return;
    problems.push({
      path: ["exchanges", "kraken", "symbols"],
      message: `Kraken's WebSocket v2 names ${symbol} ${renamed}: configure ${renamed}`,
    });
  });
  return problems;
}

/** Coinbase's -USDC products with market data of their own. */
const COINBASE_OWN_USDC_PRODUCTS: ReadonlySet<string> = new Set(["USDT-USDC", "EURC-USDC"]);

/** Kraken's legacy asset names and their WebSocket v2 names. */
const KRAKEN_V2_NAMES: Readonly<Record<string, string>> = { XBT: "BTC", XDG: "DOGE" };

/**
 * What keeps the engine from playing `replay.file` (a path from the working
 * directory): not a readable regular file. Null when it is one, or empty (no
 * replay). The replay opens it only after the databases are migrated and the
 * engine started: say now.
 */
function replayFileProblem(file: unknown): string | null {
  if (typeof file !== "string" || file === "") return null;
  try {
    // stat first: opening a FIFO would wait for a writer.
    if (!Deno.statSync(file).isFile) return `the capture ${file} is not a file${relativeTo(file)}`;
    Deno.openSync(file, { read: true }).close();
  } catch (error) {
    return `the capture ${file} cannot be read: ${(error as Error).name}${relativeTo(file)}`;
  }
  return null;
}

/** Where a relative `path` is taken from, for a message: `""` for an absolute one. */
function relativeTo(path: string): string {
  if (path.startsWith("/")) return "";
  try {
    return `, looked for from the working directory ${Deno.cwd()}`;
  } catch {
    return "";
  }
}

/**
 * What is wrong with the libpq parameters of a PostgreSQL URL: `sslmode`
 * one of libpq's values (the connection takes the stricter of it and
 * `postgres.sslmode`), the files `sslrootcert`, `sslcert` and `sslkey` name
 * readable. Null when they are fine or absent.
 */
function urlSslModeProblem(url: unknown): string | null {
  if (typeof url !== "string") return null;
  const parsed = parseUrl(url.trim());
  const mode = parsed?.searchParams.get("sslmode");
  if (mode !== undefined && mode !== null && !(SSL_MODES as readonly string[]).includes(mode)) {
    return `the URL's sslmode must be one of ${SSL_MODES.join(", ")}, got ${JSON.stringify(mode)}`;
  }
  // The TLS files libpq's parameters name are read when the pool is created: say now if one is not.
  for (const name of ["sslrootcert", "sslcert", "sslkey"]) {
    const file = parsed?.searchParams.get(name);
    if (file === undefined || file === null || (name === "sslrootcert" && file === "system")) {
      continue;
    }
    try {
      if (!Deno.statSync(file).isFile) return `the URL's ${name} ${file} is not a file`;
    } catch (error) {
      return `the URL's ${name} ${file} cannot be read (${(error as Error).name})`;
    }
  }
  return null;
}

/**
 * Refuses Binance symbols whose combined-stream URL (every symbol's streams
 * of the configured channels, on `ws_url`) is longer than Binance opens
 * ({@linkcode BINANCE_MAX_URL_LENGTH}): the feed would never connect. Says
 * how many of the symbols, in order, fit. Skipped while the feed is disabled
 * or the section is invalid (its own errors say why).
 */
function binanceUrlProblem(config: unknown): SettingProblem | null {
  const section = at(config, "exchanges", "binance");
  if (section === null || typeof section !== "object") return null;
  const { enabled, ws_url, symbols, channels } = section as Record<string, unknown>;
  if (
    enabled === false || typeof ws_url !== "string" || !Array.isArray(symbols) ||
    symbols.length === 0 || !Array.isArray(channels) ||
    !symbols.every((symbol) => typeof symbol === "string") ||
    !channels.every((channel) => typeof channel === "string")
  ) {
    return null;
  }
  let streams: string[];
  try {
    streams = binanceChannelStreams(symbols, channels);
  } catch {
    return null; // A malformed symbol: its own check reports it.
  }
  const length = binanceCombinedUrlLength(ws_url, streams);
  if (length <= BINANCE_MAX_URL_LENGTH) return null;
  // Every symbol has the same streams: count the symbols whose streams still fit.
  const perSymbol = streams.length / symbols.length;
  let fit = 0;
  let running = binanceCombinedUrlLength(ws_url, []);
  for (let i = 0; i < streams.length; i++) {
    running += streams[i]!.length + (i > 0 ? 1 : 0);
    if (running > BINANCE_MAX_URL_LENGTH) break;
    if ((i + 1) % perSymbol === 0) fit++;
  }
  return {
    path: ["exchanges", "binance", "symbols"],
    message: `${symbols.length} symbols with channels ${channels.join(", ")} make a ` +
      `combined-stream URL of ${length} characters, over the ${BINANCE_MAX_URL_LENGTH} ` +
      `Binance opens on one connection (the first ${fit} fit): follow fewer symbols or channels`,
  };
}

function isWeak(password: string): boolean {
  return WEAK_PASSWORDS.includes(password.trim().toLowerCase());
}

/** The decoded password in a URL's userinfo, `""` when there is none. */
function urlPassword(text: string): string {
  const url = parseUrl(text.trim());
  if (url === undefined) return "";
  try {
    return decodeURIComponent(url.password);
  } catch {
    return url.password;
  }
}

const WEAK = "a well-known default password, refused by the production profile";

/**
 * What the production profile refuses in the credentials written inside
 * `nats.url`, read as the NATS adapter reads them ({@linkcode urlCredentials}):
 * `nats://user:password@host` as `nats.user` and `nats.password`,
 * `nats://token@host` as `nats.token`. Each problem once, whatever the number
 * of URLs that have it.
 */
function natsUrlProblems(text: string): string[] {
  const problems = new Set<string>();
  for (const server of natsServers(text)) {
    const { user, token } = urlCredentials(server);
    if (user !== undefined && isWeak(user.password)) problems.add(`a URL has ${WEAK}`);
    if (user !== undefined && user.password === "") {
      problems.add(
        "the production profile requires a password for a user in a URL " +
          "(nats://user:password@host)",
      );
    }
    if (token !== undefined && isWeak(token)) {
      problems.add(`a URL's token (nats://token@host) is ${WEAK}`);
    }
  }
  return [...problems];
}

/**
 * Whether the NATS connection authenticates: `nats.user`, `nats.token`, or
 * credentials in a URL of `nats.url` (the adapter uses the first it finds for
 * every server).
 */
function hasNatsCredentials(user: unknown, token: unknown, url: string): boolean {
  if ((typeof user === "string" && user !== "") || (typeof token === "string" && token !== "")) {
    return true;
  }
  const credentials = urlCredentials(url);
  return credentials.user !== undefined || credentials.token !== undefined;
}

/**
 * Whether every server of `nats.url` is on a loopback address (127.0.0.0/8,
 * `localhost`, `[::1]`): reachable by the processes of this machine only.
 */
function onlyLoopbackServers(url: string): boolean {
  const servers = natsServers(url);
  return servers.length > 0 && servers.every((server) => {
    const host = parseUrl(server)?.hostname.toLowerCase().replace(/^\[(.*)\]$/, "$1");
    return host === "localhost" || host === "::1" ||
      (host !== undefined && /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host));
  });
}

/**
 * The settings that `engine.profile: production` refuses: no API key hashes
 * while HTTP is enabled, hashes of well-known passwords ({@linkcode WEAK_API_KEY_HASHES}),
 * a NATS connection without credentials to a server on another host
 * unless `nats.allow_anonymous`, a postgres URL without a password, no ClickHouse
 * password (neither `clickhouse.password` nor one in its URL), well-known default
 * passwords (postgres, clickhouse, nats; also inside URLs, and as a NATS token
 * in `nats.token` or `nats://token@host`), a NATS user without a password (in
 * `nats.user` or in `nats.url`), and `log.level: debug`. Returns nothing for
 * other profiles.
 *
 * Reads the configuration defensively, so it also reports on one that failed
 * other checks.
 */
export function productionProblems(config: unknown): SettingProblem[] {
  if (at(config, "engine", "profile") !== "production") return [];
  const problems: SettingProblem[] = [];
  const refuse = (section: string, key: string, message: string) =>
    problems.push({ path: [section, key], message });

  const hashes = at(config, "http", "api_key_hashes");
  if (at(config, "http", "enabled") !== false && Array.isArray(hashes) && hashes.length === 0) {
    refuse(
      "http",
      "api_key_hashes",
      "the production profile requires at least one API key hash " +
        "(make one with `deno task hash-key KEY`)",
    );
  }
  if (Array.isArray(hashes)) {
    const weak = hashes.filter((hash) =>
      typeof hash === "string" && WEAK_API_KEY_HASHES.has(hash.toLowerCase())
    ).length;
    if (weak > 0) {
      refuse(
        "http",
        "api_key_hashes",
        `${weak === 1 ? "a hash is the one" : `${weak} hashes are those`} of a well-known ` +
          "password, refused by the production profile: API keys must be random " +
          "(make one with `deno task hash-key`)",
      );
    }
  }

  const pgUrl = at(config, "postgres", "url");
  if (typeof pgUrl === "string" && parseUrl(pgUrl) !== undefined) {
    const password = urlPassword(pgUrl);
    if (password === "") {
      refuse("postgres", "url", "the production profile requires a password in the URL");
    } else if (isWeak(password)) refuse("postgres", "url", `the URL has ${WEAK}`);
  }

  const chPassword = at(config, "clickhouse", "password");
  const chUrl = at(config, "clickhouse", "url");
  const chUrlPassword = typeof chUrl === "string" ? urlPassword(chUrl) : "";
  if (typeof chPassword === "string" && isWeak(chPassword)) {
    refuse("clickhouse", "password", WEAK);
  } else if (chPassword === "" && chUrlPassword === "") {
    refuse(
      "clickhouse",
      "password",
      "the production profile requires a ClickHouse password " +
        "(clickhouse.password, env CLICKHOUSE_PASSWORD, or in clickhouse.url)",
    );
  }
  if (isWeak(chUrlPassword)) refuse("clickhouse", "url", `the URL has ${WEAK}`);

  const natsUser = at(config, "nats", "user");
  const natsPassword = at(config, "nats", "password");
  if (typeof natsPassword === "string") {
    if (isWeak(natsPassword)) refuse("nats", "password", WEAK);
    else if (natsPassword === "" && typeof natsUser === "string" && natsUser !== "") {
      refuse(
        "nats",
        "password",
        "the production profile requires a password when nats.user is set",
      );
    }
  }
  const natsToken = at(config, "nats", "token");
  if (typeof natsToken === "string" && isWeak(natsToken)) refuse("nats", "token", WEAK);
  const natsUrl = at(config, "nats", "url");
  if (typeof natsUrl === "string") {
    for (const message of natsUrlProblems(natsUrl)) refuse("nats", "url", message);
  }
  if (
    at(config, "nats", "allow_anonymous") !== true && typeof natsUrl === "string" &&
    !hasNatsCredentials(natsUser, natsToken, natsUrl) && !onlyLoopbackServers(natsUrl)
  ) {
    refuse(
      "nats",
      "url",
      "the production profile requires NATS credentials for a server on another host " +
        "(anyone reaching an open server places orders on signals.<strategy> and flips the " +
        "kill switch): set nats.user and nats.password, nats.token, or " +
        "nats://user:password@host, or nats.allow_anonymous: true if the server lets no one " +
        "else publish",
    );
  }

  if (at(config, "log", "level") === "debug") {
    refuse(
      "log",
      "level",
      "debug logging is refused by the production profile (it may log sensitive data)",
    );
  }
  return problems;
}

// ---------------------------------------------------------------------------
// API keys: stored only as sha256 hashes.

/**
 * Returns the sha256 of `key` as 64 lowercase hex characters: the form
 * `http.api_key_hashes` stores.
 *
 * @example
 * ```ts
 * await hashApiKey("k3y"); // "5b1e…" (64 hex characters)
 * ```
 */
export function hashApiKey(key: string): Promise<string> {
  return sha256(key);
}

/**
 * Whether `key` hashes to one of `hashes`. Compares in constant time and checks
 * every hash, so timing reveals neither how much of a hash matched nor which.
 *
 * @example
 * ```ts
 * const hashes = [await hashApiKey("k3y")];
 * await verifyApiKey("k3y", hashes); // true
 * await verifyApiKey("nope", hashes); // false
 * ```
 */
export async function verifyApiKey(key: string, hashes: readonly string[]): Promise<boolean> {
  const candidate = await hashApiKey(key);
  let found = 0;
  for (const hash of hashes) found |= constantTimeEqual(candidate, hash.toLowerCase()) ? 1 : 0;
  return found === 1;
}

function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) {
    diff |= a.charCodeAt(i) ^ (i < b.length ? b.charCodeAt(i) : 0);
  }
  return diff === 0;
}
