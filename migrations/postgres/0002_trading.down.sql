-- Reverts 0002_trading.sql: tables in reverse dependency order, then the trigger function and
-- the types. Triggers and indexes go with their tables.
DROP TABLE config;
DROP TABLE alerts;
DROP TABLE strategy_performance;
DROP TABLE risk_metrics;
DROP TABLE portfolio_snapshots;
DROP TABLE positions;
DROP TABLE fills;
DROP TABLE orders;
DROP TABLE signals;
DROP TABLE portfolios;
DROP TABLE symbols;

DROP FUNCTION tw_touch_updated_at();

DROP TYPE alert_severity;
DROP TYPE signal_status;
DROP TYPE order_status;
DROP TYPE time_in_force;
DROP TYPE order_type;
DROP TYPE order_side;
