-- The cash a portfolio started with, stored once — when the engine initialises the portfolio with
-- portfolio.starting_cash — and read from here after: total P&L (equity − starting cash) of an
-- account no longer moves when the configuration's figure is edited. NULL until it is known.
--
-- An existing portfolio that is not pristine gets what its stored figures tell: cash moves only by
-- fills, so starting cash = cash − realized P&L + Σ cost basis of its positions (exact but for the
-- rounding of each fill's notional and realized P&L to 8 decimals: 0.5e-8 at most per fill). A
-- pristine one (nothing but zeros, no position, as 0002 creates `default`) stays NULL: the engine
-- initialises it.
ALTER TABLE portfolios ADD COLUMN starting_cash numeric(20,8) NULL;
UPDATE portfolios p
SET starting_cash = round(
  p.cash - p.realized_pnl
    + coalesce((SELECT sum(cost_basis) FROM positions WHERE portfolio_id = p.id), 0),
  8)
WHERE NOT (p.cash = 0 AND p.equity = 0 AND p.realized_pnl = 0
  AND NOT EXISTS (SELECT 1 FROM positions WHERE portfolio_id = p.id));
