/**
 * The PostgreSQL pool's sockets (`adapters/_pg_socket.ts`): a connection
 * PostgreSQL stops answering on without closing it — a network partition, a
 * frozen server — is dropped after the answer deadline, so that its statement
 * fails as a lost connection instead of hanging; the execution engine and
 * its kill switch so answer during such a stall. And a connection that
 * requires TLS of a server without it fails as a configuration error, not as
 * an outage retried for ever.
 *
 * @module
 */
import assert from "node:assert/strict";
import net from "node:net";
import tls from "node:tls";
import {
  ANSWER_MARGIN_MS,
  answerDeadlineMs,
  createPostgres,
  databaseErrorKind,
  waitForPostgres,
} from "../adapters/postgres.ts";
import { paperBroker } from "../brokers/paper.ts";
import { loadConfig } from "../config/mod.ts";
import { DbConnectionError, mapDbError, mayHaveCommitted } from "../db/errors.ts";
import { nullLogger } from "../lib/log.ts";
import { ExecutionEngine } from "../trading/execution.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { primedCache } from "./_execution_engine.ts";
import { noRiskLimits, waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";
import { startTcpProxy } from "./_tcp_proxy.ts";

const PG = { hostname: "127.0.0.1", port: 5432 };

/** `url` with its port replaced by `port`. */
function through(url: string, port: number): string {
  const parsed = new URL(url);
  parsed.port = String(port);
  return parsed.toString();
}

/** A pool of one connection to the shared server through `proxy`, with a 1 s answer deadline. */
function onePoolThrough(proxy: { port: number }) {
  return createPostgres({
    url: through("postgres://postgres@127.0.0.1:5432/postgres", proxy.port),
    pool_size: 1,
    answer_deadline_ms: 1000,
  });
}

/** How `promise` settled; fails the test when it has not within `ms` (`what` hung). */
async function settledWithin<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<{ value: T } | { error: unknown }> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const outcome = await Promise.race([
      promise.then((value) => ({ value }), (error: unknown) => ({ error })),
      new Promise<null>((resolve) => timer = setTimeout(() => resolve(null), ms)),
    ]);
    if (outcome === null) assert.fail(`${what} hung (no answer within ${ms} ms)`);
    return outcome;
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("the answer deadline is statement_timeout plus a margin, none without statement_timeout", () => {
  const url = "postgres://postgres@127.0.0.1:5432/tw";
  assert.equal(answerDeadlineMs({ url, statement_timeout_ms: 1000 }), 1000 + ANSWER_MARGIN_MS);
  assert.equal(answerDeadlineMs({ url }), 30_000 + ANSWER_MARGIN_MS);
  assert.equal(answerDeadlineMs({ url, statement_timeout_ms: 0 }), null);
  assert.equal(answerDeadlineMs({ url, answer_deadline_ms: 250 }), 250);
  assert.equal(answerDeadlineMs({ url, answer_deadline_ms: null }), null);
});

Deno.test("a statement PostgreSQL never answers fails as a lost connection after the answer deadline, and the pool works again once it answers", async () => {
  await using proxy = startTcpProxy(PG);
  const sql = onePoolThrough(proxy);
  try {
    // Slower than nothing, quicker than the deadline: answered, not cut.
    await sql`select pg_sleep(0.3)`;
    await sql`select pg_sleep(0.3)`;
    proxy.stall();
    const started = Date.now();
    const outcome = await settledWithin(sql`select 1 as one`, 15_000, "the statement");
    assert.ok("error" in outcome, `expected an error, got ${JSON.stringify(outcome)}`);
    const error = mapDbError(outcome.error);
    assert.ok(error instanceof DbConnectionError, `${error.name}: ${error.message}`);
    assert.match(error.message, /sent nothing for 1000 ms/);
    // Sent and unanswered: it may have run.
    assert.equal(mayHaveCommitted(error), true);
    assert.ok(Date.now() - started >= 1000, "dropped before its deadline");

    proxy.restore();
    const [row] = await sql<{ one: number }[]>`select 1 as one`;
    assert.equal(row?.one, 1);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("the engine's pool is watched by default, without TLS: statement_timeout_ms plus the margin", async () => {
  await using proxy = startTcpProxy(PG);
  const sql = createPostgres({
    url: through("postgres://postgres@127.0.0.1:5432/postgres", proxy.port),
    sslmode: "disable",
    pool_size: 1,
    statement_timeout_ms: 500,
  });
  try {
    await sql`select 1 as one`;
    proxy.stall();
    const started = Date.now();
    const outcome = await settledWithin(sql`select 1 as one`, 20_000, "the statement");
    assert.ok("error" in outcome, `expected an error, got ${JSON.stringify(outcome)}`);
    const error = mapDbError(outcome.error);
    assert.ok(error instanceof DbConnectionError, `${error.name}: ${error.message}`);
    assert.match(error.message, new RegExp(`sent nothing for ${500 + ANSWER_MARGIN_MS} ms`));
    assert.ok(Date.now() - started >= 500 + ANSWER_MARGIN_MS, "dropped before its deadline");
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("while PostgreSQL stops answering, a signal batch and the kill switch answer instead of hanging", async () => {
  await using db = await migratedDatabase();
  await using proxy = startTcpProxy(PG);
  const sql = createPostgres({
    url: through(db.url, proxy.port),
    pool_size: 4,
    connect_timeout_s: 1,
    answer_deadline_ms: 1000,
  });
  const base = await loadConfig({ args: [], env: {} });
  const execution = { ...base.execution, max_price_age_ms: 60_000 };
  const cache = primedCache();
  const state = new PortfolioState({ starting_cash: "100000" });
  await state.load(sql);
  await using paper = paperBroker({
    cache,
    options: base.brokers.paper,
    max_price_age_ms: execution.max_price_age_ms,
  });
  const engine = new ExecutionEngine({
    sql,
    brokers: new Map([["paper", paper]]),
    cache,
    state,
    config: { risk: noRiskLimits(base), execution },
    publish: () => {},
    publishFill: () => Promise.resolve(),
    log: nullLogger,
    options: { unknown_outcome_wait_ms: 1000 },
  });
  try {
    await engine.start();
    const signal = { symbol: "BTC-USDT", side: "buy", qty: "0.01" };
    const [first] = await engine.processSignals([{ body: signal, source: "rest" }]);
    assert.equal(first?.status, "accepted", JSON.stringify(first));

    proxy.stall();
    const batch = await settledWithin(
      engine.processSignals([{ body: { ...signal, id: "during-stall" }, source: "rest" }]),
      20_000,
      "the signal batch",
    );
    // Whether it was stored is unknown: the caller gets the connection error (503 over REST).
    assert.ok("error" in batch, `expected an error, got ${JSON.stringify(batch)}`);
    assert.equal(databaseErrorKind(batch.error), "connection", String(batch.error));

    // The kill switch waits for the batches committing: none hangs any more.
    const kill = await settledWithin(
      engine.setKillSwitch({ active: true, reason: "partition", cancel_open: true }),
      20_000,
      "the kill switch",
    );
    assert.ok("error" in kill, "the switch cannot have been stored");
    assert.match(String(kill.error), /cancel/i, "the error names the cancels sent all the same");
    assert.equal(engine.killSwitch().active, true, "on in memory until PostgreSQL answers");
  } finally {
    proxy.restore();
    await engine.stop();
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("sslmode=require against a server without TLS is a configuration error, not an outage retried for ever", async () => {
  // The shared server runs without TLS (ssl = off): it answers the SSLRequest with N.
  const [ssl] = await (async () => {
    const sql = createPostgres({ url: "postgres://postgres@127.0.0.1:5432/postgres" });
    try {
      return await sql<{ ssl: string }[]>`show ssl`;
    } finally {
      await sql.end();
    }
  })();
  if (ssl?.ssl !== "off") throw new Error("this test needs a PostgreSQL without TLS");
  const options = {
    url: "postgres://postgres@127.0.0.1:5432/postgres",
    sslmode: "require" as const,
  };
  const sql = createPostgres(options);
  try {
    const outcome = await settledWithin(sql`select 1`, 15_000, "the statement");
    assert.ok("error" in outcome, JSON.stringify(outcome));
    assert.match(
      String((outcome.error as Error).message),
      /does not support TLS, but sslmode=require requires it/,
    );
    assert.notEqual(databaseErrorKind(outcome.error), "connection");
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
  const sleeps: number[] = [];
  const waited = await settledWithin(
    waitForPostgres(options, {
      clock: {
        now: () => Date.now(),
        sleep: (ms: number) => {
          sleeps.push(ms);
          return Promise.resolve();
        },
      },
      maxAttempts: 5,
    }),
    15_000,
    "waitForPostgres",
  );
  assert.ok("error" in waited, JSON.stringify(waited));
  assert.deepEqual(sleeps, [], "retried as if PostgreSQL were down");
  assert.match(String((waited.error as Error).message), /does not support TLS/);
});

/**
 * A PostgreSQL port speaking TLS (a throw-away self-signed certificate made
 * with `openssl`): it answers the SSLRequest with S, ends TLS and forwards the
 * plaintext to the shared server.
 */
async function startTlsPostgres() {
  const dir = await Deno.makeTempDir({ prefix: "tw_tls_" });
  const made = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=localhost",
      "-keyout",
      `${dir}/key.pem`,
      "-out",
      `${dir}/cert.pem`,
    ],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!made.success) throw new Error(`openssl: ${new TextDecoder().decode(made.stderr)}`);
  const sockets = new Set<net.Socket>();
  const keep = <T extends net.Socket>(socket: T): T => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => socket.destroy());
    return socket;
  };
  const ends = tls.createServer({
    key: await Deno.readTextFile(`${dir}/key.pem`),
    cert: await Deno.readTextFile(`${dir}/cert.pem`),
  }, (secure) => {
    const upstream = keep(net.connect(PG.port, PG.hostname));
    keep(secure);
    secure.pipe(upstream);
    upstream.pipe(secure);
    secure.on("close", () => upstream.destroy());
    upstream.on("close", () => secure.destroy());
  });
  const front = net.createServer((socket) => {
    keep(socket);
    socket.once("readable", () => {
      if (socket.read(8) === null) return; // the SSLRequest
      socket.write("S");
      ends.emit("connection", socket);
    });
  });
  await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", () => resolve()));
  return {
    port: (front.address() as net.AddressInfo).port,
    async [Symbol.asyncDispose]() {
      for (const socket of sockets) socket.destroy();
      await new Promise((resolve) => front.close(resolve));
      await new Promise((resolve) => ends.close(resolve));
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test("a TLS connection (sslmode=require) is watched too: dropped after the answer deadline when PostgreSQL stops answering", async () => {
  await using server = await startTlsPostgres();
  await using proxy = startTcpProxy({ hostname: "127.0.0.1", port: server.port });
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:${proxy.port}/postgres`,
    sslmode: "require",
    pool_size: 1,
    answer_deadline_ms: 1000,
  });
  try {
    const [row] = await sql<{ one: number }[]>`select 1 as one`;
    assert.equal(row?.one, 1, "a query over TLS");
    proxy.stall();
    const outcome = await settledWithin(sql`select 1`, 15_000, "the statement over TLS");
    assert.ok("error" in outcome, JSON.stringify(outcome));
    const error = mapDbError(outcome.error);
    assert.ok(error instanceof DbConnectionError, `${error.name}: ${error.message}`);
    assert.match(error.message, /sent nothing for 1000 ms/);
    proxy.restore();
    const [again] = await sql<{ one: number }[]>`select 1 as one`;
    assert.equal(again?.one, 1, "a new TLS connection once PostgreSQL answers");
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("a statement queued behind another that was answered is still watched: dropped when PostgreSQL stops answering", async () => {
  await using proxy = startTcpProxy(PG);
  // One connection: the second statement is pipelined behind the first.
  const sql = onePoolThrough(proxy);
  try {
    await sql`select 1`;
    // Sent in this order (a postgres.js query goes out when it is first awaited or then-ed).
    const first = sql`select pg_sleep(0.4)`.then(() => {});
    const second = sql`select pg_sleep(0.8), 2 as two`;
    second.catch(() => {});
    await first; // bytes came back; the second answer is still owed
    proxy.stall();
    const outcome = await settledWithin(second, 15_000, "the queued statement");
    assert.ok("error" in outcome, JSON.stringify(outcome));
    assert.ok(mapDbError(outcome.error) instanceof DbConnectionError, String(outcome.error));
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("a result cut off after its first rows is dropped at the answer deadline", async () => {
  await using proxy = startTcpProxy(PG);
  const sql = onePoolThrough(proxy);
  try {
    // Rows stream out, then the server works 1.5 s on row 2000 while the network fails.
    const rows = sql`select g, repeat('x', 200) as pad,
        pg_sleep(case when g = 2000 then 1.5 else 0 end)::text as s
      from generate_series(1, 3000) g`;
    rows.catch(() => {});
    await waitFor(() => proxy.open > 0, 5_000, "the query sent");
    await new Promise((resolve) => setTimeout(resolve, 300)); // the first rows are on their way
    proxy.stall();
    const outcome = await settledWithin(rows, 15_000, "the cut-off query");
    assert.ok("error" in outcome, JSON.stringify(outcome).slice(0, 200));
    assert.ok(mapDbError(outcome.error) instanceof DbConnectionError, String(outcome.error));
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("a URL naming several hosts connects to the first while it answers (postgres.js's own sockets)", async () => {
  // The second host accepts connections and never answers: a connection sent there would hang.
  await using second = startTcpProxy(PG);
  second.stall();
  const sql = createPostgres({
    url: `postgres://postgres@127.0.0.1:5432,127.0.0.1:${second.port}/postgres`,
    pool_size: 4,
    answer_deadline_ms: 1000,
  });
  try {
    const answers = await Promise.all(
      [1, 2, 3, 4, 5, 6, 7, 8].map((x) =>
        sql<{ x: number }[]>`select ${x}::int as x, pg_sleep(0.1)`
      ),
    );
    assert.deepEqual(answers.map(([row]) => row?.x), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert.equal(second.accepted, 0, "connections opened on the second host");
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("a connection that owes no answer may stay silent, and a large result streams whole", async () => {
  const sql = createPostgres({
    url: "postgres://postgres@127.0.0.1:5432/postgres",
    pool_size: 1,
    answer_deadline_ms: 500,
  });
  try {
    const [before] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
    await new Promise((resolve) => setTimeout(resolve, 1200)); // idle, over twice the deadline
    const [after] = await sql<{ pid: number }[]>`select pg_backend_pid() as pid`;
    assert.equal(after?.pid, before?.pid, "the idle connection was dropped");
    const rows = await sql`select g, repeat('x', 200) as pad from generate_series(1, 50000) g`;
    assert.equal(rows.length, 50_000);
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});

Deno.test("a first statement with parameters (Parse, Describe, Flush: no Sync) is watched too", async () => {
  await using proxy = startTcpProxy(PG);
  const sql = onePoolThrough(proxy);
  try {
    await sql`select 1 as one`; // connected, nothing owed
    proxy.stall();
    // Not prepared yet on this connection: postgres.js describes it first and flushes.
    const outcome = await settledWithin(
      sql`select ${42}::int as answer`,
      15_000,
      "the parameterised statement",
    );
    assert.ok("error" in outcome, JSON.stringify(outcome));
    assert.ok(mapDbError(outcome.error) instanceof DbConnectionError, String(outcome.error));
  } finally {
    await sql.end({ timeout: 0 }).catch(() => {});
  }
});
