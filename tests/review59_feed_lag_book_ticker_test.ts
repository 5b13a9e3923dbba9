/**
 * `stream_status`'s feed `lag_ms` is how late the venue's events arrive; an
 * event stamped with its receive time because the venue sends no time of its
 * own (Binance spot `bookTicker`, partial depth) tells nothing of that, and
 * must not report a lag of 0 over the real lag of the trades around it. With
 * the default Binance channels, book tickers far outnumber trades, so a feed
 * whose trades arrived seconds late showed `lag_ms: 0` nearly all the time.
 * A fake Binance venue on loopback; the feed's receive clock is injected.
 */

import assert from "node:assert/strict";
import { binanceSession } from "../venues/binance/session.ts";
import { MarketStatus } from "../market/status.ts";
import type { MarketEvent } from "../market/events.ts";
import { deliveryLagMs } from "../actors/feed.ts";
import { FakeBinanceMarket, startBinanceServer } from "./fakes/binance_server.ts";
import { runFeed } from "./_feed_harness.ts";
import { waitFor } from "./_helpers.ts";

const NOW_MS = 1_786_309_548_000;

Deno.test("a Binance feed whose trades arrive 2 s late reports that lag, not 0 from the book tickers after them", async () => {
  const market = new FakeBinanceMarket(["BTC-USDT"]);
  await using venue = await startBinanceServer({ market });
  const status = new MarketStatus();
  const published: MarketEvent[] = [];
  const session = binanceSession({
    ws_url: venue.wsUrl,
    rest_url: venue.restUrl,
    symbols: ["BTC-USDT"],
    channels: ["trades", "top"],
    snapshot_limit: 100,
  });
  const stop = runFeed(session, {
    status,
    sink: (_subject, events) => void published.push(...events),
    deadLetters: () => {},
    nowUs: () => NOW_MS * 1000,
    options: { stale_after_ms: 20_000, reconnect_initial_ms: 50, publish_batch_ms: 0 },
  });
  try {
    await waitFor(() => venue.ws.openSockets().length > 0, 5_000, "the feed connects");
    // A trade that happened 2 s before it was received, then a book ticker (no time of its own).
    venue.send(JSON.stringify({
      stream: "btcusdt@trade",
      data: {
        e: "trade",
        E: NOW_MS - 2_000,
        s: "BTCUSDT",
        t: 7,
        p: "65000.10",
        q: "0.5",
        T: NOW_MS - 2_000,
        m: false,
        M: true,
      },
    }));
    await waitFor(() => published.length >= 1, 5_000, "the trade is published");
    assert.equal(status.feed("binance").lag_ms, 2_000, "the trade's lag");
    venue.send(JSON.stringify({
      stream: "btcusdt@bookTicker",
      data: { u: 400900217, s: "BTCUSDT", b: "65000.00", B: "1", a: "65000.20", A: "2" },
    }));
    await waitFor(() => published.length >= 2, 5_000, "the book ticker is published");
    assert.equal(published[1]?.kind, "top");
    assert.equal(
      status.feed("binance").lag_ms,
      2_000,
      "a book ticker stamped with its receive time says nothing of the lag",
    );
  } finally {
    await stop();
  }
});

Deno.test("deliveryLagMs leaves out events stamped with their receive time, and says null when none is left", () => {
  const top = {
    kind: "top",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: 5_000_000,
    ts_local: 5_000_000,
    bid_price: "1",
    bid_qty: "1",
    ask_price: "2",
    ask_qty: "1",
  } as const satisfies MarketEvent;
  const trade = {
    kind: "trade",
    exchange: "binance",
    symbol: "BTC-USDT",
    venue_symbol: "BTCUSDT",
    ts_exchange: 3_000_000,
    ts_local: 4_500_000,
    trade_id: "1",
    price: "1",
    qty: "1",
    side: "buy",
  } as const satisfies MarketEvent;
  assert.equal(deliveryLagMs([top]), null);
  assert.equal(deliveryLagMs([trade, top]), 1_500);
  assert.equal(deliveryLagMs([top, trade]), 1_500);
});
