/**
 * Validator actor tests against a real nats-server. Each test starts its own
 * server on a free port: the validator subscribes `md.>` in the queue group
 * `validator`, which a running engine on the shared server would also serve,
 * and would then take a share of the test's messages.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import type { Msg, NatsConnection } from "@nats-io/nats-core";
import { startRoot } from "../actors/supervisor.ts";
import type { ActorInfo } from "../actors/types.ts";
import { validatorActor } from "../actors/validator.ts";
import { validatorWorker } from "../actors/validator_worker.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import { RecordingClock } from "../lib/clock.ts";
import { memoryLogger } from "../lib/log.ts";
import type { MarketEvent, TradeEvent } from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import { waitFor } from "./_helpers.ts";
import { type NatsServer, startNatsServer } from "./_nats_server.ts";

const OPTIONS = { ...DEFAULT_CONFIG.validator, overrides: {} };

/** A private server, a connection, and everything published on clean.md.> and dlq.md.>. */
interface Bench extends AsyncDisposable {
  nats: NatsConnection;
  clean: Msg[];
  dlq: DeadLetter[];
}

async function bench(): Promise<Bench> {
  const server: NatsServer = await startNatsServer({ jetstream: false });
  const nats = await connect({ servers: server.url });
  const clean: Msg[] = [];
  const dlq: DeadLetter[] = [];
  nats.subscribe("clean.md.>", {
    callback: (_, msg) => {
      clean.push(msg);
    },
  });
  nats.subscribe("dlq.md.>", {
    callback: (_, msg) => {
      dlq.push(decodeJson<DeadLetter>(msg.data));
    },
  });
  await nats.flush();
  return {
    nats,
    clean,
    dlq,
    [Symbol.asyncDispose]: async () => {
      await nats.close();
      await server.stop();
    },
  };
}

function trade(symbol: string, fields: Partial<TradeEvent> = {}): TradeEvent {
  const nowUs = Date.now() * 1000;
  return {
    kind: "trade",
    exchange: "binance",
    symbol,
    venue_symbol: symbol.replace("-", ""),
    ts_exchange: nowUs,
    ts_local: nowUs,
    trade_id: crypto.randomUUID(),
    price: "100.5",
    qty: "0.25",
    side: "sell",
    ...fields,
  };
}

function uniqueSymbol(): string {
  return `T${crypto.randomUUID().slice(0, 8).toUpperCase()}-USDT`;
}

function row(rows: ActorInfo[], name: string): ActorInfo {
  const found = rows.find((info) => info.name === name);
  if (!found) throw new Error(`No row ${name}`);
  return found;
}

Deno.test("validator republishes an all-accepted message byte for byte on clean.md", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  await using _root = await startRoot({ name: "root" }, [
    validatorActor({ nats: t.nats, status, options: OPTIONS }),
  ]);
  const symbol = uniqueSymbol();
  const subject = `md.trade.binance.${symbol}`;
  // Indented JSON: re-encoding would not keep the whitespace.
  const events = [trade(symbol), trade(symbol), trade(symbol)];
  const payload = new TextEncoder().encode(JSON.stringify(events, null, 1));
  t.nats.publish(subject, payload);
  await waitFor(() => t.clean.length === 1, 5_000, "clean message");
  assert.equal(t.clean[0]!.subject, `clean.${subject}`);
  assert.deepEqual(new Uint8Array(t.clean[0]!.data), payload);
  assert.equal(status.validator.accepted, 3);
  assert.deepEqual(status.validator.rejected, {});
  assert.deepEqual(t.dlq, []);
});

Deno.test("validator splits a mixed message into one clean array and dead letters", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  await using _root = await startRoot({ name: "root" }, [
    validatorActor({ nats: t.nats, status, options: OPTIONS }),
  ]);
  const symbol = uniqueSymbol();
  const good1 = trade(symbol, { trade_id: "1" });
  const zero = trade(symbol, { trade_id: "2", qty: "0" });
  const dup = trade(symbol, { trade_id: "1" });
  const good2 = trade(symbol, { trade_id: "3" });
  const stale = trade(symbol, { trade_id: "4", ts_exchange: 1_000_000 });
  const malformed = { ...trade(symbol), price: 100 };
  t.nats.publish(
    `md.trade.binance.${symbol}`,
    encodeJson([good1, zero, dup, good2, stale, malformed]),
  );
  await waitFor(() => t.clean.length === 1 && t.dlq.length === 4, 5_000, "clean and dlq");
  assert.deepEqual(decodeJson<MarketEvent[]>(t.clean[0]!.data), [good1, good2]);
  assert.deepEqual(t.dlq.map((letter) => letter.reason), [
    "non_positive",
    "duplicate",
    "stale",
    "schema",
  ]);
  for (const letter of t.dlq) {
    assert.equal(letter.exchange, "binance");
    assert.equal(letter.stage, "validator");
    assert.equal(typeof letter.detail, "string");
    assert.ok(Number.isSafeInteger(letter.at_us) && letter.at_us > 0);
  }
  assert.deepEqual(t.dlq[0]!.event, zero);
  assert.deepEqual(t.dlq[1]!.event, dup);
  assert.equal(t.dlq[3]!.event, undefined);
  assert.deepEqual(JSON.parse(t.dlq[3]!.frame!), malformed);
  assert.equal(status.validator.accepted, 2);
  assert.deepEqual(status.validator.rejected, {
    non_positive: 1,
    duplicate: 1,
    stale: 1,
    schema: 1,
  });
  assert.deepEqual(status.validator.rejected_by_exchange, { binance: 4 });
});

