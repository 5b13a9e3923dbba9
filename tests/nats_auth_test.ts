/**
 * NATS with authentication, on a private nats-server that requires a user and
 * password: credentials given in the URL, credentials the server refuses.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { connectNats, NatsAuthError, type NatsOptions } from "../adapters/nats.ts";
import { memoryLogger } from "../lib/log.ts";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { freePort } from "./_nats_server.ts";
import { deadline, waitFor } from "./_helpers.ts";

const USER = "tw";
/** Holds characters a URL must percent-encode. */
const PASSWORD = "R12/n@ts pass";
const IN_URL = `${USER}:${encodeURIComponent(PASSWORD)}`;
const WRONG = "NotThePassR12x";

const OPTIONS: NatsOptions = {
  url: "",
  name: "tradewire-test",
  user: "",
  password: "",
  token: "",
  connect_timeout_ms: 1000,
  reconnect_wait_ms: 20,
  reconnect_max_wait_ms: 100,
  reconnect_jitter_ms: 10,
};

/** A private nats-server that requires a password. */
interface AuthNatsServer extends AsyncDisposable {
  port: number;
  /** Makes the server require `password` from now on (a config reload: SIGHUP). */
  requirePassword(password: string): Promise<void>;
}

/** A private nats-server (JetStream on) that requires {@linkcode USER} and {@linkcode PASSWORD}. */
async function natsWithPassword(): Promise<AuthNatsServer> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "tw-nats-auth-" });
  const config = `${dir}/nats.conf`;
  const writeConfig = (password: string) =>
    Deno.writeTextFile(
      config,
      `authorization { user: ${JSON.stringify(USER)}, password: ${JSON.stringify(password)} }\n`,
    );
  await writeConfig(PASSWORD);
  const child = new Deno.Command("nats-server", {
    args: ["-c", config, "-a", "127.0.0.1", "-p", String(port), "-js", "-sd", dir],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already exited */ }
    await child.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  };
  try {
    await waitFor(
      async () => {
        try {
          (await Deno.connect({ hostname: "127.0.0.1", port })).close();
          return true;
        } catch {
          return false;
        }
      },
      10_000,
      "nats-server",
    );
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    port,
    async requirePassword(password) {
      await writeConfig(password);
      child.kill("SIGHUP");
    },
    [Symbol.asyncDispose]: stop,
  };
}

Deno.test("connectNats authenticates with the user and password given in the URL", async () => {
  await using nats = await natsWithPassword();
  const nc = await deadline(
    connectNats({ ...OPTIONS, url: `nats://${IN_URL}@127.0.0.1:${nats.port}` }),
    10_000,
    "connect",
  );
  try {
    await nc.flush();
  } finally {
    await nc.close();
  }
});

Deno.test("connectNats gives up at once when NATS refuses the credentials, naming no secret", async () => {
  await using nats = await natsWithPassword();
  const { log, lines } = memoryLogger();
  for (
    const options of [
      { url: `nats://${USER}:${WRONG}@127.0.0.1:${nats.port}` },
      { url: `nats://127.0.0.1:${nats.port}`, user: USER, password: WRONG },
      { url: `nats://127.0.0.1:${nats.port}` },
    ]
  ) {
    const error = await deadline(
      connectNats({ ...OPTIONS, ...options }, { log }).then(() => null, (e) => e),
      10_000,
      "connectNats to give up",
    );
    assert.ok(error instanceof NatsAuthError, String(error));
    assert.match(error.message, /refused the credentials \(Authorization Violation\)/);
  }
  assert.equal(lines.filter((l) => l.message === "NATS refused the credentials").length, 3);
  assert.ok(!lines.some((l) => l.message === "NATS unreachable, retrying"));
  assert.doesNotMatch(JSON.stringify(lines), new RegExp(WRONG));
});

Deno.test("the sockets nats.js drops after a refusal never end the process with an uncaught error", async () => {
  // nats.js strips the listeners of the socket it closes; the server's reset then reached it as
  // an `error` event with no listener: `Uncaught Error: read ECONNRESET`, the process gone.
  await using nats = await natsWithPassword();
  const servers = `nats://127.0.0.1:${nats.port}`;
  for (let i = 0; i < 5; i++) {
    await assert.rejects(connect({ servers, user: USER, pass: WRONG }), {
      name: "AuthorizationError",
    });
  }
  // Time for the resets to arrive: a good connection's round trips.
  const nc = await connect({ servers, user: USER, pass: PASSWORD });
  for (let i = 0; i < 20; i++) await nc.flush();
  await nc.close();
});

Deno.test("credentials refused on a reconnect are tried again until the server takes them", async () => {
  // nats.js gave up after two refusals and closed the connection for good.
  await using nats = await natsWithPassword();
  const { log, lines } = memoryLogger();
  const nc = await connectNats({ ...OPTIONS, url: `nats://${IN_URL}@127.0.0.1:${nats.port}` }, {
    log,
  });
  try {
    const refusals = () =>
      lines.filter((l) => l.message === "NATS refused the credentials; reconnecting").length;
    await nats.requirePassword(WRONG); // the engine's password is now the wrong one
    await waitFor(() => refusals() >= 3, 20_000, "three refusals");
    await nats.requirePassword(PASSWORD);
    await waitFor(() => lines.some((l) => l.message === "NATS reconnected"), 20_000, "reconnect");
    assert.ok(!nc.isClosed());
    await deadline(nc.flush(), 5_000, "a round trip");
    assert.doesNotMatch(JSON.stringify(lines), /R12\/n@ts|R12%2Fn%40ts/);
  } finally {
    await nc.close();
  }
});

Deno.test("the engine serves with the NATS user and password given in NATS_URL", async () => {
  await using nats = await natsWithPassword();
  await using engine = await startEngineProcess({
    NATS_URL: `nats://${IN_URL}@127.0.0.1:${nats.port}`,
  });
  await waitForJson(engine, "/api/health/detailed", (body) => body.status === "ok", 60_000);
  assert.equal(await deadline(engine.kill("SIGTERM"), 20_000, "exit"), 0);
  assert.doesNotMatch(JSON.stringify(engine.lines), /R12\/n@ts|R12%2Fn%40ts/);
});

Deno.test("a refused NATS password stops the engine with exit 1 and one clear line, no stack trace", async () => {
  await using nats = await natsWithPassword();
  await using engine = await startEngineProcess({
    NATS_URL: `nats://127.0.0.1:${nats.port}`,
    TRADEWIRE_NATS__USER: USER,
    TRADEWIRE_NATS__PASSWORD: WRONG,
  });
  const { code } = await deadline(engine.status, 30_000, "exit");
  const output = JSON.stringify(engine.lines) + engine.stderr();
  assert.equal(code, 1, output);
  assert.doesNotMatch(engine.stderr(), /Uncaught|ECONNRESET/, engine.stderr());
  assert.ok(
    engine.lines.some((l) => l.message === "NATS refused the credentials" && l.level === "error"),
    output,
  );
  assert.doesNotMatch(output, new RegExp(WRONG));
});
