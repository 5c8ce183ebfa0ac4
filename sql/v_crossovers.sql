-- v_crossovers: every golden cross (short SMA moves above the long one) and death cross (moves below).
-- Columns: symbol, event_time, event_date, crossover ('golden_cross' | 'death_cross'), close, volume,
-- sma_short, sma_long, signal. Window lengths: those of v_signals.
CREATE OR REPLACE VIEW v_crossovers AS
WITH
crosses AS (
    SELECT symbol, event_time, event_date, crossover, close, volume, sma_short, sma_long, signal
    FROM v_signals
    WHERE crossover IS NOT NULL
)
SELECT symbol, event_time, event_date, crossover, close, volume, sma_short, sma_long, signal
FROM crosses
