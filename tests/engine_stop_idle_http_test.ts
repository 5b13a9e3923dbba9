/**
 * The engine process: SIGTERM while an HTTP client holds a connection open.
 *
 * README: SIGINT/SIGTERM is a graceful stop, exit 0; the HTTP server "stops accepting work" and
 * in-flight requests finish. A connection on which no request is in flight (a load balancer's
 * pre-opened connection, a client's idle keep-alive) must not hold the stop up.
 *
 * @module
 */
import assert from "node:assert/strict";
import { startEngineProcess, waitForJson } from "./_engine_process.ts";
import { startNatsServer } from "./_nats_server.ts";
import { deadline } from "./_helpers.ts";

for (
  const [what, bytes] of [
    ["a connection that has sent nothing yet (a proxy's pre-opened connection)", ""],
    [
      "an idle keep-alive connection after a request was answered",
      "GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
  ] as const
) {
  Deno.test(`SIGTERM with ${what} open exits 0 within engine.shutdown_timeout_ms`, async () => {
    await using nats = await startNatsServer();
    await using engine = await startEngineProcess({
      NATS_URL: nats.url,
      TRADEWIRE_SUPERVISOR__CHILD_SHUTDOWN_MS: "5000",
      TRADEWIRE_ENGINE__SHUTDOWN_TIMEOUT_MS: "10000",
    });
    await waitForJson(engine, "/api/health", (_body, status) => status === 200, 60_000);
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: engine.port });
    try {
      if (bytes !== "") {
        await conn.write(new TextEncoder().encode(bytes));
        const buf = new Uint8Array(4096);
        const n = await conn.read(buf);
        assert.ok(n !== null && n > 0, "answered");
      }
      const sentAt = Date.now();
      const code = await deadline(engine.kill("SIGTERM"), 30_000, "exit");
      const tookMs = Date.now() - sentAt;
      const tail = engine.lines.slice(-8).map((l) => `${l.level} ${l.message} ${l.child ?? ""}`);
      assert.equal(code, 0, `exit ${code} after ${tookMs} ms; ${JSON.stringify(tail)}`);
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  });
}
