/**
 * `engine.events.stopped` and `engine_runs` carry the exit code the process
 * ends with when an uncaught error comes while a stop is under way or while
 * the engine starts (README, Tasks: an uncaught error is "logged, then the
 * engine stops as for a signal, recorded with exit code 1 in `engine_runs` and
 * `engine.events.stopped`"). `main.ts` runs as a subprocess with a `--preload`
 * module that throws the uncaught error at the moment under test.
 */
import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import postgres from "postgres";
import { freePort, startNatsServer } from "./_nats_server.ts";
import { deadline } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;

/** `main.ts` started with `preload` (module text) on a fresh database and a private NATS. */
interface PreloadedEngine extends AsyncDisposable {
  child: Deno.ChildProcess;
  /** Resolves with the exit status once stdout and stderr are read to their end. */
  status: Promise<Deno.CommandStatus>;
  /** What it wrote to stdout so far (its JSON log lines). */
  stdout(): string;
  /** The `exit_code` column of every `engine_runs` row. */
  runExitCodes(): Promise<number[]>;
}

async function startPreloaded(preload: string, natsUrl: string): Promise<PreloadedEngine> {
  const db = await scratchDatabase();
  const chDatabase = new URL(db.url).pathname.slice(1);
  const file = await Deno.makeTempFile({ prefix: "engine_exit_code_", suffix: ".ts" });
  await Deno.writeTextFile(file, preload);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", "--preload", file, MAIN],
    cwd: ROOT,
    env: {
      DATABASE_URL: db.url,
      NATS_URL: natsUrl,
      CLICKHOUSE_URL: "http://127.0.0.1:8123",
      TRADEWIRE_CLICKHOUSE__DATABASE: chDatabase,
      TRADEWIRE_HTTP__PORT: String(freePort()),
      TRADEWIRE_SUPERVISOR__CHILD_SHUTDOWN_MS: "3000",
      TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "false",
      TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "false",
      TRADEWIRE_EXCHANGES__KRAKEN__ENABLED: "false",
      TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "false",
    },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  const reading = Promise.all([
    (async () => {
      for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) out += chunk;
    })(),
    (async () => {
      for await (const _ of child.stderr) { /* drained */ }
    })(),
  ]);
  const status = child.status.then(async (s) => {
    await reading;
    return s;
  });
  return {
    child,
    status,
    stdout: () => out,
    async runExitCodes() {
      const sql = postgres(db.url, { max: 1, onnotice: () => {} });
      try {
        return (await sql<{ exit_code: number }[]>`select exit_code from engine_runs`)
          .map((row) => row.exit_code);
      } finally {
        await sql.end();
      }
    },
    async [Symbol.asyncDispose]() {
      try {
        child.kill("SIGKILL");
      } catch { /* exited */ }
      await status;
      await Deno.remove(file).catch(() => {});
      await db.drop();
      await fetch(
        `http://127.0.0.1:8123/?query=${
          encodeURIComponent(`DROP DATABASE IF EXISTS ${chDatabase}`)
        }`,
        { method: "POST" },
      ).then((r) => r.body?.cancel()).catch(() => {});
    },
  };
}

Deno.test("an uncaught error while the engine stops after SIGTERM: the process exits 1, and engine.events.stopped and engine_runs say 1", async () => {
  await using nats = await startNatsServer();
  const watcher = await connect({ servers: nats.url });
  try {
    const started = watcher.subscribe("engine.events.started", { max: 1 });
    const stopped = watcher.subscribe("engine.events.stopped", { max: 1 });
    await watcher.flush();
    // Throws from a timer as soon as SIGTERM arrives: an uncaught error during the graceful stop.
    await using engine = await startPreloaded(
      `Deno.addSignalListener("SIGTERM", () => {
         setTimeout(() => { throw new Error("uncaught error during shutdown"); }, 0);
       });\n`,
      nats.url,
    );
    await deadline(
      (async () => {
        for await (const _ of started) break;
      })(),
      60_000,
      "engine.events.started",
    );
    engine.child.kill("SIGTERM");
    const status = await deadline(engine.status, 30_000, "the engine's exit");
    let eventCode: number | null = null;
    await deadline(
      (async () => {
        for await (const msg of stopped) eventCode = msg.json<{ exit_code: number }>().exit_code;
      })(),
      5_000,
      "engine.events.stopped",
    );
    assert(engine.stdout().includes("uncaught error during shutdown"), "the error was logged");
    assert.equal(status.code, 1, "the process exits 1");
    assert.equal(eventCode, 1, "engine.events.stopped says exit_code 1");
    assert.deepEqual(await engine.runExitCodes(), [1], "engine_runs records exit code 1");
  } finally {
    await watcher.close();
  }
});

Deno.test("an uncaught error while the engine starts (after it took the database): the process exits 1 and engine_runs records exit code 1", async () => {
  await using nats = await startNatsServer();
  // The HTTP server (the last child, after the migrations) reports listening 3 s late, and an
  // uncaught error is thrown as it listens: the engine is still starting, its database taken.
  await using engine = await startPreloaded(
    `const serve = Deno.serve;
     // deno-lint-ignore no-explicit-any
     (Deno as any).serve = (options: any, ...rest: unknown[]) => {
       if (options && typeof options.onListen === "function") {
         const onListen = options.onListen;
         options = { ...options, onListen: (address: unknown) => {
           setTimeout(() => { throw new Error("uncaught error while starting"); }, 0);
           setTimeout(() => onListen(address), 3000);
         } };
       }
       // deno-lint-ignore no-explicit-any
       return (serve as any)(options, ...rest);
     };\n`,
    nats.url,
  );
  const status = await deadline(engine.status, 60_000, "the engine's exit");
  assert(engine.stdout().includes("uncaught error while starting"), "the error was logged");
  assert.equal(status.code, 1, "the process exits 1");
  assert.deepEqual(await engine.runExitCodes(), [1], "engine_runs records exit code 1");
});
