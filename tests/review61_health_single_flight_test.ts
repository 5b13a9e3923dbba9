/**
 * `GET /api/health/detailed` needs no API key, and each request probed every
 * service anew: a PostgreSQL query on the engine's own pool, a NATS flush, a
 * ClickHouse ping. N requests at once (a dashboard per operator, a load
 * balancer per zone, or anyone who reaches the port) queued N queries on
 * the pool ahead of the signal batches, and while PostgreSQL hangs each held
 * a pooled connection until the answer deadline. Requests that arrive while
 * a probe round is under way now share its answer; one arriving after it
 * probes again.
 */

import assert from "node:assert/strict";
import { Hono } from "hono";
import { healthRoutes, type HealthSource } from "../api/health.ts";
import { waitFor } from "./_helpers.ts";

/** The health routes under `/api/health`, counting the requests that have reached them. */
function healthApp(source: HealthSource) {
  const counts = { entered: 0 };
  const app = new Hono();
  app.use("*", async (_c, next) => {
    counts.entered++;
    await next();
  });
  app.route("/api/health", healthRoutes(source));
  return { app, counts };
}

function countingSource() {
  const calls = { postgres: 0, nats: 0, clickhouse: 0 };
  let release = () => {};
  let gate = new Promise<void>((resolve) => release = resolve);
  const source: HealthSource = {
    version: "test",
    startedAt: Date.now(),
    probes: {
      postgres: async () => {
        calls.postgres++;
        await gate;
        return 1;
      },
      nats: () => {
        calls.nats++;
        return Promise.resolve(1);
      },
      clickhouse: () => {
        calls.clickhouse++;
        return Promise.reject(new Error("ClickHouse is unreachable"));
      },
    },
    actors: () => [],
  };
  return {
    source,
    calls,
    release: () => release(),
    rearm: () => gate = new Promise<void>((resolve) => release = resolve),
  };
}

Deno.test("detailed health requests made while a probe round runs share it", async () => {
  const { source, calls, release } = countingSource();
  const { app, counts } = healthApp(source);
  const answers = Array.from({ length: 20 }, () => app.request("/api/health/detailed"));
  await waitFor(() => counts.entered === 20, 5000, "every request reaching the route");
  release();
  const responses = await Promise.all(answers);
  assert.deepEqual(calls, { postgres: 1, nats: 1, clickhouse: 1 });
  for (const response of responses) {
    assert.equal(response.status, 503);
    const body = await response.json();
    assert.equal(body.status, "degraded");
    assert.deepEqual(body.problems, ["clickhouse is down: ClickHouse is unreachable"]);
  }
});

Deno.test("a detailed health request after a probe round has ended probes again", async () => {
  const { source, calls, release, rearm } = countingSource();
  const { app, counts } = healthApp(source);
  release();
  assert.equal((await app.request("/api/health/detailed")).status, 503);
  rearm();
  const second = app.request("/api/health/detailed");
  await waitFor(() => counts.entered === 2, 5000, "the second request reaching the route");
  release();
  assert.equal((await second).status, 503);
  assert.deepEqual(calls, { postgres: 2, nats: 2, clickhouse: 2 });
});
