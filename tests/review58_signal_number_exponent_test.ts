/**
 * A JSON number of a signal body whose exponent is written with leading zeros
 * (`1234567890.12345678e-0000`, valid JSON, read exactly by the signal's
 * checks) is stored as its token — which jsonb takes — not as the float
 * `JSON.parse` makes of it, which loses its last digits: the stored body is
 * what was received, as for any other number jsonb can hold.
 *
 * @module
 */
import assert from "node:assert/strict";
import { decodeSignalBody } from "../trading/signal.ts";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("decodeSignalBody keeps a number whose exponent has leading zeros as its token", () => {
  for (
    const token of ["1234567890.12345678e-0000", "0.12345678901234567890E+0001", "1e0000999"]
  ) {
    assert.equal(JSON.stringify(decodeSignalBody(`{"qty":${token}}`)), `{"qty":${token}}`);
  }
  // Past what jsonb holds however written: the float, as before.
  assert.equal(JSON.stringify(decodeSignalBody(`{"qty":1e00001000000}`)), `{"qty":null}`);
});

Deno.test("GET /signals serves such a qty with every digit received", async () => {
  await using api = await startTradingApi();
  const res = await api.app.request("/api/v1/trading/signal", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"id":"e-1","symbol":"BTC-USDT","side":"buy","qty":1234567890.12345678e-0000}',
  });
  await res.body?.cancel();
  assert.equal(res.status, 422); // refused (no price, too large), but stored as received
  const text = await (await api.app.request("/api/v1/trading/signals")).text();
  assert.match(text, /"qty":1234567890\.12345678[,}]/, text);
});
