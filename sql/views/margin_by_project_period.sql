-- Revenue, cost and margin per project and period in both systems (native currency), side by side.
-- PSA: invoiced revenue and approved-time cost. ERP: GL accounts 400000 (revenue) and 500000 (labour cost).
-- A project is its golden project (mdm.xref) once master data has resolved it, so an ERP project held
-- twice or renumbered is one row; `project_key` falls back to the digits of the codes before that.
CREATE OR REPLACE VIEW analytics.margin_by_project_period AS
WITH psa AS (
    SELECT coalesce(xp.golden_id, 'code:' || regexp_replace(p.project_code, '[^0-9]', '', 'g')) AS project_key,
           any_value(xp.golden_id) AS golden_project, string_agg(DISTINCT p.project_code, ', ') AS project_code,
           x.period, x.currency, sum(x.revenue) AS revenue, sum(x.cost) AS cost
    FROM (SELECT project_id, period, currency, amount AS revenue, 0 AS cost FROM replica_psa.invoices
          UNION ALL
          SELECT project_id, strftime(work_date, '%Y-%m'), currency, 0, cost_amount FROM replica_psa.time_entries
          WHERE status = 'approved') x
    JOIN replica_psa.projects p USING (project_id)
    LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'psa'
                         AND xp.source_id = CAST(p.project_id AS VARCHAR)
    GROUP BY 1, x.period, x.currency
), erp AS (
    SELECT coalesce(xp.golden_id, 'code:' || regexp_replace(g.proj_no, '[^0-9]', '', 'g')) AS project_key,
           any_value(xp.golden_id) AS golden_project, string_agg(DISTINCT g.proj_no, ', ') AS proj_no,
           g.fiscal_period AS period, g.currency,
           sum(CASE WHEN g.account = '400000' THEN g.amount ELSE 0 END) AS revenue,
           sum(CASE WHEN g.account = '500000' THEN g.amount ELSE 0 END) AS cost
    FROM replica_erp.gl_entries g
    LEFT JOIN mdm.xref xp ON xp.entity = 'project' AND xp.source_system = 'erp' AND xp.source_id = g.proj_no
    WHERE g.proj_no IS NOT NULL GROUP BY 1, g.fiscal_period, g.currency
)
SELECT coalesce(psa.project_key, erp.project_key) AS project_key,
       coalesce(psa.golden_project, erp.golden_project) AS golden_project, psa.project_code, erp.proj_no,
       coalesce(psa.period, erp.period) AS period, coalesce(psa.currency, erp.currency) AS currency,
       psa.revenue AS psa_revenue, psa.cost AS psa_cost, psa.revenue - psa.cost AS psa_margin,
       erp.revenue AS erp_revenue, erp.cost AS erp_cost, erp.revenue - erp.cost AS erp_margin,
       round(coalesce(psa.revenue - psa.cost, 0) - coalesce(erp.revenue - erp.cost, 0), 2) AS margin_delta
FROM psa FULL OUTER JOIN erp ON psa.project_key = erp.project_key AND psa.period = erp.period
                            AND psa.currency = erp.currency;
