/**
 * A replay without `retime` keeps the recorded exchange times, so the
 * validator's time windows (`max_lag_ms`, `max_future_ms`) are lifted — those
 * of `validator.overrides` as well as the defaults, since an override wins
 * over the defaults for its exchange or symbol. Plays the sample capture
 * through the market subtree (writer off) against a NATS server of its own.
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { marketSupervisor } from "../actors/market.ts";
import { Supervisor } from "../actors/supervisor.ts";
import { createClickHouse } from "../adapters/clickhouse.ts";
import { loadConfig } from "../config/mod.ts";
import { nullLogger } from "../lib/log.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { MarketStatus } from "../market/status.ts";
import { waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";

const SAMPLE_CONFIG = new URL("../config/replay_sample.yaml", import.meta.url).pathname;
const SAMPLE = new URL("../captures/sample.ndjson", import.meta.url).pathname;

async function replayRejects(env: Record<string, string>) {
  const nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  const clickhouse = createClickHouse({ url: "http://127.0.0.1:8123", database: "default" });
  const status = new MarketStatus();
  let root: Supervisor | null = null;
  try {
    const config = await loadConfig({
      args: ["--config", SAMPLE_CONFIG],
      env: {
        TRADEWIRE_NATS__URL: nats.url,
        TRADEWIRE_REPLAY__FILE: SAMPLE,
        TRADEWIRE_REPLAY__RETIME: "false",
        TRADEWIRE_REPLAY__LOOP: "false",
        TRADEWIRE_REPLAY__SPEED: "0",
        TRADEWIRE_VALIDATOR__WORKER: "false",
        TRADEWIRE_WRITER__ENABLED: "false",
        ...env,
      },
    });
    root = new Supervisor({ name: "replay-test", intensity: 10, periodMs: 10_000 }, [
      marketSupervisor({
        config,
        nats: nc,
        clickhouse,
        clickhouseReady: Promise.resolve(),
        status,
        cache: new LatestCache(),
        log: nullLogger,
      }),
    ]);
    await root.ready;
    // The capture's Coinbase part plays; wait until the validator has seen it settle.
    let last = -1;
    let stableSince = Date.now();
    await waitFor(
      () => {
        const seen = status.validator.accepted +
          Object.values(status.validator.rejected).reduce((a, b) => a + b, 0);
        if (seen !== last) {
          last = seen;
          stableSince = Date.now();
          return false;
        }
        return seen > 0 && Date.now() - stableSince > 1_500 &&
          (status.feeds.get("coinbase")?.events ?? 0) > 0;
      },
      60_000,
      "replay settled",
    );
    return structuredClone(status.validator);
  } finally {
    await root?.stop();
    await nc.close();
    await clickhouse.close();
    await nats.stop();
  }
}

Deno.test("a replay without retime lifts the time windows of validator.overrides too, not only the defaults", async () => {
  // Baseline: no override; the months-old capture passes the (lifted) time windows.
  const plain = await replayRejects({});
  assert.equal(plain.rejected.stale ?? 0, 0, "no stale rejects without an override");
  // The same replay, with an override that only restates the default max_lag_ms for Coinbase.
  const overridden = await replayRejects({
    TRADEWIRE_VALIDATOR__OVERRIDES__COINBASE__MAX_LAG_MS: "120000",
  });
  assert.equal(
    overridden.rejected.stale ?? 0,
    0,
    `replayed Coinbase events refused as stale: ${JSON.stringify(overridden.rejected)} ` +
      `(accepted ${overridden.accepted}, without the override ${plain.accepted})`,
  );
});
