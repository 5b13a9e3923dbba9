/**
 * The position tracker's own one-statement write
 * (`storeAppliedFills`) committing with its answer lost.
 */
import assert from "node:assert/strict";
import type { Sql } from "postgres";
import { connect } from "@nats-io/transport-node";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { ensureStreams } from "../adapters/nats.ts";
import { createPostgres } from "../adapters/postgres.ts";
import {
  FillHandoff,
  newPositionTrackerStatus,
  positionTrackerActor,
} from "../actors/position_tracker.ts";
import {
  insertFills,
  insertOrders,
  listPositions,
  type NewFill,
  type Order,
  upsertSymbols,
} from "../db/mod.ts";
import { LatestCache } from "../market/latest_cache.ts";
import { fillMessage, fillsStream, publishFill } from "../trading/fills_stream.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { parseDecimal as d } from "../trading/money.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";

/** The tracker's one statement (fast path): UPDATE fills … IS NOT DISTINCT FROM … */
const FAST_STATEMENT = (q: string) =>
  q.includes("UPDATE fills f SET realized_pnl") && q.includes("IS NOT DISTINCT FROM");

async function ordersOf(sql: Sql, sides: Array<"buy" | "sell">): Promise<Order[]> {
  await upsertSymbols(sql, [{ symbol: "BTC-USDT" }]);
  return await insertOrders(
    sql,
    sides.map((side) => ({ strategy: "s", symbol: "BTC-USDT", side, qty: "100" })),
  );
}

function fillOf(order: Order, id: string, qty: string, price: string, at: number): NewFill {
  return {
    order_id: order.id,
    broker_fill_id: id,
    symbol: order.symbol,
    side: order.side,
    qty,
    price,
    filled_at: new Date(at),
  };
}

Deno.test("the tracker's own fill statement commits but its answer is lost: its memory (position, cash, realized P&L today) follows PostgreSQL", async () => {
  const db = await migratedDatabase();
  const proxy = startPgFaultProxy();
  const trackerSql = createPostgres({
    url: proxy.urlFor(new URL(db.url).pathname.slice(1)),
    pool_size: 2,
    sslmode: "disable",
    connect_timeout_s: 2,
  });
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const controller = new AbortController();
  let done: Promise<unknown> = Promise.resolve();
  try {
    await ensureStreams(nc, [fillsStream()]);
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const state = new PortfolioState({ starting_cash: "100000" });
    const status = newPositionTrackerStatus();
    const [buy, sell] = await ordersOf(db.sql, ["buy", "sell"]);
    const tracker = positionTrackerActor({
      nats: nc,
      sql: trackerSql,
      cache: new LatestCache(),
      state,
      status,
      options: {
        portfolio: { starting_cash: "100000", snapshot_interval_ms: 3_600_000 },
        max_price_age_ms: 5_000,
        retry_initial_ms: 10,
        retry_max_ms: 50,
      },
      handoff: new FillHandoff(),
    }).start(controller.signal);
    done = tracker.done;
    await tracker.ready;
    await waitFor(() => status.running, 5_000, "tracker running");
    const now = Date.now();
    // 1. Buy 10 @ 100: applied as usual.
    const [a] = await insertFills(db.sql, [fillOf(buy!, "a", "10", "100", now - 2_000)]);
    await publishFill(js, fillMessage(a!.fill, buy!));
    await waitFor(() => status.applied === 1, 5_000, "first fill applied");
    // 2. Sell 10 @ 60 (realizes −400): the tracker's one statement commits, its answer is lost.
    const cut = proxy.arm({ match: FAST_STATEMENT, mode: "after" });
    const [b] = await insertFills(db.sql, [fillOf(sell!, "b", "10", "60", now - 1_000)]);
    await publishFill(js, fillMessage(b!.fill, sell!));
    await deadline(cut, 5_000, "the tracker's statement cut");
    await waitFor(
      async () => {
        const info = await jsm.consumers.info("FILLS", "position_tracker");
        return info.delivered.stream_seq === 2 && info.num_ack_pending === 0;
      },
      10_000,
      "second message acked",
    );
    // 3. A later fill (buy 1 @ 100 realizes nothing) goes through as usual.
    const [c] = await insertFills(db.sql, [fillOf(buy!, "c", "1", "100", now - 500)]);
    await publishFill(js, fillMessage(c!.fill, buy!));
    await waitFor(() => status.applied === 2, 10_000, "third fill applied");
    // PostgreSQL: long 1, −400 realized today.
    const [row] = await listPositions(db.sql);
    assert.equal(d(row!.qty).toFixed(), "1");
    assert.equal(d(row!.realized_pnl).toFixed(), "-400");
    // The tracker's (and so the engine's risk checks') view must follow PostgreSQL: the daily
    // loss limit counts realizedToday().
    assert.equal(state.realizedToday().toFixed(), "-400", "realized P&L today (daily loss limit)");
    assert.equal(state.position("BTC-USDT").realized_pnl.toFixed(), "-400");
  } finally {
    controller.abort();
    await done.catch(() => {});
    await nc.close();
    await server.stop();
    await trackerSql.end({ timeout: 1 });
    await proxy.close();
    await db[Symbol.asyncDispose]();
  }
});
