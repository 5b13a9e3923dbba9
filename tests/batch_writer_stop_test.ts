/**
 * The batch writer's stop against a slow or hung ClickHouse.
 *
 * - An insert cut off because the writer stopped (its grace ran out while
 *   ClickHouse was slow) may still be carried out by the server afterwards:
 *   the batch it was of must not be written again (by the next writer, or by
 *   this one from its pull still open) before that insert is over, or the
 *   `candles` view counts its trades twice. README: "An insert cut off in
 *   flight (connection lost, timeout) is waited for on the server (by its
 *   query_id) before it is retried".
 * - After `shutdown_grace_ms` the writer sends no ClickHouse request (the
 *   client ignores an abort signal that is already aborted), so against a
 *   ClickHouse that hangs on inserts it still ends within its `shutdownMs`.
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { createClickHouse, quoteIdentifier } from "../adapters/clickhouse.ts";
import { encodeJson } from "../adapters/codec.ts";
import { Migrator } from "../adapters/migrator.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { batchWriterActor, type BatchWriterOptions } from "../actors/batch_writer.ts";
import { MarketStatus } from "../market/status.ts";
import type { TradeEvent } from "../market/events.ts";
import { mdCleanStream } from "../market/md_stream.ts";
import { cleanSubject } from "../market/subjects.ts";
import { waitFor } from "./_helpers.ts";

const CH_URL = Deno.env.get("TW_TEST_CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const NATS_URL = Deno.env.get("TW_TEST_NATS_URL") ?? "nats://127.0.0.1:4222";
const PG_URL = Deno.env.get("TW_TEST_POSTGRES_URL") ??
  "postgres://postgres@127.0.0.1:5432/postgres";
const MIGRATIONS = new URL("../migrations/", import.meta.url).pathname;
/** 2023-11-14 22:13:00 UTC, on a minute boundary, in µs. */
const T0 = 1_699_999_980_000_000;
const TRADES = 5;
/** How long the slow server takes before it runs an insert it was sent. */
const SLOW_MS = 2_000;

function randomId(): string {
  return crypto.randomUUID().replaceAll("-", "").slice(0, 12);
}

function trade(i: number): TradeEvent {
  return {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: T0 + i * 1_000_000,
    ts_local: T0 + i * 1_000_000 + 250,
    trade_id: String(1_000 + i),
    price: `${100 + i}.5`,
    qty: "0.01",
    side: "buy",
  };
}

/**
 * A TCP proxy to ClickHouse that, once armed, holds an INSERT request for
 * `SLOW_MS` before passing it on — and passes it on even when the client has
 * given up meanwhile (a request sitting in a slow server's queues).
 * `landed` resolves once such a held insert has been answered by ClickHouse.
 */
function slowInsertProxy(upstreamPort: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let armed = false;
  let heldAny = false;
  let resolveLanded!: (text: string) => void;
  const landed = new Promise<string>((r) => resolveLanded = r);
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const handle = async (client: Deno.Conn) => {
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    conns.add(client);
    conns.add(upstream);
    let held = false;
    let releaseAt = 0;
    let clientOpen = true;
    const back = (async () => {
      const buf = new Uint8Array(65536);
      let answer = "";
      try {
        for (;;) {
          const n = await upstream.read(buf);
          if (n === null) break;
          if (held) {
            answer += new TextDecoder().decode(buf.subarray(0, n));
            if (/\r\n\r\n/.test(answer)) resolveLanded(answer.split("\r\n")[0]!);
          }
          if (clientOpen) await client.write(buf.subarray(0, n)).catch(() => clientOpen = false);
        }
      } catch { /* closed */ }
    })();
    // Everything the client sends is read at once (so none of it is lost when it resets the
    // connection) and passed on in order, an insert only once SLOW_MS have passed.
    const queue: Uint8Array[] = [];
    let readerDone = false;
    let wake: () => void = () => {};
    const reader = (async () => {
      const buf = new Uint8Array(65536);
      for (;;) {
        const n = await client.read(buf).catch(() => null);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        if (armed && !held && new TextDecoder().decode(chunk).includes("INSERT INTO")) {
          held = true;
          releaseAt = Date.now() + SLOW_MS;
          heldAny = true;
          armed = false;
        }
        queue.push(chunk);
        wake();
      }
      readerDone = true;
      wake();
    })();
    try {
      for (;;) {
        if (queue.length === 0) {
          if (readerDone) break;
          await new Promise<void>((r) => wake = r);
          continue;
        }
        const wait = releaseAt - Date.now();
        if (held && wait > 0) await new Promise((r) => setTimeout(r, wait));
        await upstream.write(queue.shift()!);
      }
    } catch { /* closed */ }
    await reader;
    clientOpen = false;
    try {
      client.close();
    } catch { /* closed */ }
    if (held) {
      // The server still answers the request it was sent: wait for it.
      await Promise.race([landed, new Promise((r) => setTimeout(r, 20_000))]);
    }
    try {
      upstream.close();
    } catch { /* closed */ }
    await back;
    conns.delete(client);
    conns.delete(upstream);
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) tasks.push(handle(conn));
    } catch { /* closed */ }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    arm: () => armed = true,
    get held() {
      return heldAny;
    },
    landed,
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
      await Promise.allSettled(tasks);
    },
  };
}

