-- Approved PSA time with no ERP labour posting (the time reconciliation's missing_in_erp breaks).
CREATE OR REPLACE VIEW analytics.unposted_approved_time AS
SELECT b.key AS entry_id, t.work_date, t.hours, t.amount, t.currency, b.project, b.period, b.legal_entity,
       b.first_seen_at
FROM recon.break_state b JOIN replica_psa.time_entries t ON CAST(t.entry_id AS VARCHAR) = b.key
WHERE b.recon = 'time' AND b.break_type = 'missing_in_erp' AND b.status = 'open';
