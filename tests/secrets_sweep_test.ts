/**
 * A sweep for secrets, end to end: the engine run as a process, at debug
 * level, with secrets in every place the README says they may be
 * (DATABASE_URL, NATS credentials, ClickHouse password, Alpaca keys), through
 * its error paths (NATS and ClickHouse refusing the credentials or not
 * answering, Alpaca refusing the keys over REST and its stream), shows no
 * secret in a log line, stderr, an HTTP answer, a NATS event or a PostgreSQL
 * row.
 */

import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { PG_ADMIN_URL, startEngineProcess, waitForJson } from "./_engine_process.ts";
import { freePort } from "./_nats_server.ts";

const PG_SECRET = "PgSweepSecret0x9a";
const NATS_USER = "twsweep";
const NATS_SECRET = "NatsSweepSecret0x7c";
const CH_SECRET = "ChSweepSecret0x3e";
const ALPACA_KEY_ID = "AKSWEEPKEYID0X5D";
const ALPACA_SECRET = "AlpacaSweepSecret0x1f";
const SECRETS = [PG_SECRET, NATS_SECRET, CH_SECRET, ALPACA_KEY_ID, ALPACA_SECRET];

/** A private nats-server that wants a user and password. */
async function natsWithAuth() {
  const port = freePort();
  const storeDir = await Deno.makeTempDir({ prefix: "tw-sweep-nats-" });
  const child = new Deno.Command("nats-server", {
    args: [
      "-a",
      "127.0.0.1",
      "-p",
      String(port),
      "-js",
      "-sd",
      storeDir,
      "--user",
      NATS_USER,
      "--pass",
      NATS_SECRET,
    ],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error("nats-server did not start");
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    port,
    async [Symbol.asyncDispose]() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(storeDir, { recursive: true }).catch(() => {});
    },
  };
}

