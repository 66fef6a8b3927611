-- PSA revenue (invoiced) and cost (approved time) by project and period, in the project's currency.
-- The project is the golden project (mdm.xref) once master data has resolved it, else the code's digits.
WITH projects AS (
    SELECT p.project_id, p.project_code, p.legal_entity, xp.golden_id AS golden_project, xc.golden_id AS customer,
           coalesce(xp.golden_id, 'code:' || regexp_replace(p.project_code, '[^0-9]', '', 'g')) AS project_key
    FROM replica_psa.projects p
    LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'psa' AND xp.source_id = CAST(p.project_id AS VARCHAR)
    LEFT JOIN mdm.xref xc ON xc.entity = 'customer' AND xc.source_system = 'psa' AND xc.source_id = CAST(p.client_id AS VARCHAR)
)
SELECT p.project_key, p.project_code, p.legal_entity, p.golden_project, p.customer,
       i.period, i.currency, last_day(CAST(i.period || '-01' AS DATE)) AS period_end,
       i.amount AS revenue, 0 AS cost
FROM replica_psa.invoices i JOIN projects p ON p.project_id = i.project_id
UNION ALL
SELECT p.project_key, p.project_code, p.legal_entity, p.golden_project, p.customer,
       strftime(t.work_date, '%Y-%m'), t.currency, last_day(t.work_date), 0, t.cost_amount
FROM replica_psa.time_entries t JOIN projects p ON p.project_id = t.project_id
WHERE t.status = 'approved'
