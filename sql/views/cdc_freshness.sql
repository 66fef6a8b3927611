-- Capture freshness per source: events applied, last source event, and its age in seconds.
CREATE OR REPLACE VIEW analytics.cdc_freshness AS
SELECT source, events, snapshot_done, to_timestamp(last_ts_ms / 1000.0) AS last_event_at,
       round(epoch(now()) - last_ts_ms / 1000.0, 1) AS age_seconds, updated_at
FROM cdc.offsets WHERE partition = '';
