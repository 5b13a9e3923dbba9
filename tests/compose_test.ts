/**
 * Static checks of compose.yaml and the Dockerfile against what an unattended
 * `docker compose up` deployment needs, and of the configuration the engine
 * loads from the environment they give it. There is no Docker engine here, so
 * the files themselves are checked.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { Hono } from "hono";
import { parse } from "yaml";
import { requireApiKey } from "../api/auth.ts";
import { ApiError } from "../api/errors.ts";
import { ConfigError, loadConfig } from "../config/mod.ts";

const ROOT = new URL("..", import.meta.url);

interface Service {
  restart?: string;
  depends_on?: Record<string, unknown> | string[];
}

async function compose(): Promise<{ services: Record<string, Service> }> {
  return parse(await Deno.readTextFile(new URL("compose.yaml", ROOT)));
}

Deno.test(
  "compose: the services the engine depends on come back after a daemon/host restart like the engine",
  async () => {
    const { services } = await compose();
    const engine = services.engine;
    assert(engine, "compose.yaml has an engine service");
    // The engine is meant to run unattended: Docker starts it again after a crash or a reboot.
    assert(engine.restart !== undefined && engine.restart !== "no", "the engine restarts");
    const deps = Array.isArray(engine.depends_on)
      ? engine.depends_on
      : Object.keys(engine.depends_on ?? {});
    assert.deepEqual(deps.sort(), ["clickhouse", "nats", "postgres"]);
    // After `systemctl restart docker` or a reboot, Docker restarts only the containers whose
    // policy says so (compose's default is "no"): the engine would come back alone, waiting
    // forever on PostgreSQL ("PostgreSQL unreachable, retrying"), with no NATS for signals and no
    // ClickHouse for market data. A crashed NATS/PostgreSQL/ClickHouse would also stay down.
    const without = deps.filter((name) => {
      const policy = services[name]?.restart;
      return policy === undefined || policy === "no";
    });
    assert.deepEqual(
      without,
      [],
      `services the engine needs have no restart policy (compose default "no"): ${
        without.join(", ")
      }; the engine has restart: ${engine.restart}`,
    );
  },
);

Deno.test("compose: Docker waits longer for the engine to stop than the engine's own shutdown timeout", async () => {
  const { services } = await compose();
  const grace = (services.engine as Service & { stop_grace_period?: string }).stop_grace_period;
  // Docker's default is 10 s, engine.shutdown_timeout_ms's too: an overrunning shutdown would end
  // by SIGKILL (exit 137, nothing logged) instead of the engine's own exit 1.
  assert.match(grace ?? "", /^\d+s$/, "the engine has a stop_grace_period in seconds");
  const defaults = parse(await Deno.readTextFile(new URL("config/default.yaml", ROOT))) as {
    engine: { shutdown_timeout_ms: number };
  };
  assert.ok(
    Number.parseInt(grace!, 10) * 1000 > defaults.engine.shutdown_timeout_ms,
    `stop_grace_period ${grace} exceeds engine.shutdown_timeout_ms ${defaults.engine.shutdown_timeout_ms}`,
  );
});

// ---------------------------------------------------------------------------
// The environment compose and the image give the engine (review 53)

const HASH = "3f".repeat(32);
/** The passwords compose requires (`${VAR:?…}`); nothing else is set in the user's shell. */
const SHELL = {
  NATS_PASSWORD: "Nq7-Ws2mXr9p",
  POSTGRES_PASSWORD: "Pq7-Ws2mXr9p",
  CLICKHOUSE_PASSWORD: "Cq7-Ws2mXr9p",
};

/** compose's `${VAR}`, `${VAR:-default}` and `${VAR:?message}`, replaced from `shell` as compose does. */
function composeInterpolate(text: string, shell: Record<string, string>): string {
  return text.replace(/\$\{(\w+)(?::([-?])([^}]*))?\}/g, (_all, name, op, arg) => {
    const value = shell[name];
    if (value !== undefined && value !== "") return value;
    if (op === "-") return arg;
    if (op === "?") throw new Error(`compose would stop: ${name}: ${arg}`);
    return "";
  });
}

/** The engine service's environment as compose gives it, from the user's `shell`. */
async function engineEnv(shell: Record<string, string>): Promise<Record<string, string>> {
  const text = composeInterpolate(await Deno.readTextFile(new URL("compose.yaml", ROOT)), shell);
  const file = parse(text) as { services: { engine: { environment: Record<string, unknown> } } };
  // compose substitutes into parsed values: `KEY: ${X:-}` is an empty string, not YAML's null.
  return Object.fromEntries(
    Object.entries(file.services.engine.environment).map(([key, value]) => [
      key,
      value === null ? "" : String(value),
    ]),
  );
}

/** The `ENV` instructions of the Dockerfile, as the image's environment. */
async function imageEnv(): Promise<Record<string, string>> {
  const dockerfile = await Deno.readTextFile(new URL("Dockerfile", ROOT));
  const lines = dockerfile.replace(/\\\n/g, " ").split("\n");
  const env: Record<string, string> = {};
  for (const line of lines.filter((line) => line.startsWith("ENV "))) {
    for (const [, name, value] of line.matchAll(/(\w+)=(\S+)/g)) env[name!] = value!;
  }
  return env;
}

