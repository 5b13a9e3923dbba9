/**
 * The Docker image's health check (scripts/healthcheck.ts) asks the port and
 * address the engine's configuration gives it (review 53: the image's
 * `TRADEWIRE_HTTP__PORT` beat every config file, and the check read only it).
 * The HEALTHCHECK command is taken from the Dockerfile and run here against a
 * local server standing in for the engine.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { healthUrl } from "../scripts/healthcheck.ts";

const ROOT = new URL("..", import.meta.url);

Deno.test("healthUrl asks through the loopback interface when the engine listens on every one", () => {
  assert.equal(healthUrl({ host: "0.0.0.0", port: 8000 }), "http://127.0.0.1:8000/api/health");
  assert.equal(healthUrl({ host: "::", port: 9443 }), "http://[::1]:9443/api/health");
  assert.equal(healthUrl({ host: "[::]", port: 9443 }), "http://[::1]:9443/api/health");
  assert.equal(healthUrl({ host: "127.0.0.1", port: 1 }), "http://127.0.0.1:1/api/health");
  assert.equal(healthUrl({ host: "10.1.2.3", port: 80 }), "http://10.1.2.3:80/api/health");
  assert.equal(healthUrl({ host: "fd00::5", port: 80 }), "http://[fd00::5]:80/api/health");
  assert.equal(healthUrl({ host: "[::1]", port: 80 }), "http://[::1]:80/api/health");
  assert.equal(healthUrl({ host: "localhost", port: 80 }), "http://localhost:80/api/health");
});

/** The Dockerfile's HEALTHCHECK command (exec form) and the image's `ENV`s. */
async function dockerfile(): Promise<{ command: string[]; env: Record<string, string> }> {
  const text = (await Deno.readTextFile(new URL("Dockerfile", ROOT))).replace(/\\\n/g, " ");
  const command = JSON.parse(/^HEALTHCHECK .*?CMD (\[.*\])$/m.exec(text)?.[1] ?? "[]");
  const env: Record<string, string> = {};
  for (const line of text.split("\n").filter((line) => line.startsWith("ENV "))) {
    for (const [, name, value] of line.matchAll(/(\w+)=(\S+)/g)) env[name!] = value!;
  }
  return { command, env };
}

/** Runs the image's health check in the repository with the image's env and `env`. */
async function healthCheck(env: Record<string, string>): Promise<{ code: number; out: string }> {
  const image = await dockerfile();
  const [program, ...args] = image.command;
  assert.equal(program, "deno");
  const inherited = Object.fromEntries(
    ["PATH", "HOME", "DENO_DIR", "XDG_CACHE_HOME"].flatMap((name) => {
      const value = Deno.env.get(name);
      return value === undefined ? [] : [[name, value]];
    }),
  );
  const output = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    clearEnv: true,
    env: { ...inherited, ...image.env, ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (bytes: Uint8Array) => new TextDecoder().decode(bytes);
  return { code: output.code, out: decode(output.stdout) + decode(output.stderr) };
}

async function withUserFile(text: string, fn: (path: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "tw_healthcheck_" });
  try {
    const path = join(dir, "tradewire.yaml");
    await Deno.writeTextFile(path, text);
    await fn(path);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A stand-in for the engine on 127.0.0.1 and a free port, answering /api/health with `status`. */
function fakeEngine(status: number): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, (request) => {
    const path = new URL(request.url).pathname;
    return new Response(null, { status: path === "/api/health" ? status : 404 });
  });
}

Deno.test("the image's health check asks the port a config file sets", async () => {
  await using server = fakeEngine(200);
  await withUserFile(`http:\n  port: ${server.addr.port}\n`, async (file) => {
    const result = await healthCheck({ TRADEWIRE_CONFIG: file });
    assert.equal(result.code, 0, result.out);
    assert.match(
      result.out,
      new RegExp(`http://127\\.0\\.0\\.1:${server.addr.port}/api/health: 200`),
    );
  });
});

Deno.test("the image's health check asks the address and port the environment sets", async () => {
  await using server = fakeEngine(200);
  const result = await healthCheck({
    TRADEWIRE_HTTP__HOST: "127.0.0.1",
    TRADEWIRE_HTTP__PORT: String(server.addr.port),
  });
  assert.equal(result.code, 0, result.out);
});

Deno.test("the image's health check fails when the engine is unhealthy or not there", async () => {
  {
    await using server = fakeEngine(503);
    const result = await healthCheck({ TRADEWIRE_HTTP__PORT: String(server.addr.port) });
    assert.equal(result.code, 1, result.out);
    assert.match(result.out, /: 503/);
  }
  // A port nothing listens on: the one a stopped server had.
  const server = fakeEngine(200);
  const port = server.addr.port;
  await server.shutdown();
  const result = await healthCheck({ TRADEWIRE_HTTP__PORT: String(port) });
  assert.equal(result.code, 1, result.out);
});

Deno.test("the image's health check fails on an invalid configuration, naming the key", async () => {
  const result = await healthCheck({ TRADEWIRE_HTTP__PORT: "abc" });
  assert.equal(result.code, 1, result.out);
  assert.match(result.out, /http\.port: expected an integer/);
});

Deno.test("the image's health check passes when HTTP is disabled: there is no API to ask", async () => {
  const result = await healthCheck({ TRADEWIRE_HTTP__ENABLED: "false" });
  assert.equal(result.code, 0, result.out);
  assert.match(result.out, /http\.enabled is false/);
});
