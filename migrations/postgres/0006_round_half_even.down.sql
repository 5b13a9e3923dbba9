-- Reverts 0006_round_half_even.sql.
DROP FUNCTION round_half_even(numeric, integer);
