/**
 * A client that drops its connection mid-upload is the client's doing, not
 * an "unhandled error" of the engine logged at error level.
 *
 * @module
 */
import assert from "node:assert/strict";
import { createApp } from "../api/app.ts";
import { httpServer } from "../api/server.ts";
import { memoryLogger } from "../lib/log.ts";
import { healthyServices, waitFor } from "./_helpers.ts";

Deno.test("uploads aborted by the client mid-body are not logged as 'unhandled error in request' at error level", async () => {
  const { log, lines } = memoryLogger("debug");
  const app = createApp({ name: "tw", health: healthyServices(), log });
  let port = 0;
  const ac = new AbortController();
  const running = httpServer(app, { host: "127.0.0.1", port: 0 }, {
    log,
    onListen: (a) => port = a.port,
  }).start(ac.signal);
  await running.ready;
  try {
    const aborted = 5;
    for (let i = 0; i < aborted; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(
        new TextEncoder().encode(
          "POST /api/v1/trading/signal HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
            '5\r\n{"str\r\n',
        ),
      );
      // The server has the request (it answers the next one on another connection) before the drop.
      await (await fetch(`http://127.0.0.1:${port}/api/health`)).body?.cancel();
      conn.close();
    }
    // Wait until the server handled every dropped request (logged or not): a marker request after.
    await waitFor(
      async () => {
        const res = await fetch(`http://127.0.0.1:${port}/api/health`);
        await res.body?.cancel();
        return res.ok;
      },
      5_000,
      "server answers",
    );
    await new Promise((r) => setTimeout(r, 300)); // let the dropped requests' handlers settle
    const errors = lines.filter((l) => l.level === "error");
    assert.deepEqual(
      errors.map((l) => `${l.message}: ${JSON.stringify(l.error)}`),
      [],
      `${aborted} client-aborted uploads gave ${errors.length} error-level lines`,
    );
    const debug = lines.filter((l) =>
      l.level === "debug" && l.message === "request body could not be read"
    );
    assert.ok(debug.length > 0, "an aborted upload is still logged, at debug level");
    assert.ok(debug.every((l) => !JSON.stringify(l).includes("    at ")), "without a stack");
  } finally {
    ac.abort();
    await running.done;
  }
});
