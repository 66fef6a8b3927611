-- Approved, billable PSA time not yet on any invoice, per project: what could be billed now.
CREATE OR REPLACE VIEW analytics.unbilled_time AS
SELECT p.project_code, p.project_name, p.billing_type, p.legal_entity, t.currency,
       count(*) AS entries, sum(t.hours) AS hours, sum(t.amount) AS amount,
       min(t.work_date) AS oldest_work_date, date_diff('day', min(t.work_date), current_date) AS oldest_age_days
FROM replica_psa.time_entries t JOIN replica_psa.projects p ON p.project_id = t.project_id
WHERE t.status = 'approved' AND t.billable AND t.invoice_id IS NULL
GROUP BY ALL ORDER BY amount DESC;
