/**
 * Runs `main.ts` as a real subprocess for boot tests: its own PostgreSQL and
 * ClickHouse databases, a free HTTP port, and its JSON log lines collected.
 *
 * @module
 */

import { freePort } from "./_nats_server.ts";
import { DeadlineError } from "./_helpers.ts";
import { scratchDatabase } from "./_postgres.ts";

const MAIN = new URL("../main.ts", import.meta.url).pathname;
const ROOT = new URL("..", import.meta.url).pathname;
/** The shared local services' admin URL. */
export const PG_ADMIN_URL = "postgres://postgres@127.0.0.1:5432/postgres";

/** A running engine process. */
export interface EngineProcess extends AsyncDisposable {
  /** HTTP port it listens on. */
  port: number;
  /** Its PostgreSQL database URL. */
  databaseUrl: string;
  /** Parsed JSON lines it wrote to stdout so far. */
  lines: Array<Record<string, unknown>>;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Fetches a path from its HTTP server. */
  get(path: string): Promise<Response>;
  /** Sends `signal` and resolves with the exit code. */
  kill(signal?: Deno.Signal): Promise<number>;
  /** Resolves with the exit code when it exits by itself. */
  status: Promise<Deno.CommandStatus>;
}

/** Options of {@linkcode startEngineProcess}. */
export interface EngineProcessOptions {
  /**
   * Use this PostgreSQL database instead of a fresh one, and leave it when
   * the process is disposed (a test restarting the engine on the same data
   * owns and drops it). @default {a fresh database, dropped on dispose}
   */
  databaseUrl?: string | undefined;
}

/** Starts the engine with `env` on top of test defaults (fresh databases, a free port). */
export async function startEngineProcess(
  env: Record<string, string> = {},
  args: string[] = [],
  options: EngineProcessOptions = {},
): Promise<EngineProcess> {
  const port = freePort();
  const database = options.databaseUrl === undefined
    ? await scratchDatabase()
    : { url: options.databaseUrl, drop: () => Promise.resolve() };
  const chDatabase = new URL(database.url).pathname.slice(1);
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", MAIN, ...args],
    cwd: ROOT,
    env: {
      DATABASE_URL: database.url,
      NATS_URL: "nats://127.0.0.1:4222",
      CLICKHOUSE_URL: "http://127.0.0.1:8123",
      TRADEWIRE_CLICKHOUSE__DATABASE: chDatabase,
      TRADEWIRE_HTTP__PORT: String(port),
      TRADEWIRE_SUPERVISOR__CHILD_SHUTDOWN_MS: "3000",
      // No internet here: venues are off unless a test points one at a fake server.
      TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "false",
      TRADEWIRE_EXCHANGES__COINBASE__ENABLED: "false",
      TRADEWIRE_EXCHANGES__KRAKEN__ENABLED: "false",
      TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "false",
      ...env,
    },
    clearEnv: false,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const lines: Array<Record<string, unknown>> = [];
  let stderr = "";
  const readStdout = (async () => {
    let buffer = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + 1);
        try {
          lines.push(JSON.parse(line));
        } catch {
          lines.push({ unparsed: line });
        }
      }
    }
  })();
  const readStderr = (async () => {
    for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) stderr += chunk;
  })();
  const status = child.status.then(async (s) => {
    await Promise.all([readStdout, readStderr]);
    return s;
  });
  const cleanup = async () => {
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await status;
    await database.drop();
    await fetch(
      `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${chDatabase}`)}`,
      {
        method: "POST",
      },
    ).then((r) => r.body?.cancel()).catch(() => {});
  };
  return {
    port,
    databaseUrl: database.url,
    lines,
    stderr: () => stderr,
    get: (path) => fetch(`http://127.0.0.1:${port}${path}`),
    async kill(signal = "SIGTERM") {
      child.kill(signal);
      return (await status).code;
    },
    status,
    [Symbol.asyncDispose]: cleanup,
  };
}

/** Waits until `GET path` answers with a JSON body for which `accept` is true; returns it. */
export async function waitForJson(
  engine: EngineProcess,
  path: string,
  accept: (body: Record<string, unknown>, status: number) => boolean,
  timeoutMs = 30_000,
): Promise<Record<string, unknown>> {
  let last: unknown;
  const until = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await engine.get(path);
      const body = await res.json();
      last = body;
      if (accept(body, res.status)) return body;
    } catch (error) {
      last = error instanceof Error ? error.message : error;
    }
    if (Date.now() > until) {
      throw new DeadlineError(
        `${path} did not answer as expected within ${timeoutMs} ms (last: ${JSON.stringify(last)})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
