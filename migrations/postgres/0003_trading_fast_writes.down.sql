-- Reverts 0003_trading_fast_writes.sql.
ALTER TABLE fills RESET (fillfactor);
DROP FUNCTION tw_expect(boolean, text);
