-- Revenue, cost and margin per project and period in both systems (native currency), side by side.
-- PSA: invoiced revenue and approved-time cost. ERP: GL accounts 400000 (revenue) and 500000 (labour cost).
CREATE OR REPLACE VIEW analytics.margin_by_project_period AS
WITH psa AS (
    SELECT regexp_replace(p.project_code, '[^0-9]', '', 'g') AS project_key, any_value(p.project_code) AS project_code,
           x.period, x.currency, sum(x.revenue) AS revenue, sum(x.cost) AS cost
    FROM (SELECT project_id, period, currency, amount AS revenue, 0 AS cost FROM replica_psa.invoices
          UNION ALL
          SELECT project_id, strftime(work_date, '%Y-%m'), currency, 0, cost_amount FROM replica_psa.time_entries
          WHERE status = 'approved') x
    JOIN replica_psa.projects p USING (project_id)
    GROUP BY ALL
), erp AS (
    SELECT regexp_replace(proj_no, '[^0-9]', '', 'g') AS project_key, any_value(proj_no) AS proj_no,
           fiscal_period AS period, currency,
           sum(CASE WHEN account = '400000' THEN amount ELSE 0 END) AS revenue,
           sum(CASE WHEN account = '500000' THEN amount ELSE 0 END) AS cost
    FROM replica_erp.gl_entries WHERE proj_no IS NOT NULL GROUP BY ALL
)
SELECT coalesce(psa.project_key, erp.project_key) AS project_key, psa.project_code, erp.proj_no,
       coalesce(psa.period, erp.period) AS period, coalesce(psa.currency, erp.currency) AS currency,
       psa.revenue AS psa_revenue, psa.cost AS psa_cost, psa.revenue - psa.cost AS psa_margin,
       erp.revenue AS erp_revenue, erp.cost AS erp_cost, erp.revenue - erp.cost AS erp_margin,
       round(coalesce(psa.revenue - psa.cost, 0) - coalesce(erp.revenue - erp.cost, 0), 2) AS margin_delta
FROM psa FULL OUTER JOIN erp ON psa.project_key = erp.project_key AND psa.period = erp.period
                            AND psa.currency = erp.currency;
