/**
 * Kill-switch requests over NATS (`control.kill_switch`) are checked as REST
 * checks them before anything happens: a `reason` PostgreSQL cannot store
 * (U+0000, an unpaired surrogate) is refused with an error naming the field,
 * and the switch is not touched — an activation held in memory before its
 * store failed would have refused every signal decided meanwhile (review 18).
 * The request is read as REST reads its body: a key given twice
 * (`{"active":true,"active":false}`) is refused, not read as its last value;
 * a `reason` of at most 1000 characters is counted in code points, as a
 * signal's is — 1000 emoji are not 2000 (review 56). Both channels check a
 * request with one function, so the same body gets the same answer: `null`
 * for `reason` or `cancel_open` is taken as not given on both (REST used to
 * refuse it with a 422 that NATS accepted).
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
import {
  characterCount,
  decodeKillSwitchRequest,
  MAX_KILL_SWITCH_REASON,
  parseKillSwitchRequest,
} from "../trading/signals_stream.ts";
import { primedCache } from "./_execution_engine.ts";
import { startNatsServer } from "./_nats_server.ts";
import { migratedDatabase } from "./_postgres.ts";
import { deadline, waitFor } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
/** 1000 characters outside the BMP: 2000 UTF-16 code units. */
const EMOJI_1000 = "\u{1f600}".repeat(1000);

