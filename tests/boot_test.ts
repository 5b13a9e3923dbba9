import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";
import { deadline, DeadlineError, waitFor } from "./_helpers.ts";
import { loadConfig } from "../config/mod.ts";
import { startEngine } from "../engine.ts";
import { type Logger, loggerOf, nullLogger } from "../lib/log.ts";
import { scratchDatabase } from "./_postgres.ts";

type Health = {
  status: string;
  components: Record<string, { status: string; latency_ms: number | null }>;
  actors: Array<{ name: string; status: string; restarts: number; mailbox: unknown }>;
  migrations: Record<string, unknown>;
};

Deno.test("the engine boots, reports ok with every component up, and exits 0 on SIGTERM", async () => {
  await using engine = await startEngineProcess();
  const health = await waitForJson(
    engine,
    "/api/health/detailed",
    (body, status) => body.status === "ok" && status === 200,
  ) as unknown as Health;
  for (const name of ["postgres", "nats", "clickhouse"]) {
    assert.equal(health.components[name]?.status, "up", name);
    assert.equal(typeof health.components[name]?.latency_ms, "number");
  }
  const names = health.actors.map((a) => a.name);
  assert.deepEqual(names, [
    "root",
    "root/instance_lock",
    "root/streams",
    "root/migrations",
    "root/market",
    "root/market/batch_writer",
    "root/market/latest_cache",
    "root/market/validator",
    "root/trading",
    "root/trading/brokers",
    "root/trading/position_tracker",
    "root/trading/execution",
    "root/http",
  ]);
  for (const actor of health.actors) {
    assert.equal(typeof actor.restarts, "number");
    assert.ok("mailbox" in actor);
  }
  assert.equal(health.migrations.postgres, "applied");
  assert.equal(health.migrations.clickhouse, "applied");

  const root = await (await engine.get("/")).json();
  assert.equal(root.name, "tradewire");

  const code = await engine.kill("SIGTERM");
  assert.equal(
    code,
    0,
    `exit ${code}; log: ${JSON.stringify(engine.lines)}; stderr: ${engine.stderr()}`,
  );
  const messages = engine.lines.map((l) => l.message);
  assert.ok(messages.includes("engine stopped"), JSON.stringify(messages));
  for (const line of engine.lines) {
    assert.equal(typeof line.level, "string");
    assert.equal(typeof line.time, "string");
  }

  const sql = postgres(engine.databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const runs = await sql`select exit_code, stopped_at from engine_runs`;
    assert.equal(runs.length, 1);
    assert.equal(runs[0]!.exit_code, 0);
    assert.ok(runs[0]!.stopped_at instanceof Date);
  } finally {
    await sql.end();
  }
});

Deno.test("a run that fails to start after taking the database is recorded in engine_runs with exit code 1", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await using engine = await startEngineProcess({
      TRADEWIRE_HTTP__PORT: String((taken.addr as Deno.NetAddr).port), // in use: HTTP cannot start
    });
    const { code } = await deadline(engine.status, 60_000, "exit");
    assert.equal(code, 1, `${JSON.stringify(engine.lines)} ${engine.stderr()}`);
    const sql = postgres(engine.databaseUrl, { max: 1, onnotice: () => {} });
    try {
      const runs = await sql`select exit_code, stopped_at from engine_runs`;
      assert.equal(runs.length, 1);
      assert.equal(runs[0]!.exit_code, 1);
      assert.ok(runs[0]!.stopped_at instanceof Date);
    } finally {
      await sql.end();
    }
  } finally {
    taken.close();
  }
});

Deno.test("SIGTERM just as the HTTP server listens, before the run is recorded, still exits 0", async () => {
  await using engine = await startEngineProcess();
  // The last child is up, so the supervisors are ready; the engine is still recording its run.
  await waitFor(
    () => engine.lines.some((l) => l.message === "HTTP listening"),
    30_000,
    "HTTP listening",
  );
  const code = await deadline(engine.kill("SIGTERM"), 20_000, "exit after SIGTERM");
  assert.equal(code, 0, `exit ${code}; log: ${JSON.stringify(engine.lines)}`);
});

