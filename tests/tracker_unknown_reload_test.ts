/**
 * The position tracker after a reservation whose engine statement lost its
 * answer (`unknown()`) while the statement is still running in PostgreSQL
 * (waiting on a lock; the dropped client socket does not stop it): the
 * tracker waits for the statement to end before it reads its positions back
 * — granting no reservation meanwhile — so it then holds the stored
 * positions and cash, publishes the changed position, and its stop snapshot
 * values them (review 35: it used to read back at once, before the commit,
 * and keep stale figures for good).
 */

import assert from "node:assert/strict";
import { connect } from "@nats-io/transport-node";
import { ensureStreams } from "../adapters/nats.ts";
import { createPostgres } from "../adapters/postgres.ts";
import { LatestCache } from "../market/latest_cache.ts";
import {
  getPortfolio,
  insertFillsWithOrders,
  insertOrders,
  latestSnapshot,
  listPositions,
  mapDbError,
  mayHaveCommitted,
  upsertSymbols,
} from "../db/mod.ts";
import {
  FillHandoff,
  newPositionTrackerStatus,
  type PositionMessage,
  positionTrackerActor,
} from "../actors/position_tracker.ts";
import { fillsStream } from "../trading/fills_stream.ts";
import { PortfolioState } from "../trading/portfolio_state.ts";
import { startNatsServer } from "./_nats_server.ts";
import { startPgFaultProxy } from "./_pg_cut_proxy.ts";
import { waitFor } from "./_helpers.ts";
import { migratedDatabase } from "./_postgres.ts";

const STARTING_CASH = "100000";

