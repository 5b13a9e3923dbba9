-- Trading: symbols, signals, orders, fills, positions, portfolios and their
-- history, risk metrics, strategy performance, alerts and runtime config.
--
-- Conventions:
--   * Money, prices and quantities are NUMERIC(20,8): 12 integer digits, 8 decimals, exact.
--   * Ids are BIGINT identities (postgres.js returns them as decimal strings).
--   * Mutable tables carry created_at/updated_at (updated_at kept by tw_touch_updated_at, only
--     when a row really changes) and created_by/updated_by (who wrote it: "system", a strategy,
--     an API key id). Append-only tables (fills, portfolio_snapshots, risk_metrics) carry
--     created_at/created_by only.
--   * Exactly-once: a signal is identified by (strategy, client_signal_id); a signal maps to at
--     most one order (orders.signal_id UNIQUE); a fill is identified by (order_id,
--     broker_fill_id). Writers insert with ON CONFLICT DO NOTHING and read back what exists.
--   * Outbox: an order is persisted as 'pending' with submitted_at NULL before the broker is
--     called; pending orders found at start-up are submitted again with the same
--     client_order_id, which the broker recognises (orders_unsubmitted_idx).

CREATE TYPE order_side AS ENUM ('buy', 'sell');
CREATE TYPE order_type AS ENUM ('market', 'limit', 'stop', 'stop_limit');
CREATE TYPE time_in_force AS ENUM ('day', 'gtc', 'ioc', 'fok');
CREATE TYPE order_status AS ENUM (
  'pending', 'submitted', 'partially_filled', 'filled', 'cancelled', 'rejected', 'expired'
);
-- received: recorded, no decision yet; accepted: an order was created; rejected: with reasons.
CREATE TYPE signal_status AS ENUM ('received', 'accepted', 'rejected');
CREATE TYPE alert_severity AS ENUM ('info', 'warning', 'critical');

-- Sets updated_at on every UPDATE that changes the row.
CREATE FUNCTION tw_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

-- ---------------------------------------------------------------------------
-- Reference data
-- ---------------------------------------------------------------------------

CREATE TABLE symbols (
  symbol text PRIMARY KEY CHECK (symbol <> ''),
  asset_class text NOT NULL DEFAULT 'crypto' CHECK (asset_class IN ('crypto', 'us_equity')),
  exchange text NULL,
  base_asset text NULL,
  quote_asset text NULL,
  tick_size numeric(20,8) NULL CHECK (tick_size > 0),
  lot_size numeric(20,8) NULL CHECK (lot_size > 0),
  min_qty numeric(20,8) NULL CHECK (min_qty > 0),
  active boolean NOT NULL DEFAULT true,
  -- Last known market price, the fallback mark for exposure.
  last_price numeric(20,8) NULL CHECK (last_price > 0),
  last_price_at timestamptz NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system'
);

CREATE TABLE portfolios (
  id text PRIMARY KEY CHECK (id <> ''),
  broker text NOT NULL DEFAULT 'paper',
  base_currency text NOT NULL DEFAULT 'USD',
  -- Cash may go negative on margin.
  cash numeric(20,8) NOT NULL DEFAULT 0,
  equity numeric(20,8) NOT NULL DEFAULT 0,
  market_value numeric(20,8) NOT NULL DEFAULT 0,
  gross_exposure numeric(20,8) NOT NULL DEFAULT 0 CHECK (gross_exposure >= 0),
  net_exposure numeric(20,8) NOT NULL DEFAULT 0,
  realized_pnl numeric(20,8) NOT NULL DEFAULT 0,
  unrealized_pnl numeric(20,8) NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system'
);

-- Orders and positions default to this portfolio.
INSERT INTO portfolios (id) VALUES ('default');

-- ---------------------------------------------------------------------------
-- Signals and orders
-- ---------------------------------------------------------------------------

