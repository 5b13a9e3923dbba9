/**
 * A trading list's `from`/`to` with a zone offset sent unencoded
 * (`from=2024-05-01T12:00:00+02:00`) reaches the API with a space for its `+`
 * (query strings read `+` as a space): the 400 says so, instead of only
 * calling a well-formed time malformed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("trading lists: a from/to whose + arrived as a space is a 400 that says to send %2B", async () => {
  await using api = await startTradingApi();
  for (const list of ["/orders", "/signals", "/portfolio/history"]) {
    for (const name of ["from", "to"]) {
      const res = await api.app.request(`/api/v1/trading${list}?${name}=2024-05-01T12:00:00+02:00`);
      const body = await res.json();
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(body.error.message, new RegExp(`^${name} must be an ISO-8601`));
      assert.match(body.error.message, /send it as %2B/, body.error.message);
    }
    // Encoded, the same time is taken; other bad times get no such hint.
    const ok = await api.app.request(`/api/v1/trading${list}?from=2024-05-01T12:00:00%2B02:00`);
    assert.equal(ok.status, 200, await ok.text());
    for (const bad of ["2024-05-01T12:00:00 99:00", "2024-05-01 12:00:00Z", "yesterday"]) {
      const res = await api.app.request(
        `/api/v1/trading${list}?from=${encodeURIComponent(bad)}`,
      );
      const body = await res.json();
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.doesNotMatch(body.error.message, /%2B/, bad);
    }
  }
});