Deno.test("validator publishes nothing on clean.md when every event is refused", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  await using _root = await startRoot({ name: "root" }, [
    validatorActor({ nats: t.nats, status, options: OPTIONS }),
  ]);
  const symbol = uniqueSymbol();
  const subject = `md.trade.binance.${symbol}`;
  t.nats.publish(
    subject,
    encodeJson([trade(symbol, { price: "0" }), trade(symbol, { price: "-1" })]),
  );
  const good = trade(symbol);
  t.nats.publish(subject, encodeJson([good]));
  await waitFor(() => t.clean.length === 1 && t.dlq.length === 2, 5_000, "clean and dlq");
  assert.deepEqual(decodeJson(t.clean[0]!.data), [good]);
  assert.deepEqual(t.dlq.map((letter) => letter.reason), ["non_positive", "non_positive"]);
});

Deno.test("validator dead-letters garbage payloads as schema and keeps running", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  const { log, lines } = memoryLogger();
  await using root = await startRoot({ name: "root" }, [
    validatorActor({ nats: t.nats, status, options: OPTIONS, log }),
  ]);
  const symbol = uniqueSymbol();
  const subject = `md.trade.kraken.${symbol}`;
  const encoder = new TextEncoder();
  t.nats.publish(subject, encoder.encode("{not json"));
  t.nats.publish(subject, new Uint8Array([0xff, 0xfe, 0x5b]));
  t.nats.publish(subject, new Uint8Array());
  t.nats.publish(subject, encodeJson({ kind: "trade" }));
  t.nats.publish(subject, encodeJson(null));
  t.nats.publish(subject, encodeJson([]));
  t.nats.publish(subject, encodeJson([1, "x"]));
  t.nats.publish(`md.trade.ftx.${symbol}`, encodeJson([trade(symbol)]));
  t.nats.publish("md.garbage", encoder.encode("garbage"));
  t.nats.publish(`md.trade.kraken.${symbol}.extra`, encodeJson([trade(symbol)]));
  const good = trade(symbol, { exchange: "kraken" });
  t.nats.publish(subject, encodeJson([good]));
  await waitFor(() => t.clean.length === 1, 5_000, "clean message after garbage");
  await waitFor(() => t.dlq.length === 9, 5_000, "dead letters");
  assert.deepEqual(decodeJson(t.clean[0]!.data), [good]);
  assert.ok(t.dlq.every((letter) => letter.reason === "schema" && letter.exchange === "kraken"));
  assert.match(t.dlq[0]!.detail, /^message is not JSON/);
  assert.equal(t.dlq[0]!.frame, "{not json");
  assert.equal(t.dlq[3]!.detail, "message is not a JSON array");
  assert.equal(t.dlq[5]!.detail, "message is an empty array");
  assert.equal(t.dlq[6]!.detail, "event is not an object");
  assert.match(t.dlq[8]!.detail, /is not md\.<kind>\.<exchange>\.<symbol>/);
  assert.deepEqual(status.validator.rejected, { schema: 9 });
  assert.equal(status.validator.accepted, 1);
  const skipped = lines.filter((line) => String(line.message).includes("unknown exchange"));
  assert.equal(skipped.length, 2, "ftx and md.garbage are logged and skipped");
  assert.deepEqual(
    { status: row(root.inspect(), "root/validator").status, restarts: 0 },
    { status: "running", restarts: 0 },
  );
});

