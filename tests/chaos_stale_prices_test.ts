// deno-lint-ignore-file no-console -- prints the engine's log when a scenario fails
/**
 * Exactly-once under kills and outages: PostgreSQL cut while the engine has
 * signal batches in flight, and the private nats-server stopped at the same
 * moment (market data comes over NATS too). A batch waiting behind the
 * unanswered commits must not be decided while NATS is down, on the prices
 * of before the outage (its market signals were refused for good as
 * `no_market_price`): it waits, like the consumer's backlog, until market
 * data is back. (An order accepted before the outage but submitted during it
 * may still be refused by the paper broker, which refuses market orders
 * without a fresh price.)
 */

import assert from "node:assert/strict";
import { encodeJson } from "../adapters/codec.ts";
import { waitFor } from "./_helpers.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

Deno.test({
  name:
    "signals in flight when PostgreSQL and NATS go down together are not refused as no_market_price",
  async fn() {
    await using w = await world(undefined, { pgProxy: true });
    const N = 200;
    const engine = await w.start();
    await executionRunning(engine);
    for (let start = 0; start < N; start += 20) {
      const chunk: Promise<unknown>[] = [];
      for (let i = start; i < start + 20; i++) {
        const id = `s-${i}`;
        chunk.push(w.js.publish(
          "signals.stale",
          encodeJson({ id, symbol: SYMBOL, side: i % 2 === 0 ? "buy" : "sell", qty: "0.01" }),
          { msgID: id },
        ));
      }
      await Promise.all(chunk);
      await new Promise((r) => setTimeout(r, 10));
    }
    // Both down while the engine still works through the stream.
    w.proxy!.cut();
    await w.stopNats();
    await new Promise((r) => setTimeout(r, 2000));
    w.proxy!.restore();
    // NATS stays down a while longer (no market data reaches the engine meanwhile).
    await new Promise((r) => setTimeout(r, 12_000));
    await w.startNats();
    try {
      await waitFor(
        async () =>
          await w.count("select count(*)::int n from signals where status <> 'received'") === N &&
          await w.count(`select count(*)::int n from orders
            where status in ('pending', 'submitted', 'partially_filled')`) === 0 &&
          await w.count("select count(*)::int n from fills where realized_pnl is null") === 0,
        60_000,
        "every signal decided, every order closed, every fill applied",
      );
    } catch (error) {
      console.log(engine.stderr().slice(-2000));
      console.log(
        engine.lines.filter((l) => l.level === "error" || l.level === "warn").slice(-30)
          .map((l) => JSON.stringify(l).slice(0, 300)).join("\n"),
      );
      throw error;
    }
    const refused = [
      ...await w.sql.unsafe(`select reasons->0->>'rule' as rule, count(*)::int n
      from signals where status = 'rejected' group by 1`),
    ];
    assert.deepEqual(refused, [], "no signal refused: each had a fresh price when it was sent");
    // An order whose submit came (its batch's commit read back after the cut) while NATS was
    // still down meets a paper broker without a fresh price, which refuses market orders then, as
    // specified: such a broker refusal is the only other outcome.
    const statuses = [
      ...await w.sql.unsafe(`select status::text, coalesce(status_reason, '') as reason,
        count(*)::int n from orders group by 1, 2 order by 1, 2`),
    ].map((row) => `${row.status} ${row.reason} ${row.n}`);
    const filled = await w.count("select count(*)::int n from orders where status = 'filled'");
    const refusedByBroker = await w.count(`select count(*)::int n from orders
      where status = 'rejected' and status_reason like 'no fresh market price for %'`);
    assert.equal(filled + refusedByBroker, N, statuses.join("; "));
    assert.equal(await w.count("select count(*)::int n from fills"), filled);
    assert.deepEqual(await violations(w.sql), []);
  },
});
