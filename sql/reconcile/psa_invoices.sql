-- PSA invoices with their project.
SELECT i.invoice_number, i.amount, i.currency, i.status, i.period, i.invoice_date, p.project_code, p.legal_entity
FROM replica_psa.invoices i
JOIN replica_psa.projects p ON p.project_id = i.project_id
