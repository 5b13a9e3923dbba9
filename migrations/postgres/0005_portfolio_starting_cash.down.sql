-- Reverts 0005_portfolio_starting_cash.sql.
ALTER TABLE portfolios DROP COLUMN starting_cash;
