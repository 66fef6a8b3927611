-- ERP labour postings with the same project and resource keys as the PSA side.
SELECT l.posting_id, l.psa_entry_ref, l.hours, l.amount, l.cost_amount, l.currency, l.work_date, l.fiscal_period,
       l.proj_no, l.company_code,
       regexp_replace(l.proj_no, '[^0-9]', '', 'g') AS project_key,
       TRY_CAST(regexp_replace(l.emp_no, '[^0-9]', '', 'g') AS BIGINT) AS resource_key
FROM replica_erp.labor_postings l
