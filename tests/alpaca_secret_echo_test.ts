/**
 * Alpaca credentials are never logged, even when an error page echoes them.
 * The adapter logged, and made an order's rejection reason of (its
 * `status_reason`: PostgreSQL, the `orders.rejected.*` event, the HTTP
 * answer), the first 200 characters of any non-JSON error body; an error page
 * showing the request's headers (an egress proxy, an API gateway or WAF in
 * front of `brokers.alpaca.base_url`) put `APCA-API-SECRET-KEY` there. Now
 * every occurrence of the key id and the secret in an answer is `***` before
 * anything reads it.
 */

import assert from "node:assert/strict";
import { alpacaBroker } from "../brokers/alpaca.ts";
import { memoryLogger } from "../lib/log.ts";
import { redactValues } from "../lib/redact.ts";
import { parseDecimal } from "../trading/money.ts";

const KEY_ID = "AKECHOKEYID0X5D";
const SECRET = "EchoSecretKey0xAbCdEf";

/** An error page echoing the request's headers, as a misconfigured proxy or gateway sends. */
function echoingFetch(status: number, contentType = "text/plain"): typeof fetch {
  return (_input, init) => {
    const headers = new Headers(init?.headers);
    const lines = [...headers].map(([k, v]) => `${k}: ${v}`).join("\n");
    const body = contentType === "application/json"
      ? JSON.stringify({ message: `denied; you sent ${lines}` })
      : `Forbidden\n${lines}`;
    return Promise.resolve(
      new Response(body, { status, headers: { "content-type": contentType } }),
    );
  };
}

function broker(answer: typeof fetch) {
  const { log, lines } = memoryLogger("debug");
  const alpaca = alpacaBroker(
    { base_url: "http://alpaca.invalid", key_id: KEY_ID, secret_key: SECRET },
    { log, fetch: answer },
  );
  return { alpaca, lines };
}

const ORDER = {
  client_order_id: "echo-1",
  symbol: "AAPL",
  side: "buy",
  type: "limit",
  time_in_force: "day",
  qty: parseDecimal("1"),
  limit_price: parseDecimal("1"),
  stop_price: null,
  exchange: null,
} as const;

/** Where a credential shows: in the logs or in `reason`. */
function leaks(lines: unknown[], reason: string): string[] {
  const logged = JSON.stringify(lines);
  return [KEY_ID, SECRET].flatMap((secret) => [
    ...(logged.includes(secret) ? [`${secret} in a log line: ${logged.slice(0, 300)}`] : []),
    ...(reason.includes(secret) ? [`${secret} in the reason: ${reason}`] : []),
  ]);
}

Deno.test("an Alpaca error page echoing the request headers does not put the secret key in logs or the order's reason", async () => {
  for (
    const [status, type] of [[403, "text/plain"], [401, "text/plain"], [
      403,
      "application/json",
    ]] as const
  ) {
    const { alpaca, lines } = broker(echoingFetch(status, type));
    let reason = "";
    try {
      await alpaca.submit(ORDER);
    } catch (error) {
      reason = (error as Error).message;
    }
    assert.match(reason, /apca-api-secret-key: \*\*\*/, `${status} ${type}: ${reason}`);
    assert.deepEqual(leaks(lines, reason), [], `${status} ${type}`);
  }
});

Deno.test("an echoing error to a call other than a submit keeps the credentials out too", async () => {
  const { alpaca, lines } = broker(echoingFetch(400));
  let reason = "";
  try {
    await alpaca.account();
  } catch (error) {
    reason = (error as Error).message;
  }
  assert.match(reason, /answered 400/);
  assert.deepEqual(leaks(lines, reason), []);
});

Deno.test("redactValues replaces every occurrence of each secret, longest first, ignoring empty ones", () => {
  assert.equal(redactValues("a s3cr3t b s3cr3t", ["s3cr3t"]), "a *** b ***");
  assert.equal(redactValues("key AK1 and AK12", ["AK1", "AK12"]), "key *** and ***");
  assert.equal(redactValues("nothing here", ["", "zz"]), "nothing here");
});
