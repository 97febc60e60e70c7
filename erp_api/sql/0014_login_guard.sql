-- Sign-in throttling and lockout: failed sign-ins counted per account name and per client
-- address. Past a number of free failures each further one locks the key for twice as long
-- as the last (1 s, 2 s, 4 s, ... up to a cap); while locked, a sign-in is refused before
-- its password is even checked. Failures older than an hour are forgotten. Names that are
-- no account are counted like accounts, so a lock says nothing about which names exist.
CREATE TABLE erp.login_guard (
    kind            text        NOT NULL CHECK (kind IN ('account', 'address')),
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    failures        integer     NOT NULL DEFAULT 0 CHECK (failures >= 0),
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    PRIMARY KEY (kind, key)
);

-- The longest lock among this account and this address, in whole seconds (0: not locked).
CREATE FUNCTION erp.login_locked(p_account text, p_address text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT coalesce(ceil(extract(epoch FROM max(locked_until) - now()))::integer, 0)
      FROM erp.login_guard
     WHERE ((kind = 'account' AND key = p_account) OR (kind = 'address' AND key = p_address))
       AND locked_until > now()
$$;

-- Count one failed sign-in for both keys; returns the lock it set, in seconds (0: none).
CREATE FUNCTION erp.login_failed(p_account text, p_address text, p_free_account integer, p_free_address integer,
                                 p_max_lock_s integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    longest integer := 0;
    free integer;
    g erp.login_guard;
BEGIN
    FOR g IN
        INSERT INTO erp.login_guard AS l (kind, key, failures)
        VALUES ('account', p_account, 1), ('address', p_address, 1)
        ON CONFLICT (kind, key) DO UPDATE
           SET failures = CASE WHEN l.last_failure_at < now() - interval '1 hour' THEN 1 ELSE l.failures + 1 END,
               last_failure_at = now()
        RETURNING l.*
    LOOP
        free := CASE g.kind WHEN 'account' THEN p_free_account ELSE p_free_address END;
        IF g.failures > free THEN
            g.locked_until := now() + make_interval(secs => least(2.0 ^ least(g.failures - 1 - free, 30), p_max_lock_s));
            UPDATE erp.login_guard SET locked_until = g.locked_until WHERE kind = g.kind AND key = g.key;
            longest := greatest(longest, ceil(extract(epoch FROM g.locked_until - now()))::integer);
        END IF;
    END LOOP;
    RETURN longest;
END $$;
