/**
 * Batch-writer benchmarks, each beside its floor (marked `baseline`):
 *
 * - "insert": 100k trades through `market/rows.ts` and one `JSONEachRow`
 *   insert (what the writer does per table), against the same rows sent as a
 *   string serialized beforehand (the server's and HTTP's share alone).
 * - "convert": the CPU part only — events to rows to `JSONEachRow` text —
 *   against plain `JSON.stringify` of the events.
 * - "writer": the whole actor draining a backlog of 100k trades (1,000
 *   messages of 100) from JetStream into ClickHouse, against the bare insert.
 *
 * Rows per second = 100,000 / the time per iteration. Needs ClickHouse
 * (`CLICKHOUSE_URL`, default `http://127.0.0.1:8123`) and, for "writer", NATS
 * with JetStream (`NATS_URL`, default `127.0.0.1:4222`); benchmarks whose
 * service is unreachable are skipped. Run with `deno task bench`.
 */

import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import {
  createClickHouse,
  detectCapabilities,
  pingClickHouse,
  quoteIdentifier,
} from "../adapters/clickhouse.ts";
import { encodeJson } from "../adapters/codec.ts";
import { renderConditionals, splitStatements } from "../adapters/migrator.ts";
import { ensureStreams } from "../adapters/nats.ts";
import { batchWriterActor, insertJsonEachRow } from "../actors/batch_writer.ts";
import type { TradeEvent } from "../market/events.ts";
import { mdCleanStream } from "../market/md_stream.ts";
import { encodeJsonEachRow, toRow } from "../market/rows.ts";
import { MarketStatus } from "../market/status.ts";
import { cleanSubject } from "../market/subjects.ts";

const ROWS = 100_000;
const PER_MESSAGE = 100;
const CH_URL = Deno.env.get("CLICKHOUSE_URL") ?? "http://127.0.0.1:8123";
const NATS_URL = Deno.env.get("NATS_URL") ?? "127.0.0.1:4222";
const DATABASE = "tw_bench_writer";
const SYMBOLS = Array.from({ length: 20 }, (_, i) => `C${i}-USDT`);

/** `ROWS` trades over 20 symbols, one per 100 µs, with exchange-like decimals. */
function trades(): TradeEvent[] {
  const t0 = 1_700_000_000_000_000;
  return Array.from({ length: ROWS }, (_, i) => {
    const symbol = SYMBOLS[i % SYMBOLS.length]!;
    return {
      kind: "trade",
      exchange: "binance",
      symbol,
      venue_symbol: symbol.replace("-", ""),
      ts_exchange: t0 + i * 100,
      ts_local: t0 + i * 100 + 700,
      trade_id: String(3_000_000_000 + i),
      price: `${43_000 + (i % 500)}.${String(i % 100).padStart(2, "0")}000000`,
      qty: `0.${String((i * 7919) % 100_000_000).padStart(8, "0")}`,
      side: i % 2 === 0 ? "buy" : "sell",
    };
  });
}

const events = trades();
const admin = createClickHouse({ url: CH_URL, request_timeout_ms: 120_000 }, {
  database: "default",
});
const table = `${quoteIdentifier(DATABASE)}.${quoteIdentifier("market_trades")}`;

let clickhouseUp = false;
try {
  await pingClickHouse(admin);
  clickhouseUp = true;
} catch {
  // Benchmarks needing ClickHouse are skipped.
}