Deno.test("SIGTERM while the configuration loads, before the engine exists, exits 0", async () => {
  // The user file is a FIFO: the engine's read of it waits until the test writes, so the signal
  // lands while main.ts loads its configuration (before, with no handler yet: exit 143).
  const dir = await Deno.makeTempDir({ prefix: "tw-boot-" });
  try {
    const fifo = `${dir}/config.yaml`;
    const made = await new Deno.Command("mkfifo", { args: [fifo] }).output();
    assert.ok(made.success, "mkfifo");
    await using engine = await startEngineProcess({}, ["--config", fifo]);
    // Opening a FIFO for writing waits for its reader: the engine is reading its configuration.
    const writer = await deadline(Deno.open(fifo, { write: true }), 30_000, "the engine reads");
    let exited: Promise<number>;
    try {
      exited = engine.kill("SIGTERM"); // sent now; resolves with the exit code
      // A process the signal killed has closed its end: the exit code then tells.
      await writer.write(new TextEncoder().encode("log:\n  level: info\n")).catch(() => {});
    } finally {
      writer.close();
    }
    const code = await deadline(exited, 20_000, "exit");
    assert.equal(code, 0, `${JSON.stringify(engine.lines)} ${engine.stderr()}`);
    assert.ok(engine.lines.some((l) => l.message === "signal received"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("with ClickHouse unreachable the engine reports degraded instead of crashing", async () => {
  await using engine = await startEngineProcess({ CLICKHOUSE_URL: "http://127.0.0.1:1" });
  const health = await waitForJson(
    engine,
    "/api/health/detailed",
    (body, status) => body.status === "degraded" && status === 503,
  ) as unknown as Health;
  assert.equal(health.components.clickhouse?.status, "down");
  assert.equal(health.components.postgres?.status, "up");
  assert.equal(health.components.nats?.status, "up");
  assert.equal(health.migrations.postgres, "applied");
  assert.equal(health.migrations.clickhouse, "unavailable");
  const liveness = await engine.get("/api/health");
  assert.equal(liveness.status, 200);
  await liveness.body?.cancel();
  assert.equal(await engine.kill("SIGTERM"), 0);
});

Deno.test("the engine waits for NATS at startup with a clear log line, then serves", async () => {
  const port = freePort();
  await using engine = await startEngineProcess({
    NATS_URL: `nats://127.0.0.1:${port}`,
    TRADEWIRE_NATS__RECONNECT_WAIT_MS: "50",
    TRADEWIRE_NATS__RECONNECT_MAX_WAIT_MS: "200",
  });
  await waitFor(
    () => engine.lines.filter((l) => l.message === "NATS unreachable, retrying").length >= 2,
    20_000,
    "retry log lines",
  );
  await using _nats = await startNatsServer({ port });
  await waitForJson(engine, "/api/health/detailed", (body) => body.status === "ok");
  assert.equal(await engine.kill("SIGINT"), 0);
});

Deno.test("an invalid configuration exits 2 naming every bad key", async () => {
  await using engine = await startEngineProcess({
    TRADEWIRE_HTTP__PORT: "not-a-port",
    TRADEWIRE_POSTGRES__POOL_SIZE: "0",
    TRADEWIRE_NOPE__KEY: "1",
  });
  const { code } = await engine.status;
  assert.equal(code, 2);
  const stderr = engine.stderr();
  assert.match(stderr, /http\.port/);
  assert.match(stderr, /postgres\.pool_size/);
  assert.match(stderr, /nope/);
  assert.doesNotMatch(stderr, /at .*\.ts:\d+/);
});

Deno.test("the engine exits 1 when a child cannot start (HTTP port taken)", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    await using engine = await startEngineProcess({
      TRADEWIRE_HTTP__PORT: String((taken.addr as Deno.NetAddr).port),
    });
    const { code } = await engine.status;
    assert.equal(code, 1);
    assert.ok(engine.lines.some((l) => l.message === "engine could not start"));
  } finally {
    taken.close();
  }
});

Deno.test("--print-config prints the merged configuration with secrets redacted", async () => {
  await using engine = await startEngineProcess({
    DATABASE_URL: "postgres://app:hunter2@127.0.0.1:5432/tw",
    TRADEWIRE_NATS__PASSWORD: "s3cret-value",
  }, ["--print-config"]);
  const { code } = await engine.status;
  assert.equal(code, 0);
  const printed = engine.lines.map((l) => JSON.stringify(l)).join("\n");
  assert.doesNotMatch(printed, /hunter2|s3cret-value/);
});

Deno.test("a stop asked for while the engine connects to NATS ends its start (no waiting on PostgreSQL)", async () => {
  const config = await loadConfig({
    args: [],
    env: {
      // Nobody listens there: had the start gone on, the migrations would wait for it for ever.
      DATABASE_URL: `postgres://postgres@127.0.0.1:${freePort()}/tradewire`,
      TRADEWIRE_HTTP__PORT: String(freePort()),
    },
  });
  const starting = new AbortController();
  const lines: string[] = [];
  const tap = (): Logger =>
    loggerOf((_level, message) => {
      lines.push(message);
      // main.ts aborts its start signal on SIGTERM; here the signal comes as NATS connects.
      if (message === "NATS connected") starting.abort(new Error("SIGTERM"));
    }, tap);
  const started = startEngine(config, { log: tap(), signal: starting.signal });
  const outcome = await deadline(started, 10_000, "the start to end").then(
    async (engine) => {
      await engine.stop();
      return "started";
    },
    (error) => error instanceof DeadlineError ? "hung" : "cancelled",
  );
  assert.equal(outcome, "cancelled");
  assert.ok(lines.includes("engine start cancelled"), lines.join(", "));
  assert.ok(!lines.includes("engine failed to start"));
});

Deno.test("a stop for a failure outside the tree (an uncaught error) exits 1, recorded so in engine_runs and engine.events.stopped", async () => {
  await using nats = await startNatsServer();
  const db = await scratchDatabase();
  const chDatabase = `tw_test_${crypto.randomUUID().replaceAll("-", "").slice(0, 12)}`;
  try {
    const config = await loadConfig({
      args: [],
      env: {
        DATABASE_URL: db.url,
        NATS_URL: nats.url,
        TRADEWIRE_CLICKHOUSE__DATABASE: chDatabase,
        TRADEWIRE_HTTP__PORT: String(freePort()),
        TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "false",
        TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "false",
        TRADEWIRE_EXCHANGES__KRAKEN__ENABLED: "false",
      },
    });
    const watcher = await connect({ servers: nats.url });
    const stopped = watcher.subscribe("engine.events.stopped", { max: 1 });
    const engine = await startEngine(config, { log: nullLogger });
    // What main.ts does on an uncaught error.
    assert.equal(await deadline(engine.stop({ failed: true }), 30_000, "the stop"), 1);
    assert.equal(await engine.closed(), 1);
    for await (const msg of stopped) assert.equal(msg.json<{ exit_code: number }>().exit_code, 1);
    await watcher.close();
    const sql = postgres(db.url, { max: 1, onnotice: () => {} });
    try {
      const runs = await sql`select exit_code from engine_runs`;
      assert.deepEqual(runs.map((r) => r.exit_code), [1]);
    } finally {
      await sql.end();
    }
  } finally {
    await db.drop();
    await fetch(
      `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${chDatabase}`)}`,
      {
        method: "POST",
      },
    ).then((r) => r.body?.cancel());
  }
});
