-- The fees paid to open a position's open quantity (see trading/positions.ts): an opening fill's
-- fee, the share of a flip's fee that opens the new side, released pro rata with the cost basis
-- as the position is reduced, all of it when it closes. Not part of any P&L figure (every fee is
-- expensed in realized P&L when paid); it only judges a closing fill a win or a loss of its
-- strategy (strategy_performance): the gain on the quantity closed less the opening fees it
-- releases and its own share of the fill's fee. Rounded to 8 decimals, as the tracker keeps it.
--
-- Existing positions get 0: the fees of the fills that opened them are not known per unit.
ALTER TABLE positions ADD COLUMN open_fees numeric(20,8) NOT NULL DEFAULT 0;
-- A flat position holds no opening fees.
ALTER TABLE positions ADD CONSTRAINT positions_open_fees_flat CHECK (qty <> 0 OR open_fees = 0);
