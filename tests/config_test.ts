import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import {
  cliFlags,
  type Config,
  ConfigError,
  configSchema,
  DEFAULT_CONFIG,
  DEFAULT_CONFIG_FILE,
  hashApiKey,
  loadConfig,
  natsServers,
  redactConfig,
  verifyApiKey,
} from "../config/mod.ts";
import { loadError, loadTestConfig, withFiles } from "./_config.ts";

/** The config `deno task replay` names with `--config`. */
const REPLAY_SAMPLE = fileURLToPath(new URL("../config/replay_sample.yaml", import.meta.url));

const GOOD_HASH = "a".repeat(64);
const PRODUCTION_OK = [
  "--engine.profile=production",
  `--http.api_key_hashes=${GOOD_HASH}`,
  "--postgres.url=postgres://app:Xk2f9pQr7vLw@db:5432/tradewire",
  "--clickhouse.password=Qm7tRz4wKp2n",
];

// ---------------------------------------------------------------------------
// Defaults and layers

Deno.test("default.yaml gives exactly the schema's defaults, and names every key", async () => {
  const config = await loadTestConfig();
  assert.deepEqual(config, configSchema.parse({}));
  assert.deepEqual(config, DEFAULT_CONFIG);
  // The schema would fill in a key the file leaves out: compare the file's own keys too.
  const keys = (value: unknown, prefix = ""): string[] =>
    value !== null && typeof value === "object" && !Array.isArray(value) &&
      !(prefix !== "" && Object.keys(value).length === 0)
      ? Object.entries(value).flatMap(([key, child]) => keys(child, `${prefix}${key}.`))
      : [prefix.slice(0, -1)];
  const file = parseYaml(
    await Deno.readTextFile(new URL("../config/default.yaml", import.meta.url)),
  );
  assert.deepEqual(keys(file).sort(), keys(DEFAULT_CONFIG).sort());
  assert.equal(config.http.port, 8000);
  assert.equal(config.clickhouse.password, "");
  assert.equal(config.clickhouse.user, "default");
});

Deno.test("layers apply lowest first: default < file < env < flag", async () => {
  await withFiles({
    "user.yaml": [
      "http:",
      "  port: 8100",
      "  host: 0.0.0.0",
      "postgres:",
      "  pool_size: 20",
      "log:",
      "  level: warn",
    ].join("\n"),
  }, async ({ "user.yaml": file }) => {
    const config = await loadTestConfig({
      args: ["--config", file!, "--http.port=8300"],
      env: { TRADEWIRE_HTTP__PORT: "8200", TRADEWIRE_POSTGRES__POOL_SIZE: "4" },
    });
    assert.equal(config.http.port, 8300, "flag beats env");
    assert.equal(config.postgres.pool_size, 4, "env beats file");
    assert.equal(config.http.host, "0.0.0.0", "file beats default");
    assert.equal(config.log.level, "warn", "file beats default");
    assert.equal(config.engine.name, "tradewire", "default stays where nothing overrides it");
  });
});

Deno.test("TRADEWIRE_<SECTION>__<KEY> beats NATS_URL, DATABASE_URL and CLICKHOUSE_URL", async () => {
  const conventional = {
    NATS_URL: "nats://conventional:4222",
    DATABASE_URL: "postgres://app:pw1@conventional/tw",
    CLICKHOUSE_URL: "http://conventional:8123",
  };
  const config = await loadTestConfig({ env: conventional });
  assert.equal(config.nats.url, "nats://conventional:4222");
  assert.equal(config.postgres.url, "postgres://app:pw1@conventional/tw");
  assert.equal(config.clickhouse.url, "http://conventional:8123");

  const both = await loadTestConfig({
    env: {
      ...conventional,
      TRADEWIRE_NATS__URL: "nats://prefixed:4222",
      TRADEWIRE_POSTGRES__URL: "postgresql://app:pw2@prefixed/tw",
      TRADEWIRE_CLICKHOUSE__URL: "https://prefixed:8443",
    },
  });
  assert.equal(both.nats.url, "nats://prefixed:4222");
  assert.equal(both.postgres.url, "postgresql://app:pw2@prefixed/tw");
  assert.equal(both.clickhouse.url, "https://prefixed:8443");
});

Deno.test("conventional env vars beat the user file and flags beat them", async () => {
  await withFiles({ "u.yaml": "nats:\n  url: nats://file:4222\n" }, async ({ "u.yaml": file }) => {
    const env = { TRADEWIRE_CONFIG: file!, NATS_URL: "nats://env:4222" };
    assert.equal((await loadTestConfig({ env })).nats.url, "nats://env:4222");
    const flagged = await loadTestConfig({ env, args: ["--nats.url", "tls://flag:4222"] });
    assert.equal(flagged.nats.url, "tls://flag:4222");
  });
});

Deno.test("an empty conventional env var is ignored", async () => {
  const config = await loadTestConfig({ env: { DATABASE_URL: "" } });
  assert.equal(config.postgres.url, DEFAULT_CONFIG.postgres.url);
});

Deno.test("--config (either form) beats TRADEWIRE_CONFIG, which is not a key", async () => {
  await withFiles({
    "flag.yaml": "engine:\n  name: from-flag\n",
    "env.yaml": "engine:\n  name: from-env\n",
  }, async (paths) => {
    const env = { TRADEWIRE_CONFIG: paths["env.yaml"]! };
    assert.equal((await loadTestConfig({ env })).engine.name, "from-env");
    assert.equal(
      (await loadTestConfig({ env, args: [`--config=${paths["flag.yaml"]}`] })).engine.name,
      "from-flag",
    );
    assert.equal(
      (await loadTestConfig({ env, args: ["--config", paths["flag.yaml"]!] })).engine.name,
      "from-flag",
    );
  });
});

