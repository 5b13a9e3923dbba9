/**
 * The `from`/`to` range of the trading lists (`/orders`, `/signals`,
 * `/portfolio/history`) on a running trading subtree: a range whose `from` is
 * after its `to` is a 400 naming both, as the market-data endpoints answer
 * it, not an empty page that reads as "nothing happened".
 *
 * @module
 */
import assert from "node:assert/strict";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("trading lists: from after to is a 400 naming both, not an empty page", async () => {
  await using api = await startTradingApi();
  const get = async (path: string) => {
    const res = await api.app.request(`/api/v1/trading${path}`);
    return { status: res.status, body: await res.json() };
  };
  for (const list of ["/orders", "/signals", "/portfolio/history"]) {
    for (
      const [from, to] of [
        ["2030-01-01", "2020-01-01"],
        ["1714564800001", "1714564800000"],
        // One microsecond apart: kept to the microsecond, as PostgreSQL stores times.
        ["2024-05-01T12:00:00.000002Z", "2024-05-01T12:00:00.000001Z"],
        ["2024-05-01T12:00:00+02:00", "2024-05-01T09:30:00Z"],
      ] as const
    ) {
      const res = await get(
        `${list}?from=${encodeURIComponent(from)}&to=${encodeURIComponent(to)}`,
      );
      assert.equal(res.status, 400, `${list} ${from}..${to}: ${JSON.stringify(res.body)}`);
      assert.equal(res.body.error.code, "bad_request");
      assert.match(res.body.error.message, /from .* is after to/);
      assert.ok(res.body.error.message.includes(from), res.body.error.message);
    }
    // An empty range (from = to, to exclusive) and a range that is merely in the future are fine.
    for (
      const range of [
        "from=2024-05-01&to=2024-05-01",
        "from=2024-05-01T12:00:00Z&to=2024-05-01T14:00:00%2B02:00",
        "from=2099-01-01",
      ]
    ) {
      const res = await get(`${list}?${range}`);
      assert.equal(res.status, 200, `${list}?${range}: ${JSON.stringify(res.body)}`);
    }
  }
});