Deno.test("validator judges stale and future against the injected clock", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  const clock = new RecordingClock(1_800_000_000_000);
  await using _root = await startRoot({ name: "root" }, [
    validatorActor({
      nats: t.nats,
      status,
      options: { ...OPTIONS, max_lag_ms: 1_000, max_future_ms: 100 },
      clock,
    }),
  ]);
  const symbol = uniqueSymbol();
  const nowUs = clock.now() * 1000;
  const events = [
    trade(symbol, { ts_exchange: nowUs - 999_000 }),
    trade(symbol, { ts_exchange: nowUs - 1_001_000 }),
    trade(symbol, { ts_exchange: nowUs + 101_000 }),
  ];
  t.nats.publish(`md.trade.binance.${symbol}`, encodeJson(events));
  await waitFor(() => t.clean.length === 1 && t.dlq.length === 2, 5_000, "clean and dlq");
  assert.deepEqual(decodeJson(t.clean[0]!.data), [events[0]]);
  assert.deepEqual(t.dlq.map((letter) => letter.reason), ["stale", "future"]);
  assert.equal(t.dlq[0]!.at_us, nowUs);
});

Deno.test("validators in the queue group share the messages, each handled once", async () => {
  await using t = await bench();
  const first = new MarketStatus();
  const second = new MarketStatus();
  await using _one = await startRoot({ name: "one" }, [
    validatorActor({ nats: t.nats, status: first, options: OPTIONS }),
  ]);
  const other = await connect({ servers: t.nats.getServer() });
  try {
    await using _two = await startRoot({ name: "two" }, [
      validatorActor({ nats: other, status: second, options: OPTIONS }),
    ]);
    const symbol = uniqueSymbol();
    for (let i = 0; i < 200; i++) {
      t.nats.publish(`md.trade.binance.${symbol}`, encodeJson([trade(symbol)]));
    }
    await waitFor(() => t.clean.length === 200, 5_000, "200 clean messages");
    assert.equal(first.validator.accepted + second.validator.accepted, 200);
    assert.ok(first.validator.accepted > 0 && second.validator.accepted > 0);
  } finally {
    await other.close();
  }
});

Deno.test("validator stops cleanly and validates what it already received", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  const root = await startRoot({ name: "root" }, [
    validatorActor({ nats: t.nats, status, options: OPTIONS }),
  ]);
  const symbol = uniqueSymbol();
  for (let i = 0; i < 500; i++) {
    t.nats.publish(`md.trade.binance.${symbol}`, encodeJson([trade(symbol)]));
  }
  await waitFor(() => status.validator.accepted > 0, 5_000, "first accepted");
  await root.stop();
  const accepted = status.validator.accepted;
  assert.ok(accepted > 0 && accepted <= 500);
  await t.nats.flush();
  assert.equal(t.clean.length, accepted, "every validated message was published");
  t.nats.publish(`md.trade.binance.${symbol}`, encodeJson([trade(symbol)]));
  await t.nats.flush();
  assert.equal(status.validator.accepted, accepted, "nothing is validated after stop");
});

Deno.test("validator in its own thread validates, dead-letters and reports to the main thread", async () => {
  await using t = await bench();
  const status = new MarketStatus();
  const { log } = memoryLogger();
  const root = await startRoot({ name: "root" }, [
    validatorWorker({
      nats: { ...DEFAULT_CONFIG.nats, url: `nats://${t.nats.getServer()}` },
      options: OPTIONS,
      status,
      log,
      statusIntervalMs: 20,
    }),
  ]);
  try {
    const symbol = uniqueSymbol();
    const subject = `md.trade.binance.${symbol}`;
    const good1 = trade(symbol, { trade_id: "1" });
    const zero = trade(symbol, { trade_id: "2", qty: "0" });
    const dup = trade(symbol, { trade_id: "1" });
    const good2 = trade(symbol, { trade_id: "3" });
    t.nats.publish(subject, encodeJson([good1, zero, dup, good2]));
    await waitFor(() => t.clean.length === 1 && t.dlq.length === 2, 5_000, "clean and dlq");
    assert.equal(t.clean[0]!.subject, `clean.${subject}`);
    assert.deepEqual(decodeJson<MarketEvent[]>(t.clean[0]!.data), [good1, good2]);
    assert.deepEqual(t.dlq.map((letter) => letter.reason), ["non_positive", "duplicate"]);
    // The thread's figures reach the main thread's status.
    await waitFor(() => status.validator.accepted === 2, 5_000, "figures from the thread");
    assert.deepEqual(status.validator.rejected, { non_positive: 1, duplicate: 1 });
    assert.deepEqual(status.validator.rejected_by_exchange, { binance: 2 });
    assert.equal(row(root.inspect(), "root/validator").kind, "worker");
  } finally {
    await root.stop();
  }
  // Stopped: the thread's connection is closed, so nothing subscribes to md.> any more.
  await assert.rejects(
    () => t.nats.request(`md.trade.binance.${uniqueSymbol()}`, encodeJson([]), { timeout: 2_000 }),
    (error: Error) => /no responders/i.test(`${error.message} ${error.cause ?? ""}`),
  );
});
