/**
 * `replay.retime` at the sample's speed (config/replay_sample.yaml: speed 4,
 * retime true, i.e. `deno task replay`) replaying the real Coinbase session
 * of captures/sample.ndjson through the whole pipeline: each frame keeps its
 * recorded latency while the replay squeezes the gaps between frames, which
 * could put trades of later frames before those of earlier ones; the stored
 * ticks keep Coinbase's trade order (a product's trade ids grow in match
 * order).
 *
 * @module
 */
import assert from "node:assert/strict";
import { startReplayPipeline } from "./_replay_pipeline.ts";
import { waitFor } from "./_helpers.ts";

Deno.test("a retimed replay at speed 4 keeps the captured Coinbase trades in trade order through to the stored ticks", async () => {
  const lines = Deno.readTextFileSync(new URL("../captures/sample.ndjson", import.meta.url))
    .split("\n")
    .filter((l) => l.includes('"x":"coinbase"'));
  const ids = new Map<string, bigint[]>();
  for (const l of lines) {
    const frame = JSON.parse(JSON.parse(l).f);
    if (frame.channel !== "market_trades") continue;
    for (const e of frame.events) {
      for (const t of e.trades) {
        ids.set(t.product_id, [...(ids.get(t.product_id) ?? []), BigInt(t.trade_id)]);
      }
    }
  }
  await using p = await startReplayPipeline(lines, {
    TRADEWIRE_EXCHANGES__BINANCE__ENABLED: "false",
    TRADEWIRE_EXCHANGES__COINBASE__SYMBOLS: "BTC-USD,ETH-USD",
    TRADEWIRE_REPLAY__SPEED: "4",
    TRADEWIRE_REPLAY__RETIME: "true",
  });
  for (const [symbol, list] of ids) {
    await waitFor(
      async () => (await p.get(`/ticks/${symbol}?limit=1000`)).body.ticks?.length === list.length,
      30_000,
      `${list.length} ${symbol} ticks`,
    );
  }
  for (const [symbol, list] of ids) {
    const stored =
      ((await p.get(`/ticks/${symbol}?limit=1000`)).body.ticks as Array<{ trade_id: string }>)
        .map((t) => t.trade_id);
    const expected = [...list].sort((a, b) => (a > b ? -1 : a < b ? 1 : 0)).map(String);
    const latest = (await p.get(`/latest/${symbol}?exchange=coinbase`)).body.freshest?.trade
      ?.trade_id;
    assert.deepEqual(
      { latest, ticks: stored },
      { latest: expected[0], ticks: expected },
      `${symbol}: newest first by exchange time should be newest first by trade id`,
    );
  }
});
