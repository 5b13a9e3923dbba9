import assert from "node:assert/strict";
import { Hono } from "hono";
import { createApp } from "../api/app.ts";
import { ApiError, errorHandler, notFound } from "../api/errors.ts";
import { DbConnectionError, SerializationError } from "../db/errors.ts";
import type { HealthSource } from "../api/health.ts";
import { httpServer } from "../api/server.ts";
import { loadConfig } from "../config/mod.ts";
import type { ActorInfo } from "../actors/types.ts";
import { memoryLogger, nullLogger } from "../lib/log.ts";

function actor(name: string, status: ActorInfo["status"]): ActorInfo {
  return { name, kind: "actor", status, restarts: 0, mailbox: null, last_error: null };
}

/** A health source whose probes answer as `down` says; the classification is what is tested. */
function source(down: string[], actors: ActorInfo[] = []): HealthSource {
  const probe = (name: string) => () =>
    down.includes(name) ? Promise.reject(new Error(`${name} refused`)) : Promise.resolve(1.5);
  return {
    version: "9.9.9",
    startedAt: Date.now(),
    probes: { postgres: probe("postgres"), nats: probe("nats"), clickhouse: probe("clickhouse") },
    actors: () => actors,
    sections: () => ({ migrations: { postgres: "applied" } }),
    probeTimeoutMs: 200,
  };
}

Deno.test("GET / names the engine and its version", async () => {
  const app = createApp({ name: "tradewire", health: source([]), log: nullLogger });
  const res = await app.request("/");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { name: "tradewire", version: "9.9.9" });
});

Deno.test("GET /api/health answers 200 while the process serves", async () => {
  const app = createApp({ name: "tw", health: source(["postgres", "nats"]), log: nullLogger });
  const res = await app.request("/api/health");
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: "ok" });
});

Deno.test("detailed health is ok with 200 when every component is up and actors run", async () => {
  const app = createApp({
    name: "tw",
    health: source([], [actor("root/http", "running"), actor("root/migrations", "exited")]),
    log: nullLogger,
  });
  const res = await app.request("/api/health/detailed");
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, "ok");
  for (const name of ["postgres", "nats", "clickhouse"]) {
    assert.deepEqual(body.components[name], { status: "up", latency_ms: 1.5 });
  }
  assert.equal(body.actors.length, 2);
  assert.deepEqual(body.migrations, { postgres: "applied" });
});

Deno.test("detailed health is degraded with 503 when ClickHouse is down", async () => {
  const app = createApp({ name: "tw", health: source(["clickhouse"]), log: nullLogger });
  const res = await app.request("/api/health/detailed");
  assert.equal(res.status, 503);
  const body = await res.json();
  assert.equal(body.status, "degraded");
  assert.equal(body.components.clickhouse.status, "down");
  assert.equal(body.components.clickhouse.latency_ms, null);
  assert.match(body.components.clickhouse.error, /clickhouse refused/);
  assert.deepEqual(body.problems, ["clickhouse is down: clickhouse refused"]);
});

Deno.test("detailed health is degraded when an actor is restarting or failed", async () => {
  for (const status of ["restarting", "failed"] as const) {
    const app = createApp({
      name: "tw",
      health: source([], [actor("root/validator", status)]),
      log: nullLogger,
    });
    const res = await app.request("/api/health/detailed");
    assert.equal(res.status, 503);
    const body = await res.json();
    assert.equal(body.status, "degraded");
    assert.deepEqual(body.problems, [`actor root/validator is ${status}`]);
  }
});

Deno.test("detailed health is down when PostgreSQL or NATS is down", async () => {
  for (const down of [["postgres"], ["nats"]]) {
    const app = createApp({ name: "tw", health: source(down), log: nullLogger });
    const res = await app.request("/api/health/detailed");
    assert.equal(res.status, 503);
    const body = await res.json();
    assert.equal(body.status, "down");
    assert.deepEqual(body.problems, [`${down[0]} is down: ${down[0]} refused`]);
  }
});

Deno.test("a probe that hangs counts as down after the probe timeout", async () => {
  const health = source([]);
  let timer: ReturnType<typeof setTimeout> | undefined;
  health.probes.clickhouse = () =>
    new Promise((resolve) => timer = setTimeout(() => resolve(1), 5_000));
  const app = createApp({ name: "tw", health, log: nullLogger });
  try {
    const body = await (await app.request("/api/health/detailed")).json();
    assert.equal(body.components.clickhouse.status, "down");
    assert.match(body.components.clickhouse.error, /no answer within 200 ms/);
  } finally {
    clearTimeout(timer);
  }
});

