/**
 * Which environment variables set keys (review 53): an empty `TRADEWIRE_*`
 * sets nothing, as an empty `NATS_URL` does (compose's `${VAR:-}` for a
 * variable its user left unset must not overwrite the files); Kubernetes'
 * and Docker's service links for a Service named `tradewire` are no settings;
 * any other `TRADEWIRE_` name that is not a setting is still refused.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError, loadConfig, type LoadConfigOptions } from "../config/mod.ts";

const HASH = "3f".repeat(32);

async function problems(options: LoadConfigOptions): Promise<string[]> {
  try {
    await loadConfig({ args: [], env: {}, ...options });
    return [];
  } catch (error) {
    assert.ok(error instanceof ConfigError, String(error));
    return error.problems.map((p) => `${p.key}: ${p.reason}${p.source ? ` (${p.source})` : ""}`);
  }
}

async function withUserFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tw_config_env_" });
  try {
    const path = join(dir, "tradewire.yaml");
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("an empty TRADEWIRE_ variable leaves the key as the files set it", async () => {
  const file = [
    "engine:",
    "  name: mine",
    "http:",
    `  api_key_hashes: [${HASH}]`,
    "  port: 9443",
    "",
  ].join("\n");
  await withUserFile(file, async (path) => {
    const config = await loadConfig({
      args: [],
      env: {
        TRADEWIRE_CONFIG: path,
        TRADEWIRE_ENGINE__NAME: "",
        TRADEWIRE_HTTP__API_KEY_HASHES: "",
        TRADEWIRE_HTTP__PORT: "",
        TRADEWIRE_LOG__LEVEL: "",
      },
    });
    assert.equal(config.engine.name, "mine");
    assert.deepEqual(config.http.api_key_hashes, [HASH]);
    assert.equal(config.http.port, 9443);
    assert.equal(config.log.level, "info");
    // A flag still sets an empty value.
    const flagged = await loadConfig({
      args: ["--http.api_key_hashes=", "--engine.name="],
      env: { TRADEWIRE_CONFIG: path },
    }).catch((error: ConfigError) => error);
    assert.ok(flagged instanceof ConfigError, "an empty engine.name is refused");
    assert.deepEqual(flagged.problems.map((p) => p.key), ["engine.name"]);
    const emptied = await loadConfig({
      args: ["--http.api_key_hashes="],
      env: { TRADEWIRE_CONFIG: path },
    });
    assert.deepEqual(emptied.http.api_key_hashes, []);
  });
});

Deno.test("an empty TRADEWIRE_ variable with a malformed or unknown name is not refused", async () => {
  assert.deepEqual(await problems({ env: { TRADEWIRE_HTTP__PROT: "", TRADEWIRE_X____Y: "" } }), []);
});

Deno.test("Kubernetes service links for a Service named tradewire are no settings", async () => {
  // Kubernetes gives every pod of the namespace these (enableServiceLinks defaults to true).
  const env = {
    TRADEWIRE_SERVICE_HOST: "10.96.12.34",
    TRADEWIRE_SERVICE_PORT: "8000",
    TRADEWIRE_SERVICE_PORT_HTTP_API: "8000",
    TRADEWIRE_PORT: "tcp://10.96.12.34:8000",
    TRADEWIRE_PORT_8000_TCP: "tcp://10.96.12.34:8000",
    TRADEWIRE_PORT_8000_TCP_PROTO: "tcp",
    TRADEWIRE_PORT_8000_TCP_PORT: "8000",
    TRADEWIRE_PORT_8000_TCP_ADDR: "10.96.12.34",
    TRADEWIRE_PORT_53_UDP: "udp://10.96.12.34:53",
    // A Helm release `tradewire` with a NATS subchart: Service `tradewire-nats`.
    TRADEWIRE_NATS_SERVICE_HOST: "10.96.40.2",
    TRADEWIRE_NATS_PORT: "tcp://10.96.40.2:4222",
    TRADEWIRE_NATS_PORT_4222_TCP_ADDR: "10.96.40.2",
  };
  assert.deepEqual(await problems({ env }), []);
  // Beside them, the settings still apply.
  const config = await loadConfig({ args: [], env: { ...env, TRADEWIRE_HTTP__PORT: "9001" } });
  assert.equal(config.http.port, 9001);
});

Deno.test("a TRADEWIRE_ name that looks like a mistyped setting is still refused", async () => {
  // One underscore where two are needed; a <NAME>_PORT whose value is no service link's URL.
  const found = await problems({
    env: {
      TRADEWIRE_LOG_LEVEL: "warn",
      TRADEWIRE_HTTP_PORT: "8001",
      TRADEWIRE_PORT: "8000",
    },
  });
  assert.deepEqual(found, [
    "http_port: unknown section (env TRADEWIRE_HTTP_PORT)",
    "log_level: unknown section (env TRADEWIRE_LOG_LEVEL)",
    "port: unknown section (env TRADEWIRE_PORT)",
  ]);
  // A setting's own name is never taken for a service link, whatever its value.
  const port = await problems({ env: { TRADEWIRE_HTTP__PORT: "tcp://10.0.0.1:8000" } });
  assert.equal(port.length, 1);
  assert.match(port[0]!, /^http\.port: expected an integer/);
});

Deno.test("compose's former TRADEWIRE_PROFILE and TRADEWIRE_API_KEY_HASHES are refused, not taken for settings", async () => {
  // compose now reads ENGINE_PROFILE and API_KEY_HASHES; the old names set nothing and say so.
  const found = await problems({
    env: { TRADEWIRE_PROFILE: "production", TRADEWIRE_API_KEY_HASHES: HASH },
  });
  assert.deepEqual(found, [
    "api_key_hashes: unknown section (env TRADEWIRE_API_KEY_HASHES)",
    "profile: unknown section (env TRADEWIRE_PROFILE)",
  ]);
});