Deno.test("parseKillSwitchRequest refuses a reason holding U+0000 or an unpaired surrogate, naming reason", () => {
  for (const reason of ["desk\u0000halt", "desk\ud800halt", "\udc00"]) {
    const parsed = parseKillSwitchRequest({ active: true, reason });
    assert.deepEqual(parsed, {
      ok: false,
      problems: ["reason: must not hold U+0000 or an unpaired surrogate"],
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

Deno.test("decodeKillSwitchRequest reads a request as REST reads its body: a key given twice or bytes not UTF-8 are refused", () => {
  assert.deepEqual(decodeKillSwitchRequest(bytes('{"active":true,"active":false}')), {
    ok: false,
    problems: ["active: given more than once"],
  });
  assert.deepEqual(decodeKillSwitchRequest(bytes('{"active":true,"reason":"a","reason":"b"}')), {
    ok: false,
    problems: ["reason: given more than once"],
  });
  const notUtf8 = Uint8Array.of(...bytes('{"active":true,"reason":"desk'), 0xff, ...bytes('"}'));
  assert.deepEqual(decodeKillSwitchRequest(notUtf8), {
    ok: false,
    problems: ["a kill-switch request must be UTF-8"],
  });
  for (const text of ["not json", "5", "[true]", '{"active":true'] as const) {
    assert.deepEqual(decodeKillSwitchRequest(bytes(text)), {
      ok: false,
      problems: ["a kill-switch request must be a JSON object"],
    }, text);
  }
  assert.deepEqual(decodeKillSwitchRequest(bytes('{"active":1}')), {
    ok: false,
    problems: ["active: expected true or false"],
  });
  assert.deepEqual(
    decodeKillSwitchRequest(bytes('{"active":true,"cancel_open":false,"reason":"desk"}')),
    { ok: true, request: { active: true, cancel_open: false, reason: "desk" } },
  );
});

Deno.test("control.kill_switch refuses a key given twice, as REST does, and leaves the switch as it was", async () => {
  await using api = await startTradingApi();
  await waitFor(() => api.trading.engine.running, 10_000, "execution running");
  const ask = async (text: string) =>
    (await api.nc.request("control.kill_switch", bytes(text), { timeout: 10_000 }))
      .json<Record<string, unknown>>();
  const on = await ask('{"active":true,"reason":"desk halt"}');
  assert.equal(on.ok, true, JSON.stringify(on));

  // REST refuses this body and touches nothing; so does NATS.
  const rest = await api.app.request("/api/v1/trading/kill-switch", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: '{"active":true,"active":false}',
  });
  assert.equal(rest.status, 422);
  assert.deepEqual((await rest.json()).error.details, ["active: given more than once"]);
  const twice = await ask('{"active":true,"active":false}');
  assert.deepEqual(twice, { ok: false, error: "active: given more than once" });
  assert.equal(api.trading.engine.killSwitch().active, true, "the switch must not be touched");
  assert.equal(api.trading.engine.killSwitch().reason, "desk halt");
});

Deno.test("characterCount counts code points: a surrogate pair once, a lone surrogate once", () => {
  assert.equal(characterCount(""), 0);
  assert.equal(characterCount("desk halt"), 9);
  assert.equal(characterCount("desk halt \u{1f6d1}"), 11);
  assert.equal(characterCount(EMOJI_1000), 1000);
  assert.equal(characterCount("\u{20000}a\u{1d400}"), 3);
  assert.equal(characterCount("\ud800"), 1);
  assert.equal(characterCount("\udc00\ud800"), 2);
  assert.equal(characterCount("a\ud800"), 2);
  for (const text of ["a\u{1f600}b", EMOJI_1000, "\u{20000}\u{1d400}x"]) {
    assert.equal(characterCount(text), [...text].length, text.slice(0, 8));
  }
});

Deno.test("parseKillSwitchRequest counts a reason's characters, not its UTF-16 units", () => {
  assert.equal(MAX_KILL_SWITCH_REASON, 1000);
  assert.deepEqual(parseKillSwitchRequest({ active: true, reason: EMOJI_1000 }), {
    ok: true,
    request: { active: true, reason: EMOJI_1000 },
  });
  for (const reason of [`${EMOJI_1000}a`, "a".repeat(1001)]) {
    assert.deepEqual(parseKillSwitchRequest({ active: true, reason }), {
      ok: false,
      problems: ["reason: expected a string of at most 1000 characters"],
    });
  }
});

Deno.test("the kill switch takes a reason of 1000 characters outside the BMP over REST and NATS, and refuses 1001", async () => {
  await using api = await startTradingApi();
  await waitFor(() => api.trading.engine.running, 10_000, "execution running");
  const post = (body: unknown) =>
    api.app.request("/api/v1/trading/kill-switch", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  const res = await post({ active: true, reason: EMOJI_1000 });
  const body = await res.json();
  assert.equal(res.status, 200, `REST refused 1000 characters: ${JSON.stringify(body.error)}`);
  assert.equal(body.kill_switch.reason, EMOJI_1000);

  const reply = (await api.nc.request(
    "control.kill_switch",
    bytes(JSON.stringify({ active: false, reason: EMOJI_1000 })),
    { timeout: 10_000 },
  )).json<Record<string, unknown>>();
  assert.equal(reply.ok, true, `NATS refused 1000 characters: ${JSON.stringify(reply.error)}`);
  assert.equal(reply.reason, EMOJI_1000);

  for (const reason of [`${EMOJI_1000}a`, "a".repeat(1001)]) {
    const over = await post({ active: true, reason });
    assert.equal(over.status, 422);
    assert.deepEqual((await over.json()).error.details, [
      "reason: expected a string of at most 1000 characters",
    ]);
  }
  assert.equal(api.trading.engine.killSwitch().active, false, "a refused request changes nothing");
});

Deno.test("REST and NATS give the same answer to the same kill-switch body, null counted as not given", async () => {
  await using api = await startTradingApi();
  await waitFor(() => api.trading.engine.running, 10_000, "execution running");
  const post = async (text: string) => {
    const res = await api.app.request("/api/v1/trading/kill-switch", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: text,
    });
    const body = await res.json();
    return res.status === 200
      ? { ok: true, active: body.kill_switch.active, reason: body.kill_switch.reason }
      : { ok: false, status: res.status, problems: body.error.details };
  };
  const ask = async (text: string) => {
    const reply = (await api.nc.request("control.kill_switch", bytes(text), { timeout: 10_000 }))
      .json<Record<string, unknown>>();
    return reply.ok === true
      ? { ok: true, active: reply.active, reason: reply.reason }
      : { ok: false, status: 422, problems: String(reply.error).split("; ") };
  };
  const bodies = [
    '{"active":true,"reason":null,"cancel_open":null}',
    '{"active":false,"reason":null}',
    '{"active":true,"reason":"desk halt","cancel_open":false}',
    '{"active":"yes","cancel_open":1,"reason":7,"junk":true}',
    '{"active":null}',
    '{"active":false,"reason":"all clear"}',
  ];
  for (const body of bodies) {
    const rest = await post(body);
    const nats = await ask(body);
    assert.deepEqual(nats, rest, `${body}: NATS answered unlike REST`);
  }
  assert.deepEqual((await post(bodies[3]!)).problems, [
    "active: expected true or false",
    "cancel_open: expected true or false",
    "reason: expected a string of at most 1000 characters",
    "junk: unknown field",
  ]);
  assert.equal((await post(bodies[0]!)).ok, true, "null is not given, on REST too");
});
