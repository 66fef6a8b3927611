-- Approved PSA time with the project and resource keys the ERP can be matched on: the golden
-- project and resource (mdm.xref) once master data has resolved them, else the digits of the codes.
SELECT t.entry_id, t.hours, t.amount, t.cost_amount, t.currency, t.work_date,
       strftime(t.work_date, '%Y-%m') AS period,
       p.project_code, p.legal_entity,
       coalesce(xp.golden_id, 'code:' || regexp_replace(p.project_code, '[^0-9]', '', 'g')) AS project_key,
       coalesce(xr.golden_id,
                'number:' || CAST(TRY_CAST(regexp_replace(r.employee_number, '[^0-9]', '', 'g') AS BIGINT) AS VARCHAR))
         AS resource_key,
       xp.golden_id AS golden_project, xc.golden_id AS customer
FROM replica_psa.time_entries t
JOIN replica_psa.projects p ON p.project_id = t.project_id
JOIN replica_psa.resources r ON r.resource_id = t.resource_id
LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'psa' AND xp.source_id = CAST(p.project_id AS VARCHAR)
LEFT JOIN mdm.xref xr ON xr.entity = 'resource' AND xr.source_system = 'psa' AND xr.source_id = CAST(r.resource_id AS VARCHAR)
LEFT JOIN mdm.xref xc ON xc.entity = 'customer' AND xc.source_system = 'psa' AND xc.source_id = CAST(p.client_id AS VARCHAR)
WHERE t.status = 'approved'
