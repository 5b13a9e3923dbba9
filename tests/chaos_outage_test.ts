// deno-lint-ignore-file no-console -- prints the engine's log when a scenario fails
/**
 * Exactly-once under kills and outages: PostgreSQL cut (proxy) and the private nats-server
 * stopped at the same time in the middle of a stream of signals, both
 * brought back (NATS on the same store), then a SIGKILL during the next part
 * of the stream and a restart: every signal processed exactly once.
 */

import assert from "node:assert/strict";
import { encodeJson } from "../adapters/codec.ts";
import { waitFor } from "./_helpers.ts";
import { executionRunning, SYMBOL, violations, world } from "./_chaos.ts";

const PART = 200;
const INVALID_EVERY = 37;
const NO_ID_EVERY = 7;

function body(i: number): Record<string, unknown> {
  const b: Record<string, unknown> = {
    symbol: SYMBOL,
    side: i % 2 === 0 ? "buy" : "sell",
    qty: i % INVALID_EVERY === 0 ? "0" : "0.01",
  };
  if (i % NO_ID_EVERY !== 0) b.id = `o-${i}`;
  return b;
}

Deno.test({
  name:
    "PostgreSQL cut together with a NATS outage, then a SIGKILL: every signal processed exactly once",
  async fn() {
    await using w = await world(undefined, { pgProxy: true });
    const publish = async (from: number, to: number) => {
      for (let start = from; start < to; start += 20) {
        const chunk: Promise<unknown>[] = [];
        for (let i = start; i < Math.min(to, start + 20); i++) {
          const b = body(i);
          const id = b.id as string | undefined;
          chunk.push(w.js.publish("signals.outage", encodeJson(b), id ? { msgID: id } : {}));
        }
        await Promise.all(chunk);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    const signals = () => w.count("select count(*)::int n from signals");
    let engine = await w.start();
    const firstEngine = engine;
    const dump = (e: typeof engine) =>
      console.log(
        e.lines.filter((l) => l.level !== "debug").map((l) => JSON.stringify(l).slice(0, 400)).join(
          "\n",
        ),
      );
    await executionRunning(engine);
    const marks: string[] = [];
    const mark = (what: string) => marks.push(`${new Date().toISOString()} ${what}`);

    // Part 1, and the double outage in its middle.
    const part1 = publish(0, PART);
    await waitFor(async () => await signals() >= PART / 3, 60_000, "a third of part 1 recorded");
    await part1;
    mark("cut");
    w.proxy!.cut();
    await w.stopNats();
    await new Promise((r) => setTimeout(r, 3000));
    await w.startNats();
    mark("nats back");
    await new Promise((r) => setTimeout(r, 1000));
    w.proxy!.restore();
    mark("pg back");

    // Part 2, with a SIGKILL in its middle.
    const part2 = publish(PART, 2 * PART);
    try {
      await waitFor(async () => await signals() >= PART * 1.3, 90_000, "part 2 under way");
    } catch (error) {
      console.log("signals", await signals());
      const exited = await Promise.race([
        engine.status.then((st) => JSON.stringify(st)),
        new Promise((r) => setTimeout(() => r("running"), 100)),
      ]);
      console.log("engine:", exited, "stderr:", engine.stderr().slice(-3000));
      console.log(await engine.get("/api/health/detailed").then((r) => r.text(), (e) => String(e)));
      console.log(marks.join("\n"));
      dump(engine);
      throw error;
    }
    mark("kill");
    assert.notEqual(await engine.kill("SIGKILL"), 0);
    await part2;
    mark("part 2 published");
    engine = await w.start();
    await executionRunning(engine);
    mark("second running");
    await publish(2 * PART, 3 * PART);

    const N = 3 * PART;
    await waitFor(
      async () =>
        await w.count("select count(*)::int n from signals where status <> 'received'") === N &&
        await w.count(`select count(*)::int n from orders
          where status in ('pending', 'submitted', 'partially_filled')`) === 0 &&
        await w.count("select count(*)::int n from fills where realized_pnl is null") === 0,
      120_000,
      "every signal decided, every order closed, every fill applied",
    );
    assert.equal(await signals(), N);
    const invalid = Math.floor((N - 1) / INVALID_EVERY) + 1;
    const refused = [
      ...await w.sql.unsafe(`select reasons, count(*)::int n from signals
      where status = 'rejected' and payload->>'qty' <> '0' group by reasons`),
    ];
    if (refused.length > 0) {
      console.log(
        [
          ...await w.sql.unsafe(`select id, payload->>'id' pid, received_at, decided_at from signals
        where status = 'rejected' and payload->>'qty' <> '0' order by id`),
        ].map((r) => JSON.stringify(r)).join("\n"),
      );
      console.log(
        JSON.stringify([
          ...await w.sql.unsafe(
            `select min(id), max(id), min(received_at), max(received_at) from signals`,
          ),
        ]),
      );
      console.log(marks.join("\n"));
      dump(firstEngine);
      console.log("=== second");
      dump(engine);
    }
    assert.deepEqual(refused, [], "only the invalid signals are rejected");
    const accepted = await w.count("select count(*)::int n from signals where status = 'accepted'");
    assert.equal(accepted, N - invalid);
    assert.equal(await w.count("select count(*)::int n from orders"), accepted);
    assert.equal(
      await w.count("select count(*)::int n from orders where status = 'filled'"),
      accepted,
    );
    assert.equal(await w.count("select count(*)::int n from fills"), accepted);
    assert.deepEqual(await violations(w.sql), []);
  },
});