-- Every signal received, valid or not, with its outcome. No foreign key to symbols: a signal
-- for an unknown symbol is recorded too, as rejected.
CREATE TABLE signals (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  strategy text NOT NULL CHECK (strategy <> ''),
  -- The idempotency key within the strategy: the client's signal id, or (without one) a key
  -- derived from the delivery, e.g. the JetStream stream sequence.
  client_signal_id text NOT NULL CHECK (client_signal_id <> ''),
  source text NOT NULL CHECK (source IN ('nats', 'rest', 'internal')),
  symbol text NULL,
  -- The body as received.
  payload jsonb NOT NULL,
  status signal_status NOT NULL DEFAULT 'received',
  -- Why it was rejected: a JSON array, one entry per failed rule.
  reasons jsonb NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  decided_at timestamptz NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system',
  CONSTRAINT signals_idempotency_key UNIQUE (strategy, client_signal_id),
  CONSTRAINT signals_rejected_has_reasons CHECK (
    status <> 'rejected' OR coalesce(jsonb_typeof(reasons) = 'array', false)
  ),
  CONSTRAINT signals_decided_at CHECK ((status = 'received') = (decided_at IS NULL))
);

CREATE INDEX signals_received_at_idx ON signals (received_at);
CREATE INDEX signals_status_idx ON signals (status, id);

CREATE TABLE orders (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  -- Sent to the broker, so a retried submission is recognised as the same order.
  client_order_id text NOT NULL DEFAULT gen_random_uuid()::text CHECK (client_order_id <> ''),
  broker text NOT NULL DEFAULT 'paper',
  broker_order_id text NULL,
  portfolio_id text NOT NULL DEFAULT 'default' REFERENCES portfolios (id),
  -- The signal this order executes: at most one order per signal.
  signal_id bigint NULL REFERENCES signals (id),
  symbol text NOT NULL REFERENCES symbols (symbol),
  side order_side NOT NULL,
  type order_type NOT NULL DEFAULT 'market',
  time_in_force time_in_force NOT NULL DEFAULT 'day',
  qty numeric(20,8) NOT NULL,
  limit_price numeric(20,8) NULL,
  stop_price numeric(20,8) NULL,
  status order_status NOT NULL DEFAULT 'pending',
  filled_qty numeric(20,8) NOT NULL DEFAULT 0,
  avg_fill_price numeric(20,8) NULL,
  -- Why the order was placed (from the signal).
  reason text NULL,
  -- Why the broker rejected or cancelled it.
  status_reason text NULL,
  strategy text NOT NULL CHECK (strategy <> ''),
  -- Set when the broker acknowledged the order; NULL while pending (see the outbox note above).
  submitted_at timestamptz NULL,
  -- Set when the order reached a final status.
  closed_at timestamptz NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system',
  CONSTRAINT orders_client_order_id_key UNIQUE (client_order_id),
  CONSTRAINT orders_signal_id_key UNIQUE (signal_id),
  CONSTRAINT orders_broker_order_id_key UNIQUE (broker, broker_order_id),
  CONSTRAINT orders_qty_positive CHECK (qty > 0),
  CONSTRAINT orders_filled_qty_range CHECK (filled_qty >= 0 AND filled_qty <= qty),
  CONSTRAINT orders_limit_price_positive CHECK (limit_price > 0),
  CONSTRAINT orders_stop_price_positive CHECK (stop_price > 0),
  CONSTRAINT orders_avg_fill_price_positive CHECK (avg_fill_price > 0),
  CONSTRAINT orders_limit_price_by_type CHECK (
    (type IN ('limit', 'stop_limit')) = (limit_price IS NOT NULL)
  ),
  CONSTRAINT orders_stop_price_by_type CHECK (
    (type IN ('stop', 'stop_limit')) = (stop_price IS NOT NULL)
  ),
  CONSTRAINT orders_filled_status CHECK (status <> 'filled' OR filled_qty = qty),
  CONSTRAINT orders_fill_price_with_fills CHECK ((filled_qty > 0) = (avg_fill_price IS NOT NULL))
);

CREATE INDEX orders_symbol_status_idx ON orders (symbol, status, id);
CREATE INDEX orders_strategy_idx ON orders (strategy, id);
CREATE INDEX orders_created_at_idx ON orders (created_at);
-- Open orders, for risk checks and reconciliation.
CREATE INDEX orders_open_idx ON orders (symbol)
  WHERE status IN ('pending', 'submitted', 'partially_filled');
