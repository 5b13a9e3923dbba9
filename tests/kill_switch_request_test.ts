/**
 * Kill-switch requests over NATS (`control.kill_switch`) are checked as REST
 * checks them before anything happens: a `reason` PostgreSQL cannot store
 * (U+0000, an unpaired surrogate) is refused with an error naming the field,
 * and the switch is not touched — an activation held in memory before its
 * store failed would have refused every signal decided meanwhile (review 18).
 *
 * @module
 */
import assert from "node:assert/strict";
import postgres from "postgres";
import { connect } from "@nats-io/transport-node";
import { loadConfig } from "../config/mod.ts";
import { startRoot } from "../actors/supervisor.ts";
import { tradingSupervisor } from "../actors/trading.ts";
import { nullLogger } from "../lib/log.ts";
import { parseKillSwitchRequest } from "../trading/signals_stream.ts";
import { primedCache } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import { deadline, waitFor } from "./_helpers.ts";

Deno.test("parseKillSwitchRequest refuses a reason holding U+0000 or an unpaired surrogate, naming reason", () => {
  for (const reason of ["desk\u0000halt", "desk\ud800halt", "\udc00"]) {
    const parsed = parseKillSwitchRequest({ active: true, reason });
    assert.deepEqual(parsed, {
      ok: false,
      problems: ["reason must not hold U+0000 or an unpaired surrogate"],
    });
  }
  assert.deepEqual(parseKillSwitchRequest({ active: true, reason: "desk halt \u{1f6d1}" }), {
    ok: true,
    request: { active: true, reason: "desk halt \u{1f6d1}" },
  });
});

Deno.test("an invalid kill-switch request over NATS is answered with an error and changes nothing", async () => {
  await using server = await startNatsServer();
  await using db = await migratedDatabase();
  const config = await loadConfig({ args: [], env: {} });
  const nc = await connect({ servers: server.url });
  const trading = tradingSupervisor({
    config,
    nats: nc,
    sql: db.sql,
    cache: primedCache(),
    log: nullLogger,
    execution: { warmup_ms: 0 },
  });
  const root = await startRoot({ name: "root" }, [trading]);
  // A second session holding the config table: the store of the request waits (a busy
  // database), which makes the moment between "held in memory" and "stored" observable.
  const other = postgres(db.url, { max: 1, onnotice: () => {} });
  let release!: () => void;
  const released = new Promise<void>((resolve) => release = resolve);
  let locked!: () => void;
  const isLocked = new Promise<void>((resolve) => locked = resolve);
  const holder = other.begin(async (tx) => {
    await tx`lock table config in exclusive mode`;
    locked();
    await released;
  });
  try {
    await waitFor(() => trading.engine.running, 10_000, "execution running");
    await isLocked;
    assert.equal(trading.engine.killSwitch().active, false);
    const reply = nc.request(
      "control.kill_switch",
      new TextEncoder().encode('{"active":true,"reason":"desk\\u0000halt"}'),
      { timeout: 15_000 },
    );
    // Give the engine time to act on the request (its store is waiting on the lock).
    let heldOn = false;
    await waitFor(() => (heldOn = trading.engine.killSwitch().active), 1_000, "switch on")
      .catch(() => {});
    release();
    await holder;
    const answer = (await reply).json<{ ok: boolean; error?: string }>();
    assert.equal(answer.ok, false, "the request cannot be stored");
    assert.equal(
      heldOn,
      false,
      `a request answered ${JSON.stringify(answer)} switched trading off meanwhile ` +
        `(kill switch held as ${JSON.stringify(heldOn)}); REST refuses the same body with 422 ` +
        "before touching the switch",
    );
    assert.match(answer.error ?? "", /reason/, "the error names the bad field, as REST's 422 does");
  } finally {
    release();
    await holder.catch(() => {});
    await other.end({ timeout: 5 });
    await deadline(root.stop(), 20_000, "trading stop");
    await nc.close();
  }
});
