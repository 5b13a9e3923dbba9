/**
 * The production profile's refusals (`productionProblems` in config/schema.ts)
 * as `loadConfig` reports them: credentials written inside `nats.url` are
 * judged like `nats.token`, `nats.user` and `nats.password`; a fractional value
 * for an integer key is reported together with the refusals and the checks
 * across keys, not instead of them; the missing API key hash names the task
 * that makes one.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError, configSchema, loadConfig } from "../config/mod.ts";

const SECURE = {
  TRADEWIRE_ENGINE__PROFILE: "production",
  DATABASE_URL: "postgres://app:Xy7-long-pw@db:5432/tw",
  TRADEWIRE_HTTP__API_KEY_HASHES: "a".repeat(64),
  CLICKHOUSE_PASSWORD: "Ch-9f2Qx7-long",
};

async function problems(env: Record<string, string>): Promise<string[]> {
  try {
    await loadConfig({ args: [], env });
    return [];
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    return error.problems.map((p) => `${p.key}: ${p.reason}`);
  }
}

Deno.test("production refuses a well-known NATS token in nats://token@host as it does in nats.token", async () => {
  // The same credential through the key is refused…
  const viaKey = await problems({ ...SECURE, TRADEWIRE_NATS__TOKEN: "secret" });
  assert.ok(viaKey.some((p) => p.startsWith("nats.token:")), viaKey.join("\n"));
  // …but through the URL (the README's documented `nats://token@host` form) it is let through.
  const viaUrl = await problems({ ...SECURE, NATS_URL: "nats://secret@127.0.0.1:4222" });
  assert.ok(
    viaUrl.some((p) => p.startsWith("nats.url:")),
    `a well-known token in nats.url was accepted: ${JSON.stringify(viaUrl)}`,
  );
});

Deno.test("production refuses a NATS user without a password given in nats.url", async () => {
  const viaKeys = await problems({ ...SECURE, TRADEWIRE_NATS__USER: "alice" });
  assert.ok(viaKeys.some((p) => p.startsWith("nats.password:")), viaKeys.join("\n"));
  const viaUrl = await problems({ ...SECURE, NATS_URL: "nats://alice:@127.0.0.1:4222" });
  assert.ok(
    viaUrl.some((p) => p.startsWith("nats.url:")),
    `a NATS user with an empty password in nats.url was accepted: ${JSON.stringify(viaUrl)}`,
  );
});

Deno.test("a fractional value for an integer key does not hide the other bad keys (production refusals, consistency)", async () => {
  // Every problem here is reported when the port is merely out of range…
  const outOfRange = await problems({
    TRADEWIRE_ENGINE__PROFILE: "production",
    TRADEWIRE_HTTP__PORT: "70000",
    DATABASE_URL: "postgres://app@db:5432/tw",
    CLICKHOUSE_PASSWORD: SECURE.CLICKHOUSE_PASSWORD,
  });
  const keys = (list: string[]) => list.map((p) => p.slice(0, p.indexOf(":"))).sort();
  assert.deepEqual(keys(outOfRange), ["http.api_key_hashes", "http.port", "postgres.url"]);
  // …but a port of 8000.5 hides the production profile's refusals: an operator fixes the port and
  // only then learns the API has no key and the database no password.
  const fractional = await problems({
    TRADEWIRE_ENGINE__PROFILE: "production",
    TRADEWIRE_HTTP__PORT: "8000.5",
    DATABASE_URL: "postgres://app@db:5432/tw",
    CLICKHOUSE_PASSWORD: SECURE.CLICKHOUSE_PASSWORD,
  });
  assert.deepEqual(keys(fractional), ["http.api_key_hashes", "http.port", "postgres.url"]);
  // The same for the cross-key checks (reconnect_max_wait_ms below reconnect_wait_ms).
  const consistency = await problems({
    TRADEWIRE_POSTGRES__POOL_SIZE: "2.5",
    TRADEWIRE_NATS__RECONNECT_WAIT_MS: "500",
    TRADEWIRE_NATS__RECONNECT_MAX_WAIT_MS: "100",
  });
  assert.deepEqual(keys(consistency), ["nats.reconnect_max_wait_ms", "postgres.pool_size"]);
});

Deno.test("the schema alone reports a fractional integer together with the production refusals", () => {
  const result = configSchema.safeParse({
    engine: { profile: "production" },
    http: { port: 8000.5 },
    postgres: { url: "postgres://app@db:5432/tw" },
    clickhouse: { password: SECURE.CLICKHOUSE_PASSWORD },
  });
  assert.ok(!result.success);
  assert.deepEqual(
    result.error.issues.map((issue) => issue.path.join(".")).sort(),
    ["http.api_key_hashes", "http.port", "postgres.url"],
  );
});

Deno.test("a value both fractional and out of range is one problem, and so is a fractional book depth", async () => {
  const reported = await problems({
    TRADEWIRE_HTTP__PORT: "70000.5",
    TRADEWIRE_EXCHANGES__KRAKEN__BOOK_DEPTH: "10.5",
    TRADEWIRE_MIGRATIONS__LOCK_KEY: "1.5",
  });
  assert.deepEqual(reported.sort(), [
    "exchanges.kraken.book_depth: expected one of 10, 25, 100, 500, 1000, got 10.5",
    "http.port: expected an integer from 1 to 65535, got 70000.5",
    "migrations.lock_key: expected an integer, got 1.5",
  ]);
});

Deno.test("credentials in nats.url that the production profile accepts", async () => {
  // A strong token, or a user with a strong password, in the URL; several URLs with one problem
  // report it once.
  assert.deepEqual(await problems({ ...SECURE, NATS_URL: "nats://Tk-9f2Qx7@127.0.0.1:4222" }), []);
  assert.deepEqual(
    await problems({ ...SECURE, NATS_URL: "nats://alice:Pw-9f2Qx7@127.0.0.1:4222" }),
    [],
  );
  const twice = await problems({ ...SECURE, NATS_URL: "nats://alice:@a:4222,nats://bob:@b:4222" });
  assert.equal(twice.length, 1, twice.join("\n"));
  // The development profile refuses none of it.
  assert.deepEqual(await problems({ NATS_URL: "nats://secret@127.0.0.1:4222" }), []);
});

Deno.test("the missing API key hash names the task that makes one", async () => {
  const reported = await problems({
    TRADEWIRE_ENGINE__PROFILE: "production",
    DATABASE_URL: SECURE.DATABASE_URL,
    CLICKHOUSE_PASSWORD: SECURE.CLICKHOUSE_PASSWORD,
  });
  assert.deepEqual(reported, [
    "http.api_key_hashes: the production profile requires at least one API key hash " +
    "(make one with `deno task hash-key KEY`)",
  ]);
});