-- The outbox: orders persisted but not yet acknowledged by the broker.
CREATE INDEX orders_unsubmitted_idx ON orders (id) WHERE status = 'pending';

-- ---------------------------------------------------------------------------
-- Fills and positions
-- ---------------------------------------------------------------------------

CREATE TABLE fills (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id bigint NOT NULL REFERENCES orders (id),
  -- The broker's execution id: a redelivered fill has the same one.
  broker_fill_id text NOT NULL CHECK (broker_fill_id <> ''),
  symbol text NOT NULL REFERENCES symbols (symbol),
  side order_side NOT NULL,
  qty numeric(20,8) NOT NULL,
  price numeric(20,8) NOT NULL,
  -- Negative for a rebate.
  commission numeric(20,8) NOT NULL DEFAULT 0,
  commission_asset text NULL,
  liquidity text NULL CHECK (liquidity IN ('maker', 'taker')),
  -- Realized P&L this fill produced, as computed by the position tracker.
  realized_pnl numeric(20,8) NULL,
  filled_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  CONSTRAINT fills_broker_fill_id_key UNIQUE (order_id, broker_fill_id),
  CONSTRAINT fills_qty_positive CHECK (qty > 0),
  CONSTRAINT fills_price_positive CHECK (price > 0)
);

CREATE INDEX fills_filled_at_idx ON fills (filled_at);
CREATE INDEX fills_symbol_filled_at_idx ON fills (symbol, filled_at);

CREATE TABLE positions (
  portfolio_id text NOT NULL DEFAULT 'default' REFERENCES portfolios (id),
  symbol text NOT NULL REFERENCES symbols (symbol),
  -- Signed: positive long, negative short, zero flat.
  qty numeric(20,8) NOT NULL DEFAULT 0,
  -- Zero when flat.
  avg_entry_price numeric(20,8) NOT NULL DEFAULT 0,
  realized_pnl numeric(20,8) NOT NULL DEFAULT 0,
  commission numeric(20,8) NOT NULL DEFAULT 0,
  -- Latest mark and what it implies, as of marked_at.
  mark_price numeric(20,8) NULL,
  unrealized_pnl numeric(20,8) NULL,
  market_value numeric(20,8) NULL,
  marked_at timestamptz NULL,
  last_fill_id bigint NULL REFERENCES fills (id),
  opened_at timestamptz NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system',
  PRIMARY KEY (portfolio_id, symbol),
  CONSTRAINT positions_avg_entry_price CHECK (
    avg_entry_price >= 0 AND (qty = 0 OR avg_entry_price > 0)
  ),
  CONSTRAINT positions_mark_price_positive CHECK (mark_price > 0)
);

CREATE INDEX positions_open_idx ON positions (symbol) WHERE qty <> 0;

-- ---------------------------------------------------------------------------
-- History and analytics
-- ---------------------------------------------------------------------------

CREATE TABLE portfolio_snapshots (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  portfolio_id text NOT NULL REFERENCES portfolios (id) ON DELETE CASCADE,
  taken_at timestamptz NOT NULL,
  cash numeric(20,8) NOT NULL,
  equity numeric(20,8) NOT NULL,
  market_value numeric(20,8) NOT NULL,
  gross_exposure numeric(20,8) NOT NULL CHECK (gross_exposure >= 0),
  net_exposure numeric(20,8) NOT NULL,
  realized_pnl numeric(20,8) NOT NULL,
  unrealized_pnl numeric(20,8) NOT NULL,
  -- Per-symbol detail (quantities and prices as decimal strings).
  positions jsonb NOT NULL DEFAULT '[]',
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  CONSTRAINT portfolio_snapshots_taken_at_key UNIQUE (portfolio_id, taken_at)
);

