-- Reverts 0008_position_open_fees.sql.
ALTER TABLE positions DROP COLUMN open_fees;
