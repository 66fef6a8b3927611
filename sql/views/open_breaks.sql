-- Open breaks by reconciliation and type, with how many and how old (days since first seen).
CREATE OR REPLACE VIEW analytics.open_breaks AS
SELECT recon, break_type, count(*) AS breaks,
       round(avg(date_diff('second', first_seen_at, now()) / 86400.0), 2) AS avg_age_days,
       round(max(date_diff('second', first_seen_at, now()) / 86400.0), 2) AS max_age_days,
       round(sum(abs(coalesce(delta, 0))), 2) AS abs_delta
FROM recon.break_state WHERE status = 'open'
GROUP BY recon, break_type ORDER BY recon, breaks DESC;
