// deno-lint-ignore-file no-console -- prints the engine's log when a scenario fails
/**
 * Exactly-once trading across NATS failures: helpers of the tests/nats_*_test.ts
 * that run the real engine as a subprocess on a private nats-server
 * (optionally through a TCP proxy) and a scratch database `tw_test_nats_world_*`;
 * a separate publisher sends signals with JetStream publish acks and retries,
 * as a strategy would, while NATS is restarted, loses its store or is
 * partitioned from the engine. No tests of its own.
 */

import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { encodeJson } from "../adapters/codec.ts";
import { type EngineProcess, PG_ADMIN_URL, startEngineProcess } from "./_engine_process.ts";
import { freePort, type NatsServer, startNatsServer } from "./_nats_server.ts";
import { startTcpProxy, type TcpProxy } from "./_tcp_proxy.ts";
import { executionRunning, quoter, SYMBOL, violations } from "./_chaos.ts";
import { waitFor } from "./_helpers.ts";

/** The strategy every signal of a world is published for. */
/**
 * How long the invariants must hold after NATS lost its store before the
 * world counts as settled: longer than the trading subtree's restart (its
 * consumer found gone, then the supervisor's backoff) and the republishing
 * of the fills it had not applied.
 */
export const LOST_STORE_SETTLE_MS = 10_000;

export const STRATEGY = "natsworld";

