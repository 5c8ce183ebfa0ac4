-- v_signals: the signal definition of docs/design.md ("The signal definition") computed from `ticks`, one row per tick.
-- Columns (named and typed like the `signals` Delta table the streaming job writes):
--   symbol varchar, event_time timestamp, event_date date, close double, volume bigint,
--   sma_short double, sma_long double, prev_volume bigint, signal varchar, crossover varchar
-- Window lengths live in the `params` CTE and nowhere else. They must equal signals.sma_short and
-- signals.sma_long of the job's configuration: `jobs.athena deploy` and `jobs.query` refuse a mismatch.
CREATE OR REPLACE VIEW v_signals AS
WITH
params AS (
    SELECT 9 AS short_window, 21 AS long_window
),
source_ticks AS (
    SELECT
        t.symbol,
        t.event_time,
        t.event_date,
        t.close,
        -- The close in whole millionths: the averages are compared as exact integer sums, so equal averages are
        -- equal in every engine (a floating-point sum's rounding depends on the order an engine adds in).
        CAST(ROUND(t.close * 1000000) AS bigint) AS close_micros,
        t.volume,
        p.short_window,
        p.long_window
    FROM ticks AS t
    CROSS JOIN params AS p
),
-- One pass over each symbol's ticks in time order: the means and exact sums of the N most recent closes, the close
-- each frame dropped on this tick (the previous tick's sums follow from those: lags cost far less than frames),
-- the tick's position (warm-up) and the previous volume.
framed AS (
    SELECT
        symbol,
        event_time,
        event_date,
        close,
        close_micros,
        volume,
        short_window,
        long_window,
        ROW_NUMBER() OVER (PARTITION BY symbol ORDER BY event_time) AS tick_number,
        AVG(close) OVER (
            PARTITION BY symbol ORDER BY event_time ROWS BETWEEN short_window - 1 PRECEDING AND CURRENT ROW
        ) AS short_mean,
        AVG(close) OVER (
            PARTITION BY symbol ORDER BY event_time ROWS BETWEEN long_window - 1 PRECEDING AND CURRENT ROW
        ) AS long_mean,
        CAST(SUM(close_micros) OVER (
            PARTITION BY symbol ORDER BY event_time ROWS BETWEEN short_window - 1 PRECEDING AND CURRENT ROW
        ) AS bigint) AS short_sum,
        CAST(SUM(close_micros) OVER (
            PARTITION BY symbol ORDER BY event_time ROWS BETWEEN long_window - 1 PRECEDING AND CURRENT ROW
        ) AS bigint) AS long_sum,
        LAG(close_micros, short_window) OVER (PARTITION BY symbol ORDER BY event_time) AS short_dropped,
        LAG(close_micros, long_window) OVER (PARTITION BY symbol ORDER BY event_time) AS long_dropped,
        LAG(volume) OVER (PARTITION BY symbol ORDER BY event_time) AS prev_volume
    FROM source_ticks
),
-- sum_short / short_window vs sum_long / long_window, cross-multiplied (integers: exact in every engine): the sign
-- of each gap is the trend, 1 above, -1 below, 0 equal. The previous tick's sums are this tick's, without this
-- close and with the close each frame dropped on this tick.
gaps AS (
    SELECT
        symbol,
        event_time,
        event_date,
        close,
        volume,
        prev_volume,
        short_window,
        long_window,
        tick_number,
        short_mean,
        long_mean,
        short_sum * long_window - long_sum * short_window AS gap,
        (short_sum - close_micros + short_dropped) * long_window
            - (long_sum - close_micros + long_dropped) * short_window AS previous_gap
    FROM framed
),
-- trend NULL until the long window is full (on this tick for trend, on the previous one for prev_trend).
with_previous AS (
    SELECT
        symbol,
        event_time,
        event_date,
        close,
        volume,
        prev_volume,
        CAST(CASE WHEN tick_number >= short_window THEN short_mean END AS double) AS sma_short,
        CAST(CASE WHEN tick_number >= long_window THEN long_mean END AS double) AS sma_long,
        CASE
            WHEN tick_number >= long_window THEN CASE WHEN gap > 0 THEN 1 WHEN gap < 0 THEN -1 ELSE 0 END
        END AS trend,
        CASE
            WHEN tick_number > long_window THEN
                CASE WHEN previous_gap > 0 THEN 1 WHEN previous_gap < 0 THEN -1 ELSE 0 END
        END AS prev_trend
    FROM gaps
)
-- Comparisons with NULL are NULL, so a missing average (NULL trend) or previous volume falls through to Hold
-- and no crossover is reported until both averages exist on both ticks.
SELECT
    symbol,
    event_time,
    event_date,
    close,
    volume,
    sma_short,
    sma_long,
    prev_volume,
    CAST(
        CASE
            WHEN trend > 0 AND volume > prev_volume THEN 'Buy'
            WHEN trend < 0 AND volume > prev_volume THEN 'Sell'
            ELSE 'Hold'
        END AS varchar
    ) AS signal,
    CAST(
        CASE
            WHEN prev_trend <= 0 AND trend > 0 THEN 'golden_cross'
            WHEN prev_trend >= 0 AND trend < 0 THEN 'death_cross'
        END AS varchar
    ) AS crossover
FROM with_previous
