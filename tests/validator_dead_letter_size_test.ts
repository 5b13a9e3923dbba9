/**
 * The validator's dead letters and the NATS payload limit (review 27):
 * - a dead letter is bigger than what it carries (exchange, stage, reason,
 *   detail, at_us around it), so a refused event that fitted the server's
 *   `max_payload` could give a letter above it: `nats.publish` threw inside
 *   the subscription loop, the letter was lost, and the validator crashed and
 *   restarted with its state emptied;
 * - a malformed item's frame was cut at 16,384 characters without a word in
 *   `detail`, far below the payload limit, losing the part that was wrong.
 * Letters are now fitted with `fitLetter` (market/dead_letters.ts, tested in
 * dead_letters_test.ts), shared with the feeds, which says in `detail` what it
 * cut.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { startRoot } from "../actors/supervisor.ts";
import { validatorActor } from "../actors/validator.ts";
import { decodeJson, encodeJson } from "../adapters/codec.ts";
import { DEFAULT_CONFIG } from "../config/mod.ts";
import type { BookEvent, TradeEvent } from "../market/events.ts";
import { MarketStatus } from "../market/status.ts";
import type { DeadLetter } from "../market/subjects.ts";
import { waitFor } from "./_helpers.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";

const MAX_PAYLOAD = 65_536;
const OPTIONS = { ...DEFAULT_CONFIG.validator, overrides: {} };

/** A private nats-server with `max_payload` of {@linkcode MAX_PAYLOAD} (a server setting). */
async function startSmallNats(): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = freePort();
  const dir = await Deno.makeTempDir({ prefix: "validator-dlq-nats-" });
  const conf = `${dir}/nats.conf`;
  await Deno.writeTextFile(conf, `listen: 127.0.0.1:${port}\nmax_payload: ${MAX_PAYLOAD}\n`);
  const child = new Deno.Command("nats-server", {
    args: ["-c", conf],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 10_000;
  for (;;) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill();
        await child.status;
        throw new Error("nats-server did not start");
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    stop: async () => {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A crossed Coinbase snapshot (best bid 50000 >= best ask 49999) whose message is about `bytes`. */
function crossedSnapshot(nowUs: number, bytes: number): BookEvent {
  const snapshot: BookEvent = {
    kind: "book",
    exchange: "coinbase",
    symbol: "BTC-USD",
    venue_symbol: "BTC-USD",
    ts_exchange: nowUs,
    ts_local: nowUs,
    action: "snapshot",
    bids: [["50000.00", "1"]],
    asks: [],
    sequence: 7,
  };
  let price = 49_999;
  while (encodeJson([snapshot]).length < bytes) {
    snapshot.asks.push([(price++).toFixed(2), "0.5"]);
  }
  return snapshot;
}

Deno.test("a refused event that fits NATS is dead-lettered, cut to fit, without crashing the validator", async () => {
  const server = await startSmallNats();
  const nats = await connect({ servers: server.url });
  try {
    assert.equal(nats.info?.max_payload, MAX_PAYLOAD);
    const dlq: DeadLetter[] = [];
    const clean: unknown[] = [];
    nats.subscribe("dlq.md.>", { callback: (_, msg) => void dlq.push(decodeJson(msg.data)) });
    nats.subscribe("clean.md.>", { callback: (_, msg) => void clean.push(decodeJson(msg.data)) });
    await nats.flush();
    const status = new MarketStatus();
    await using root = await startRoot({ name: "root" }, [
      validatorActor({ nats, status, options: OPTIONS }),
    ]);
    const nowUs = Date.now() * 1000;
    const snapshot = crossedSnapshot(nowUs, MAX_PAYLOAD - 40);
    const payload = encodeJson([snapshot]);
    assert.ok(payload.length <= MAX_PAYLOAD, `${payload.length} bytes fit the limit`);
    nats.publish("md.book.coinbase.BTC-USD", payload);
    await nats.flush();
    const trade: TradeEvent = {
      kind: "trade",
      exchange: "coinbase",
      symbol: "BTC-USD",
      venue_symbol: "BTC-USD",
      ts_exchange: nowUs,
      ts_local: nowUs,
      trade_id: "1",
      price: "50000",
      qty: "0.1",
      side: "buy",
    };
    nats.publish("md.trade.coinbase.BTC-USD", encodeJson([trade]));
    await waitFor(
      () => clean.length === 1 || root.inspect().some((row) => row.restarts > 0),
      5_000,
      "the trade validated or the validator restarted",
    );
    const row = root.inspect().find((info) => info.name === "root/validator")!;
    assert.deepEqual(
      {
        restarts: row.restarts,
        last_error: row.last_error,
        dead_letters: dlq.map((letter) => letter.reason),
        counted: status.validator.rejected,
      },
      {
        restarts: 0,
        last_error: null,
        dead_letters: ["crossed_book"],
        counted: { crossed_book: 1 },
      },
    );
    // The event is given as its JSON text in frame, cut, and the detail says so.
    const letter = dlq[0]!;
    const text = JSON.stringify(snapshot);
    assert.equal(letter.event, undefined);
    assert.ok(letter.frame !== undefined && text.startsWith(letter.frame), "a prefix of the event");
    // As much as fits: the letter fills most of the limit (its quotes escaped, the text is larger).
    const bytes = encodeJson(letter).length;
    assert.ok(bytes > MAX_PAYLOAD * 0.9 && bytes <= MAX_PAYLOAD, `${bytes} bytes`);
    assert.match(
      letter.detail,
      new RegExp(
        `^best bid 50000\\.00 is not below best ask 49999\\.00 \\(event too large for NATS: ` +
          `its JSON text in frame, cut to ${letter.frame.length} of ${text.length} characters\\)$`,
      ),
    );
  } finally {
    await nats.close();
    await server.stop();
  }
});

Deno.test("a malformed book event's dead letter keeps its whole raw frame", async () => {
  const server = await startNatsServer({ jetstream: false });
  const nats = await connect({ servers: server.url });
  try {
    const dlq: DeadLetter[] = [];
    nats.subscribe("dlq.md.>", { callback: (_, msg) => void dlq.push(decodeJson(msg.data)) });
    await nats.flush();
    const status = new MarketStatus();
    await using _root = await startRoot({ name: "root" }, [
      validatorActor({ nats, status, options: OPTIONS }),
    ]);
    const nowUs = Date.now() * 1000;
    const bids: unknown[] = [];
    const asks: unknown[] = [];
    for (let i = 0; i < 1_000; i++) {
      bids.push([(50_000 - i).toFixed(2), "0.12345678"]);
      asks.push([(50_001 + i).toFixed(2), "0.12345678"]);
    }
    // The deepest ask is a number, not a decimal string: a schema problem at the end of the event.
    asks.push([51_001.5, "0.1"]);
    const item = {
      kind: "book",
      exchange: "coinbase",
      symbol: "BTC-USD",
      venue_symbol: "BTC-USD",
      ts_exchange: nowUs,
      ts_local: nowUs,
      action: "snapshot",
      bids,
      asks,
      sequence: 7,
    };
    const raw = JSON.stringify(item);
    assert.ok(raw.length > 16_384 && raw.length < 200_000, `frame of ${raw.length} chars`);
    nats.publish("md.book.coinbase.BTC-USD", encodeJson([item]));
    await waitFor(() => dlq.length === 1, 5_000, "the dead letter");
    const letter = dlq[0]!;
    assert.equal(letter.reason, "schema");
    assert.match(letter.detail, /asks\[1000\]/);
    assert.doesNotMatch(letter.detail, /cut/);
    assert.ok(
      letter.frame === raw,
      `dead letter frame has ${letter.frame?.length} of ${raw.length} characters ` +
        `("${letter.detail}"); the bad level is in it: ${letter.frame?.includes("51001.5")}`,
    );
  } finally {
    await nats.close();
    await server.stop();
  }
});

Deno.test("a malformed item's frame above the payload limit is cut to fit, and its detail says so", async () => {
  const server = await startSmallNats();
  const nats = await connect({ servers: server.url });
  try {
    const dlq: DeadLetter[] = [];
    nats.subscribe("dlq.md.>", { callback: (_, msg) => void dlq.push(decodeJson(msg.data)) });
    await nats.flush();
    const status = new MarketStatus();
    await using root = await startRoot({ name: "root" }, [
      validatorActor({ nats, status, options: OPTIONS }),
    ]);
    // Not JSON, and every "\u0001" takes 6 bytes as JSON text: the letter is 6 times the message.
    const raw = "\u0001".repeat(MAX_PAYLOAD - 100);
    nats.publish("md.trade.coinbase.BTC-USD", new TextEncoder().encode(raw));
    const validatorRow = () => root.inspect().find((info) => info.name === "root/validator")!;
    await waitFor(
      () => dlq.length === 1 || validatorRow().restarts > 0,
      5_000,
      "the dead letter or a restart",
    );
    assert.deepEqual(
      { restarts: validatorRow().restarts, last_error: validatorRow().last_error },
      { restarts: 0, last_error: null },
    );
    const letter = dlq[0]!;
    assert.equal(letter.reason, "schema");
    assert.ok(letter.frame !== undefined && raw.startsWith(letter.frame));
    assert.ok(letter.frame.length > raw.length / 7, `${letter.frame.length} of ${raw.length}`);
    assert.match(
      letter.detail,
      new RegExp(
        `^message is not JSON: .* \\(frame cut to ${letter.frame.length} of ${raw.length} ` +
          `characters to fit NATS\\)$`,
      ),
    );
  } finally {
    await nats.close();
    await server.stop();
  }
});