async function withUserFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tw_compose_" });
  try {
    const path = join(dir, "tradewire.yaml");
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const PRODUCTION_FILE = [
  "engine:",
  "  profile: production",
  "http:",
  `  api_key_hashes: [${HASH}]`,
  "",
].join("\n");

Deno.test("compose: a mounted config file's production profile and API key hashes are not wiped by compose's unset variables", async () => {
  // The user puts the production settings in a file (TRADEWIRE_CONFIG) and leaves compose's
  // ENGINE_PROFILE and API_KEY_HASHES unset: compose gives the engine empty values for them.
  const env = await engineEnv(SHELL);
  assert.equal(env.TRADEWIRE_ENGINE__PROFILE, "", "compose passes an empty profile when unset");
  await withUserFile(PRODUCTION_FILE, async (file) => {
    const config = await loadConfig({ args: [], env: { ...env, TRADEWIRE_CONFIG: file } });
    assert.equal(config.engine.profile, "production");
    assert.deepEqual(config.http.api_key_hashes, [HASH]);
  });
  // Without a file, the defaults: development, no key (the port is published on 127.0.0.1 only).
  const config = await loadConfig({ args: [], env });
  assert.equal(config.engine.profile, "development");
  assert.deepEqual(config.http.api_key_hashes, []);
});

Deno.test("compose: ENGINE_PROFILE and API_KEY_HASHES reach the engine", async () => {
  const config = await loadConfig({
    args: [],
    env: await engineEnv({ ...SHELL, ENGINE_PROFILE: "production", API_KEY_HASHES: HASH }),
  });
  assert.equal(config.engine.profile, "production");
  assert.deepEqual(config.http.api_key_hashes, [HASH]);
});

Deno.test("compose: the variables a user sets for it do not start with TRADEWIRE_, which the engine refuses", async () => {
  const text = await Deno.readTextFile(new URL("compose.yaml", ROOT));
  const variables = [...text.matchAll(/\$\{(\w+)/g)].map((match) => match[1]!);
  assert.ok(variables.includes("ENGINE_PROFILE") && variables.includes("API_KEY_HASHES"));
  assert.deepEqual(variables.filter((name) => name.startsWith("TRADEWIRE_")), []);
  // Exported in a shell for `docker compose up`, they leave `deno task start` from it alone.
  const shell = { ...SHELL, ENGINE_PROFILE: "development", API_KEY_HASHES: HASH };
  const config = await loadConfig({ args: [], env: shell });
  assert.deepEqual(config.http.api_key_hashes, []);
  // And every TRADEWIRE_ name compose gives the engine is a setting it takes.
  const env = await engineEnv({ ...shell, ENGINE_PROFILE: "production" });
  await loadConfig({ args: [], env });
});

Deno.test("compose: allow_keyless_remote does not open a production engine", async () => {
  const env = await engineEnv(SHELL);
  assert.equal(env.TRADEWIRE_HTTP__ALLOW_KEYLESS_REMOTE, "true");
  // Production without API key hashes is refused, compose's allow_keyless_remote or not.
  await withUserFile("engine:\n  profile: production\n", async (file) => {
    await assert.rejects(
      loadConfig({ args: [], env: { ...env, TRADEWIRE_CONFIG: file } }),
      (error: unknown) =>
        error instanceof ConfigError &&
        error.problems.some((problem) => problem.key === "http.api_key_hashes"),
    );
  });
  // With hashes, a request without a key is refused, wherever it comes from.
  await withUserFile(PRODUCTION_FILE, async (file) => {
    const config = await loadConfig({ args: [], env: { ...env, TRADEWIRE_CONFIG: file } });
    const app = new Hono();
    app.onError((error, c) =>
      error instanceof ApiError ? c.json({ error: error.code }, error.status) : c.text("", 500)
    );
    app.use(
      "*",
      requireApiKey({
        hashes: config.http.api_key_hashes,
        allowKeylessRemote: config.http.allow_keyless_remote,
      }),
    );
    app.get("/", (c) => c.text("ok"));
    const remote = { remoteAddr: { transport: "tcp", hostname: "172.18.0.1", port: 40000 } };
    const response = await app.request("/", {}, remote);
    assert.equal(response.status, 401);
  });
});

Deno.test("Docker image: its env leaves http.host and http.port to the user's config file", async () => {
  const env = await imageEnv();
  assert.equal(env.HTTP_HOST, "0.0.0.0", "the image listens on every interface by default");
  assert.deepEqual(Object.keys(env).filter((name) => name.startsWith("TRADEWIRE_")), []);
  assert.equal((await loadConfig({ args: [], env })).http.host, "0.0.0.0");
  await withUserFile("http:\n  host: 10.1.2.3\n  port: 9443\n", async (file) => {
    const config = await loadConfig({ args: [], env: { ...env, TRADEWIRE_CONFIG: file } });
    assert.deepEqual({ host: config.http.host, port: config.http.port }, {
      host: "10.1.2.3",
      port: 9443,
    });
  });
  // compose's environment on top of the image's changes neither.
  await withUserFile("http:\n  host: 10.1.2.3\n  port: 9443\n", async (file) => {
    const config = await loadConfig({
      args: [],
      env: { ...env, ...await engineEnv(SHELL), TRADEWIRE_CONFIG: file },
    });
    assert.deepEqual({ host: config.http.host, port: config.http.port }, {
      host: "10.1.2.3",
      port: 9443,
    });
  });
});

Deno.test("Docker image: the health check is scripts/healthcheck.ts, cached at build", async () => {
  const dockerfile = (await Deno.readTextFile(new URL("Dockerfile", ROOT))).replace(/\\\n/g, " ");
  const command = /^HEALTHCHECK .*?CMD (\[.*\])$/m.exec(dockerfile)?.[1];
  assert.ok(command, "the Dockerfile has a HEALTHCHECK in exec form");
  const args = JSON.parse(command) as string[];
  assert.equal(args.at(-1), "scripts/healthcheck.ts");
  assert.ok(args.includes("--cached-only"));
  const cache = /^RUN deno cache .*$/m.exec(dockerfile)?.[0] ?? "";
  assert.match(cache, /\bscripts\/healthcheck\.ts\b/, "cached, as --cached-only needs");
});