-- One row per measured figure, e.g. ('gross_exposure', NULL symbol) or ('position_qty', 'AAPL').
CREATE TABLE risk_metrics (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  portfolio_id text NOT NULL DEFAULT 'default' REFERENCES portfolios (id) ON DELETE CASCADE,
  metric text NOT NULL CHECK (metric <> ''),
  symbol text NULL,
  value numeric(20,8) NOT NULL,
  -- The configured limit at the time, when the figure has one.
  limit_value numeric(20,8) NULL,
  measured_at timestamptz NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system'
);

CREATE INDEX risk_metrics_metric_idx ON risk_metrics (portfolio_id, metric, measured_at);
CREATE INDEX risk_metrics_measured_at_idx ON risk_metrics (measured_at);

-- Daily figures per strategy, accumulated as signals, orders and fills come in.
CREATE TABLE strategy_performance (
  strategy text NOT NULL CHECK (strategy <> ''),
  day date NOT NULL,
  signals integer NOT NULL DEFAULT 0 CHECK (signals >= 0),
  rejected integer NOT NULL DEFAULT 0 CHECK (rejected >= 0),
  orders integer NOT NULL DEFAULT 0 CHECK (orders >= 0),
  fills integer NOT NULL DEFAULT 0 CHECK (fills >= 0),
  -- Sum of qty × price over fills.
  notional numeric(20,8) NOT NULL DEFAULT 0 CHECK (notional >= 0),
  realized_pnl numeric(20,8) NOT NULL DEFAULT 0,
  commission numeric(20,8) NOT NULL DEFAULT 0,
  wins integer NOT NULL DEFAULT 0 CHECK (wins >= 0),
  losses integer NOT NULL DEFAULT 0 CHECK (losses >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system',
  PRIMARY KEY (strategy, day)
);

CREATE INDEX strategy_performance_day_idx ON strategy_performance (day);

-- ---------------------------------------------------------------------------
-- Operations
-- ---------------------------------------------------------------------------

CREATE TABLE alerts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  severity alert_severity NOT NULL,
  -- What raised it, e.g. "risk", "broker.alpaca", "reconciliation".
  source text NOT NULL CHECK (source <> ''),
  message text NOT NULL,
  details jsonb NOT NULL DEFAULT '{}',
  -- Raising an alert with the key of an unresolved one counts an occurrence instead.
  dedupe_key text NULL,
  occurrences integer NOT NULL DEFAULT 1 CHECK (occurrences >= 1),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  resolved boolean NOT NULL DEFAULT false,
  resolved_at timestamptz NULL,
  resolved_by text NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system',
  CONSTRAINT alerts_resolved_at CHECK (resolved = (resolved_at IS NOT NULL))
);

CREATE INDEX alerts_unresolved_idx ON alerts (id) WHERE NOT resolved;
CREATE UNIQUE INDEX alerts_dedupe_key_idx ON alerts (dedupe_key) WHERE NOT resolved;
CREATE INDEX alerts_created_at_idx ON alerts (created_at);

-- Runtime settings changed while the engine runs, e.g. the kill switch.
CREATE TABLE config (
  key text PRIMARY KEY CHECK (key <> ''),
  value jsonb NOT NULL,
  description text NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  created_by text NOT NULL DEFAULT 'system',
  updated_by text NOT NULL DEFAULT 'system'
);

-- ---------------------------------------------------------------------------
-- updated_at triggers
-- ---------------------------------------------------------------------------

CREATE TRIGGER symbols_touch_updated_at BEFORE UPDATE ON symbols
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER portfolios_touch_updated_at BEFORE UPDATE ON portfolios
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER signals_touch_updated_at BEFORE UPDATE ON signals
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER orders_touch_updated_at BEFORE UPDATE ON orders
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER positions_touch_updated_at BEFORE UPDATE ON positions
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER strategy_performance_touch_updated_at BEFORE UPDATE ON strategy_performance
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER alerts_touch_updated_at BEFORE UPDATE ON alerts
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
CREATE TRIGGER config_touch_updated_at BEFORE UPDATE ON config
  FOR EACH ROW WHEN (OLD.* IS DISTINCT FROM NEW.*) EXECUTE FUNCTION tw_touch_updated_at();
