-- ERP general ledger revenue (400000) and labour cost (500000) by project and fiscal period.
-- The project is the golden project (mdm.xref) once master data has resolved it: a project the ERP
-- holds twice, or under a new number, is one project here.
SELECT coalesce(xp.golden_id, 'code:' || regexp_replace(g.proj_no, '[^0-9]', '', 'g')) AS project_key, g.proj_no,
       g.company_code, xp.golden_id AS golden_project, xc.golden_id AS customer,
       g.fiscal_period AS period, g.currency, last_day(CAST(g.fiscal_period || '-01' AS DATE)) AS period_end,
       CASE WHEN g.account = '400000' THEN g.amount ELSE 0 END AS revenue,
       CASE WHEN g.account = '500000' THEN g.amount ELSE 0 END AS cost
FROM replica_erp.gl_entries g
LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'erp' AND xp.source_id = g.proj_no
LEFT JOIN replica_erp.projects p ON p.proj_no = g.proj_no
LEFT JOIN mdm.xref xc ON xc.entity = 'customer' AND xc.source_system = 'erp' AND xc.source_id = p.cust_no
WHERE g.proj_no IS NOT NULL