Deno.test("several --config files are layered in order, a later one beating an earlier one key by key", async () => {
  await withFiles({
    "mine.yaml": "http:\n  port: 18555\nreplay:\n  speed: 1\nexchanges:\n  kraken:\n" +
      "    book_depth: 100\n",
    "env.yaml": "engine:\n  name: from-env\n",
  }, async (paths) => {
    // What `deno task replay --config mine.yaml` runs: the replay sample stays a replay.
    const config = await loadTestConfig({
      env: { TRADEWIRE_CONFIG: paths["env.yaml"]! },
      args: ["--config", REPLAY_SAMPLE, `--config=${paths["mine.yaml"]}`],
    });
    assert.equal(config.http.port, 18555);
    assert.equal(config.replay.file, "captures/sample.ndjson");
    assert.equal(config.replay.loop, true);
    assert.equal(config.replay.speed, 1);
    // Sections merge key by key: the sample's Kraken symbols stay under mine.yaml's depth.
    assert.deepEqual(config.exchanges.kraken.symbols, ["MINA-GBP"]);
    assert.equal(config.exchanges.kraken.book_depth, 100);
    // --config, given at all, replaces TRADEWIRE_CONFIG.
    assert.equal(config.engine.name, DEFAULT_CONFIG.engine.name);
    // In the other order the sample's keys win.
    const reversed = await loadTestConfig({
      args: ["--config", paths["mine.yaml"]!, "--config", REPLAY_SAMPLE],
    });
    assert.equal(reversed.replay.speed, 4);
    assert.equal(reversed.exchanges.kraken.book_depth, 25);
  });
});

Deno.test("a bad key in one of several --config files names that file", async () => {
  await withFiles({
    "a.yaml": "http:\n  port: 9001\n",
    "b.yaml": "http:\n  prot: 9002\n",
  }, async (paths) => {
    const error = await loadError({
      args: ["--config", paths["a.yaml"]!, "--config", paths["b.yaml"]!, "--config", "nope.yaml"],
    });
    assert.deepEqual(error.message.split("\n").slice(1).toSorted(), [
      `  http.prot: unknown key, did you mean port? (from ${paths["b.yaml"]}:2)`,
      "  nope.yaml: config file not found (named by --config)",
    ]);
  });
});

Deno.test("a named config file that does not exist is an error", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const missing = join(dir, "nope.yaml");
    const byFlag = await loadError({ args: ["--config", missing] });
    assert.match(byFlag.message, /nope\.yaml: config file not found \(named by --config\)/);
    assert.ok(byFlag.cause instanceof Deno.errors.NotFound);
    const byEnv = await loadError({ env: { TRADEWIRE_CONFIG: missing } });
    assert.match(byEnv.message, /config file not found \(named by TRADEWIRE_CONFIG\)/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a YAML syntax error names the file and line", async () => {
  await withFiles(
    { "bad.yaml": "http:\n  port: 8000\n  host: [unclosed\nlog:\n  level: info\n" },
    async ({ "bad.yaml": file }) => {
      const error = await loadError({ args: ["--config", file!] });
      assert.match(error.message, /^Invalid configuration:\n/);
      assert.match(
        error.message,
        new RegExp(`${RegExp.escape(file!)}:\\d+:\\d+: YAML syntax error`),
      );
    },
  );
  await withFiles({ "dup.yaml": "http:\n  port: 1\n  port: 2\n" }, async ({ "dup.yaml": file }) => {
    const error = await loadError({ args: ["--config", file!] });
    assert.match(error.message, new RegExp(`${RegExp.escape(file!)}:3:\\d+: YAML syntax error`));
  });
});

Deno.test("YAML merge keys (<<: *anchor) bring the anchored keys, which the mapping's own beat", async () => {
  await withFiles({
    "u.yaml":
      "exchanges:\n  binance: &feed\n    stale_after_ms: 45000\n    reconnect_max_ms: 9000\n" +
      "  coinbase:\n    <<: *feed\n    reconnect_max_ms: 1000\n",
  }, async ({ "u.yaml": file }) => {
    const config = await loadTestConfig({ args: ["--config", file!] });
    assert.equal(config.exchanges.coinbase.stale_after_ms, 45000);
    assert.equal(config.exchanges.coinbase.reconnect_max_ms, 1000);
    assert.equal(config.exchanges.binance.reconnect_max_ms, 9000);
  });
  // A bad key brought by a merge is reported at the mapping holding the `<<`.
  await withFiles({
    "u.yaml": "exchanges:\n  binance: &feed\n    stale_after_msx: 1\n  coinbase:\n    <<: *feed\n",
  }, async ({ "u.yaml": file }) => {
    const error = await loadError({ args: ["--config", file!] });
    assert.match(
      error.message,
      new RegExp(`exchanges\\.coinbase\\.stale_after_msx: .*${RegExp.escape(file!)}:4`),
    );
  });
  await withFiles({ "u.yaml": "a: &n 5\nhttp:\n  <<: *n\n" }, async ({ "u.yaml": file }) => {
    const error = await loadError({ args: ["--config", file!] });
    assert.match(error.message, /YAML error: Merge sources must be maps/);
  });
});

Deno.test("a user file may leave a section empty", async () => {
  await withFiles({ "u.yaml": "http:\nlog:\n  level: warn\n" }, async ({ "u.yaml": file }) => {
    const config = await loadTestConfig({ args: ["--config", file!] });
    assert.equal(config.http.port, 8000);
    assert.equal(config.log.level, "warn");
  });
});

// ---------------------------------------------------------------------------
// Interpolation

Deno.test("interpolation substitutes ${VAR}, falls back to ${VAR:-default} and undoes $${", async () => {
  await withFiles({
    "u.yaml": [
      "engine:",
      "  name: ${NAME}-engine",
      "nats:",
      "  user: ${NATS_USER:-guest}",
      "  password: ${EMPTY:-fallback}",
      '  token: "$${NOT_A_VAR}"',
      "postgres:",
      "  application_name: ${UNSET_OK:-}",
    ].join("\n"),
  }, async ({ "u.yaml": file }) => {
    const config = await loadTestConfig({
      args: ["--config", file!],
      env: { NAME: "blue", EMPTY: "" },
    });
    assert.equal(config.engine.name, "blue-engine");
    assert.equal(config.nats.user, "guest", "unset takes the default");
    assert.equal(config.nats.password, "fallback", "empty takes the default");
    assert.equal(config.nats.token, "${NOT_A_VAR}", "$${ is a literal ${");
    assert.equal(config.postgres.application_name, "");
  });
});