/** The world of one scenario: NATS, a scratch database, a publisher; engines started in it. */
export async function natsWorld(
  options: { proxy?: boolean; config?: string; env?: Record<string, string> } = {},
) {
  let storeDir = await Deno.makeTempDir({ prefix: "tw-nats-world-" });
  const natsPort = freePort();
  let server: NatsServer = await startNatsServer({ port: natsPort, storeDir });
  const proxy: TcpProxy | null = options.proxy
    ? startTcpProxy({ hostname: "127.0.0.1", port: natsPort })
    : null;
  const dbName = `tw_test_nats_world_${crypto.randomUUID().replaceAll("-", "").slice(0, 10)}`;
  const admin = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
  await admin`create database ${admin(dbName)}`;
  await admin.end();
  const dbUrl = `postgres://postgres@127.0.0.1:5432/${dbName}`;
  const sql = postgres(dbUrl, { max: 2, onnotice: () => {} });
  const nc = await connect({
    servers: server.url,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 100,
    reconnectJitter: 0,
  });
  const js = jetstream(nc, { timeout: 2_000 });
  const configFile = await Deno.makeTempFile({ prefix: "tw-nats-world-", suffix: ".yaml" });
  await Deno.writeTextFile(
    configFile,
    options.config ?? "risk:\n  max_open_orders: 1000000\n",
  );
  const env = {
    NATS_URL: proxy ? `nats://127.0.0.1:${proxy.port}` : server.url,
    TRADEWIRE_CONFIG: configFile,
    TRADEWIRE_WRITER__ENABLED: "false",
    ...options.env,
  };
  const engines: EngineProcess[] = [];
  const quotes = quoter(nc);
  const count = async (q: string) => Number((await sql.unsafe(q))[0]?.n ?? 0);
  /** Ids acknowledged by JetStream (each published until acknowledged). */
  const published = new Set<string>();
  /**
   * Ids ever sent: one whose publishing was halted before an acknowledgement
   * came may still have been stored (its ack lost in the outage) and be
   * processed.
   */
  const sent = new Set<string>();
  /** When each id was acknowledged (Date.now()). */
  const ackedAt = new Map<string, number>();
  let publishErrors = 0;
  let halted = false;
  /** Publishes `id` until JetStream acknowledges it, as a strategy would. */
  const publishOne = async (id: string, i: number) => {
    const body = { id, symbol: SYMBOL, side: i % 2 === 0 ? "buy" : "sell", qty: "0.01" };
    while (!halted) {
      sent.add(id);
      try {
        await js.publish(`signals.${STRATEGY}`, encodeJson(body), { msgID: id });
        published.add(id);
        ackedAt.set(id, Date.now());
        return;
      } catch {
        publishErrors++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  return {
    get server() {
      return server;
    },
    proxy,
    sql,
    nc,
    js,
    count,
    published,
    ackedAt,
    get publishErrors() {
      return publishErrors;
    },
    /** Makes publishing give up (what is not acknowledged yet stays unpublished). */
    haltPublishing() {
      halted = true;
    },
    /** Publishes ids `<prefix><from..to-1>`, `parallel` in flight at once. */
    async publish(prefix: string, from: number, to: number, parallel = 20, pauseMs = 5) {
      for (let start = from; start < to; start += parallel) {
        const chunk: Promise<void>[] = [];
        for (let i = start; i < Math.min(to, start + parallel); i++) {
          chunk.push(publishOne(`${prefix}${i}`, i));
        }
        await Promise.all(chunk);
        if (pauseMs > 0) await new Promise((r) => setTimeout(r, pauseMs));
      }
    },
    /** Stops NATS and starts it again on the same port, on the same store or on an empty one. */
    async restartNats(options: { loseStore?: boolean; downMs?: number } = {}) {
      await server.stop();
      if (options.loseStore) {
        await Deno.remove(storeDir, { recursive: true }).catch(() => {});
        storeDir = await Deno.makeTempDir({ prefix: "tw-nats-world-" });
      }
      if (options.downMs) await new Promise((r) => setTimeout(r, options.downMs));
      // Everything acknowledged before now was acknowledged by the old server.
      const oldServerGone = Date.now();
      server = await startNatsServer({ port: natsPort, storeDir });
      return oldServerGone;
    },
    async start(extra: Record<string, string> = {}) {
      const engine = await startEngineProcess({ ...env, ...extra }, [], { databaseUrl: dbUrl });
      engines.push(engine);
      await executionRunning(engine, 90_000);
      return engine;
    },
    /**
     * Every invariant: _chaos.ts's, plus one signals row per published id, and
     * none of an id never sent.
     */
    async check(options: { lostBefore?: number; quiet?: boolean } = {}): Promise<string[]> {
      const out = await violations(sql);
      const rows = await sql<{ client_signal_id: string; n: number }[]>`
        select client_signal_id, count(*)::int as n from signals
        where strategy = ${STRATEGY} group by 1`;
      const seen = new Map(rows.map((r) => [r.client_signal_id, r.n]));
      // Acknowledged by a server whose store was then lost: gone with it, not the engine's doing.
      const lost = (id: string) =>
        options.lostBefore !== undefined && (ackedAt.get(id) ?? 0) < options.lostBefore;
      const missing = [...published].filter((id) => !seen.has(id) && !lost(id));
      const twice = rows.filter((r) => r.n > 1).map((r) => r.client_signal_id);
      const unknown = rows.filter((r) => !sent.has(r.client_signal_id)).map((r) =>
        r.client_signal_id
      );
      if (missing.length > 0) {
        out.push(`published, no signals row: ${missing.slice(0, 10)} (${missing.length})`);
      }
      if (twice.length > 0) {
        out.push(`several signals rows: ${twice.slice(0, 10)} (${twice.length})`);
      }
      if (unknown.length > 0) {
        out.push(`signals rows of no published id: ${unknown.slice(0, 10)} (${unknown.length})`);
      }
      const notAccepted = await sql<{ status: string; reasons: unknown; n: number }[]>`
        select status::text, reasons, count(*)::int as n from signals
        where status <> 'accepted' group by 1, 2`;
      if (notAccepted.length > 0) {
        out.push(`signals not accepted: ${JSON.stringify([...notAccepted]).slice(0, 600)}`);
      }
      const orders = await count("select count(*)::int as n from orders");
      if (orders !== seen.size) out.push(`orders ${orders} <> signals ${seen.size}`);
      if (out.length > 0 && !options.quiet) {
        console.log(
          "unapplied fills:",
          JSON.stringify([
            ...await sql`
          select f.id, f.created_at, s.client_signal_id, s.received_at, s.decided_at, o.status::text
          from fills f join orders o on o.id = f.order_id join signals s on s.id = o.signal_id
          where f.realized_pnl is null order by f.id limit 3`,
          ]),
        );
        console.log(
          "rejected:",
          JSON.stringify([
            ...await sql`
          select s.client_signal_id, s.received_at, s.decided_at
          from signals s where status = 'rejected' order by id limit 3`,
          ]),
        );
      }
      return out;
    },
    /**
     * Waits until every invariant holds (or `timeoutMs` passed) — with
     * `lostBefore`, until they have held for {@linkcode LOST_STORE_SETTLE_MS}:
     * a signal acknowledged by the lost store counts as gone, but the engine
     * may hold it, fetched before the loss, and process it after a first clean
     * look (its fill then waits for the tracker, restarted to create its
     * consumer again).
     */
    async settled(timeoutMs = 120_000, options: { lostBefore?: number } = {}) {
      const holdMs = options.lostBefore === undefined ? 0 : LOST_STORE_SETTLE_MS;
      let cleanSince: number | null = null;
      await waitFor(
        async () => {
          if ((await this.check({ ...options, quiet: true })).length > 0) {
            cleanSince = null;
            return false;
          }
          cleanSince ??= Date.now();
          return Date.now() - cleanSince >= holdMs;
        },
        timeoutMs,
        "every invariant holds",
      ).catch((e) => console.log(String(e)));
    },
    /**
     * For a failed assertion's message (CI shows those, not a test's output):
     * the engine's health and its last warnings and errors.
     */
    async diagnosis(engine: EngineProcess, lines = 15): Promise<string> {
      const h = await health(engine);
      const notes = engine.lines
        .filter((l) => l.level === "warn" || l.level === "error")
        .filter((l) => l.message !== "could not publish a fill; retrying")
        .slice(-lines)
        .map((l) => `${l.time} ${l.level} ${l.actor ?? l.component ?? ""}: ${l.message}`);
      return `health ${JSON.stringify(h).slice(0, 800)}\n${notes.join("\n")}`;
    },
    dump(
      engine: EngineProcess,
      filter: (l: Record<string, unknown>) => boolean = (l) =>
        l.level !== "debug" && l.message !== "could not publish a fill; retrying",
    ) {
      console.log(
        engine.lines.filter(filter).slice(-150).map((l) => JSON.stringify(l).slice(0, 500)).join(
          "\n",
        ),
      );
    },
    async [Symbol.asyncDispose]() {
      quotes.stop();
      for (const e of engines) await Promise.resolve(e[Symbol.asyncDispose]()).catch(() => {});
      await nc.close().catch(() => {});
      await sql.end();
      await proxy?.close();
      const drop = postgres(PG_ADMIN_URL, { max: 1, onnotice: () => {} });
      await drop`select pg_terminate_backend(pid) from pg_stat_activity where datname = ${dbName}`;
      await drop`drop database if exists ${drop(dbName)}`;
      await drop.end();
      await fetch(
        `http://127.0.0.1:8123/?query=${encodeURIComponent(`DROP DATABASE IF EXISTS ${dbName}`)}`,
        { method: "POST" },
      ).then((r) => r.body?.cancel()).catch(() => {});
      await server.stop();
      await Deno.remove(storeDir, { recursive: true }).catch(() => {});
      await Deno.remove(configFile).catch(() => {});
    },
  };
}

/** GET /api/health/detailed's status. */
export async function health(engine: EngineProcess): Promise<Record<string, unknown>> {
  try {
    return await (await engine.get("/api/health/detailed")).json();
  } catch (e) {
    return { error: String(e) };
  }
}
