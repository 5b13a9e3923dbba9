// deno-lint-ignore-file no-console -- prints the engine's log when a scenario fails
/**
 * Exactly-once under kills and outages: a burst of fills (many resting limit orders crossed at
 * once) with the engine SIGKILLed while the fills are being stored and the
 * position tracker lags; restarted, killed again in the next burst, and
 * restarted: every order filled once, positions and cash the sum of the fills.
 */

import assert from "node:assert/strict";
import { encodeJson } from "../adapters/codec.ts";
import { waitFor } from "./_helpers.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

Deno.test({
  name: "SIGKILL in the middle of a burst of limit fills, twice: every order filled exactly once",
  async fn() {
    await using w = await world();
    const N = 600;
    let engine = await w.start();
    await executionRunning(engine);
    let fillsBefore = 0;
    for (let round = 0; round < 2; round++) {
      const side = round === 0 ? "buy" : "sell";
      const pubs: Promise<unknown>[] = [];
      for (let i = 0; i < N; i++) {
        const id = `b${round}-${i}`;
        pubs.push(w.js.publish(
          "signals.burst",
          encodeJson({
            id,
            symbol: SYMBOL,
            side,
            qty: "0.001",
            type: "limit",
            limit_price: side === "buy" ? "49000" : "51000",
            time_in_force: "gtc",
          }),
          { msgID: id },
        ));
      }
      await Promise.all(pubs);
      await waitFor(
        async () =>
          await w.count("select count(*)::int n from orders where status = 'submitted'") === N,
        60_000,
        `round ${round}: every limit order resting`,
      );
      // Cross every order at once and kill once the burst is partly stored.
      if (side === "buy") w.quotes.set("48800", "48900");
      else w.quotes.set("51100", "51200");
      // Killed once the first fill of the burst is stored (the rest are at the broker only).
      await waitFor(
        async () => await w.count("select count(*)::int n from fills") > fillsBefore,
        30_000,
        `round ${round}: the burst under way`,
      );
      assert.notEqual(await engine.kill("SIGKILL"), 0);
      const atKill = await w.count("select count(*)::int n from fills");
      const unapplied = await w.count(
        "select count(*)::int n from fills where realized_pnl is null",
      );
      console.log(
        `round ${round}: ${
          atKill - fillsBefore
        } of ${N} fills stored at the kill, ${unapplied} unapplied`,
      );
      engine = await w.start();
      await executionRunning(engine);
      await waitFor(
        async () =>
          await w.count(`select count(*)::int n from orders
            where status in ('pending', 'submitted', 'partially_filled')`) === 0 &&
          await w.count("select count(*)::int n from fills where realized_pnl is null") === 0,
        60_000,
        `round ${round}: every order closed and applied`,
      );
      fillsBefore = await w.count("select count(*)::int n from fills");
      // Back between the limits.
      w.quotes.set("50000", "50001");
    }
    assert.equal(await w.count("select count(*)::int n from orders"), 2 * N);
    assert.equal(
      await w.count("select count(*)::int n from orders where status = 'filled'"),
      2 * N,
    );
    assert.equal(await w.count("select count(*)::int n from fills"), 2 * N);
    assert.deepEqual(await violations(w.sql), []);
  },
});
