-- What the one-statement writes of the trading path need (see db/fills.ts insertFillsWithOrders and
-- db/positions.ts storeAppliedFills).
--
-- tw_expect(ok, message): true when ok is true, else raises serialization_failure (40001) with
-- message. Single-statement writes that were computed from rows read earlier (the execution
-- engine's fills with their orders, the position tracker's positions and cash) check in the same
-- statement that those rows are still as read; when they are not, the error rolls the whole
-- statement back and the caller redoes the work under row locks.
CREATE FUNCTION tw_expect(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
  IF ok IS NOT TRUE THEN
    RAISE EXCEPTION USING ERRCODE = 'serialization_failure', MESSAGE = message;
  END IF;
  RETURN true;
END
$$;

-- Every fill row is updated once, when the position tracker applies it (realized_pnl). Room left in
-- each page lets that update stay on the page (a HOT update) instead of adding an entry to each of
-- the four indexes; half a page, because the tracker updates a whole batch of fills in one statement,
-- so no old version can be pruned to make room before it commits. (From ~30% of the updates HOT at
-- fillfactor 80 to ~99% at 50, in the trading benchmark's burst.)
ALTER TABLE fills SET (fillfactor = 50);
