/**
 * The position tracker when its own fast-path statement commits but its
 * answer is lost (connection dropped after the commit): it reads its state
 * back, publishes the changed position on `positions.<symbol>` with the fill
 * as its last, and counts the fill `recovered` — applied by a write whose
 * answer was lost — when the retried batch finds it applied (review 35: it
 * counted it a duplicate and published nothing).
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { jetstream } from "@nats-io/jetstream";
import { ensureStreams } from "../adapters/nats.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { type Fill, insertFills, insertOrders, listPositions, upsertSymbols } from "../db/mod.ts";
import {
  newPositionTrackerStatus,
  type PositionMessage,
  positionTrackerActor,
} from "../actors/position_tracker.ts";
import { fillMessage, fillsStream, publishFill } from "../trading/fills_stream.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { startNatsServer } from "./_nats_server.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

const STARTING_CASH = "100000";

Deno.test("tracker publishes positions.<symbol> and counts the fill recovered when its applying statement committed but lost its answer", async () => {
  await using db = await migratedDatabase();
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const proxy = startPgFaultProxy();
  const trackerSql = createPostgres({
    url: proxy.urlFor(new URL(db.url).pathname.slice(1)),
    pool_size: 2,
    sslmode: "disable",
    connect_timeout_s: 2,
  });
  const controller = new AbortController();
  let done: Promise<void> | null = null;
  const published: PositionMessage[] = [];
  const sub = nc.subscribe("positions.>", {
    callback: (_e, msg) => {
      published.push(msg.json<PositionMessage>());
    },
  });
  try {
    await ensureStreams(nc, [fillsStream()]);
    await upsertSymbols(db.sql, [{ symbol: "BTC-USDT" }]);
    const state = new PortfolioState({ starting_cash: STARTING_CASH });
    const status = newPositionTrackerStatus();
    const running = positionTrackerActor({
      nats: nc,
      sql: trackerSql,
      cache: new LatestCache(),
      state,
      status,
      options: {
        portfolio: { starting_cash: STARTING_CASH, snapshot_interval_ms: 3_600_000 },
        max_price_age_ms: 5_000,
        retry_initial_ms: 20,
        retry_max_ms: 100,
      },
    }).start(controller.signal);
    await running.ready;
    done = running.done;
    await waitFor(() => status.running, 5_000, "tracker running");

    const [order] = await insertOrders(db.sql, [{
      client_order_id: "rv35-p1",
      strategy: "test",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "2",
    }]);
    const [inserted] = await insertFills(db.sql, [{
      order_id: order!.id,
      broker_fill_id: "rv35-pf1",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "2",
      price: "100",
      commission: "0",
      filled_at: new Date(),
    }]);
    const message = fillMessage((inserted as { fill: Fill }).fill, order!);

    // The statement marking the fill applied commits; its answer is lost.
    const cut = proxy.arm({ match: (q) => q.includes("SET realized_pnl"), mode: "after" });
    await publishFill(jetstream(nc), message);
    await cut;
    await waitFor(
      async () => (await listPositions(db.sql)).some((p) => p.qty === "2.00000000"),
      5_000,
      "the fill's position committed",
    );
    await waitFor(() => state.position("BTC-USDT").qty.toFixed() === "2", 5_000, "state read back");

    // The stored position changed: its message must go out, as for any fill applied.
    let got = false;
    try {
      await waitFor(
        () => published.some((m) => m.symbol === "BTC-USDT" && m.last_fill_id === message.id),
        3_000,
        "positions message",
      );
      got = true;
    } catch {
      // reported below
    }
    assert.ok(
      got,
      `positions.BTC-USDT for fill ${message.id} (stored qty 2) never published: ` +
        `published ${
          JSON.stringify(published)
        }, status applied=${status.applied} duplicates=${status.duplicates}`,
    );
    await waitFor(
      () => status.applied + status.recovered + status.duplicates === 1,
      5_000,
      "the retried batch settled",
    );
    assert.deepEqual(
      {
        applied: status.applied,
        recovered: status.recovered,
        duplicates: status.duplicates,
        last: status.last_fill_id,
      },
      { applied: 0, recovered: 1, duplicates: 0, last: message.id },
      "the fill its lost write applied is counted recovered (applied, answer lost), not a duplicate",
    );
  } finally {
    sub.unsubscribe();
    controller.abort();
    if (done !== null) await done.catch(() => {});
    await trackerSql.end({ timeout: 1 }).catch(() => {});
    await proxy.close();
    await nc.close();
    await server.stop();
  }
});
