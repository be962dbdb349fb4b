-- 001_init: the whole data model of the design (DESIGN.md, "The data model").
--
-- Keys are content hashes computed by storage/records.py, so the same instruction or
-- sample produced twice (two runs, two machines, a replayed journal) is one row.
-- There are no FOREIGN KEY constraints on purpose: DuckDB checks them row by row and
-- forbids updating referenced rows, which would slow bulk ingest and block upserts of
-- the ledger; referential integrity is checked in tests and by `Store.check_integrity()`.
-- Secondary indexes are few: DuckDB scans with zone maps, and every ART index costs
-- ingest time, so only the lookups flows do constantly get one.

-- One row per flow run (Prefect flow run id, config, status, counts).
CREATE TABLE IF NOT EXISTS runs (
    id                  VARCHAR PRIMARY KEY,
    name                VARCHAR,
    flow                VARCHAR NOT NULL,
    status              VARCHAR NOT NULL,
    config              JSON,
    counts              JSON,
    prefect_flow_run_id VARCHAR,
    code_version        VARCHAR,
    started_at          TIMESTAMP NOT NULL,
    ended_at            TIMESTAMP
);

-- The teacher ledger: one row per (model, messages, sampling params, sample index).
-- A key already 'ok' is never sent again; a 'failed' row may later become 'ok'.
CREATE TABLE IF NOT EXISTS requests (
    key               VARCHAR PRIMARY KEY,
    model             VARCHAR NOT NULL,
    backend           VARCHAR NOT NULL,
    kind              VARCHAR NOT NULL,
    messages          JSON,
    prompt            VARCHAR,
    params            JSON,
    sample_index      INTEGER NOT NULL,
    status            VARCHAR NOT NULL,
    response_text     VARCHAR,
    finish_reason     VARCHAR,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_s         DOUBLE,
    attempts          INTEGER NOT NULL,
    error             VARCHAR,
    logprobs          JSON,
    run_id            VARCHAR,
    created_at        TIMESTAMP NOT NULL
);

-- Tasks for the teacher, with lineage (parent + operator for Evol-Instruct chains and
-- Self-Instruct instances, round for iterative methods).
CREATE TABLE IF NOT EXISTS instructions (
    id                VARCHAR PRIMARY KEY,
    text              VARCHAR NOT NULL,
    input             VARCHAR NOT NULL,
    method            VARCHAR NOT NULL,
    parent_id         VARCHAR,
    operator          VARCHAR,
    round             INTEGER NOT NULL,
    is_classification BOOLEAN,
    request_key       VARCHAR,
    teacher_model     VARCHAR,
    template_version  VARCHAR,
    sampling_params   JSON,
    run_id            VARCHAR,
    metadata          JSON,
    created_at        TIMESTAMP NOT NULL
);

-- Responses (teacher or human) to instructions; rationale and label for CoT data.
CREATE TABLE IF NOT EXISTS samples (
    id               VARCHAR PRIMARY KEY,
    instruction_id   VARCHAR NOT NULL,
    response         VARCHAR NOT NULL,
    rationale        VARCHAR,
    label            VARCHAR,
    system_prompt    VARCHAR,
    method           VARCHAR NOT NULL,
    teacher_model    VARCHAR,
    request_key      VARCHAR,
    finish_reason    VARCHAR,
    template_version VARCHAR,
    sampling_params  JSON,
    run_id           VARCHAR,
    metadata         JSON,
    created_at       TIMESTAMP NOT NULL
);

-- Why each item was kept or dropped by each filter: every drop is explainable in SQL.
CREATE TABLE IF NOT EXISTS filter_decisions (
    item_id    VARCHAR NOT NULL,
    item_kind  VARCHAR NOT NULL,
    filter     VARCHAR NOT NULL,
    kept       BOOLEAN NOT NULL,
    score      DOUBLE,
    reason     VARCHAR NOT NULL,
    run_id     VARCHAR,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (item_id, filter)
);

-- Persisted MinHash signatures, so near-duplicate checks see the whole store.
CREATE TABLE IF NOT EXISTS minhash_signatures (
    item_id    VARCHAR NOT NULL,
    item_kind  VARCHAR NOT NULL,
    config     VARCHAR NOT NULL,
    signature  UINTEGER[] NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (item_id, config)
);

