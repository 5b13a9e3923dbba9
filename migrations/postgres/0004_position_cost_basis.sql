-- The exact cost basis of a position (see trading/positions.ts): Σ signed qty × price of the open
-- quantity, negative for a short, zero when flat. Quantities and prices have at most 8 decimals
-- each, so the basis is exact at 16; a reduction releases its share of it, rounded to 16 decimals.
-- Realized and unrealized P&L are computed against it, never against avg_entry_price, which stays
-- NUMERIC(20,8) for display: rounding the average after every fill made realized P&L drift from
-- cash (buy 1e9 @ 0.00001236 and 2e9 @ 0.00001235, sell 3e9 @ 0.00001235: cash −10, realized 0).
--
-- Existing rows get qty × avg_entry_price, the best that their rounded average tells.
ALTER TABLE positions ADD COLUMN cost_basis numeric(38,16) NOT NULL DEFAULT 0;
UPDATE positions SET cost_basis = qty * avg_entry_price WHERE qty <> 0;
-- A long costs something, a short brings something in, a flat position holds no basis.
ALTER TABLE positions ADD CONSTRAINT positions_cost_basis_sign CHECK (sign(cost_basis) = sign(qty));
