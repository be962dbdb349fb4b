-- 002_views: named views for the predicates flows and users query again and again.

-- Samples no filter dropped: what datasets are made of (sample_view's columns).
CREATE OR REPLACE VIEW kept_samples AS
SELECT s.* FROM sample_view s
WHERE NOT EXISTS (SELECT 1 FROM filter_decisions d WHERE d.item_id = s.sample_id AND NOT d.kept);

-- What each run's filters dropped, and why.
CREATE OR REPLACE VIEW run_drops AS
SELECT run_id, filter, reason, count(*) AS n
FROM filter_decisions WHERE NOT kept
GROUP BY ALL;
