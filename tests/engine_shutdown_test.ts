/**
 * Graceful shutdown of the engine process (`main.ts` run as a subprocess):
 * SIGTERM while NATS is down still stops every actor within its shutdown
 * time and closes the connections without waiting for the server, so the
 * engine exits 0 before `engine.shutdown_timeout_ms`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";

Deno.test("SIGTERM while NATS is down stops the engine gracefully: exit 0 within the shutdown timeout", async () => {
  await using nats = await startNatsServer();
  await using engine = await startEngineProcess({
    NATS_URL: nats.url,
    TRADEWIRE_ENGINE__SHUTDOWN_TIMEOUT_MS: "20000",
  });
  await waitForJson(engine, "/api/health/detailed", (body) => body.status === "ok", 60_000);
  await nats.stop();
  await waitForJson(engine, "/api/health/detailed", (body) => body.status === "down", 30_000);
  const startedAt = Date.now();
  const code = await engine.kill("SIGTERM");
  const tookMs = Date.now() - startedAt;
  const messages = engine.lines.map((l) =>
    `${String(l.time).slice(11, 23)} ${l.level} ${
      l.actor ?? l.component ?? l.supervisor ?? ""
    } ${l.message} ${l.child ?? ""}${l.thread ?? ""}`
  );
  assert.equal(
    code,
    0,
    `exit ${code} after ${tookMs} ms; log tail: ${JSON.stringify(messages.slice(-25))}`,
  );
});
