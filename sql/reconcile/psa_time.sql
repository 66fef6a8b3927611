-- Approved PSA time with the project and resource keys the ERP can be matched on.
SELECT t.entry_id, t.hours, t.amount, t.cost_amount, t.currency, t.work_date,
       strftime(t.work_date, '%Y-%m') AS period,
       p.project_code, p.legal_entity,
       regexp_replace(p.project_code, '[^0-9]', '', 'g') AS project_key,
       TRY_CAST(regexp_replace(r.employee_number, '[^0-9]', '', 'g') AS BIGINT) AS resource_key
FROM replica_psa.time_entries t
JOIN replica_psa.projects p ON p.project_id = t.project_id
JOIN replica_psa.resources r ON r.resource_id = t.resource_id
WHERE t.status = 'approved'
