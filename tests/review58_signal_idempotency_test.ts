/**
 * The idempotency key of `POST /api/v1/trading/signal` (a body's `id`, else
 * its `Idempotency-Key` header) on a running trading subtree: the same key
 * with the same body is answered with the stored outcome; the same key with
 * another body is a 422 `idempotency_key_reused`, never the stored order of
 * a different signal passed off as this one's.
 *
 * @module
 */
import assert from "node:assert/strict";
import { binanceTop } from "./_helpers.ts";
import { startTradingApi } from "./_trading_api.ts";

/** The trading API (no API key) with BTC-USDT priced, and a caller sending raw JSON text. */
async function tradingApi() {
  const api = await startTradingApi({
    prime: (cache) => cache.update([binanceTop("BTC-USDT", "50000", "50002")]),
  });
  const post = async (body: string, headers: Record<string, string> = {}) => {
    const res = await api.app.request("/api/v1/trading/signal", {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body,
    });
    return { status: res.status, body: await res.json() };
  };
  const get = async (path: string) =>
    await (await api.app.request(`/api/v1/trading${path}`)).json();
  return Object.assign(api, { post, get });
}

Deno.test("POST /signal: an id used before for another body is a 422, not the other signal's order", async () => {
  await using api = await tradingApi();
  const first = await api.post('{"id":"idem-1","symbol":"BTC-USDT","side":"buy","qty":"0.01"}');
  assert.equal(first.status, 201, JSON.stringify(first.body));

  // A sell of twice the size under the same id: the buy's order must not be passed off as it.
  const other = await api.post('{"id":"idem-1","symbol":"BTC-USDT","side":"sell","qty":"0.02"}');
  assert.equal(other.status, 422, JSON.stringify(other.body));
  assert.equal(other.body.error.code, "idempotency_key_reused");
  assert.match(other.body.error.message, /idem-1/);
  assert.equal(other.body.order, undefined);

  // The same signal again, its keys in another order and its numbers spelt otherwise: the retry.
  const same = await api.post(
    '{ "qty" : "0.01", "side":"buy", "symbol":"BTC-USDT", "id":"idem-1" }',
  );
  assert.equal(same.status, 200, JSON.stringify(same.body));
  assert.equal(same.body.signal.duplicate, true);
  assert.equal(same.body.order.id, first.body.order.id);

  const orders = await api.get("/orders");
  assert.equal(orders.orders.length, 1, JSON.stringify(orders));
  const signals = await api.get("/signals");
  assert.equal(signals.signals.length, 1, JSON.stringify(signals));
});

Deno.test("POST /signal: a JSON-number body retried with the same numbers spelt otherwise is the same signal", async () => {
  await using api = await tradingApi();
  const first = await api.post('{"id":"n-1","symbol":"BTC-USDT","side":"buy","qty":0.010}');
  assert.equal(first.status, 201, JSON.stringify(first.body));
  for (const qty of ["0.010", "0.01", "1e-2", "1.0E-2"]) {
    const again = await api.post(`{"id":"n-1","symbol":"BTC-USDT","side":"buy","qty":${qty}}`);
    assert.equal(again.status, 200, `${qty}: ${JSON.stringify(again.body)}`);
    assert.equal(again.body.order.id, first.body.order.id);
  }
  const bigger = await api.post('{"id":"n-1","symbol":"BTC-USDT","side":"buy","qty":0.0100000001}');
  assert.equal(bigger.status, 422, JSON.stringify(bigger.body));
  assert.equal(bigger.body.error.code, "idempotency_key_reused");
  // A string is not the number it spells: another body.
  const text = await api.post('{"id":"n-1","symbol":"BTC-USDT","side":"buy","qty":"0.01"}');
  assert.equal(text.status, 422, JSON.stringify(text.body));
});

