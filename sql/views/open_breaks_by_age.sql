-- Open breaks by reconciliation, type and age bucket (days since first seen), for the ageing chart.
CREATE OR REPLACE VIEW analytics.open_breaks_by_age AS
SELECT recon, break_type,
       CASE WHEN age < 1 THEN '0-1d' WHEN age < 7 THEN '1-7d' WHEN age < 30 THEN '7-30d' ELSE '30d+' END AS age_bucket,
       count(*) AS breaks, round(sum(abs(coalesce(delta, 0))), 2) AS abs_delta
FROM (SELECT *, date_diff('second', first_seen_at, now()) / 86400.0 AS age
      FROM recon.break_state WHERE status = 'open')
GROUP BY ALL ORDER BY recon, break_type, age_bucket;
