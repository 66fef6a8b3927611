-- Every PSA invoice with its ERP receivable, payments, credit memos and settlement status.
CREATE OR REPLACE VIEW analytics.invoice_status AS
SELECT i.invoice_number, p.project_code, p.legal_entity, i.invoice_date, i.period, i.currency,
       i.amount AS psa_amount, i.status AS psa_status,
       a.invoice_no AS erp_invoice_no, a.net_amount AS erp_net_amount, a.gross_amount AS erp_gross_amount,
       a.due_date, coalesce(pay.paid, 0) AS paid_amount, pay.last_payment_date,
       coalesce(cm.credited, 0) AS credited_amount,
       CASE WHEN a.invoice_no IS NULL THEN 'not_in_erp'
            WHEN cm.credited IS NOT NULL THEN 'credited'
            WHEN coalesce(pay.paid, 0) >= a.gross_amount - 0.005 THEN 'paid'
            WHEN coalesce(pay.paid, 0) > 0 THEN 'partially_paid'
            WHEN a.due_date < current_date THEN 'overdue'
            ELSE 'open' END AS erp_status,
       CASE WHEN a.invoice_no IS NOT NULL AND coalesce(pay.paid, 0) < a.gross_amount - 0.005 AND cm.credited IS NULL
            THEN greatest(date_diff('day', a.due_date, current_date), 0) END AS days_overdue
FROM replica_psa.invoices i
JOIN replica_psa.projects p ON p.project_id = i.project_id
LEFT JOIN replica_erp.ar_invoices a ON a.psa_invoice_ref = i.invoice_number
LEFT JOIN (SELECT invoice_no, sum(amount) AS paid, max(payment_date) AS last_payment_date
           FROM replica_erp.payments GROUP BY invoice_no) pay ON pay.invoice_no = a.invoice_no
LEFT JOIN (SELECT invoice_no, sum(amount) AS credited FROM replica_erp.credit_memos GROUP BY invoice_no) cm
       ON cm.invoice_no = a.invoice_no;
