-- ERP labour postings with the same project and resource keys as the PSA side (golden, else digits).
SELECT l.posting_id, l.psa_entry_ref, l.hours, l.amount, l.cost_amount, l.currency, l.work_date, l.fiscal_period,
       l.proj_no, l.company_code,
       coalesce(xp.golden_id, 'code:' || regexp_replace(l.proj_no, '[^0-9]', '', 'g')) AS project_key,
       coalesce(xr.golden_id,
                'number:' || CAST(TRY_CAST(regexp_replace(l.emp_no, '[^0-9]', '', 'g') AS BIGINT) AS VARCHAR))
         AS resource_key,
       xp.golden_id AS golden_project, xc.golden_id AS customer
FROM replica_erp.labor_postings l
LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'erp' AND xp.source_id = l.proj_no
LEFT JOIN mdm.xref xr ON xr.entity = 'resource' AND xr.source_system = 'erp' AND xr.source_id = l.emp_no
LEFT JOIN replica_erp.projects p ON p.proj_no = l.proj_no
LEFT JOIN mdm.xref xc ON xc.entity = 'customer' AND xc.source_system = 'erp' AND xc.source_id = p.cust_no
