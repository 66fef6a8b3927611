-- ERP general ledger revenue (400000) and labour cost (500000) by project and fiscal period.
SELECT regexp_replace(g.proj_no, '[^0-9]', '', 'g') AS project_key, g.proj_no, g.company_code,
       g.fiscal_period AS period, g.currency, last_day(CAST(g.fiscal_period || '-01' AS DATE)) AS period_end,
       CASE WHEN g.account = '400000' THEN g.amount ELSE 0 END AS revenue,
       CASE WHEN g.account = '500000' THEN g.amount ELSE 0 END AS cost
FROM replica_erp.gl_entries g
WHERE g.proj_no IS NOT NULL