if (clickhouseUp) {
  // The schema of the real migration, without the migrator's PostgreSQL lock.
  await admin.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(DATABASE)}` });
  await admin.command({ query: `CREATE DATABASE ${quoteIdentifier(DATABASE)}` });
  const caps = await detectCapabilities(admin);
  const text = await Deno.readTextFile(
    new URL("../migrations/clickhouse/0001_market_data.sql", import.meta.url),
  );
  const session = crypto.randomUUID();
  await admin.command({ query: `USE ${quoteIdentifier(DATABASE)}`, session_id: session });
  for (const statement of splitStatements(renderConditionals(text, caps))) {
    await admin.command({ query: statement, session_id: session });
  }
}

const preserialized = encodeJsonEachRow(events.map((event) => toRow(event).row));

Deno.bench(
  "100k trades as a pre-serialized JSONEachRow string",
  { group: "insert", baseline: true, ignore: !clickhouseUp, n: 10, warmup: 2 },
  async () => {
    await admin.command({ query: `INSERT INTO ${table} FORMAT JSONEachRow\n${preserialized}` });
  },
);

Deno.bench(
  "100k trades through rows.ts and the writer's JSONEachRow insert",
  { group: "insert", ignore: !clickhouseUp, n: 10, warmup: 2 },
  async () => {
    const lines = new Array<string>(events.length);
    for (let i = 0; i < events.length; i++) lines[i] = JSON.stringify(toRow(events[i]!).row);
    await insertJsonEachRow(admin, DATABASE, "market_trades", lines);
  },
);

Deno.bench(
  "JSON.stringify of 100k trade events",
  { group: "convert", baseline: true, n: 20, warmup: 3 },
  () => {
    const lines = new Array<string>(events.length);
    for (let i = 0; i < events.length; i++) lines[i] = JSON.stringify(events[i]);
    if (lines.join("\n").length === 0) throw new Error("unreachable");
  },
);

Deno.bench(
  "100k trade events to rows to JSONEachRow text",
  { group: "convert", n: 20, warmup: 3 },
  () => {
    const lines = new Array<string>(events.length);
    for (let i = 0; i < events.length; i++) lines[i] = JSON.stringify(toRow(events[i]!).row);
    if (lines.join("\n").length === 0) throw new Error("unreachable");
  },
);

let nc: NatsConnection | null = null;
try {
  nc = await connect({ servers: NATS_URL, timeout: 2_000 });
  await jetstreamManager(nc);
} catch {
  await nc?.close();
  nc = null;
}

Deno.bench(
  "bare insert of the same 100k rows (floor of the writer)",
  { group: "writer", baseline: true, ignore: !clickhouseUp || !nc, n: 3, warmup: 1 },
  async () => {
    await admin.command({ query: `INSERT INTO ${table} FORMAT JSONEachRow\n${preserialized}` });
  },
);

Deno.bench(
  "batch writer draining 100k trades (1,000 messages) from JetStream",
  { group: "writer", ignore: !clickhouseUp || !nc, n: 3, warmup: 1 },
  async (b) => {
    const conn = nc!;
    const id = crypto.randomUUID().slice(0, 8);
    const options = {
      batch_rows: 50_000,
      flush_interval_ms: 250,
      stream_max_bytes: 1024 * 1024 * 1024,
      stream_max_age_s: 3_600,
      retry_initial_ms: 500,
      retry_max_ms: 30_000,
      stream: `TW_BENCH_${id}`,
      consumer: `bench_${id}`,
      subject_prefix: `bench${id}.`,
    };
    await ensureStreams(conn, [mdCleanStream(options)]);
    const js = jetstream(conn);
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < events.length; i += PER_MESSAGE) {
      const symbol = SYMBOLS[(i / PER_MESSAGE) % SYMBOLS.length]!;
      const slice = events.slice(i, i + PER_MESSAGE).map((e) => ({ ...e, symbol }));
      pending.push(
        js.publish(
          `${options.subject_prefix}${cleanSubject("trade", "binance", symbol)}`,
          encodeJson(slice),
        ),
      );
    }
    await Promise.all(pending);
    const messages = pending.length;
    const spec = batchWriterActor({
      nats: conn,
      clickhouse: admin,
      database: DATABASE,
      status: new MarketStatus(),
      options,
      clickhouseReady: Promise.resolve(),
    });
    const controller = new AbortController();
    b.start();
    const running = spec.start(controller.signal);
    try {
      await running.ready;
      // A message never acked (a lost row) fails the bench instead of hanging it.
      const giveUpAt = Date.now() + 60_000;
      while (spec.counters.acked < messages) {
        if (Date.now() > giveUpAt) {
          throw new Error(
            `The writer acked ${spec.counters.acked} of ${messages} messages in 60 s`,
          );
        }
        await new Promise((r) => setTimeout(r, 5));
      }
      b.end();
    } finally {
      controller.abort();
      await running.done;
    }
    await (await jetstreamManager(conn)).streams.delete(options.stream);
  },
);

globalThis.addEventListener("unload", () => {
  // Fire and forget: the next run drops the database anyway before using it.
  admin.command({ query: `DROP DATABASE IF EXISTS ${quoteIdentifier(DATABASE)}` })
    .catch(() => {}).finally(() => admin.close());
  nc?.close();
});
