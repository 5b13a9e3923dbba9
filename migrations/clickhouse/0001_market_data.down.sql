-- Reverts 0001_market_data.sql: the views first, then the tables they read.
DROP TABLE IF EXISTS candles_1m;
DROP TABLE IF EXISTS candles_mv;
DROP TABLE IF EXISTS candles;
DROP TABLE IF EXISTS bars;
DROP TABLE IF EXISTS quotes;
DROP TABLE IF EXISTS orderbook_snapshots;
DROP TABLE IF EXISTS market_trades;
