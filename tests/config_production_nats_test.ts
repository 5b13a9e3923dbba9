/**
 * The production profile refuses a NATS connection without credentials.
 * Over NATS, whoever reaches the server places orders (`signals.<strategy>`)
 * and flips the kill switch — the actions the HTTP API keys guard — yet the
 * profile refused only weak or half-given NATS credentials, and took none at
 * all; compose.yaml's NATS had no authentication. Now a NATS server on
 * another host needs `nats.user`/`nats.password`, `nats.token` or credentials
 * in `nats.url`, unless `nats.allow_anonymous: true`; compose.yaml's NATS
 * wants a user and NATS_PASSWORD, which the engine's NATS_URL carries.
 */

import assert from "node:assert/strict";
import { parse } from "yaml";
import { ConfigError, loadConfig } from "../config/mod.ts";

const PRODUCTION_ENV = {
  TRADEWIRE_ENGINE__PROFILE: "production",
  DATABASE_URL: "postgres://tw:Xk9pLmQ2vB7r@127.0.0.1:5432/tradewire",
  TRADEWIRE_CLICKHOUSE__PASSWORD: "Zq8wErT5yU1i",
  TRADEWIRE_HTTP__API_KEY_HASHES: "a".repeat(64),
};

async function problems(env: Record<string, string>): Promise<string[]> {
  try {
    await loadConfig({ args: [], env: { ...PRODUCTION_ENV, ...env } });
    return [];
  } catch (error) {
    if (error instanceof ConfigError) return error.problems.map((p) => `${p.key}: ${p.reason}`);
    throw error;
  }
}

Deno.test("the production profile refuses a NATS connection without credentials as it refuses a user without a password", async () => {
  // What the profile already refused: a user named without a password.
  assert.match((await problems({ TRADEWIRE_NATS__USER: "tw" })).join("\n"), /nats\.password/);
  // A NATS with nothing at all (compose.yaml's former `nats://nats:4222`).
  for (const url of ["nats://nats:4222", "tls://nats.internal:4222,nats://10.0.0.7:4222"]) {
    const reported = await problems({ NATS_URL: url });
    assert.equal(reported.length, 1, reported.join("\n"));
    assert.match(reported[0]!, /^nats\.url: the production profile requires NATS credentials/);
    assert.match(reported[0]!, /nats\.allow_anonymous: true/);
  }
  // The development profile does not.
  const dev = await loadConfig({ args: [], env: { NATS_URL: "nats://nats:4222" } });
  assert.equal(dev.nats.allow_anonymous, false);
});

Deno.test("production accepts NATS credentials however given, or nats.allow_anonymous", async () => {
  const url = "nats://nats:4222";
  for (
    const env of [
      { NATS_URL: url, TRADEWIRE_NATS__USER: "tw", TRADEWIRE_NATS__PASSWORD: "Np-8s7Qm2xLw" },
      { NATS_URL: url, TRADEWIRE_NATS__TOKEN: "Tk-9f2Qx7vB3n" },
      { NATS_URL: "nats://tw:Np-8s7Qm2xLw@nats:4222" },
      { NATS_URL: "nats://Tk-9f2Qx7vB3n@nats:4222" },
      { NATS_URL: url, TRADEWIRE_NATS__ALLOW_ANONYMOUS: "true" },
    ]
  ) {
    assert.deepEqual(await problems(env), [], JSON.stringify(env));
  }
});

Deno.test("production lets a NATS on a loopback address go without credentials", async () => {
  // Reached by this machine's processes only, as the HTTP API on loopback; the default URL.
  for (const url of ["nats://127.0.0.1:4222", "nats://localhost:4222", "nats://[::1]:4222"]) {
    assert.deepEqual(await problems({ NATS_URL: url }), [], url);
  }
  // One server elsewhere is enough to need them.
  assert.equal((await problems({ NATS_URL: "nats://127.0.0.1:4222,nats://nats:4222" })).length, 1);
});

/** `text` with compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}` replaced from `env`. */
function interpolate(text: string, env: Record<string, string>): string {
  return text.replace(/\$\{(\w+)(?::([-?])([^}]*))?\}/g, (_all, name, op, arg) => {
    const value = env[name];
    if (value !== undefined && value !== "") return value;
    if (op === "-") return arg;
    if (op === "?") throw new Error(`compose would stop: ${name}: ${arg}`);
    return "";
  });
}

interface ComposeService {
  command?: string[];
  environment?: Record<string, string>;
}

Deno.test("compose: NATS wants a user and NATS_PASSWORD, the engine connects with them, and production takes it", async () => {
  const text = await Deno.readTextFile(new URL("../compose.yaml", import.meta.url));
  const env = {
    NATS_PASSWORD: "Nq7-Ws2mXr9p",
    POSTGRES_PASSWORD: "Pq7-Ws2mXr9p",
    CLICKHOUSE_PASSWORD: "Cq7-Ws2mXr9p",
    ENGINE_PROFILE: "production",
    API_KEY_HASHES: "b".repeat(64),
  };
  assert.throws(
    () => interpolate(text, { ...env, NATS_PASSWORD: "" }),
    /NATS_PASSWORD/,
    "compose starts without NATS_PASSWORD",
  );
  const { services } = parse(interpolate(text, env)) as {
    services: Record<string, ComposeService>;
  };
  const command = services.nats!.command ?? [];
  const flag = (name: string) => command[command.indexOf(name) + 1];
  assert.ok(command.includes("--user") && command.includes("--pass"), command.join(" "));
  assert.equal(flag("--pass"), env.NATS_PASSWORD);
  const engine = services.engine!.environment!;
  const natsUrl = new URL(engine.NATS_URL!);
  assert.equal(natsUrl.username, flag("--user"));
  assert.equal(natsUrl.password, env.NATS_PASSWORD);
  // The engine's environment, as compose gives it, loads under the production profile.
  const config = await loadConfig({ args: [], env: engine });
  assert.equal(config.engine.profile, "production");
  assert.equal(config.http.allow_keyless_remote, true);
});
