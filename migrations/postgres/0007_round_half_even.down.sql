-- Reverts 0007_round_half_even.sql.
DROP FUNCTION round_half_even(numeric, integer);
