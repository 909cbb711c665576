-- Functions to keep sesame_db's partitioned audit trail (partition_events.sql)
-- going. Load them once, then call them every day, from cron or pg_cron:
--
--     SELECT sesame_db_event_partitions(3);        -- this month and 3 more
--     SELECT sesame_db_drop_event_partitions('400 days');
--
-- Partitions are named sesame_db_tokenevent_yYYYYmMM.

-- Create the partition of the current month and of the next ``ahead``
-- months, if they don't exist. Return how many were created.
CREATE OR REPLACE FUNCTION sesame_db_event_partitions(ahead integer DEFAULT 3)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    month timestamptz;
    name text;
    created integer := 0;
BEGIN
    FOR i IN 0..ahead LOOP
        month := date_trunc('month', now()) + make_interval(months => i);
        name := 'sesame_db_tokenevent_' || to_char(month, '"y"YYYY"m"MM');
        CONTINUE WHEN to_regclass(name) IS NOT NULL;
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF sesame_db_tokenevent FOR VALUES FROM (%L) TO (%L)',
                name, month, month + interval '1 month'
            );
        EXCEPTION WHEN invalid_object_definition THEN
            -- The month is in the first partition, which covers every
            -- event until the end of the month of partition_events.sql.
            CONTINUE;
        END;
        created := created + 1;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the monthly partitions whose every event is older than ``retention``:
-- the same retention as SESAME_EVENT_RETENTION, applied a month at a time,
-- without deleting rows one by one. Return the names of those dropped.
CREATE OR REPLACE FUNCTION sesame_db_drop_event_partitions(retention interval)
RETURNS SETOF text LANGUAGE plpgsql AS $$
DECLARE
    partition record;
BEGIN
    FOR partition IN
        SELECT c.relname AS name,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper
        FROM pg_inherits
        JOIN pg_class c ON c.oid = pg_inherits.inhrelid
        WHERE pg_inherits.inhparent = 'sesame_db_tokenevent'::regclass
          -- Monthly partitions, and the first one once it's old enough.
          AND c.relname ~ '^sesame_db_tokenevent_(y[0-9]{4}m[0-9]{2}|unpartitioned)$'
    LOOP
        IF partition.upper <= now() - retention THEN
            EXECUTE format('DROP TABLE %I', partition.name);
            RETURN NEXT partition.name;
        END IF;
    END LOOP;
END
$$;