-- Named, immutable, numbered dataset versions and the SQL that selected them.
CREATE TABLE IF NOT EXISTS datasets (
    name          VARCHAR NOT NULL,
    version       INTEGER NOT NULL,
    sql           VARCHAR NOT NULL,
    n_rows        INTEGER NOT NULL,
    n_train       INTEGER NOT NULL,
    n_eval        INTEGER NOT NULL,
    eval_fraction DOUBLE NOT NULL,
    seed          INTEGER NOT NULL,
    content_hash  VARCHAR NOT NULL,
    columns       JSON,
    code_version  VARCHAR,
    run_id        VARCHAR,
    created_at    TIMESTAMP NOT NULL,
    PRIMARY KEY (name, version)
);

-- The frozen contents of each version (copied, not referenced, so a version never
-- changes whatever happens to samples afterwards).
CREATE TABLE IF NOT EXISTS dataset_items (
    dataset_name  VARCHAR NOT NULL,
    version       INTEGER NOT NULL,
    idx           INTEGER NOT NULL,
    split         VARCHAR NOT NULL,
    row_key       VARCHAR NOT NULL,
    sample_id     VARCHAR,
    instruction   VARCHAR NOT NULL,
    input         VARCHAR NOT NULL,
    response      VARCHAR NOT NULL,
    rationale     VARCHAR,
    label         VARCHAR,
    system_prompt VARCHAR,
    extra         JSON,
    PRIMARY KEY (dataset_name, version, idx)
);

-- Student training runs: which dataset version, method, student, teacher, config, results.
CREATE TABLE IF NOT EXISTS training_runs (
    id              VARCHAR PRIMARY KEY,
    name            VARCHAR,
    dataset_name    VARCHAR,
    dataset_version INTEGER,
    method          VARCHAR NOT NULL,
    params          JSON,
    student         VARCHAR,
    teacher         VARCHAR,
    code_version    VARCHAR,
    config          JSON,
    status          VARCHAR NOT NULL DEFAULT 'running',
    started_at      TIMESTAMP NOT NULL DEFAULT timezone('UTC', now()),
    ended_at        TIMESTAMP,
    final_loss      DOUBLE,
    loss_history    JSON,
    metrics         JSON,
    checkpoint_path VARCHAR,
    run_id          VARCHAR
);

-- Every evaluation number (ROUGE-L, exact match, agreement) of any model on any split.
CREATE SEQUENCE IF NOT EXISTS evaluations_id_seq START 1;
CREATE TABLE IF NOT EXISTS evaluations (
    id              BIGINT PRIMARY KEY DEFAULT nextval('evaluations_id_seq'),
    training_run_id VARCHAR,
    model_label     VARCHAR NOT NULL,
    model_path      VARCHAR,
    dataset_name    VARCHAR,
    dataset_version INTEGER,
    split           VARCHAR,
    metric          VARCHAR NOT NULL,
    value           DOUBLE,
    n               INTEGER,
    generation      JSON,
    created_at      TIMESTAMP NOT NULL DEFAULT timezone('UTC', now()),
    run_id          VARCHAR
);

-- Lookups flows do all the time: a sample's instruction, an instruction's children.
CREATE INDEX IF NOT EXISTS samples_instruction_idx ON samples (instruction_id);
CREATE INDEX IF NOT EXISTS instructions_parent_idx ON instructions (parent_id);
CREATE INDEX IF NOT EXISTS evaluations_run_idx ON evaluations (training_run_id);

-- Samples with their instruction's text and lineage: what most curation SQL starts from.
CREATE OR REPLACE VIEW sample_view AS
SELECT
    s.id               AS sample_id,
    s.instruction_id,
    i.text             AS instruction,
    i.input,
    s.response,
    s.rationale,
    s.label,
    s.system_prompt,
    s.method           AS sample_method,
    i.method           AS instruction_method,
    i.parent_id,
    i.operator,
    i.round,
    i.is_classification,
    s.teacher_model,
    s.finish_reason,
    s.template_version,
    s.request_key,
    s.run_id,
    s.created_at
FROM samples s
JOIN instructions i ON i.id = s.instruction_id;