Deno.test("unknown routes get a JSON 404", async () => {
  const app = createApp({ name: "tw", health: source([]), log: nullLogger });
  const res = await app.request("/api/nope");
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), {
    error: { code: "not_found", message: "No route for GET /api/nope" },
  });
});

Deno.test("thrown errors become JSON error bodies, never stack traces", async () => {
  const { log, lines } = memoryLogger();
  const app = new Hono()
    .get("/api-error", () => {
      throw new ApiError(422, "invalid_signal", "Signal rejected", { details: ["qty: > 0"] });
    })
    .get("/boom", () => {
      throw new Error("secret internals at db.ts:42");
    });
  app.onError(errorHandler(log));
  app.notFound(notFound);

  const rejected = await app.request("/api-error");
  assert.equal(rejected.status, 422);
  assert.deepEqual(await rejected.json(), {
    error: { code: "invalid_signal", message: "Signal rejected", details: ["qty: > 0"] },
  });

  const boom = await app.request("/boom");
  assert.equal(boom.status, 500);
  const text = await boom.text();
  assert.deepEqual(JSON.parse(text), {
    error: { code: "internal", message: "Internal server error" },
  });
  assert.doesNotMatch(text, /db\.ts|at /);
  assert.equal(lines[0]?.message, "unhandled error in request");
});

Deno.test("a database outage, timeout or lasting conflict is a 503 with Retry-After, not a 500", async () => {
  const { log, lines } = memoryLogger();
  const app = new Hono()
    .get("/refused", () => {
      // What postgres.js throws when the server cannot be reached.
      throw Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), {
        code: "ECONNREFUSED",
      });
    })
    .get("/lost", () => {
      throw new DbConnectionError("write CONNECTION_CLOSED", { code: "CONNECTION_CLOSED" });
    })
    .get("/timeout", () => {
      throw Object.assign(new Error("canceling statement due to statement timeout"), {
        code: "57014",
      });
    })
    .get("/conflict", () => {
      throw new SerializationError("could not serialize access", { code: "40001" });
    })
    .get("/duplicate", () => {
      throw Object.assign(new Error("duplicate key value"), { code: "23505" });
    });
  app.onError(errorHandler(log));

  for (const path of ["/refused", "/lost", "/timeout", "/conflict"]) {
    const response = await app.request(path);
    assert.equal(response.status, 503, path);
    assert.equal(response.headers.get("retry-after"), "1", path);
    const body = await response.json();
    assert.equal(body.error.code, "unavailable", path);
    assert.match(body.error.message, /retry the same request/, path);
  }
  const refused = await (await app.request("/refused")).json();
  assert.match(refused.error.message, /may or may not have been carried out/);
  // Other database errors are not outages: still a 500 without detail.
  assert.equal((await app.request("/duplicate")).status, 500);
  assert.ok(lines.some((line) => line.message === "request failed: database unavailable"));
});

Deno.test("the HTTP server answers a body over http.max_body_bytes with a JSON 413, unread", async () => {
  const config = await loadConfig({ args: [], env: {} });
  assert.equal(config.http.max_body_bytes, 1_048_576);
  let stored = 0;
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.post("/signal", async (c) => {
    stored += (await c.req.arrayBuffer()).byteLength;
    return c.json({ ok: true }, 201);
  });
  let port = 0;
  const stop = new AbortController();
  const running = httpServer(app, { ...config.http, port: 0 }, {
    onListen: (address) => port = address.port,
  }).start(stop.signal);
  try {
    await running.ready;
    const post = async (body: BodyInit) => {
      const res = await fetch(`http://127.0.0.1:${port}/signal`, { method: "POST", body });
      return { status: res.status, body: await res.json() };
    };
    const tooLarge = {
      status: 413,
      body: {
        error: {
          code: "payload_too_large",
          message: "The request body is larger than 1048576 bytes",
        },
      },
    };
    // With a Content-Length, then streamed (chunked) with none.
    assert.deepEqual(await post(new Uint8Array(30 * 1024 * 1024)), tooLarge);
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 30 * 1024 * 1024) return controller.close();
        sent += chunk.length;
        controller.enqueue(chunk);
      },
    });
    assert.deepEqual(await post(stream), tooLarge);
    assert.equal(stored, 0);
    assert.deepEqual(await post(new Uint8Array(1_048_576)), { status: 201, body: { ok: true } });
    assert.equal(stored, 1_048_576);
  } finally {
    stop.abort();
    await running.done;
  }
});
