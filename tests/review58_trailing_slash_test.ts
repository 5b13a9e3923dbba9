/**
 * A path with a trailing slash that no route serves (`/orders/`, `/signal/`)
 * is a 404 `not_found`, as the README says a path no route serves is —
 * never a 405 saying that GET is not allowed while its `Allow` names GET.
 * A known path asked with another method stays a 405 naming its methods.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createApp } from "../api/app.ts";
import { nullLogger } from "../lib/log.ts";
import { startTradingApi } from "./_trading_api.ts";
import { healthyServices } from "./_helpers.ts";

Deno.test("a trailing slash no route serves is a 404, not a 405 whose Allow names the method refused", async () => {
  await using api = await startTradingApi();
  const app = createApp({ name: "tw", health: healthyServices(), log: nullLogger });
  const problems: string[] = [];
  const expect = async (
    target: { request: typeof app.request },
    method: string,
    path: string,
    status: number,
    allow?: string,
  ) => {
    const res = await target.request(path, method === "POST" ? { method, body: "{}" } : { method });
    const body = method === "HEAD" ? null : await res.json();
    const got = res.headers.get("allow");
    if (res.status !== status || (allow !== undefined && got !== allow)) {
      problems.push(`${method} ${path}: ${res.status} allow=${got} ${JSON.stringify(body)}`);
    }
  };
  for (const method of ["GET", "HEAD", "DELETE"]) {
    await expect(api.app, method, "/api/v1/trading/orders/", 404);
    await expect(api.app, method, "/api/v1/trading/orders/1/", 404);
  }
  await expect(api.app, "POST", "/api/v1/trading/signal/", 404);
  await expect(api.app, "GET", "/api/v1/trading/portfolio/history/", 404);
  await expect(app, "GET", "/api/health/", 404);
  await expect(app, "GET", "/api/health/detailed/", 404);
  // Known paths, other methods: 405 naming the methods served, as before.
  await expect(api.app, "PUT", "/api/v1/trading/orders", 405, "GET, HEAD");
  await expect(api.app, "POST", "/api/v1/trading/orders/1", 405, "DELETE, GET, HEAD");
  await expect(api.app, "GET", "/api/v1/trading/signal", 405, "POST");
  await expect(app, "POST", "/api/health", 405, "GET, HEAD");
  assert.deepEqual(problems, []);
});
