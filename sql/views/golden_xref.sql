-- Every source record with its golden record and the rule that put it there.
CREATE OR REPLACE VIEW analytics.golden_xref AS
SELECT x.entity, x.source_system, x.source_id, x.golden_id, x.rule, x.score
FROM mdm.xref x ORDER BY x.entity, x.golden_id, x.source_system, x.source_id;
