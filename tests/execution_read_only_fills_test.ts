/**
 * A broker's fill that arrives while PostgreSQL refuses writes — read-only,
 * as a standby during a failover (SQLSTATE 25006), simulated on the scratch
 * database — waits and is stored once PostgreSQL takes writes again, as in an
 * outage; it is not dropped with an alert.
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { listFills } from "../db/mod.ts";
import { collectUncaught, notPeerGone, waitFor } from "./_helpers.ts";
import { btcUsdtTop, FAST_SUBMIT_RETRIES, scratchEngine } from "./_execution_engine.ts";
import { ADMIN_URL, setReadOnly } from "./_postgres.ts";

Deno.test("a fill arriving while PostgreSQL is read-only is stored once it takes writes again, not dropped", async () => {
  // Ending the backends may leave postgres.js's write to a closed connection uncaught (main.ts
  // lets it pass); nothing else may be.
  using uncaught = collectUncaught();
  {
    await using h = await scratchEngine({ maxPriceAgeMs: 120_000, options: FAST_SUBMIT_RETRIES });
    await h.engine.start();
    const name = new URL(h.db.url).pathname.slice(1);
    const admin = postgres(ADMIN_URL, { max: 1, onnotice: () => {} });
    const readOnly = (on: boolean) => setReadOnly(admin, h.db.url, on);
    try {
      // A limit buy below the market rests at the paper broker.
      const [outcome] = await h.engine.processSignals([{
        body: {
          symbol: "BTC-USDT",
          side: "buy",
          qty: "0.1",
          type: "limit",
          limit_price: "49000",
          time_in_force: "gtc",
          id: "ro-fill",
        },
        source: "rest",
      }]);
      assert.equal(outcome?.status, "accepted", JSON.stringify(outcome));
      const orderId = outcome?.status === "accepted" ? outcome.order.id : "";
      await waitFor(() => h.paper.stats().resting === 1, 10_000, "the order resting");

      await readOnly(true);
      const rollbacks = async () =>
        Number(
          (await admin<{ n: string }[]>`select xact_rollback::text as n from pg_stat_database
          where datname = ${name}`)[0]?.n ?? 0,
        );
      const before = await rollbacks();
      // The market falls through the limit: the paper broker fills it while nothing can be written.
      h.cache.update([btcUsdtTop({ bidPrice: "48900", askPrice: "48950" })]);
      h.paper.onPrice("binance", "BTC-USDT");
      assert.equal(h.paper.stats().fills, 1, "the paper broker filled the order");
      // The engine tried to store it and PostgreSQL refused: a transaction rolled back (counted
      // once the backend reports its statistics), or the update was given up for good.
      await waitFor(
        async () => h.engine.stats().dropped_updates > 0 || (await rollbacks()) > before,
        20_000,
        "a write refused",
      );
      await readOnly(false);

      const sql = postgres(h.db.url, { max: 1, onnotice: () => {} });
      try {
        await waitFor(
          async () => (await listFills(sql, { order_id: orderId })).items.length === 1,
          15_000,
          "the fill stored once PostgreSQL takes writes",
        );
      } finally {
        await sql.end();
      }
      assert.equal(h.engine.stats().dropped_updates, 0, "no broker update dropped");
    } finally {
      await admin.unsafe(`alter database ${name} reset default_transaction_read_only`).catch(
        () => {},
      );
      await admin.end();
    }
  }
  assert.deepEqual(notPeerGone(uncaught), []);
});