Deno.test("interpolated values are coerced like env values", async () => {
  await withFiles({
    "u.yaml":
      "http:\n  port: ${PORT:-8000}\n  enabled: ${HTTP_ON}\n  api_key_hashes: ${HASHES:-}\n",
  }, async ({ "u.yaml": file }) => {
    const config = await loadTestConfig({
      args: ["--config", file!],
      env: { PORT: "8123", HTTP_ON: "false" },
    });
    assert.equal(config.http.port, 8123);
    assert.equal(config.http.enabled, false);
    assert.deepEqual(config.http.api_key_hashes, []);
  });
});

Deno.test("an unset ${VAR} without default is an error naming the key and the variable", async () => {
  await withFiles({
    "u.yaml": "nats:\n  password: ${NATS_SECRET}\nhttp:\n  port: ${PORT}\n",
  }, async ({ "u.yaml": file }) => {
    const error = await loadError({ args: ["--config", file!] });
    const lines = error.message.split("\n");
    assert.equal(lines.length, 3, error.message);
    assert.match(
      error.message,
      /nats\.password: environment variable NATS_SECRET is not set and \$\{NATS_SECRET\} has no default \(from .*u\.yaml:2\)/,
    );
    assert.match(error.message, /http\.port: environment variable PORT is not set/);
  });
});

Deno.test("interpolation applies to default.yaml too", async () => {
  const config = await loadTestConfig({
    env: { CLICKHOUSE_PASSWORD: "s3cr3t-ch", CLICKHOUSE_USER: "ops" },
  });
  assert.equal(config.clickhouse.password, "s3cr3t-ch");
  assert.equal(config.clickhouse.user, "ops");
});

Deno.test("env and flag values are taken literally, not interpolated", async () => {
  const config = await loadTestConfig({ env: { TRADEWIRE_NATS__PASSWORD: "a${B}c" } });
  assert.equal(config.nats.password, "a${B}c");
});

// ---------------------------------------------------------------------------
// Validation errors

Deno.test("every bad key is listed, one a line, with its path, reason and source", async () => {
  await withFiles({
    "u.yaml": "postgres:\n  pool_siz: 4\nbogus:\n  x: 1\nlog:\n  level: verbose\n",
  }, async ({ "u.yaml": file }) => {
    const error = await loadError({
      args: ["--config", file!, "--supervisor.backoff_jitter=2", "--postgres.sslmode", "sometimes"],
      env: { TRADEWIRE_HTTP__PORT: "abc", TRADEWIRE_HTTP__ENABLED: "yes" },
    });
    assert.equal(error.name, "ConfigError");
    const lines = error.message.split("\n");
    assert.equal(lines[0], "Invalid configuration:");
    const expected = [
      `  log.level: expected one of debug, info, warn, error, got "verbose" (from ${file}:6)`,
      `  http.enabled: expected true or false, got "yes" (from env TRADEWIRE_HTTP__ENABLED)`,
      `  http.port: expected an integer from 1 to 65535, got "abc" (from env TRADEWIRE_HTTP__PORT)`,
      `  postgres.sslmode: expected one of disable, allow, prefer, require, verify-ca, verify-full, got "sometimes" (from flag --postgres.sslmode)`,
      `  postgres.pool_siz: unknown key, did you mean pool_size? (from ${file}:2)`,
      `  supervisor.backoff_jitter: expected a number from 0 to 1, got 2 (from flag --supervisor.backoff_jitter)`,
      `  bogus: unknown section (from ${file}:3)`,
    ];
    assert.deepEqual(lines.slice(1).toSorted(), expected.toSorted());
    assert.equal(error.problems.length, expected.length);
    assert.ok(error.cause instanceof Error, "the zod error is the cause");
  });
});

Deno.test("a bad override key is reported with what a key must be, and its bad values too", async () => {
  await withFiles({
    "u.yaml": "risk:\n  symbols:\n    btc-usd: { max_order_qty: '5' }\n" +
      "validator:\n  overrides:\n    Binance:\n      spike_pct: 0\n      spkie_pct: 1\n",
  }, async ({ "u.yaml": file }) => {
    const error = await loadError({ args: ["--config", file!] });
    assert.deepEqual(
      error.message.split("\n").slice(1).toSorted(),
      [
        `  risk.symbols.btc-usd: bad key: expected a symbol such as BTC-USDT or AAPL (from ${file}:3)`,
        `  validator.overrides.Binance.spike_pct: expected a percentage > 0, got 0 (from ${file}:7)`,
        `  validator.overrides.Binance.spkie_pct: unknown key, did you mean spike_pct? (from ${file}:8)`,
        "  validator.overrides.Binance: bad key: expected an override key `exchange` or " +
        "`exchange/SYMBOL` (exchange one of binance, coinbase, kraken, alpaca; SYMBOL upper " +
        `case such as BTC-USDT or AAPL) (from ${file}:6)`,
      ].toSorted(),
    );
  });
});

Deno.test("keys under a mapping with free keys are converted to their type from env and flags", async () => {
  const config = await loadTestConfig({
    args: ["--validator.overrides.kraken.spike_pct=5", "--risk.symbols.ETH-USDT.max_order_qty=2"],
    env: {
      TRADEWIRE_VALIDATOR__OVERRIDES__BINANCE__MAX_LAG_MS: "1000",
      TRADEWIRE_RISK__SYMBOLS__AAPL__MAX_ORDER_NOTIONAL: "null",
    },
  });
  assert.deepEqual(config.validator.overrides, {
    binance: { max_lag_ms: 1000 },
    kraken: { spike_pct: 5 },
  });
  assert.deepEqual(config.risk.symbols, {
    AAPL: { max_order_notional: null },
    "ETH-USDT": { max_order_qty: "2" },
  });
});

Deno.test("an env variable names a key under a mapping with free keys in the case it needs", async () => {
  const config = await loadTestConfig({
    env: {
      TRADEWIRE_RISK__SYMBOLS__AAPL__MAX_ORDER_QTY: "5",
      TRADEWIRE_RISK__SYMBOLS__msft__MAX_ORDER_QTY: "6",
      "TRADEWIRE_RISK__SYMBOLS__BTC-USDT__MAX_ORDER_QTY": "7",
      TRADEWIRE_RISK__EXCHANGES__KRAKEN__PRICE_COLLAR_PCT: "3",
      TRADEWIRE_VALIDATOR__OVERRIDES__BINANCE__SPIKE_PCT: "4",
      "TRADEWIRE_VALIDATOR__OVERRIDES__COINBASE/BTC-USD__SPIKE_PCT": "2",
    },
  });
  assert.deepEqual(config.risk.symbols, {
    AAPL: { max_order_qty: "5" },
    MSFT: { max_order_qty: "6" },
    "BTC-USDT": { max_order_qty: "7" },
  });
  assert.equal(config.risk.exchanges.kraken?.price_collar_pct, "3");
  assert.deepEqual(config.validator.overrides, {
    binance: { spike_pct: 4 },
    "coinbase/BTC-USD": { spike_pct: 2 },
  });
});

