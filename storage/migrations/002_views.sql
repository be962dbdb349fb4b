-- 002_views: named views for questions the flows ask again and again.
--
-- "Kept" means no filter dropped it: an item with no filter_decisions row at all is kept
-- (it has not been filtered yet), and one drop by any filter is enough to leave it out.
-- Write queries on these views rather than repeating the predicate, so the rule has one
-- definition. Views store no data: they cost nothing at ingest and always see the rows
-- committed at the moment they are read.

-- Every item (instruction or sample) some filter dropped, once each.
CREATE OR REPLACE VIEW dropped_items AS
SELECT DISTINCT item_id
FROM filter_decisions
WHERE NOT kept;

-- sample_view rows (same columns, same names) that no filter dropped: what a dataset is
-- selected from. A sample whose instruction was dropped is still kept here (decisions
-- about instructions have the instruction's id, not the sample's).
CREATE OR REPLACE VIEW kept_samples AS
SELECT s.*
FROM sample_view s
WHERE NOT EXISTS (
    SELECT 1 FROM filter_decisions d WHERE d.item_id = s.sample_id AND NOT d.kept
);

-- What each run's filters dropped, and why: one row per run, filter and reason, with
-- the number of items dropped (n). Decisions made outside a run have run_id NULL.
CREATE OR REPLACE VIEW run_drops AS
SELECT run_id, filter, reason, count(*) AS n
FROM filter_decisions
WHERE NOT kept
GROUP BY run_id, filter, reason;
