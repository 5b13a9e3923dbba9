-- Market data, written by actors/batch_writer.ts from the MD_CLEAN stream
-- (rows made by market/rows.ts). One file for ClickHouse 18.16 and current
-- releases: see migrations/clickhouse/README.md for the conditional blocks.
--
-- Time: every event time is an Int64 of microseconds since the epoch
-- (ts_exchange, ts_local), exact on every server. `timestamp` is derived from
-- it by the server (MATERIALIZED, DateTime in UTC, whole seconds) and used for
-- partitions, sorting and TTL; servers with DateTime64 also get an ALIAS
-- `timestamp_us DateTime64(6)` to read microseconds as a time.
--
-- Prices and sizes: Decimal(38, 18), written as unquoted JSON numbers (18.16
-- refuses quoted decimals in JSONEachRow), so they are stored exactly. Read
-- them with toString(price) when the client would parse JSON numbers as floats.
--
-- Duplicates: the writer acknowledges a message only after its rows are in,
-- so a retried insert or a redelivered message can write a row twice. Every
-- table is a ReplacingMergeTree whose sorting key identifies an event, so a
-- second copy collapses into the first when parts merge; until then read with
-- FINAL (or count uniqExact of the key). market_trades feeds the candles view,
-- which cannot collapse copies: the writer therefore checks, for batches that
-- may already be written (redelivered or retried), which trades are stored and
-- inserts only the others.

