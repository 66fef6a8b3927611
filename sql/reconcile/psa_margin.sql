-- PSA revenue (invoiced) and cost (approved time) by project and period, in the project's currency.
SELECT regexp_replace(p.project_code, '[^0-9]', '', 'g') AS project_key, p.project_code, p.legal_entity,
       i.period, i.currency, last_day(CAST(i.period || '-01' AS DATE)) AS period_end,
       i.amount AS revenue, 0 AS cost
FROM replica_psa.invoices i JOIN replica_psa.projects p ON p.project_id = i.project_id
UNION ALL
SELECT regexp_replace(p.project_code, '[^0-9]', '', 'g'), p.project_code, p.legal_entity,
       strftime(t.work_date, '%Y-%m'), t.currency, last_day(t.work_date), 0, t.cost_amount
FROM replica_psa.time_entries t JOIN replica_psa.projects p ON p.project_id = t.project_id
WHERE t.status = 'approved'
