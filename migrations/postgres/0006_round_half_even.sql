-- Rounding as the engine rounds money: half to even (banker's rounding, decimal.js ROUND_HALF_EVEN
-- in trading/money.ts). PostgreSQL's round(numeric, s) rounds half away from zero, so a figure
-- computed in SQL (a position's market value at a new mark, a strategy's notional) could differ by
-- 0.00000001 on an exact tie from the same figure computed in the engine.
--
-- Not STRICT, so that PostgreSQL inlines it into the statements that call it (a STRICT SQL function
-- whose body is not strict is not inlined, and each call then runs the function's own plan: about
-- 3–5 µs a call, against under 1 µs inlined). A NULL still gives NULL.
CREATE OR REPLACE FUNCTION round_half_even(v numeric, s integer) RETURNS numeric
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE
    WHEN abs(v * 10::numeric ^ s - trunc(v * 10::numeric ^ s)) = 0.5
      AND mod(trunc(v * 10::numeric ^ s), 2) = 0
    THEN trunc(v, s)
    ELSE round(v, s)
  END
$$;
