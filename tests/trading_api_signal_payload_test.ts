/**
 * A stored signal's payload is served as received: a JSON-number qty or
 * price is stored as its token (jsonb keeps NUMERIC exactly) and read back
 * as that token, never through a float — `0.00000001` is not served as
 * `1e-8`, `123456789012.12345678` not as `123456789012.12346` (review 29).
 * Against a real PostgreSQL (`TW_TEST_POSTGRES_URL`, default the local
 * server), each test in its own `tw_test_<random>` database.
 */
import assert from "node:assert/strict";
import {
  ConflictError,
  findSignalByKey,
  findSignalsByKeys,
  getSignal,
  insertSignal,
  listSignals,
  recordSignalOutcome,
  signalKeyOf,
} from "../db/mod.ts";
import { migratedDatabase } from "./_postgres.ts";
import { binanceTop } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

Deno.test("GET /signals serves a JSON-number qty as received, not re-read through a float (no lost digits, no 1e-8)", async () => {
  await using api = await startTradingApi({
    prime: (c) => c.update([binanceTop("BTC-USDT", "100", "100")]),
  });
  const post = async (body: string) => {
    const res = await api.app.request("/api/v1/trading/signal", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    await res.body?.cancel();
    return res.status;
  };
  // Refused by the risk limits (but recorded with its body): 20 significant digits.
  assert.equal(
    await post('{"id":"wide","symbol":"BTC-USDT","side":"buy","qty":123456789012.12345678}'),
    422,
  );
  // Accepted: the smallest quantity, written as a plain decimal.
  assert.equal(await post('{"id":"tiny","symbol":"BTC-USDT","side":"buy","qty":0.00000001}'), 201);

  // What PostgreSQL holds: the tokens as sent.
  const rows = await api.sql<{ client_signal_id: string; qty: string }[]>`
    select client_signal_id, payload->>'qty' as qty from signals order by id`;
  assert.deepEqual(rows.map((r) => [r.client_signal_id, r.qty]), [
    ["wide", "123456789012.12345678"],
    ["tiny", "0.00000001"],
  ]);

  const res = await api.app.request("/api/v1/trading/signals");
  assert.equal(res.status, 200);
  const text = await res.text();
  // The qty tokens of the served JSON text, as a client's exact JSON reader sees them.
  const served = [...text.matchAll(/"qty":([^,}]+)/g)].map((m) => m[1]);
  assert.deepEqual(
    served,
    ["0.00000001", "123456789012.12345678"],
    `GET /signals payload qty tokens (newest first) should be the bodies as received; got ${
      JSON.stringify(served)
    }`,
  );
});

Deno.test("every read of a stored signal gives its payload numbers as stored; numbers a float writes the same stay numbers", async () => {
  await using db = await migratedDatabase();
  const body = '{"qty": 0.00000001, "price": 99.12345678901234567, "size": 1.50, ' +
    '"n": 3, "levels": [123456789012.12345678, -0.5], "id": "x-1", "deep": {"v": 2.0}}';
  const [row] = await db.sql<{ id: string }[]>`
    insert into signals (strategy, client_signal_id, source, payload)
    values ('momentum', 'x-1', 'rest', ${body}::text::jsonb) returning id`;
  const id = row!.id;
  const asStored =
    '{"n":3,"id":"x-1","qty":0.00000001,"deep":{"v":2.0},"size":1.50,"price":99.12345678901234567,' +
    '"levels":[123456789012.12345678,-0.5]}';
  const served = (payload: unknown) => JSON.stringify(payload);

  const got = await getSignal(db.sql, id);
  assert.equal(served(got.signal.payload), asStored, "getSignal");
  const payload = got.signal.payload as Record<string, unknown>;
  assert.equal(payload.n, 3, "an integer a float holds exactly stays a number");
  assert.equal(payload.id, "x-1");
  assert.deepEqual((payload.levels as unknown[])[1], -0.5);

  const byKey = await findSignalByKey(db.sql, "momentum", "x-1");
  assert.equal(served(byKey?.signal.payload), asStored, "findSignalByKey");
  const byKeys = await findSignalsByKeys(db.sql, [{ strategy: "momentum", id: "x-1" }]);
  assert.equal(
    served(byKeys.get(signalKeyOf("momentum", "x-1"))?.signal.payload),
    asStored,
    "findSignalsByKeys",
  );
  const duplicate = await insertSignal(db.sql, {
    strategy: "momentum",
    client_signal_id: "x-1",
    source: "rest",
    payload: { qty: 1 },
  });
  assert.equal(duplicate.created, false);
  assert.equal(served(duplicate.signal.payload), asStored, "a duplicate's stored signal");

  for (const direction of ["desc", "asc"] as const) {
    const page = await listSignals(db.sql, { direction });
    assert.deepEqual(
      page.items.map((s) => served(s.payload)),
      [asStored],
      `listSignals ${direction}`,
    );
  }

  const decided = await recordSignalOutcome(db.sql, id, {
    status: "rejected",
    reasons: [{ rule: "max_qty", message: "too small" }],
  });
  assert.equal(served(decided.payload), asStored, "recordSignalOutcome");
  const conflict = await recordSignalOutcome(db.sql, id, { status: "accepted" }).catch((e) => e);
  assert.ok(conflict instanceof ConflictError);
  assert.equal(served((conflict.actual as { payload: unknown }).payload), asStored, "conflict");
});