Deno.test("POST /signal: a corrected body under the id of a rejected one is told the id is taken, not the old reasons", async () => {
  await using api = await tradingApi();
  const bad = await api.post('{"id":"fix-1","symbol":"BTC-USDT","side":"buy","qty":"-1"}');
  assert.equal(bad.status, 422, JSON.stringify(bad.body));
  assert.equal(bad.body.error.code, "signal_rejected");

  // The exact retry keeps its stored rejection.
  const again = await api.post('{"id":"fix-1","symbol":"BTC-USDT","side":"buy","qty":"-1"}');
  assert.equal(again.status, 422, JSON.stringify(again.body));
  assert.equal(again.body.error.code, "signal_rejected");
  assert.equal(again.body.signal.duplicate, true);

  const fixed = await api.post('{"id":"fix-1","symbol":"BTC-USDT","side":"buy","qty":"0.01"}');
  assert.equal(fixed.status, 422, JSON.stringify(fixed.body));
  assert.equal(fixed.body.error.code, "idempotency_key_reused");
  assert.doesNotMatch(fixed.body.error.message, /greater than 0/);

  // An invalid strategy falls back to `default` for the key: a valid default-strategy body is another.
  const spaced = await api.post(
    '{"id":"st-1","symbol":"BTC-USDT","side":"buy","qty":"0.01","strategy":"a b"}',
  );
  assert.equal(spaced.status, 422, JSON.stringify(spaced.body));
  const dotted = await api.post(
    '{"id":"st-1","symbol":"BTC-USDT","side":"buy","qty":"0.01","strategy":"a.b"}',
  );
  assert.equal(dotted.status, 422, JSON.stringify(dotted.body));
  assert.equal(dotted.body.error.code, "idempotency_key_reused", JSON.stringify(dotted.body));
});

Deno.test("POST /signal: an Idempotency-Key header used before for another body is a 422", async () => {
  await using api = await tradingApi();
  const key = { "Idempotency-Key": "hdr-1" };
  const first = await api.post('{"symbol":"BTC-USDT","side":"buy","qty":"0.01"}', key);
  assert.equal(first.status, 201, JSON.stringify(first.body));
  const same = await api.post('{"symbol":"BTC-USDT","side":"buy","qty":"0.01"}', key);
  assert.equal(same.status, 200, JSON.stringify(same.body));
  const other = await api.post('{"symbol":"BTC-USDT","side":"buy","qty":"0.03"}', key);
  assert.equal(other.status, 422, JSON.stringify(other.body));
  assert.equal(other.body.error.code, "idempotency_key_reused");
  assert.match(other.body.error.message, /hdr-1/);
});

Deno.test("POST /signal: bodies stored as their text ({ raw }) are recognised when retried exactly", async () => {
  await using api = await tradingApi();
  const bodies = [
    // U+0000 in a string: jsonb cannot hold it, kept as the body's JSON text.
    '{"id":"raw-1","symbol":"BTC-USDT","side":"buy","qty":"0.01","reason":"a\\u0000b"}',
    // A key given twice: refused unread, kept as its text.
    '{"id":"raw-2","symbol":"BTC-USDT","side":"buy","side":"sell","qty":"0.01"}',
  ];
  for (const body of bodies) {
    const first = await api.post(body);
    assert.equal(first.status, 422, JSON.stringify(first.body));
    assert.equal(first.body.error.code, "signal_rejected");
  }
  // raw-2's key is not read (a body refused unread has no id): an Idempotency-Key keys it.
  const key = { "Idempotency-Key": "raw-3" };
  const unread = '{"symbol":"BTC-USDT","side":"buy","side":"sell","qty":"0.01"}';
  assert.equal((await api.post(unread, key)).body.signal.duplicate, false);
  const retried = await api.post(unread, key);
  assert.equal(retried.status, 422, JSON.stringify(retried.body));
  assert.equal(retried.body.error.code, "signal_rejected", JSON.stringify(retried.body));
  assert.equal(retried.body.signal.duplicate, true);
  const again = await api.post(bodies[0]!);
  assert.equal(again.body.error.code, "signal_rejected", JSON.stringify(again.body));
  assert.equal(again.body.signal.duplicate, true);
  const changed = await api.post(bodies[0]!.replace("a\\u0000b", "a\\u0000c"));
  assert.equal(changed.body.error.code, "idempotency_key_reused", JSON.stringify(changed.body));
});