Deno.test("a bad key under a mapping with free keys names the env variable that set it", async () => {
  const error = await loadError({
    env: {
      TRADEWIRE_RISK__SYMBOLS__NOT_A_SYMBOL__MAX_ORDER_QTY: "5",
      TRADEWIRE_RISK__SYMBOLS__AAPL__MAX_ORDER_QTX: "5",
    },
  });
  assert.deepEqual(error.message.split("\n").slice(1).toSorted(), [
    "  risk.symbols.AAPL.max_order_qtx: unknown key, did you mean max_order_qty? " +
    "(from env TRADEWIRE_RISK__SYMBOLS__AAPL__MAX_ORDER_QTX)",
    "  risk.symbols.NOT_A_SYMBOL: bad key: expected a symbol such as BTC-USDT or AAPL " +
    "(from env TRADEWIRE_RISK__SYMBOLS__NOT_A_SYMBOL__MAX_ORDER_QTY)",
  ]);
});

Deno.test("an unknown flag or a missing file does not hide the other bad keys", async () => {
  const flag = await loadError({ args: ["--bogus"], env: { TRADEWIRE_HTTP__PORT: "abc" } });
  assert.deepEqual(flag.message.split("\n").slice(1), [
    "  --bogus: unknown flag; settings are given as --section.key=value",
    `  http.port: expected an integer from 1 to 65535, got "abc" (from env TRADEWIRE_HTTP__PORT)`,
  ]);
  const dir = await Deno.makeTempDir();
  try {
    const missing = join(dir, "nope.yaml");
    const file = await loadError({
      args: ["--config", missing, "--log.level=loud"],
      env: { TRADEWIRE_HTTP__PORT: "abc" },
    });
    assert.deepEqual(file.message.split("\n").slice(1), [
      `  ${missing}: config file not found (named by --config)`,
      `  log.level: expected one of debug, info, warn, error, got "loud" (from flag --log.level)`,
      `  http.port: expected an integer from 1 to 65535, got "abc" (from env TRADEWIRE_HTTP__PORT)`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a misspelt TRADEWIRE_ variable is an unknown key", async () => {
  const error = await loadError({
    env: { TRADEWIRE_LOG_LEVEL: "warn", TRADEWIRE_HTTP__PROT: "1" },
  });
  assert.match(error.message, /\n {2}log_level: unknown section \(from env TRADEWIRE_LOG_LEVEL\)/);
  assert.match(
    error.message,
    /\n {2}http\.prot: unknown key, did you mean port\? \(from env TRADEWIRE_HTTP__PROT\)/,
  );
  const malformed = await loadError({ env: { TRADEWIRE_HTTP____PORT: "1" } });
  assert.match(malformed.message, /TRADEWIRE_HTTP____PORT: malformed name/);
});

Deno.test("URLs are checked for their scheme", async () => {
  const error = await loadError({
    env: {
      NATS_URL: "http://127.0.0.1:4222",
      DATABASE_URL: "mysql://db/tw",
      CLICKHOUSE_URL: "clickhouse://ch:9000",
    },
  });
  assert.match(error.message, /nats\.url: expected nats:\/\/, tls:\/\/, ws:\/\/ or wss:\/\/ URLs/);
  assert.match(error.message, /postgres\.url: expected a postgres:\/\/ or postgresql:\/\/ URL/);
  assert.match(error.message, /clickhouse\.url: expected a http:\/\/ or https:\/\/ URL/);
});

Deno.test("nats.url takes a comma-separated list of servers", async () => {
  const config = await loadTestConfig({
    env: { NATS_URL: "nats://a:4222, tls://b:4222,wss://c:443" },
  });
  assert.deepEqual(natsServers(config.nats.url), ["nats://a:4222", "tls://b:4222", "wss://c:443"]);
  const error = await loadError({ env: { NATS_URL: "nats://a:4222,,nats://b" } });
  assert.match(error.message, /nats\.url: expected/);
});

Deno.test("api key hashes must be sha256 hex and are kept lower-case", async () => {
  const config = await loadTestConfig({ args: [`--http.api_key_hashes=${"AB".repeat(32)}`] });
  assert.deepEqual(config.http.api_key_hashes, ["ab".repeat(32)]);
  const error = await loadError({ args: ["--http.api_key_hashes", `${GOOD_HASH},my-raw-key`] });
  assert.match(
    error.message,
    /http\.api_key_hashes\[1\]: expected a sha256 hash: 64 hex characters, got a string of 10 characters/,
  );
});

Deno.test("a raw API key put in http.api_key_hashes by mistake is not echoed", async () => {
  const error = await loadError({ env: { TRADEWIRE_HTTP__API_KEY_HASHES: "ApiKeyR12x" } });
  assert.match(error.message, /http\.api_key_hashes\[0\]: .*got a string of 10 characters/);
  assert.doesNotMatch(error.message, /ApiKeyR12x/);
});

Deno.test("clickhouse.database must be an identifier", async () => {
  const error = await loadError({ args: ["--clickhouse.database=trade-wire"] });
  assert.match(error.message, /clickhouse\.database: expected an identifier/);
});

Deno.test("backoff_max_ms below backoff_initial_ms is an error", async () => {
  const error = await loadError({
    args: ["--supervisor.backoff_initial_ms=500", "--supervisor.backoff_max_ms=100"],
  });
  assert.match(
    error.message,
    /supervisor\.backoff_max_ms: must be at least supervisor\.backoff_initial_ms/,
  );
});

Deno.test("a number where YAML needs a string is reported without revealing a password", async () => {
  await withFiles({ "u.yaml": "nats:\n  password: 0123\n" }, async ({ "u.yaml": file }) => {
    const error = await loadError({ args: ["--config", file!] });
    assert.match(
      error.message,
      /nats\.password: expected a string, got a number \(\*\*\*\); quote it/,
    );
    // The message names the file, whose random temporary path may hold "123" itself.
    assert.doesNotMatch(error.message.replaceAll(file!, "<file>"), /123/);
  });
});

// ---------------------------------------------------------------------------
// Coercion

Deno.test("env and flag strings are coerced per the schema; strings stay strings", async () => {
  const config = await loadTestConfig({
    env: {
      TRADEWIRE_HTTP__ENABLED: "false",
      TRADEWIRE_MIGRATIONS__APPLY_ON_START: "TRUE",
      TRADEWIRE_SUPERVISOR__BACKOFF_JITTER: "0.5",
      TRADEWIRE_MIGRATIONS__LOCK_KEY: "-42",
      TRADEWIRE_NATS__PASSWORD: "0123",
      TRADEWIRE_ENGINE__NAME: "true",
      TRADEWIRE_HTTP__API_KEY_HASHES: ` ${GOOD_HASH} , ${"b".repeat(64)} `,
    },
    args: ["--supervisor.intensity", "0", "--nats.token=007"],
  });
  assert.equal(config.http.enabled, false);
  assert.equal(config.migrations.apply_on_start, true);
  assert.equal(config.supervisor.backoff_jitter, 0.5);
  assert.equal(config.migrations.lock_key, -42);
  assert.equal(config.supervisor.intensity, 0);
  assert.equal(config.nats.password, "0123");
  assert.equal(config.nats.token, "007");
  assert.equal(config.engine.name, "true");
  assert.deepEqual(config.http.api_key_hashes, [GOOD_HASH, "b".repeat(64)]);
});

Deno.test("an empty list value gives an empty array", async () => {
  const config = await loadTestConfig({ env: { TRADEWIRE_HTTP__API_KEY_HASHES: "" } });
  assert.deepEqual(config.http.api_key_hashes, []);
});

Deno.test("a fractional number for an integer key is an error", async () => {
  const error = await loadError({ args: ["--postgres.pool_size=2.5"] });
  assert.match(error.message, /postgres\.pool_size: expected an integer from 1 to 200, got 2\.5/);
});

// ---------------------------------------------------------------------------
// Command line

Deno.test("cliFlags reads --config (each, in order), --print-config and overrides", () => {
  assert.deepEqual(
    cliFlags([
      "--print-config",
      "--config=a.yaml",
      "--http.port",
      "9000",
      "--config",
      "b.yaml",
      "--http.enabled",
    ]),
    {
      printConfig: true,
      configPaths: ["a.yaml", "b.yaml"],
      overrides: { "http.port": "9000", "http.enabled": "true" },
    },
  );
  assert.deepEqual(cliFlags([]), { configPaths: [], printConfig: false, overrides: {} });
});

Deno.test("--print-config is not a key", async () => {
  const config = await loadTestConfig({ args: ["--print-config", "--http.port=9001"] });
  assert.equal(config.http.port, 9001);
});

Deno.test("cliFlags rejects every argument it does not understand", () => {
  assert.throws(() => cliFlags(["stray", "--verbose", "--http..port=1", "--config"]), (error) => {
    assert.ok(error instanceof ConfigError);
    assert.equal(error.problems.length, 4);
    assert.match(error.message, /argument 1 \(5 characters, not shown\): unexpected argument/);
    assert.match(error.message, /--verbose: unknown flag/);
    assert.match(error.message, /--http\.\.port: malformed key/);
    assert.match(error.message, /--config: needs a file path/);
    return true;
  });
});

// ---------------------------------------------------------------------------
// Redaction

Deno.test("redactConfig hides passwords, tokens and URL credentials but shows hashes", async () => {
  const config = await loadTestConfig({
    env: {
      DATABASE_URL: "postgres://app:hunter2@db:5432/tw?sslpassword=pem-pass",
      CLICKHOUSE_PASSWORD: "ch-secret",
      CLICKHOUSE_URL: "https://ops:ch-url-secret@ch:8443",
      NATS_URL: "nats://natstoken@n1:4222,nats://u:natspw@n2:4222",
      TRADEWIRE_NATS__PASSWORD: "nats-secret",
      TRADEWIRE_NATS__TOKEN: "tok-secret",
      TRADEWIRE_HTTP__API_KEY_HASHES: GOOD_HASH,
    },
  });
  const shown = redactConfig(config) as Config;
  const text = JSON.stringify(shown);
  for (
    const secret of ["hunter2", "pem-pass", "ch-secret", "ch-url-secret", "natstoken", "natspw"]
  ) {
    assert.ok(!text.includes(secret), `${secret} leaked: ${text}`);
  }
  assert.ok(!text.includes("nats-secret") && !text.includes("tok-secret"));
  assert.equal(shown.postgres.url, "postgres://app:***@db:5432/tw?sslpassword=***");
  assert.equal(shown.clickhouse.url, "https://ops:***@ch:8443");
  assert.equal(shown.nats.url, "nats://***@n1:4222,nats://u:***@n2:4222");
  assert.equal(shown.nats.password, "***");
  assert.equal(shown.nats.token, "***");
  assert.equal(shown.clickhouse.password, "***");
  assert.deepEqual(shown.http.api_key_hashes, [GOOD_HASH]);
  assert.equal(shown.http.port, 8000);
  assert.equal(config.nats.password, "nats-secret", "the config itself is untouched");
});

Deno.test("redactConfig leaves empty secrets visible as empty", async () => {
  const shown = redactConfig(await loadTestConfig()) as Config;
  assert.equal(shown.nats.password, "");
  assert.equal(shown.postgres.url, DEFAULT_CONFIG.postgres.url);
});

Deno.test("bad values in error messages have URL passwords redacted", async () => {
  const error = await loadError({ env: { DATABASE_URL: "mysql://app:hunter2@db/tw" } });
  assert.match(error.message, /got "mysql:\/\/app:\*\*\*@db\/tw"/);
  assert.doesNotMatch(error.message, /hunter2/);
});

Deno.test("a config error never echoes a URL's password, even one that does not parse", async () => {
  // Passwords as generated (base64: `/`, `+`, `=`) and put in the URL without percent-encoding.
  for (
    const [url, password] of [
      ["postgres://tw:Zm9v+YmFy/YmF6==@db.example.com:5432/tw", "Zm9v+YmFy/YmF6=="],
      ["postgres://tw:abc/def@db:5432/tw", "abc/def"],
      ["mysql://tw:hun ter2@db/tw", "hun ter2"],
    ]
  ) {
    const error = await loadError({ env: { DATABASE_URL: url! } });
    assert.match(error.message, /postgres\.url: expected a postgres:\/\/ or postgresql:\/\/ URL/);
    assert.ok(!error.message.includes(password!), error.message);
    assert.match(error.message, /got "(postgres|mysql):\/\/tw:\*\*\*@db/);
  }
});

Deno.test("redactConfig hides a URL password holding white space, a quote or a backslash", async () => {
  for (const password of ["hun ter2", 'p"w0rd', "back\\slash"]) {
    const config = await loadTestConfig({
      env: { DATABASE_URL: `postgres://tw:${password}@127.0.0.1:5432/tw` },
    });
    const shown = redactConfig(config) as Config;
    assert.equal(shown.postgres.url, "postgres://tw:***@127.0.0.1:5432/tw");
  }
});

Deno.test("redactConfig hides the password of an accepted URL whose user name holds white space", async () => {
  // The URL parser accepts these (it drops tabs and new lines, keeps a space in a non-special
  // URL's user name), so the engine runs with them, and --print-config prints them.
  for (
    const url of [
      "postgres://tw\n:Hunter2pwQ7@127.0.0.1:5432/tw",
      "postgres://t w:Hunter2pwQ7@127.0.0.1:5432/tw",
      "postgres:// tw:Hunter2pwQ7@127.0.0.1:5432/tw",
    ]
  ) {
    const config = await loadTestConfig({ env: { DATABASE_URL: url } });
    const shown = redactConfig(config) as Config;
    assert.ok(
      !JSON.stringify(shown).includes("Hunter2pwQ7"),
      `printed ${JSON.stringify(url)} as ${JSON.stringify(shown.postgres.url)}`,
    );
  }
});

Deno.test("redactConfig hides the Alpaca key ids as well as the secret keys", async () => {
  const config = await loadTestConfig({
    env: {
      TRADEWIRE_EXCHANGES__ALPACA__KEY_ID: "AlpKeyIdR12x",
      TRADEWIRE_EXCHANGES__ALPACA__SECRET_KEY: "AlpSecretR12x",
      TRADEWIRE_BROKERS__ALPACA__KEY_ID: "AlpKeyIdR12x",
      TRADEWIRE_BROKERS__ALPACA__SECRET_KEY: "AlpSecretR12x",
    },
  });
  const shown = redactConfig(config) as Config;
  assert.equal(shown.exchanges.alpaca.key_id, "***");
  assert.equal(shown.brokers.alpaca.key_id, "***");
  assert.doesNotMatch(JSON.stringify(shown), /AlpKeyIdR12x|AlpSecretR12x/);
});

// ---------------------------------------------------------------------------
// Production profile

Deno.test("production accepts a secure configuration", async () => {
  const config = await loadTestConfig({ args: PRODUCTION_OK });
  assert.equal(config.engine.profile, "production");
});

Deno.test("production refuses every insecure setting at once", async () => {
  const error = await loadError({
    args: ["--engine.profile=production", "--log.level=debug"],
    env: {
      CLICKHOUSE_PASSWORD: "ClickHouse",
      TRADEWIRE_NATS__USER: "engine",
    },
  });
  const text = error.message;
  assert.match(
    text,
    /\n {2}http\.api_key_hashes: the production profile requires at least one API key hash/,
  );
  assert.match(text, /\n {2}postgres\.url: the production profile requires a password in the URL/);
  assert.match(
    text,
    /\n {2}clickhouse\.password: a well-known default password, refused by the production profile/,
  );
  assert.match(
    text,
    /\n {2}nats\.password: the production profile requires a password when nats\.user is set/,
  );
  assert.match(
    text,
    /\n {2}log\.level: debug logging is refused by the production profile .*\(from flag --log\.level\)/,
  );
  assert.equal(error.problems.length, 5, text);
});

Deno.test("production refuses well-known passwords wherever they are", async () => {
  for (
    const [args, key] of [
      [["--postgres.url=postgres://postgres:postgres@db/tw"], "postgres.url"],
      [["--postgres.url=postgres://app:ChangeMe@db/tw"], "postgres.url"],
      [["--clickhouse.url=http://default:admin@ch:8123"], "clickhouse.url"],
      [["--nats.user=engine", "--nats.password=secret"], "nats.password"],
      [["--nats.token=tradewire"], "nats.token"],
      [["--nats.url=nats://u:password@n:4222"], "nats.url"],
    ] as const
  ) {
    const error = await loadError({ args: [...PRODUCTION_OK, ...args] });
    assert.deepEqual(error.problems.map((p) => p.key), [key], error.message);
    assert.match(error.message, /well-known default password/);
  }
});

Deno.test("production refuses an empty ClickHouse password unless clickhouse.url has one", async () => {
  const withoutPassword = PRODUCTION_OK.filter((arg) => !arg.startsWith("--clickhouse."));
  const error = await loadError({ args: withoutPassword });
  assert.deepEqual(error.problems.map((p) => p.key), ["clickhouse.password"], error.message);
  assert.match(error.message, /requires a ClickHouse password/);

  const config = await loadTestConfig({
    args: [...withoutPassword, "--clickhouse.url=http://tradewire:Qm7tRz4wKp2n@ch:8123"],
  });
  assert.equal(config.clickhouse.password, "");
});

Deno.test("money and basis-point keys beyond what they can hold are refused, naming each key", async () => {
  const error = await loadError({
    args: [
      "--portfolio.starting_cash=1000000000000",
      "--brokers.paper.commission_min=0.123456789",
      "--brokers.paper.commission_bps=10001",
      "--brokers.paper.slippage_bps=20000",
    ],
  });
  assert.deepEqual(error.problems.map((p) => p.key).sort(), [
    "brokers.paper.commission_bps",
    "brokers.paper.commission_min",
    "brokers.paper.slippage_bps",
    "portfolio.starting_cash",
  ]);
  assert.match(error.message, /starting_cash: expected at most 12 integer digits and 8 decimals/);
  assert.match(error.message, /slippage_bps: expected basis points from 0 to below 10000/);
  const config = await loadTestConfig({
    args: ["--portfolio.starting_cash=999999999999.5", "--brokers.paper.slippage_bps=9999.5"],
  });
  assert.equal(config.portfolio.starting_cash, "999999999999.5");
});

Deno.test("a PostgreSQL URL's sslmode must be one of libpq's, named at load; postgres.sslmode takes them all", async () => {
  const error = await loadError({ env: { DATABASE_URL: "postgres://db/tw?sslmode=requir" } });
  assert.deepEqual(error.problems.map((p) => p.key), ["postgres.url"]);
  assert.match(error.message, /the URL's sslmode must be one of disable, allow, prefer, require/);
  const missing = await loadError({
    env: { DATABASE_URL: "postgres://db/tw?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem" },
  });
  assert.match(
    missing.message,
    /postgres\.url: the URL's sslrootcert \/nonexistent\/ca\.pem cannot be read/,
  );
  for (const mode of ["allow", "verify-ca"]) {
    const config = await loadTestConfig({
      env: { DATABASE_URL: `postgres://db/tw?sslmode=${mode}`, TRADEWIRE_POSTGRES__SSLMODE: mode },
    });
    assert.equal(config.postgres.sslmode, mode);
  }
});

Deno.test("a decimal written as a YAML number loads as the decimal it says, or is refused when a float cannot hold it", async () => {
  await withFiles({
    "small.yaml":
      "risk:\n  max_order_qty: 0.0000001\nbrokers:\n  paper:\n    commission_min: 0.00000001\n",
    "long.yaml": "risk:\n  max_order_notional: 123456789012.12345678\n",
    "quoted.yaml": 'risk:\n  max_order_notional: "123456789012.12345678"\n',
  }, async (files) => {
    const small = await loadTestConfig({ args: ["--config", files["small.yaml"]!] });
    assert.equal(small.risk.max_order_qty, "0.0000001");
    assert.equal(small.brokers.paper.commission_min, "0.00000001");
    const error = await loadError({ args: ["--config", files["long.yaml"]!] });
    assert.deepEqual(error.problems.map((p) => p.key), ["risk.max_order_notional"]);
    assert.match(error.message, /as a string when it has more than 15 significant digits/);
    const quoted = await loadTestConfig({ args: ["--config", files["quoted.yaml"]!] });
    assert.equal(quoted.risk.max_order_notional, "123456789012.12345678");
  });
});

Deno.test("risk.max_open_orders beyond what NUMERIC(20,8) holds, and a 100% paper slippage, are refused at load", async () => {
  const error = await loadError({
    args: ["--risk.max_open_orders=10000000000000", "--brokers.paper.slippage_bps=10000"],
  });
  assert.deepEqual(error.problems.map((p) => p.key).sort(), [
    "brokers.paper.slippage_bps",
    "risk.max_open_orders",
  ]);
  assert.match(error.message, /max_open_orders: expected an integer from 0 to 999999999999/);
  assert.match(error.message, /slippage_bps: expected basis points from 0 to below 10000/);
  const config = await loadTestConfig({ args: ["--risk.max_open_orders=999999999999"] });
  assert.equal(config.risk.max_open_orders, 999_999_999_999);
});

Deno.test("a decimal key from the environment or a flag keeps its exact text: 16 digits stay whole, 1e6 is 1000000", async () => {
  const cash = "10000000.12345678"; // 16 significant digits, within NUMERIC(20,8)
  const fromEnv = await loadTestConfig({ env: { TRADEWIRE_PORTFOLIO__STARTING_CASH: cash } });
  assert.equal(fromEnv.portfolio.starting_cash, cash);
  const fromFlag = await loadTestConfig({ args: [`--portfolio.starting_cash=${cash}`] });
  assert.equal(fromFlag.portfolio.starting_cash, cash);
  const exponent = await loadTestConfig({
    env: { TRADEWIRE_PORTFOLIO__STARTING_CASH: "1e6", TRADEWIRE_RISK__MAX_ORDER_NOTIONAL: "1e6" },
  });
  assert.equal(exponent.portfolio.starting_cash, "1000000");
  assert.equal(exponent.risk.max_order_notional, "1000000");
  const limit = await loadTestConfig({ args: ["--risk.max_order_qty=123456789012.12345678"] });
  assert.equal(limit.risk.max_order_qty, "123456789012.12345678");
});

Deno.test("production refuses a malformed api key hash", async () => {
  const error = await loadError({
    args: [...PRODUCTION_OK, "--http.api_key_hashes=not-a-hash"],
  });
  assert.match(error.message, /http\.api_key_hashes\[0\]: expected a sha256 hash/);
});

Deno.test("production refusals are reported alongside schema errors", async () => {
  const error = await loadError({ args: ["--engine.profile=production", "--http.port=abc"] });
  assert.match(error.message, /http\.port: expected an integer/);
  assert.match(error.message, /postgres\.url: the production profile requires a password/);
});

Deno.test("production does not need API key hashes when HTTP is disabled", async () => {
  const args = PRODUCTION_OK.filter((arg) => !arg.startsWith("--http.")).concat(
    "--http.enabled=false",
  );
  const config = await loadTestConfig({ args });
  assert.equal(config.http.enabled, false);
});

Deno.test("development accepts the insecure defaults", async () => {
  const config = await loadTestConfig({ args: ["--log.level=debug"] });
  assert.equal(config.engine.profile, "development");
});

// ---------------------------------------------------------------------------
// API keys

Deno.test("hashApiKey returns the sha256 hex of the key", async () => {
  assert.equal(
    await hashApiKey("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("verifyApiKey accepts a key whose hash is listed and nothing else", async () => {
  const hashes = [
    GOOD_HASH,
    await hashApiKey("k3y-one"),
    (await hashApiKey("k3y-two")).toUpperCase(),
  ];
  assert.equal(await verifyApiKey("k3y-one", hashes), true);
  assert.equal(await verifyApiKey("k3y-two", hashes), true);
  assert.equal(await verifyApiKey("k3y-three", hashes), false);
  assert.equal(await verifyApiKey("k3y-one", []), false);
  assert.equal(await verifyApiKey(hashes[1]!, hashes), false, "the hash itself is not a key");
});

Deno.test("a hash made by hashApiKey is accepted by the schema and then verifies", async () => {
  const hash = await hashApiKey("engine-key");
  const config = await loadTestConfig({ env: { TRADEWIRE_HTTP__API_KEY_HASHES: hash } });
  assert.equal(await verifyApiKey("engine-key", config.http.api_key_hashes), true);
});

Deno.test("DEFAULT_CONFIG_FILE is config/default.yaml next to the module", () => {
  assert.match(DEFAULT_CONFIG_FILE, /config[/\\]default\.yaml$/);
});

Deno.test("exchange sections validate symbols, channels and depths and redact Alpaca's secret", async () => {
  const config = await loadConfig({
    args: [],
    env: {
      TRADEWIRE_EXCHANGES__KRAKEN__BOOK_DEPTH: "25",
      TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: "BTC-USDT,ETH-USDT",
      TRADEWIRE_EXCHANGES__ALPACA__SECRET_KEY: "alpaca-secret-value",
    },
  });
  assert.equal(config.exchanges.kraken.book_depth, 25);
  assert.deepEqual(config.exchanges.binance.symbols, ["BTC-USDT", "ETH-USDT"]);
  assert.doesNotMatch(JSON.stringify(redactConfig(config)), /alpaca-secret-value/);
  assert.ok(config.exchanges.binance.symbols.length >= 2);
  const defaults = await loadConfig({ args: [], env: {} });
  for (const venue of ["binance", "coinbase", "kraken"] as const) {
    assert.ok(defaults.exchanges[venue].symbols.length >= 20, venue);
  }

  try {
    await loadConfig({
      args: [],
      env: {
        TRADEWIRE_EXCHANGES__KRAKEN__BOOK_DEPTH: "7",
        TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: "btcusdt",
        TRADEWIRE_EXCHANGES__COINBASE__CHANNELS: "trades,candles",
        TRADEWIRE_EXCHANGES__ALPACA__FEED: "nasdaq",
      },
    });
    assert.fail("expected a ConfigError");
  } catch (e) {
    assert.ok(e instanceof ConfigError);
    for (
      const key of [
        "exchanges.kraken.book_depth",
        "exchanges.binance.symbols[0]",
        "exchanges.coinbase.channels[1]",
        "exchanges.alpaca.feed",
      ]
    ) assert.ok(e.message.includes(key), `${key} in ${e.message}`);
  }
});

Deno.test("Binance symbols whose combined-stream URL Binance would not open are refused up front", async () => {
  // 200 symbols with the default channels make a URL of ~15,000 characters; Binance opens
  // nothing over ~8,000, and the feed would reconnect forever.
  const symbols = Array.from({ length: 200 }, (_, i) => `COIN${i}-USDT`).join(",");
  const error = await loadError({ env: { TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: symbols } });
  assert.equal(error.problems.length, 1, error.message);
  assert.equal(error.problems[0]!.key, "exchanges.binance.symbols");
  assert.match(
    error.message,
    /exchanges\.binance\.symbols: 200 symbols with channels trades, book, top make a combined-stream URL of \d+ characters, over the 8000 Binance opens on one connection \(the first 1\d\d fit\): follow fewer symbols or channels/,
  );
  // Fewer channels fit more symbols; a disabled feed opens nothing, so it is not checked.
  const tradesOnly = await loadTestConfig({
    env: {
      TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: symbols,
      TRADEWIRE_EXCHANGES__BINANCE__CHANNELS: "trades",
    },
  });
  assert.equal(tradesOnly.exchanges.binance.symbols.length, 200);
  await loadTestConfig({
    env: {
      TRADEWIRE_EXCHANGES__BINANCE__SYMBOLS: symbols,
      TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "false",
    },
  });
});

Deno.test("a number-or-null key takes a number or null from the environment", async () => {
  const config = await loadConfig({
    args: [],
    env: { TRADEWIRE_RISK__MAX_OPEN_ORDERS: "1000000", TRADEWIRE_RISK__MAX_ORDER_QTY: "null" },
  });
  assert.equal(config.risk.max_open_orders, 1_000_000);
  assert.equal(config.risk.max_order_qty, null);
  const other = await loadConfig({
    args: [],
    env: { TRADEWIRE_RISK__MAX_OPEN_ORDERS: "null", TRADEWIRE_RISK__MAX_ORDER_QTY: "12.5" },
  });
  assert.equal(other.risk.max_open_orders, null);
  assert.equal(other.risk.max_order_qty, "12.5");
});

Deno.test("a risk limit NUMERIC(20,8) cannot hold is refused, naming its key, overrides included", async () => {
  const range =
    "expected at most 12 integer digits and 8 decimals (NUMERIC(20,8)), or null (no limit)";
  const error = await loadError({
    env: {
      TRADEWIRE_RISK__MAX_GROSS_EXPOSURE: "1000000000000",
      TRADEWIRE_RISK__DAILY_LOSS_LIMIT: "0.000000001",
      TRADEWIRE_RISK__EXCHANGES__KRAKEN__MAX_ORDER_NOTIONAL: "1000000000000",
      TRADEWIRE_RISK__SYMBOLS__AAPL__PRICE_COLLAR_PCT: "0.000000001",
    },
  });
  assert.deepEqual(error.message.split("\n").slice(1).toSorted(), [
    `  risk.daily_loss_limit: ${range}, got "0.000000001" (from env TRADEWIRE_RISK__DAILY_LOSS_LIMIT)`,
    `  risk.exchanges.kraken.max_order_notional: ${range}, got "1000000000000" ` +
    "(from env TRADEWIRE_RISK__EXCHANGES__KRAKEN__MAX_ORDER_NOTIONAL)",
    `  risk.max_gross_exposure: ${range}, got "1000000000000" ` +
    "(from env TRADEWIRE_RISK__MAX_GROSS_EXPOSURE)",
    `  risk.symbols.AAPL.price_collar_pct: ${range}, got "0.000000001" ` +
    "(from env TRADEWIRE_RISK__SYMBOLS__AAPL__PRICE_COLLAR_PCT)",
  ]);
  const widest = await loadTestConfig({
    env: {
      TRADEWIRE_RISK__MAX_GROSS_EXPOSURE: "999999999999.99999999",
      TRADEWIRE_RISK__DAILY_LOSS_LIMIT: "0.00000001",
    },
  });
  assert.equal(widest.risk.max_gross_exposure, "999999999999.99999999");
  assert.equal(widest.risk.daily_loss_limit, "0.00000001");
});
