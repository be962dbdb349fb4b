-- 003_pairwise: verdicts of the pairwise LLM judge (curate.compare, generators/judge.py).
--
-- One row per pair of answers to the same instruction (sample_a from source A, sample_b
-- from source B) and judge model. The judge saw the pair twice, A first ("ab") and B
-- first ("ba", absent when positions were not swapped); each order's parsed scores are
-- stored per answer, so position bias is ab_score_a - ba_score_a, and score_a/score_b are
-- their averages. A verdict that never parsed is stored with ok false and its error, so a
-- re-run does not pay for it again; delete the row to have it judged anew.
CREATE TABLE IF NOT EXISTS pairwise_judgments (
    instruction_id   VARCHAR NOT NULL,
    sample_a         VARCHAR NOT NULL,
    sample_b         VARCHAR NOT NULL,
    model_a          VARCHAR,
    model_b          VARCHAR,
    judge_model      VARCHAR NOT NULL,
    ok               BOOLEAN NOT NULL,
    score_a          DOUBLE,
    score_b          DOUBLE,
    winner           VARCHAR,
    ab_score_a       DOUBLE,
    ab_score_b       DOUBLE,
    ab_text          VARCHAR,
    ab_request_key   VARCHAR,
    ba_score_a       DOUBLE,
    ba_score_b       DOUBLE,
    ba_text          VARCHAR,
    ba_request_key   VARCHAR,
    error            VARCHAR,
    template_version VARCHAR NOT NULL,
    run_id           VARCHAR,
    created_at       TIMESTAMP NOT NULL,
    PRIMARY KEY (sample_a, sample_b, judge_model)
);

-- Who answers better, over every stored verdict: one row per (source A, source B, judge).
-- pairs counts the verdicts that parsed (failed counts the rest); mean_a/mean_b average
-- their scores; a_wins + b_wins + ties = pairs.
CREATE OR REPLACE VIEW pairwise_standings AS
SELECT model_a, model_b, judge_model,
       count(*) FILTER (WHERE ok)             AS pairs,
       count(*) FILTER (WHERE winner = 'a')   AS a_wins,
       count(*) FILTER (WHERE winner = 'b')   AS b_wins,
       count(*) FILTER (WHERE winner = 'tie') AS ties,
       count(*) FILTER (WHERE NOT ok)         AS failed,
       avg(score_a)                           AS mean_a,
       avg(score_b)                           AS mean_b
FROM pairwise_judgments
GROUP BY model_a, model_b, judge_model;
