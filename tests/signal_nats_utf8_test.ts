/**
 * A NATS signal whose body is not UTF-8 is rejected with its reason, its
 * bytes kept in base64, never read as text with U+FFFD in their place.
 *
 * @module
 */
import assert from "node:assert/strict";
import type { JsMsg } from "@nats-io/jetstream";
import { signalInput } from "../actors/execution.ts";
import { parseSignal } from "../trading/signal.ts";

const enc = new TextEncoder();

function message(data: Uint8Array): JsMsg {
  return {
    subject: "signals.s1",
    data,
    seq: 7,
    time: new Date("2026-01-01T00:00:00Z"),
    redelivered: false,
  } as unknown as JsMsg;
}

Deno.test("a NATS signal body that is not UTF-8 is rejected as such and stored as base64, never with U+FFFD", () => {
  const bytes = new Uint8Array([
    ...enc.encode('{"strategy":"s1","symbol":"BTC-USDT","side":"buy","qty":"1","reason":"x'),
    0xff,
    0xfe,
    ...enc.encode('"}'),
  ]);
  const input = signalInput(message(bytes));
  assert.ok(input !== null);
  const stored = JSON.stringify(input.body);
  const parsed = parseSignal(input.body);
  assert.deepEqual(
    {
      stored_has_fffd: stored.includes("\ufffd"),
      ok: parsed.ok,
      reasons: parsed.ok ? [] : parsed.reasons.map((r) => r.message),
    },
    {
      stored_has_fffd: false,
      ok: false,
      reasons: ["signal body is not valid UTF-8 (raw holds its bytes in base64)"],
    },
    `stored ${stored}`,
  );
  const raw = (JSON.parse(stored) as { raw: string }).raw;
  assert.deepEqual(Uint8Array.from(atob(raw), (ch) => ch.charCodeAt(0)), bytes);
});

Deno.test("a NATS signal body that is UTF-8 but not JSON is still recorded as its text", () => {
  const input = signalInput(message(enc.encode("halt é")));
  assert.equal(input?.body, "halt é");
});
