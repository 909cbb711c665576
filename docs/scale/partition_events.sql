-- Turn sesame_db's audit trail, the table sesame_db_tokenevent, into a table
-- partitioned by month of created_at, on PostgreSQL 13 or later.
--
-- Run it once, in one transaction, in a maintenance window:
--
--     psql --single-transaction -v ON_ERROR_STOP=1 -f partition_events.sql
--
-- Nothing is copied: the existing table becomes the first partition, for
-- every event until the end of the current month, and later events go to
-- monthly partitions that sesame_db_event_partitions() creates (see
-- event_partitions.sql, which must be loaded first). The table is locked
-- while PostgreSQL indexes it on (id, created_at) and checks its rows
-- against the bound: about a second per million events.
--
-- Django keeps working unchanged: the table has the same name, columns and
-- index names. Its primary key becomes (id, created_at), as PostgreSQL
-- requires of a partitioned table, and ids come from a sequence rather
-- than an identity column, which partitioned tables can't have before
-- PostgreSQL 17.

LOCK TABLE sesame_db_tokenevent IN ACCESS EXCLUSIVE MODE;

ALTER TABLE sesame_db_tokenevent RENAME TO sesame_db_tokenevent_unpartitioned;
-- Its primary key becomes (id, created_at) when it's attached below.
ALTER TABLE sesame_db_tokenevent_unpartitioned DROP CONSTRAINT sesame_db_tokenevent_pkey;
-- Its ids will come from the sequence of the new table, which starts
-- after them: an identity column (Django 4.1 and later) or a serial
-- column's sequence would be in the way.
CREATE TEMPORARY TABLE sesame_db_next_event_id ON COMMIT DROP AS
    SELECT coalesce(max(id), 0) + 1 AS id FROM sesame_db_tokenevent_unpartitioned;
ALTER TABLE sesame_db_tokenevent_unpartitioned ALTER COLUMN id DROP IDENTITY IF EXISTS;
ALTER TABLE sesame_db_tokenevent_unpartitioned ALTER COLUMN id DROP DEFAULT;
DROP SEQUENCE IF EXISTS sesame_db_tokenevent_id_seq;

CREATE TABLE sesame_db_tokenevent (
    LIKE sesame_db_tokenevent_unpartitioned INCLUDING DEFAULTS INCLUDING STORAGE
) PARTITION BY RANGE (created_at);

CREATE SEQUENCE sesame_db_tokenevent_id_seq OWNED BY sesame_db_tokenevent.id;
ALTER TABLE sesame_db_tokenevent
    ALTER COLUMN id SET DEFAULT nextval('sesame_db_tokenevent_id_seq');
SELECT setval('sesame_db_tokenevent_id_seq', (SELECT id FROM sesame_db_next_event_id), false);
ALTER TABLE sesame_db_tokenevent
    ADD CONSTRAINT sesame_db_tokenevent_pkey PRIMARY KEY (id, created_at);

-- The indexes of the old table move to the new one, under the names that
-- Django gave them; the old table keeps copies under other names.
DO $$
DECLARE
    index record;
BEGIN
    FOR index IN
        SELECT i.indexrelid::regclass::text AS name, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index i
        WHERE i.indrelid = 'sesame_db_tokenevent_unpartitioned'::regclass
          AND NOT i.indisprimary
    LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', index.name, left(index.name, 48) || '_unpartitioned');
        EXECUTE regexp_replace(
            index.definition,
            ' ON ((\S+\.)?)sesame_db_tokenevent_unpartitioned ',
            ' ON \1sesame_db_tokenevent '
        );
    END LOOP;
END
$$;

-- The old table becomes the partition of everything until the end of this
-- month.
DO $$
BEGIN
    EXECUTE format(
        'ALTER TABLE sesame_db_tokenevent ATTACH PARTITION sesame_db_tokenevent_unpartitioned '
        'FOR VALUES FROM (MINVALUE) TO (%L)',
        date_trunc('month', now()) + interval '1 month'
    );
END
$$;

-- The next months, and a default partition so that an insert never fails.
SELECT sesame_db_event_partitions(3);
CREATE TABLE sesame_db_tokenevent_default PARTITION OF sesame_db_tokenevent DEFAULT;