/** A fake Alpaca: every REST call is refused, echoing what it was sent as a misbehaving proxy would. */
function fakeAlpaca(status: number) {
  const port = freePort();
  const seen: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port, onListen() {} }, (req) => {
    seen.push(`${req.method} ${new URL(req.url).pathname}`);
    if (req.headers.get("upgrade") === "websocket") {
      // Both streams, market data and trading, refuse the keys.
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onopen = () => socket.send(JSON.stringify([{ T: "success", msg: "connected" }]));
      socket.onmessage = () => {
        socket.send(JSON.stringify({
          stream: "authorization",
          data: { status: "unauthorized", action: "authenticate" },
        }));
        socket.send(JSON.stringify([{ T: "error", code: 402, msg: "auth failed" }]));
      };
      return response;
    }
    return Response.json({ code: 40110000, message: "request is not authorized" }, { status });
  });
  return {
    url: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/v2`,
    seen,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

async function scratchDatabase(suffix: string) {
  const name = `tw_test_sweep_${suffix}_${crypto.randomUUID().slice(0, 8).replaceAll("-", "")}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin`create database ${admin(name)}`;
  await admin.end();
  return {
    name,
    async [Symbol.asyncDispose]() {
      const sql = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
      await sql`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${name}`;
      await sql`drop database if exists ${sql(name)}`;
      await sql.end();
      await fetch(
        `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${name}`)}`,
        { method: "POST" },
      ).then((r) => r.body?.cancel()).catch(() => {});
    },
  };
}

function leaks(where: string, text: string): string[] {
  return SECRETS.filter((s) => text.includes(s)).map((s) => `${where} holds ${s}`);
}

/** What a variant's error path has been through once `until` holds. */
interface Progress {
  /** The engine's log lines so far. */
  lines: ReadonlyArray<Record<string, unknown>>;
  /** The fake Alpaca's requests so far (`GET /stream`: its trading stream). */
  alpaca: readonly string[];
  /** Whether the engine process has exited. */
  exited: boolean;
}

interface Variant {
  /** Environment on top of the defaults below. */
  env?: (ports: { nats: number; alpaca: string; alpacaWs: string }) => Record<string, string>;
  /** NATS URL the engine gets. */
  natsUrl?: (port: number) => string;
  /** When the error path under test has been taken (and logged); waited for with a deadline. */
  until: (progress: Progress) => boolean;
}

/** Whether a warn or error line mentions `word` (any case). */
function warned(lines: Progress["lines"], word: string): boolean {
  return lines.some((line) =>
    (line.level === "warn" || line.level === "error") &&
    JSON.stringify(line).toLowerCase().includes(word)
  );
}

/** Polls `check` until it holds; throws naming `what` after `ms`. */
async function waitFor(check: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`${what} did not happen within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function runAndCollect(variant: Variant): Promise<string[]> {
  await using nats = await natsWithAuth();
  await using alpaca = fakeAlpaca(401);
  await using db = await scratchDatabase("secrets");
  const databaseUrl = `postgres://postgres:${PG_SECRET}@127.0.0.1:5432/${db.name}`;
  const events: string[] = [];
  const watcher = await connect({
    servers: `nats://127.0.0.1:${nats.port}`,
    user: NATS_USER,
    pass: NATS_SECRET,
  });
  const sub = watcher.subscribe(">");
  (async () => {
    for await (const m of sub) events.push(`${m.subject} ${m.string()}`);
  })();
  const found: string[] = [];
  {
    await using engine = await startEngineProcess(
      {
        DATABASE_URL: databaseUrl,
        NATS_URL: variant.natsUrl?.(nats.port) ??
          `nats://${NATS_USER}:${NATS_SECRET}@127.0.0.1:${nats.port}`,
        TRADEWIRE_CLICKHOUSE__DATABASE: db.name,
        ALPACA_KEY_ID,
        ALPACA_SECRET_KEY: ALPACA_SECRET,
        TRADEWIRE_LOG__LEVEL: "debug",
        TRADEWIRE_BROKERS__ALPACA__ENABLED: "true",
        TRADEWIRE_BROKERS__ALPACA__BASE_URL: alpaca.url,
        TRADEWIRE_EXCHANGES__ALPACA__ENABLED: "true",
        TRADEWIRE_EXCHANGES__ALPACA__WS_URL: alpaca.ws,
        ...variant.env?.({ nats: nats.port, alpaca: alpaca.url, alpacaWs: alpaca.ws }),
      },
      [],
      { databaseUrl },
    );
    let exited = false;
    engine.status.then(() => exited = true);
    await waitFor(
      () => variant.until({ lines: engine.lines, alpaca: alpaca.seen, exited }),
      30_000,
      "the error path under test",
    );
    if (!exited) {
      await waitForJson(
        engine,
        "/api/health/detailed",
        (_b, status) => status === 503 || status === 200,
        20_000,
      );
    }
    for (
      const path of [
        "/",
        "/api/health",
        "/api/health/detailed",
        "/api/v1/market-data/stream_status",
        "/api/v1/market-data/ticks/AAPL",
        "/api/v1/market-data/candles/AAPL",
        "/api/v1/trading/portfolio",
        "/api/v1/trading/kill-switch",
      ]
    ) {
      const res = await engine.get(path).catch(() => null);
      if (res === null) continue;
      const text = await res.text();
      found.push(...leaks(`GET ${path} (${res.status}) ${text.slice(0, 2000)}`, text));
    }
    const post = (path: string, body: unknown) =>
      fetch(`http://127.0.0.1:${engine.port}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      }).then((r) => r.text(), () => "");
    found.push(...leaks(
      "POST /signal",
      await post("/api/v1/trading/signal", {
        id: "sweep-1",
        symbol: "AAPL",
        side: "buy",
        qty: "1",
        broker: "alpaca",
        type: "limit",
        limit_price: "1",
      }),
    ));
    found.push(...leaks(
      "POST /kill-switch",
      await post("/api/v1/trading/kill-switch", {
        active: true,
        cancel_open: true,
        reason: "sweep",
      }),
    ));
    // A graceful stop: what the requests set going (the order to Alpaca) ends before the sweep.
    await engine.kill("SIGTERM").catch(() => {});
    for (const line of engine.lines) {
      found.push(...leaks(`log line ${JSON.stringify(line).slice(0, 400)}`, JSON.stringify(line)));
    }
    found.push(...leaks("stderr", engine.stderr()));
  }
  await watcher.drain();
  for (const event of events) found.push(...leaks(`NATS ${event.slice(0, 200)}`, event));
  const sql = postgres(databaseUrl, { max: 1, onnotice: () => {} });
  try {
    const tables = await sql<{ table_name: string }[]>`
      select table_name from information_schema.tables where table_schema = 'public'`;
    for (const { table_name } of tables) {
      const rows = await sql`select * from ${sql(table_name)}`;
      found.push(...leaks(`table ${table_name}`, JSON.stringify(rows)));
    }
  } finally {
    await sql.end();
  }
  return found;
}

/** How often the fake Alpaca was asked for `path`. */
function count(requests: readonly string[], path: string): number {
  return requests.filter((r) => r === `GET ${path}`).length;
}

Deno.test("a running engine whose Alpaca keys are refused shows no secret anywhere", async () => {
  assert.deepEqual(
    await runAndCollect({
      // Both streams refused the keys and were tried again: the refusals were handled and logged.
      until: ({ alpaca }) => count(alpaca, "/stream") >= 2 && count(alpaca, "/v2/iex") >= 2,
    }),
    [],
  );
});

Deno.test("an engine whose ClickHouse password is refused shows no secret anywhere", async () => {
  assert.deepEqual(
    await runAndCollect({
      env: () => ({ CLICKHOUSE_PASSWORD: CH_SECRET }),
      // Its ClickHouse migrations fail: the engine logs why and exits.
      until: ({ exited, lines }) => exited && warned(lines, "clickhouse"),
    }),
    [],
  );
});

Deno.test("an engine whose ClickHouse URL (with its password) cannot be reached shows no secret anywhere", async () => {
  const dead = freePort();
  assert.deepEqual(
    await runAndCollect({
      env: () => ({ CLICKHOUSE_URL: `http://default:${CH_SECRET}@127.0.0.1:${dead}` }),
      until: ({ lines }) => warned(lines, "clickhouse"),
    }),
    [],
  );
});

Deno.test("an engine whose NATS password is refused shows no secret anywhere", async () => {
  assert.deepEqual(
    await runAndCollect({
      natsUrl: (port) => `nats://${NATS_USER}:${NATS_SECRET}x@127.0.0.1:${port}`,
      until: ({ exited, lines }) => exited && warned(lines, "nats refused the credentials"),
    }),
    [],
  );
});
