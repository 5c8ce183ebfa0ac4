-- v_signal_summary: per symbol and trading day (event_date, UTC): tick count, Buy/Sell/Hold counts,
-- crossovers and the first and last close of the day.
-- Columns: symbol varchar, event_date date, ticks bigint, buy_signals bigint, sell_signals bigint,
--   hold_signals bigint, golden_crosses bigint, death_crosses bigint, crossovers bigint,
--   first_event_time timestamp, last_event_time timestamp, first_close double, last_close double
-- Window lengths: those of v_signals.
CREATE OR REPLACE VIEW v_signal_summary AS
WITH
daily AS (
    SELECT
        symbol,
        event_date,
        COUNT(*) AS ticks,
        COUNT(CASE WHEN signal = 'Buy' THEN 1 END) AS buy_signals,
        COUNT(CASE WHEN signal = 'Sell' THEN 1 END) AS sell_signals,
        COUNT(CASE WHEN signal = 'Hold' THEN 1 END) AS hold_signals,
        COUNT(CASE WHEN crossover = 'golden_cross' THEN 1 END) AS golden_crosses,
        COUNT(CASE WHEN crossover = 'death_cross' THEN 1 END) AS death_crosses,
        MIN(event_time) AS first_event_time,
        MAX(event_time) AS last_event_time,
        MIN_BY(close, event_time) AS first_close,
        MAX_BY(close, event_time) AS last_close
    FROM v_signals
    GROUP BY symbol, event_date
)
SELECT
    symbol,
    event_date,
    CAST(ticks AS bigint) AS ticks,
    CAST(buy_signals AS bigint) AS buy_signals,
    CAST(sell_signals AS bigint) AS sell_signals,
    CAST(hold_signals AS bigint) AS hold_signals,
    CAST(golden_crosses AS bigint) AS golden_crosses,
    CAST(death_crosses AS bigint) AS death_crosses,
    CAST(golden_crosses + death_crosses AS bigint) AS crossovers,
    first_event_time,
    last_event_time,
    CAST(first_close AS double) AS first_close,
    CAST(last_close AS double) AS last_close
FROM daily
