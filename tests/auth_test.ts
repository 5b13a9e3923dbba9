import assert from "node:assert/strict";
import { Hono } from "hono";
import { requireApiKey } from "../api/auth.ts";
import { errorHandler } from "../api/errors.ts";
import { hashApiKey } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";

async function app(keys: string[]) {
  const hashes = await Promise.all(keys.map(hashApiKey));
  const app = new Hono();
  app.onError(errorHandler(nullLogger));
  app.use("/trading/*", requireApiKey({ hashes }));
  app.get("/trading/orders", (c) => c.json({ ok: true }));
  app.get("/public", (c) => c.json({ ok: true }));
  return app;
}

Deno.test("trading routes refuse requests without a key (401) or with a wrong one (403)", async () => {
  const server = await app(["k-123456789"]);
  const missing = await server.request("/trading/orders");
  assert.equal(missing.status, 401);
  assert.equal((await missing.json()).error.code, "unauthorized");
  const wrong = await server.request("/trading/orders", {
    headers: { authorization: "Bearer nope" },
  });
  assert.equal(wrong.status, 403);
  assert.equal((await wrong.json()).error.code, "forbidden");
});

Deno.test("a configured key is accepted as a bearer token or an X-API-Key header", async () => {
  const server = await app(["first-key", "second-key"]);
  for (
    const headers of [
      { authorization: "Bearer first-key" },
      { "x-api-key": "second-key" },
    ]
  ) {
    const res = await server.request("/trading/orders", { headers });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
  }
  const open = await server.request("/public");
  assert.equal(open.status, 200);
  await open.body?.cancel();
});

Deno.test("without configured hashes (development) trading routes are open", async () => {
  const server = await app([]);
  const res = await server.request("/trading/orders");
  assert.equal(res.status, 200);
  await res.body?.cancel();
});