Deno.test("tracker waits for a reservation's statement that lost its answer to end, then holds, publishes and snapshots what it stored", async () => {
  await using db = await migratedDatabase();
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  const proxy = startPgFaultProxy();
  const dbName = new URL(db.url).pathname.slice(1);
  const engineSql = createPostgres({
    url: proxy.urlFor(dbName),
    pool_size: 1,
    sslmode: "disable",
    connect_timeout_s: 2,
  });
  const controller = new AbortController();
  const published: PositionMessage[] = [];
  const sub = nc.subscribe("positions.>", {
    callback: (_e, msg) => {
      published.push(msg.json<PositionMessage>());
    },
  });
  let done: Promise<void> | null = null;
  let releaseLock: () => void = () => {};
  try {
    await ensureStreams(nc, [fillsStream()]);
    await upsertSymbols(db.sql, [{ symbol: "BTC-USDT" }]);
    const handoff = new FillHandoff();
    const state = new PortfolioState({ starting_cash: STARTING_CASH });
    const status = newPositionTrackerStatus();
    const running = positionTrackerActor({
      nats: nc,
      sql: db.sql,
      cache: new LatestCache(),
      state,
      status,
      handoff,
      options: {
        portfolio: { starting_cash: STARTING_CASH, snapshot_interval_ms: 3_600_000 },
        max_price_age_ms: 5_000,
      },
    }).start(controller.signal);
    await running.ready;
    done = running.done;
    await waitFor(() => status.running, 5_000, "tracker running");

    const [order] = await insertOrders(db.sql, [{
      client_order_id: "rv35-1",
      strategy: "test",
      symbol: "BTC-USDT",
      side: "buy",
      qty: "2",
    }]);
    const filledAt = Date.now();
    const reservation = handoff.reserve([{
      portfolio_id: order!.portfolio_id,
      symbol: "BTC-USDT",
      side: "buy",
      qty: "2",
      price: "100",
      fee: "0",
      filled_at: filledAt,
    }]);
    assert.ok(reservation !== null, "tracker idle: reservation granted");

    // Another transaction holds the position's key: the engine's statement waits on it.
    const lockHeld = Promise.withResolvers<void>();
    const unlock = Promise.withResolvers<void>();
    releaseLock = unlock.resolve;
    // (An uncommitted row of the same position key, rolled back later: the statement's position
    // insert waits on it.)
    const locker = db.sql.begin(async (tx) => {
      await tx`INSERT INTO positions (portfolio_id, symbol, qty, avg_entry_price, realized_pnl)
        VALUES (${order!.portfolio_id}, 'BTC-USDT', 0, 0, 0)`;
      lockHeld.resolve();
      await unlock.promise;
      throw new Error("rollback");
    }).catch(() => {});
    await lockHeld.promise;

    // The engine's statement storing the fill with the reserved positions.
    const statement = insertFillsWithOrders(
      engineSql,
      [{
        order_id: order!.id,
        broker_fill_id: "rv35-f1",
        symbol: "BTC-USDT",
        side: "buy",
        qty: "2",
        price: "100",
        commission: "0",
        filled_at: new Date(filledAt),
        realized_pnl: reservation.realized[0],
      }],
      [],
      { positions: reservation.positions },
    ).then(() => null, (error: unknown) => error);
    await waitFor(
      async () => {
        const rows = await db.sql`
          SELECT 1 FROM pg_stat_activity
          WHERE datname = ${dbName} AND wait_event_type = 'Lock'`;
        return rows.length > 0;
      },
      5_000,
      "engine statement waiting on the portfolio row",
    );

    // The connection drops: the engine cannot know the outcome, as in trading/execution.ts.
    proxy.cut();
    const error = await statement;
    assert.ok(error !== null, "the statement's answer is lost");
    assert.ok(mayHaveCommitted(mapDbError(error)), `may have committed: ${String(error)}`);
    reservation.unknown();

    // A new reservation is granted only once the tracker has read back.
    const reserved = () => {
      const r = handoff.reserve([{
        portfolio_id: order!.portfolio_id,
        symbol: "BTC-USDT",
        side: "sell",
        qty: "1",
        price: "100",
        fee: "0",
        filled_at: Date.now(),
      }]);
      if (r === null) return false;
      r.release();
      return true;
    };
    // While the statement still runs in PostgreSQL, the tracker waits for its outcome.
    for (let i = 0; i < 10; i++) {
      assert.ok(!reserved(), "no reservation (no read-back) while the lost statement still runs");
      await new Promise((resolve) => setTimeout(resolve, 100));
    }

    // The statement, still running in PostgreSQL, goes on and commits.
    unlock.resolve();
    await locker;
    await waitFor(
      async () => (await listPositions(db.sql)).some((p) => p.qty === "2.00000000"),
      5_000,
      "the engine's statement committed after all",
    );
    await waitFor(reserved, 5_000, "tracker read its positions back");
    const stored = await getPortfolio(db.sql, order!.portfolio_id);
    assert.equal(stored.cash, "99800.00000000");

    // What is stored is what the tracker must hold (it lends these positions and values them).
    let seen = "";
    try {
      await waitFor(
        () => {
          seen = `qty ${state.position("BTC-USDT").qty.toFixed()}, cash ${state.cash.toFixed()}`;
          return state.position("BTC-USDT").qty.toFixed() === "2" &&
            state.cash.toFixed() === "99800";
        },
        3_000,
        "tracker state = stored",
      );
    } catch {
      // Go on to the snapshot, then report both.
    }

    controller.abort();
    await done;
    done = null;
    const snapshot = await latestSnapshot(db.sql, { portfolio_id: order!.portfolio_id });
    assert.ok(snapshot !== null, "a snapshot at the graceful stop");
    assert.deepEqual(
      { state: seen, snapshot_cash: snapshot.cash },
      { state: "qty 2, cash 99800", snapshot_cash: "99800.00000000" },
      "the tracker's state and its stop snapshot must match the stored position (qty 2) and cash (99800)",
    );
    // The position the statement stored is published once read back.
    assert.ok(
      published.some((m) => m.symbol === "BTC-USDT" && m.qty === "2" && m.last_fill_id !== ""),
      `positions.BTC-USDT (qty 2) published after the read-back: ${JSON.stringify(published)}`,
    );
  } finally {
    sub.unsubscribe();
    releaseLock();
    controller.abort();
    if (done !== null) await done.catch(() => {});
    await engineSql.end({ timeout: 1 }).catch(() => {});
    await proxy.close();
    await nc.close();
    await server.stop();
  }
});
