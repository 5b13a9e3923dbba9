-- Reverts 0004_position_cost_basis.sql.
ALTER TABLE positions DROP COLUMN cost_basis;
