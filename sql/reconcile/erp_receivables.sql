-- ERP receivables with the settlement status that payments and credit memos give them, and the golden
-- project and customer (mdm.xref).
SELECT a.invoice_no, a.psa_invoice_ref, a.net_amount, a.gross_amount, a.currency, a.fiscal_period, a.invoice_date,
       a.proj_no, a.company_code, a.status AS document_status,
       CASE WHEN cm.invoice_no IS NOT NULL THEN 'credited'
            WHEN coalesce(pay.paid, 0) >= a.gross_amount - 0.005 THEN 'paid'
            WHEN coalesce(pay.paid, 0) > 0 THEN 'partially_paid'
            ELSE 'open' END AS settlement_status,
       xp.golden_id AS golden_project, xc.golden_id AS customer
FROM replica_erp.ar_invoices a
LEFT JOIN (SELECT invoice_no, sum(amount) AS paid FROM replica_erp.payments GROUP BY invoice_no) pay
       ON pay.invoice_no = a.invoice_no
LEFT JOIN (SELECT DISTINCT invoice_no FROM replica_erp.credit_memos) cm ON cm.invoice_no = a.invoice_no
LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'erp' AND xp.source_id = a.proj_no
LEFT JOIN replica_erp.projects p ON p.proj_no = a.proj_no
LEFT JOIN mdm.xref xc ON xc.entity = 'customer' AND xc.source_system = 'erp' AND xc.source_id = p.cust_no
