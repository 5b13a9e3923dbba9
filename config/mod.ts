/**
 * Tradewire's configuration: `config/default.yaml`, then user files
 * (`--config PATH`, repeatable and layered in order, or else
 * `TRADEWIRE_CONFIG`), then environment variables
 * (`NATS_URL`, `DATABASE_URL`, `CLICKHOUSE_URL`, `TRADEWIRE_<SECTION>__<KEY>`),
 * then `--section.key=value` flags, validated by one strict zod schema.
 * Problems are reported together in a {@linkcode ConfigError}.
 *
 * @example
 * ```ts
 * import { cliFlags, loadConfig, redactConfig } from "./config/mod.ts";
 *
 * const config = await loadConfig(); // Deno.args and Deno.env
 * if (cliFlags(Deno.args).printConfig) {
 *   console.log(JSON.stringify(redactConfig(config), null, 2));
 * }
 * ```
 *
 * @module
 */

export {
  CLICKHOUSE_URL_SCHEMES,
  type ClickhouseConfig,
  type Config,
  type ConfigInput,
  configSchema,
  DEFAULT_CONFIG,
  type EngineConfig,
  hashApiKey,
  type HttpConfig,
  type LogConfig,
  MAX_TIMER_MS,
  type MigrationsConfig,
  NATS_URL_SCHEMES,
  type NatsConfig,
  natsServers,
  POSTGRES_URL_SCHEMES,
  type PostgresConfig,
  productionProblems,
  type Profile,
  PROFILES,
  type SettingProblem,
  SSL_MODES,
  type SslMode,
  type SupervisorConfig,
  verifyApiKey,
  WEAK_API_KEY_HASHES,
  WEAK_PASSWORDS,
} from "./schema.ts";
export {
  type CliFlags,
  cliFlags,
  CONFIG_ENV_VAR,
  ConfigError,
  type ConfigProblem,
  CONVENTIONAL_ENV,
  DEFAULT_CONFIG_FILE,
  ENV_PREFIX,
  loadConfig,
  type LoadConfigOptions,
  redactConfig,
} from "./load.ts";