/** A proxy to ClickHouse that, once armed, swallows every INSERT request (a hung server). */
function hangingInsertProxy(upstreamPort: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let armed = false;
  let inserts = 0;
  const conns = new Set<Deno.Conn>();
  const tasks: Promise<void>[] = [];
  const handle = async (client: Deno.Conn) => {
    const upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    conns.add(client);
    conns.add(upstream);
    let swallowing = false;
    const back = (async () => {
      const buf = new Uint8Array(65536);
      try {
        for (;;) {
          const n = await upstream.read(buf);
          if (n === null) break;
          await client.write(buf.subarray(0, n));
        }
      } catch { /* closed */ }
    })();
    const buf = new Uint8Array(65536);
    try {
      for (;;) {
        const n = await client.read(buf);
        if (n === null) break;
        const chunk = buf.slice(0, n);
        if (armed && !swallowing && new TextDecoder().decode(chunk).includes("INSERT INTO")) {
          swallowing = true;
          inserts++;
        }
        if (!swallowing) await upstream.write(chunk);
      }
    } catch { /* closed */ }
    for (const c of [client, upstream]) {
      try {
        c.close();
      } catch { /* closed */ }
    }
    await back;
    conns.delete(client);
    conns.delete(upstream);
  };
  const accepting = (async () => {
    try {
      for await (const conn of listener) tasks.push(handle(conn));
    } catch { /* closed */ }
  })();
  return {
    url: `http://127.0.0.1:${(listener.addr as Deno.NetAddr).port}`,
    arm: () => armed = true,
    get inserts() {
      return inserts;
    },
    close: async () => {
      listener.close();
      for (const c of conns) {
        try {
          c.close();
        } catch { /* closed */ }
      }
      await accepting;
      await Promise.allSettled(tasks);
    },
  };
}

/**
 * What both stop tests run on: a scratch ClickHouse database (`admin` reaches
 * it directly), a private MD_CLEAN stream and durable consumer under a fresh
 * subject prefix, and the writer options they share. `setUp` applies the
 * ClickHouse migrations and creates the stream; `cleanUp` removes both and
 * closes the connections.
 */