CREATE TABLE IF NOT EXISTS market_trades (
-- @if lowcardinality
  exchange LowCardinality(String),
  symbol LowCardinality(String),
  venue_symbol LowCardinality(String),
  side LowCardinality(String),
-- @else
  exchange String,
  symbol String,
  venue_symbol String,
  side String,
-- @end
  ts_exchange Int64,
  ts_local Int64,
  trade_id String,
  price Decimal(38, 18),
  qty Decimal(38, 18),
-- @if datetime64
  timestamp_us DateTime64(6, 'UTC') ALIAS fromUnixTimestamp64Micro(ts_exchange, 'UTC'),
-- @end
  timestamp DateTime('UTC') MATERIALIZED toDateTime(intDiv(ts_exchange, 1000000), 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (exchange, symbol, timestamp, ts_exchange, trade_id)
-- @if ttl
TTL timestamp + INTERVAL 90 DAY
-- @end
;

-- Book events: every snapshot and every delta (action = 'snapshot' | 'delta'),
-- levels as parallel arrays in the venue's order; in a delta a size of 0
-- removes the level. levels_hash tells apart two different updates of the same
-- microsecond, so only true copies collapse.
CREATE TABLE IF NOT EXISTS orderbook_snapshots (
-- @if lowcardinality
  exchange LowCardinality(String),
  symbol LowCardinality(String),
  venue_symbol LowCardinality(String),
  action LowCardinality(String),
-- @else
  exchange String,
  symbol String,
  venue_symbol String,
  action String,
-- @end
  ts_exchange Int64,
  ts_local Int64,
  sequence Nullable(Int64),
  bid_prices Array(Decimal(38, 18)),
  bid_sizes Array(Decimal(38, 18)),
  ask_prices Array(Decimal(38, 18)),
  ask_sizes Array(Decimal(38, 18)),
-- @if datetime64
  timestamp_us DateTime64(6, 'UTC') ALIAS fromUnixTimestamp64Micro(ts_exchange, 'UTC'),
-- @end
  timestamp DateTime('UTC') MATERIALIZED toDateTime(intDiv(ts_exchange, 1000000), 'UTC'),
  levels_hash UInt64 MATERIALIZED cityHash64(
    toString(bid_prices), toString(bid_sizes), toString(ask_prices), toString(ask_sizes))
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (exchange, symbol, timestamp, ts_exchange, action, levels_hash)
-- @if ttl
TTL timestamp + INTERVAL 30 DAY
-- @end
;

-- Best bid/ask: top-of-book events (source = 'top') and quotes (source =
-- 'quote'); bid_exchange/ask_exchange are '' when the venue gives none.
CREATE TABLE IF NOT EXISTS quotes (
-- @if lowcardinality
  exchange LowCardinality(String),
  symbol LowCardinality(String),
  venue_symbol LowCardinality(String),
  source LowCardinality(String),
  bid_exchange LowCardinality(String),
  ask_exchange LowCardinality(String),
-- @else
  exchange String,
  symbol String,
  venue_symbol String,
  source String,
  bid_exchange String,
  ask_exchange String,
-- @end
  ts_exchange Int64,
  ts_local Int64,
  bid_price Decimal(38, 18),
  bid_qty Decimal(38, 18),
  ask_price Decimal(38, 18),
  ask_qty Decimal(38, 18),
-- @if datetime64
  timestamp_us DateTime64(6, 'UTC') ALIAS fromUnixTimestamp64Micro(ts_exchange, 'UTC'),
-- @end
  timestamp DateTime('UTC') MATERIALIZED toDateTime(intDiv(ts_exchange, 1000000), 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (exchange, symbol, timestamp, ts_exchange, source,
  bid_price, bid_qty, ask_price, ask_qty, bid_exchange, ask_exchange);

-- Bars as the venues send them. A venue may send a bar again as it fills or
-- is corrected: one row per (exchange, symbol, bar_interval, start) is kept,
-- the one received last (version ts_local).
CREATE TABLE IF NOT EXISTS bars (
-- @if lowcardinality
  exchange LowCardinality(String),
  symbol LowCardinality(String),
  venue_symbol LowCardinality(String),
  bar_interval LowCardinality(String),
-- @else
  exchange String,
  symbol String,
  venue_symbol String,
  bar_interval String,
-- @end
  ts_exchange Int64,
  ts_local Int64,
  start Int64,
  open Decimal(38, 18),
  high Decimal(38, 18),
  low Decimal(38, 18),
  close Decimal(38, 18),
  volume Decimal(38, 18),
  trades Nullable(UInt64),
  vwap Nullable(Decimal(38, 18)),
  start_time DateTime('UTC') MATERIALIZED toDateTime(intDiv(start, 1000000), 'UTC')
) ENGINE = ReplacingMergeTree(ts_local)
PARTITION BY toYYYYMM(start_time)
ORDER BY (exchange, symbol, bar_interval, start_time, start);

-- 1-minute OHLCV from trades, kept up to date by the candles_mv view on every
-- insert into market_trades. Partial states merge in the background; read
-- finished candles from the candles_1m view (its columns are qualified with
-- the table name, so the aliases open, close… cannot capture them). Ties between trades of the same
-- microsecond go by trade id (shorter first, so numeric ids sort as numbers).
-- To rebuild minutes after a manual fix of market_trades: drop the month's
-- partition of candles and INSERT INTO candles SELECT … FROM market_trades FINAL.
CREATE TABLE IF NOT EXISTS candles (
-- @if lowcardinality
  exchange LowCardinality(String),
  symbol LowCardinality(String),
-- @else
  exchange String,
  symbol String,
-- @end
  minute DateTime('UTC'),
  open AggregateFunction(argMin, Decimal(38, 18), Tuple(Int64, UInt64, String)),
  high AggregateFunction(max, Decimal(38, 18)),
  low AggregateFunction(min, Decimal(38, 18)),
  close AggregateFunction(argMax, Decimal(38, 18), Tuple(Int64, UInt64, String)),
  volume AggregateFunction(sum, Decimal(38, 18)),
  trades AggregateFunction(count)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (exchange, symbol, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS candles_mv TO candles AS
SELECT
  exchange,
  symbol,
  toStartOfMinute(timestamp) AS minute,
  argMinState(price, (ts_exchange, length(trade_id), trade_id)) AS open,
  maxState(price) AS high,
  minState(price) AS low,
  argMaxState(price, (ts_exchange, length(trade_id), trade_id)) AS close,
  sumState(qty) AS volume,
  countState() AS trades
FROM market_trades
GROUP BY exchange, symbol, minute;

CREATE VIEW IF NOT EXISTS candles_1m AS
SELECT
  exchange,
  symbol,
  minute,
  argMinMerge(candles.open) AS open,
  maxMerge(candles.high) AS high,
  minMerge(candles.low) AS low,
  argMaxMerge(candles.close) AS close,
  sumMerge(candles.volume) AS volume,
  countMerge(candles.trades) AS trades
FROM candles
GROUP BY exchange, symbol, minute;
