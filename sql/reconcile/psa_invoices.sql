-- PSA invoices with their project (code and golden id) and customer (golden id).
SELECT i.invoice_number, i.amount, i.currency, i.status, i.period, i.invoice_date, p.project_code, p.legal_entity,
       xp.golden_id AS golden_project, xc.golden_id AS customer
FROM replica_psa.invoices i
JOIN replica_psa.projects p ON p.project_id = i.project_id
LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'psa' AND xp.source_id = CAST(p.project_id AS VARCHAR)
LEFT JOIN mdm.xref xc ON xc.entity = 'customer' AND xc.source_system = 'psa' AND xc.source_id = CAST(p.client_id AS VARCHAR)