async function writerScene() {
  const id = randomId();
  const prefix = `t${id}.`;
  const stream = `TW_TEST_${id}`;
  const consumer = `writer_${id}`;
  const database = `tw_test_${id}`;
  const admin = createClickHouse({ url: CH_URL, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const sql = postgres(PG_URL, { max: 1, onnotice: () => {} });
  const nc = await connect({ servers: NATS_URL, maxReconnectAttempts: -1, reconnectTimeWait: 50 });
  const jsm = await jetstreamManager(nc);
  const js = jetstream(nc);
  const options: BatchWriterOptions = {
    batch_rows: 500,
    flush_interval_ms: 30,
    stream_max_bytes: 256 * 1024 * 1024,
    stream_max_age_s: 3_600,
    retry_initial_ms: 50,
    retry_max_ms: 300,
    stream,
    consumer,
    subject_prefix: prefix,
    ack_wait_ms: 10_000,
    fetch_messages: 100,
    status_interval_ms: 25,
    consumer_info_interval_ms: 100,
    shutdown_grace_ms: 300,
  };
  return {
    prefix,
    stream,
    consumer,
    database,
    admin,
    nc,
    jsm,
    js,
    options,
    async setUp(): Promise<void> {
      await new Migrator(sql, {
        dir: MIGRATIONS,
        lockKey: 7_000_000 + Math.floor(Math.random() * 1_000_000) * 2,
        clickhouse: { client: admin, database },
      }).up(undefined, { only: "clickhouse" });
      await ensureStreams(nc, [mdCleanStream({
        stream,
        subject_prefix: prefix,
        stream_max_bytes: 256 * 1024 * 1024,
        stream_max_age_s: 3_600,
      })]);
    },
    async cleanUp(): Promise<void> {
      await jsm.streams.delete(stream).catch(() => {});
      await nc.close();
      await admin.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(database)}` })
        .catch(() => {});
      await admin.close();
      await sql.end();
    },
  };
}

Deno.test("an insert cut off by a stop that the server carries out later is not written again beside it: candles count each trade once", async () => {
  const scene = await writerScene();
  const { prefix, stream, consumer, database, admin, nc, jsm, js, options } = scene;
  const proxy = slowInsertProxy(Number(new URL(CH_URL).port || 8123));
  const slow = createClickHouse({ url: proxy.url, request_timeout_ms: 20_000 }, {
    database: "default",
  });
  const stops: Array<() => Promise<void>> = [];
  const start = async (clickhouse: typeof admin) => {
    const controller = new AbortController();
    const running = batchWriterActor({
      nats: nc,
      clickhouse,
      database,
      status: new MarketStatus(),
      options,
      clickhouseReady: Promise.resolve(),
    }).start(controller.signal);
    await running.ready;
    const stop = async () => {
      controller.abort();
      await running.done.catch(() => {});
    };
    stops.push(stop);
    return stop;
  };
  const q = async (query: string) => {
    const r = await admin.query({ query, format: "JSONEachRow" });
    return Number((await r.json<{ n: string | number }>())[0]?.n ?? NaN);
  };
  const t = (name: string) => `${quoteIdentifier(database)}.${quoteIdentifier(name)}`;
  try {
    await scene.setUp();

    // Writer A talks to a ClickHouse that is slow to run inserts.
    const stopA = await start(slow);
    proxy.arm();
    await js.publish(
      `${prefix}${cleanSubject("trade", "binance", "BTC-USDT")}`,
      encodeJson(Array.from({ length: TRADES }, (_, i) => trade(i))),
    );
    // A's insert is on its way (held by the slow server) — then the engine stops A.
    await waitFor(
      async () => {
        const info = await jsm.consumers.info(stream, consumer).catch(() => null);
        return info !== null && info.num_ack_pending === 1;
      },
      10_000,
      "writer A holds the message",
    );
    await waitFor(() => proxy.held, 10_000, "A's insert sent");
    await stopA();

    // Writer B (same durable consumer) gets the message handed back and writes what is not stored.
    await start(admin);
    await waitFor(
      async () => {
        const info = await jsm.consumers.info(stream, consumer).catch(() => null);
        return info !== null && info.num_pending === 0 && info.num_ack_pending === 0;
      },
      15_000,
      "writer B wrote and acknowledged the message",
    );

    // The cut-off insert is carried out by the server afterwards.
    const answer = await Promise.race([
      proxy.landed,
      new Promise<string>((r) => setTimeout(() => r("not landed"), 15_000)),
    ]);
    assert.match(answer, /^HTTP\/1\.1 200/, "the cut-off insert was carried out by the server");

    const final = await q(`SELECT count() AS n FROM ${t("market_trades")} FINAL`);
    assert.equal(final, TRADES, "market_trades (FINAL) holds each trade once");
    const candleTrades = await q(`SELECT sum(trades) AS n FROM ${t("candles_1m")}`);
    const volume = await q(`SELECT toFloat64(sum(volume)) AS n FROM ${t("candles_1m")}`);
    assert.deepEqual(
      { candle_trades: candleTrades, candle_volume: volume },
      { candle_trades: TRADES, candle_volume: TRADES * 0.01 },
      "the 1-minute candles count each trade once",
    );
  } finally {
    for (const stop of stops) await stop();
    await slow.close();
    await proxy.close();
    await scene.cleanUp();
  }
});

Deno.test("a writer stopped while ClickHouse hangs on inserts ends within its shutdownMs", async () => {
  const scene = await writerScene();
  const { prefix, database, nc, js, options } = scene;
  const proxy = hangingInsertProxy(Number(new URL(CH_URL).port || 8123));
  // The engine's default request timeout is 30 s; 15 s keeps the test short.
  const hung = createClickHouse({ url: proxy.url, request_timeout_ms: 15_000 }, {
    database: "default",
  });
  const controller = new AbortController();
  let done: Promise<void> | null = null;
  try {
    await scene.setUp();
    const spec = batchWriterActor({
      nats: nc,
      clickhouse: hung,
      database,
      status: new MarketStatus(),
      options,
      clickhouseReady: Promise.resolve(),
    });
    const running = spec.start(controller.signal);
    done = running.done.catch(() => {});
    await running.ready;
    proxy.arm();
    await js.publish(
      `${prefix}${cleanSubject("trade", "binance", "BTC-USDT")}`,
      encodeJson([trade(1), trade(2)]),
    );
    await waitFor(() => proxy.inserts >= 1, 10_000, "the writer's insert is in flight");

    const stoppedAt = Date.now();
    controller.abort();
    const outcome = await Promise.race([
      done.then(() => "stopped"),
      new Promise<string>((r) => setTimeout(() => r("still running"), spec.shutdownMs! + 1_000)),
    ]);
    assert.equal(
      outcome,
      "stopped",
      `the writer must end within its shutdownMs (${spec.shutdownMs!} ms) + 1 s after a stop; ` +
        `it had not after ${
          Date.now() - stoppedAt
        } ms (inserts sent to the hung server: ${proxy.inserts})`,
    );
  } finally {
    controller.abort();
    await done;
    await hung.close().catch(() => {});
    await proxy.close();
    await scene.cleanUp();
  }
});
