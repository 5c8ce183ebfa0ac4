-- v_latest_signals: the most recent tick of every symbol with its signal (one row per symbol).
-- Columns: the columns of v_signals (symbol, event_time, event_date, close, volume, sma_short, sma_long,
-- prev_volume, signal, crossover). Window lengths: those of v_signals.
CREATE OR REPLACE VIEW v_latest_signals AS
WITH
ranked AS (
    SELECT
        symbol,
        event_time,
        event_date,
        close,
        volume,
        sma_short,
        sma_long,
        prev_volume,
        signal,
        crossover,
        ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY event_time DESC) AS recency
    FROM v_signals
)
SELECT
    symbol,
    event_time,
    event_date,
    close,
    volume,
    sma_short,
    sma_long,
    prev_volume,
    signal,
    crossover
FROM ranked
WHERE recency = 1
