/**
 * The engine's NATS reconnect backoff (adapters/nats.ts `reconnectSchedule`):
 * the delay doubles per dial, not per time nats.js asks for it. nats.js calls
 * `reconnectDelayHandler` on every pass of its dial loop, also on the passes
 * that only wait out the previous delay; counting an attempt per call made the
 * delay double while it was being waited out, so after one failed dial the
 * next came only after `reconnect_max_wait_ms` (10 s): every NATS blip cost
 * ~10 s disconnected — market data stale, signals held, health down.
 */
import assert from "node:assert/strict";
import { connectNats, reconnectDelay, reconnectSchedule } from "../adapters/nats.ts";
import { loadConfig } from "../config/mod.ts";
import { freePort, startNatsServer } from "./_nats_server.ts";

const OPTIONS = { reconnect_wait_ms: 250, reconnect_max_wait_ms: 10_000, reconnect_jitter_ms: 0 };

/**
 * The times (ms) nats-core's dial loop dials at with `delay` as its
 * `reconnectDelayHandler`, on a fake clock, when every dial fails after
 * `dialMs`: each pass asks for the delay, dials when its last dial is that
 * long ago, else sleeps until then (nats-core `ProtocolHandler.dodialLoop`).
 */
function dialTimes(
  delay: () => number,
  clock: { now: number },
  { lastConnect, until, dialMs = 1 }: { lastConnect: number; until: number; dialMs?: number },
): number[] {
  const dials: number[] = [];
  while (clock.now < until) {
    const wait = delay();
    if (lastConnect + wait <= clock.now) {
      lastConnect = clock.now;
      dials.push(clock.now);
      clock.now += dialMs;
    } else {
      clock.now += Math.min(wait, lastConnect + wait - clock.now);
    }
  }
  return dials;
}

Deno.test("nats.js's dial loop dials at once, then reconnect_wait_ms doubling per dial up to the maximum", () => {
  const clock = { now: 100_000 };
  const schedule = reconnectSchedule(OPTIONS, { now: () => clock.now });
  schedule.connected(); // long ago: the disconnect is at 160 000
  clock.now = 160_000;
  const dials = dialTimes(() => schedule.delay(), clock, { lastConnect: 100_000, until: 190_000 });
  assert.deepEqual(
    dials.map((t) => t - 160_000),
    [0, 250, 750, 1_750, 3_750, 7_750, 15_750, 25_750],
  );
});

Deno.test("a connection dropped just after it came up is dialled again reconnect_wait_ms after it came up", () => {
  const clock = { now: 50_000 };
  const schedule = reconnectSchedule(OPTIONS, { now: () => clock.now });
  schedule.connected();
  clock.now = 50_100;
  const dials = dialTimes(() => schedule.delay(), clock, { lastConnect: 50_000, until: 51_000 });
  assert.deepEqual(dials.map((t) => t - 50_000), [250, 500]);
});

Deno.test("after a reconnect the delays start over at reconnect_wait_ms", () => {
  const clock = { now: 0 };
  const schedule = reconnectSchedule(OPTIONS, { now: () => clock.now });
  schedule.connected();
  clock.now = 10_000;
  dialTimes(() => schedule.delay(), clock, { lastConnect: 0, until: 40_000 }); // delays at 10 s
  schedule.connected(); // reconnected at 40 000
  clock.now = 100_000;
  const dials = dialTimes(() => schedule.delay(), clock, { lastConnect: 40_000, until: 101_000 });
  assert.deepEqual(dials.map((t) => t - 100_000), [0, 250, 750]);
});

Deno.test("each delay is reconnectDelay of its dial, jittered once per dial", () => {
  const clock = { now: 0 };
  let draws = 0;
  const random = () => (draws++, 0.5);
  const options = { ...OPTIONS, reconnect_jitter_ms: 100 };
  const schedule = reconnectSchedule(options, { now: () => clock.now, random });
  clock.now = 1_000;
  const dials = dialTimes(() => schedule.delay(), clock, { lastConnect: 0, until: 3_000 });
  const gaps = dials.slice(1).map((t, i) => t - dials[i]!);
  assert.deepEqual(gaps, [0, 1, 2].map((n) => reconnectDelay(n, options, () => 0.5)));
  assert.equal(draws, dials.length);
});

Deno.test({
  name:
    "the engine's NATS connection is back within 2 s of a nats-server restarted in 300 ms (default reconnect settings)",
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const port = freePort();
    let server = await startNatsServer({ port, jetstream: false });
    const config = await loadConfig({ args: [], env: { NATS_URL: `nats://127.0.0.1:${port}` } });
    const nc = await connectNats(config.nats);
    try {
      let disconnectedAt = 0;
      let reconnectedAt = 0;
      const watching = (async () => {
        for await (const s of nc.status()) {
          if (s.type === "disconnect" && disconnectedAt === 0) disconnectedAt = Date.now();
          if (s.type === "reconnect") {
            reconnectedAt = Date.now();
            return;
          }
        }
      })();
      await server.stop();
      await new Promise((r) => setTimeout(r, 300)); // the restart's downtime
      server = await startNatsServer({ port, jetstream: false });
      const backAt = Date.now();
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([watching, new Promise((r) => timer = setTimeout(r, 20_000))]);
      clearTimeout(timer);
      assert.ok(reconnectedAt > 0, "never reconnected within 20 s");
      const tookMs = reconnectedAt - backAt;
      assert.ok(
        tookMs < 2_000,
        `reconnected ${tookMs} ms after the server was back (${
          reconnectedAt - disconnectedAt
        } ms after the disconnect; reconnect_wait_ms ${config.nats.reconnect_wait_ms}, max ${config.nats.reconnect_max_wait_ms})`,
      );
    } finally {
      await nc.close();
      await server.stop();
    }
  },
});
