-- ERP receivables with the settlement status that payments and credit memos give them.
SELECT a.invoice_no, a.psa_invoice_ref, a.net_amount, a.gross_amount, a.currency, a.fiscal_period, a.invoice_date,
       a.proj_no, a.company_code, a.status AS document_status,
       CASE WHEN cm.invoice_no IS NOT NULL THEN 'credited'
            WHEN coalesce(pay.paid, 0) >= a.gross_amount - 0.005 THEN 'paid'
            WHEN coalesce(pay.paid, 0) > 0 THEN 'partially_paid'
            ELSE 'open' END AS settlement_status
FROM replica_erp.ar_invoices a
LEFT JOIN (SELECT invoice_no, sum(amount) AS paid FROM replica_erp.payments GROUP BY invoice_no) pay
       ON pay.invoice_no = a.invoice_no
LEFT JOIN (SELECT DISTINCT invoice_no FROM replica_erp.credit_memos) cm ON cm.invoice_no = a.invoice_no
