-- Sessions that can be ended. Every refresh token issued is a row; a sign-in starts a family
-- and each refresh replaces its token by a new one of the same family (rotation) that expires
-- when the family does, so a session ends 7 days after its sign-in however often it is
-- refreshed. A refresh token used twice means it leaked: the whole family is revoked.
CREATE TABLE erp.refresh_token (
    jti        uuid        PRIMARY KEY,
    family     uuid        NOT NULL,
    username   text        NOT NULL REFERENCES erp.app_user (username) ON UPDATE CASCADE ON DELETE CASCADE,
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz
);
CREATE INDEX refresh_token_family ON erp.refresh_token (family);
CREATE INDEX refresh_token_live ON erp.refresh_token (username) WHERE revoked_at IS NULL;

-- Access tokens of a user issued before ``after`` are refused (disabled, deleted, password
-- reset). Each API process reads the recent rows every second; a row outlives any access
-- token issued before it, so old rows may go.
CREATE TABLE erp.token_revocation (
    username text        PRIMARY KEY,
    after    timestamptz NOT NULL
);

-- End every session of a user: refresh tokens revoked, access tokens issued until now refused.
CREATE FUNCTION erp.end_sessions(p_username text)
RETURNS void LANGUAGE sql AS $$
    UPDATE erp.refresh_token SET revoked_at = now() WHERE username = p_username AND revoked_at IS NULL;
    INSERT INTO erp.token_revocation (username, after) VALUES (p_username, now())
    ON CONFLICT (username) DO UPDATE SET after = EXCLUDED.after;
$$;

-- Exchange refresh token p_jti for p_new_jti: 'ok' with the user, or why not ('unknown',
-- 'revoked', 'reused', 'expired'). A reuse revokes the family, and that is kept: the
-- function returns rather than raises.
CREATE FUNCTION erp.rotate_refresh(p_jti uuid, p_new_jti uuid)
RETURNS TABLE (outcome text, username text, role text, expires_at timestamptz)
LANGUAGE plpgsql AS $$
DECLARE
    t erp.refresh_token;
    u erp.app_user;
BEGIN
    SELECT * INTO t FROM erp.refresh_token r WHERE r.jti = p_jti FOR UPDATE;
    IF NOT FOUND THEN
        RETURN QUERY SELECT 'unknown', NULL::text, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    SELECT * INTO u FROM erp.app_user a WHERE a.username = t.username;
    IF t.revoked_at IS NOT NULL OR NOT u.active THEN
        RETURN QUERY SELECT 'revoked', t.username, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF t.used_at IS NOT NULL THEN
        UPDATE erp.refresh_token r SET revoked_at = now() WHERE r.family = t.family AND r.revoked_at IS NULL;
        RETURN QUERY SELECT 'reused', t.username, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    IF t.expires_at <= now() THEN
        RETURN QUERY SELECT 'expired', t.username, NULL::text, NULL::timestamptz;
        RETURN;
    END IF;
    UPDATE erp.refresh_token r SET used_at = now() WHERE r.jti = p_jti;
    INSERT INTO erp.refresh_token (jti, family, username, expires_at) VALUES (p_new_jti, t.family, t.username, t.expires_at);
    RETURN QUERY SELECT 'ok', u.username, u.role, t.expires_at;
END $$;
