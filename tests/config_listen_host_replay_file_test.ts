/**
 * `http.host` and `replay.file` are checked with the rest of the configuration
 * (README, Configuration: an invalid configuration exits with status 2 and one
 * message naming every bad key). Before, an `http.host` the server could not
 * listen on was found only when the HTTP server, the last child, started, and
 * a missing capture only when the replay opened it: after the instance lock,
 * the JetStream streams, the migrations and (for the host) trading, with exit
 * 1 and a message naming neither key (`Cannot listen on not a host!:…`,
 * `stat '/nonexistent/…'`).
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { ConfigError, loadConfig } from "../config/mod.ts";
import { startEngineProcess } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { deadline } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

/** The message of the ConfigError `loadConfig` throws for `env` (and `args`). */
async function refusal(env: Record<string, string>, args: string[] = []): Promise<string> {
  const error = await loadConfig({ args, env }).then(
    () => assert.fail(`${JSON.stringify({ env, args })} was accepted`),
    (error: unknown) => error,
  );
  assert.ok(error instanceof ConfigError, String(error));
  return error.message;
}

Deno.test("http.host takes IP addresses and host names the HTTP server can listen on", async () => {
  for (
    const host of [
      "127.0.0.1",
      "0.0.0.0",
      "255.255.255.255",
      "::",
      "::1",
      "[::]",
      "[::1]",
      "fd00::12:1",
      "::ffff:10.0.0.1",
      "localhost",
      "LOCALHOST",
      "tradewire-api",
      "api.internal.example.com",
      "my_service",
    ]
  ) {
    const config = await loadConfig({ args: [], env: { TRADEWIRE_HTTP__HOST: host } });
    assert.equal(config.http.host, host);
  }
});

Deno.test("an http.host that is neither an IP address nor a host name is invalid configuration naming http.host", async () => {
  for (
    const host of [
      "not a host!",
      "",
      " ",
      "127.0.0.1:8000",
      "http://localhost",
      "localhost/",
      "256.0.0.1",
      "1.2.3.4.5",
      "a..b",
      ".localhost",
      "-bad",
      "bad-",
      "x".repeat(64),
      Array(5).fill("a".repeat(60)).join("."),
      "[::1",
      "::g",
      "[localhost]",
      "fe80::1%lo",
    ]
  ) {
    // A flag: an empty environment variable sets nothing.
    const message = await refusal({}, [`--http.host=${host}`]);
    assert.match(message, /^ {2}http\.host: expected an IP address or a host name/m, message);
    assert.ok(message.includes(JSON.stringify(host).slice(0, 60)), message);
  }
});

Deno.test("a replay.file that is not a readable file is invalid configuration naming replay.file and why", async () => {
  const dir = await Deno.makeTempDir({ prefix: "tw-replay-file-" });
  try {
    const capture = `${dir}/capture.ndjson`;
    await Deno.writeTextFile(capture, "");
    const config = await loadConfig({ args: [], env: { TRADEWIRE_REPLAY__FILE: capture } });
    assert.equal(config.replay.file, capture);
    // Empty: no replay, nothing to check.
    assert.equal((await loadConfig({ args: [], env: {} })).replay.file, "");

    const missing = await refusal({ TRADEWIRE_REPLAY__FILE: `${dir}/missing.ndjson` });
    assert.ok(
      missing.includes(
        `replay.file: the capture ${dir}/missing.ndjson cannot be read: NotFound`,
      ),
      missing,
    );
    const folder = await refusal({ TRADEWIRE_REPLAY__FILE: dir });
    assert.ok(folder.includes(`replay.file: the capture ${dir} is not a file`), folder);
    const relative = await refusal({ TRADEWIRE_REPLAY__FILE: "captures/missing.ndjson" });
    assert.ok(
      relative.includes(
        "replay.file: the capture captures/missing.ndjson cannot be read: NotFound, " +
          `looked for from the working directory ${Deno.cwd()}`,
      ),
      relative,
    );
    if (Deno.uid() !== 0) {
      await Deno.chmod(capture, 0o200);
      const unreadable = await refusal({ TRADEWIRE_REPLAY__FILE: capture });
      assert.ok(unreadable.includes("cannot be read: PermissionDenied"), unreadable);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the engine refuses a bad http.host and replay.file together, exit 2 naming both, before anything is migrated", async () => {
  await using nats = await startNatsServer();
  const db = await scratchDatabase();
  try {
    await using engine = await startEngineProcess(
      {
        NATS_URL: nats.url,
        TRADEWIRE_HTTP__HOST: "not a host!",
        TRADEWIRE_REPLAY__FILE: "/nonexistent/tradewire-capture.ndjson",
      },
      [],
      { databaseUrl: db.url },
    );
    const { code } = await deadline(engine.status, 60_000, "the engine's exit");
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    let migrated: boolean;
    try {
      const [row] = await sql<{ present: boolean }[]>`
        select to_regclass('schema_migrations') is not null as present`;
      migrated = row?.present === true;
    } finally {
      await sql.end();
    }
    const stderr = engine.stderr();
    const detail = `exit ${code}; stderr: ${stderr.slice(0, 600)}; last lines: ${
      JSON.stringify(engine.lines.slice(-3))
    }`;
    assert.equal(migrated, false, `the database was migrated first; ${detail}`);
    assert.equal(code, 2, detail);
    assert.match(stderr, /^Invalid configuration:\n/, detail);
    assert.match(stderr, /^ {2}http\.host: .*"not a host!"/m, detail);
    assert.match(
      stderr,
      /^ {2}replay\.file: the capture \/nonexistent\/tradewire-capture\.ndjson cannot be read: NotFound/m,
      detail,
    );
    assert.deepEqual(engine.lines, [], "nothing was logged: the engine never started");
  } finally {
    await db.drop();
  }
});
