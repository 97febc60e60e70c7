-- Back-ordered spare parts (docs/erp-api.md, "Spare parts short"): a maintenance order is
-- opened even when its parts are not all on the shelf. What is available is reserved at
-- once, the rest waits; erp.fill_backorders reserves it as stock arrives (a receipt, a
-- transfer, a release by another order), most urgent order first. The order is ready
-- (parts_ready) when every part is reserved; it cannot be completed before.
--
-- reserved: how much of the part this order holds now (back-ordered = quantity - reserved
-- while the order is open or running; a cancelled order holds none, a done one used all).

ALTER TABLE erp.work_order_part ADD COLUMN reserved numeric(14, 3) NOT NULL DEFAULT 0;
UPDATE erp.work_order_part p SET reserved = p.quantity
  FROM erp.work_order w
 WHERE w.id = p.work_order_id AND w.status IN ('open', 'in_progress', 'done');
ALTER TABLE erp.work_order_part
    ADD CONSTRAINT work_order_part_reserved_check CHECK (reserved >= 0 AND reserved <= quantity);
CREATE INDEX work_order_part_product_idx ON erp.work_order_part (product_id, work_order_id);

-- The work order document gains each part's reserved and back-ordered quantity, and parts_ready.
CREATE OR REPLACE FUNCTION erp.work_order_doc(w erp.work_order) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', w.id, 'number', erp.numbered('WO-', w.id), 'kind', w.kind, 'status', w.status,
               'asset', w.asset, 'warehouse_id', w.warehouse_id, 'product_id', w.product_id,
               'planned_quantity', w.planned_quantity::text, 'produced_quantity', w.produced_quantity::text,
               'ideal_rate', w.ideal_rate::text, 'reason', w.reason, 'priority', w.priority, 'notes', w.notes,
               'spare_parts', coalesce(parts.list, '[]'), 'parts_ready', coalesce(parts.ready, true),
               'version', w.version, 'created_by', w.created_by, 'created_at', erp.iso(w.created_at),
               'updated_at', erp.iso(w.updated_at), 'started_at', erp.iso(w.started_at),
               'finished_at', erp.iso(w.finished_at))
      FROM (SELECT json_agg(json_build_object(
                       'product_id', p.product_id, 'sku', pr.sku, 'quantity', p.quantity::text,
                       'reserved', p.reserved::text,
                       'backordered', CASE WHEN w.status IN ('open', 'in_progress') THEN p.quantity - p.reserved
                                           ELSE 0.000 END::text)
                       ORDER BY p.product_id) AS list,
                   bool_and(p.reserved = p.quantity) AS ready
              FROM erp.work_order_part p JOIN erp.product pr ON pr.id = p.product_id
             WHERE p.work_order_id = w.id) parts
$$;

-- The parts of a work order, locked (before its stock) so that no reservation of
-- erp.fill_backorders slips between reading and moving them.
CREATE FUNCTION erp.lock_work_order_parts(p_work_order bigint) RETURNS SETOF erp.work_order_part
LANGUAGE sql AS $$
    SELECT * FROM erp.work_order_part WHERE work_order_id = p_work_order ORDER BY product_id FOR UPDATE
$$;

-- Reservations (or, with a negative p_sign, releases) of the given amounts of a work order's
-- parts, in product order; zero amounts move nothing.
CREATE FUNCTION erp.reserve_work_order_parts(w erp.work_order, p_product bigint[], p_amount numeric[],
                                             p_sign integer, p_field_prefix text, p_actor text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM erp.apply_moves(array_agg(CASE WHEN p_sign > 0 THEN 'reservation' ELSE 'release' END ORDER BY n),
                            array_agg(product ORDER BY n), array_agg(w.warehouse_id ORDER BY n),
                            array_agg(0::numeric ORDER BY n), array_agg(amount * p_sign ORDER BY n),
                            array_agg(p_field_prefix || '[' || (n - 1) || ']' ORDER BY n),
                            'work_order', w.id, NULL, p_actor)
       FROM unnest(p_product, p_amount) WITH ORDINALITY AS u(product, amount, n)
      WHERE amount > 0
     HAVING count(*) > 0;
END $$;

-- POST /work-orders, now with p_backorder: true (the default of the API) reserves what is
-- available of each part and back-orders the rest; false keeps the all-or-none reservation
-- (409 naming body.spare_parts[i]).
DROP FUNCTION erp.create_work_order(text, text, bytea, text, text, bigint, bigint, numeric, numeric, text, text,
                                    text, bigint[], numeric[]);
CREATE FUNCTION erp.create_work_order(
    p_principal text, p_key text, p_hash bytea, p_kind text, p_asset text, p_warehouse bigint, p_product bigint,
    p_planned numeric, p_ideal_rate numeric, p_reason text, p_priority text, p_notes text,
    p_part_product bigint[], p_part_quantity numeric[], p_backorder boolean)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
    v_reserve numeric[];
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    IF p_kind = 'production' AND NOT EXISTS (SELECT 1 FROM erp.bom_line WHERE product_id = p_product) THEN
        PERFORM erp.refuse_field('validation', 'body.product_id', 'the product has no bill of materials');
    END IF;
    INSERT INTO erp.work_order (kind, asset, warehouse_id, product_id, planned_quantity, ideal_rate, reason, priority,
                                notes, created_by)
    VALUES (p_kind, p_asset, p_warehouse, p_product, p_planned, p_ideal_rate, p_reason, p_priority, p_notes,
            p_principal)
    RETURNING * INTO w;
    IF cardinality(p_part_product) > 0 THEN
        IF p_backorder THEN
            -- What is free of each part now, read under the stock rows' locks (key order).
            PERFORM 1 FROM erp.stock
              WHERE warehouse_id = p_warehouse AND product_id = ANY(p_part_product)
              ORDER BY product_id FOR UPDATE;
            SELECT array_agg(least(u.quantity, greatest(coalesce(s.on_hand - s.reserved, 0), 0)) ORDER BY u.n)
              INTO v_reserve
              FROM unnest(p_part_product, p_part_quantity) WITH ORDINALITY AS u(product, quantity, n)
              LEFT JOIN erp.stock s ON s.product_id = u.product AND s.warehouse_id = p_warehouse;
        ELSE
            v_reserve := p_part_quantity;
        END IF;
        INSERT INTO erp.work_order_part (work_order_id, product_id, quantity, reserved)
        SELECT w.id, u.* FROM unnest(p_part_product, p_part_quantity, v_reserve) AS u;
        PERFORM erp.reserve_work_order_parts(w, p_part_product, v_reserve, 1, 'body.spare_parts', p_principal);
    END IF;
    doc := erp.work_order_doc(w);
    PERFORM erp.emit('work_order', w.id, 'work_order.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(w.version) || jsonb_build_object('Location', '/api/v1/work-orders/' || w.id));
END $$;

-- POST /work-orders/{id}/complete: as before, but only once every spare part is reserved.
CREATE OR REPLACE FUNCTION erp.complete_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                                   p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
    missing text;
    cost numeric;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{in_progress}', 'complete');
    SELECT string_agg(format('%s (%s of %s reserved)', pr.sku, p.reserved, p.quantity), ', ' ORDER BY p.product_id)
      INTO missing
      FROM erp.lock_work_order_parts(w.id) p JOIN erp.product pr ON pr.id = p.product_id
     WHERE p.reserved < p.quantity;
    IF missing IS NOT NULL THEN
        PERFORM erp.refuse('invalid-state', 'cannot complete a work order whose spare parts are back-ordered: '
                                            || missing, json_build_object('status_now', w.status));
    END IF;
    IF EXISTS (SELECT 1 FROM erp.work_order_part WHERE work_order_id = w.id) THEN
        SELECT sum(pr.cost * p.quantity) INTO cost
          FROM erp.work_order_part p JOIN erp.product pr ON pr.id = p.product_id WHERE p.work_order_id = w.id;
        PERFORM erp.move_work_order_parts(w, 'issue', -1, -1, p_principal);
        PERFORM erp.post_entry('maintenance', erp.numbered('WO-', w.id) || ': spare parts used', 'work_order', w.id,
                               ARRAY['5300', '1200'], ARRAY[cost, -cost]);
    END IF;
    UPDATE erp.work_order SET status = 'done', finished_at = now(), version = version + 1, updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.completed');
END $$;

-- POST /work-orders/{id}/cancel: releases what the order holds (back-orders simply lapse).
CREATE OR REPLACE FUNCTION erp.cancel_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                                 p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
    v_product bigint[];
    v_held numeric[];
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{open,in_progress}', 'cancel');
    SELECT array_agg(product_id ORDER BY product_id), array_agg(reserved ORDER BY product_id)
      INTO v_product, v_held
      FROM erp.lock_work_order_parts(w.id);
    IF v_product IS NOT NULL THEN
        PERFORM erp.reserve_work_order_parts(w, v_product, v_held, -1, 'spare_parts', p_principal);
        UPDATE erp.work_order_part SET reserved = 0 WHERE work_order_id = w.id;
    END IF;
    UPDATE erp.work_order SET status = 'cancelled', finished_at = now(), version = version + 1, updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.cancelled');
END $$;

-- Reserve back-ordered parts from free stock, most urgent order first (then oldest), and
-- return the orders that got parts, each with a work_order.parts_reserved event. Locks in
-- the order every command takes them: the work orders (by id), their parts, then the
-- stock (erp.apply_moves, key order). Cheap when nothing waits or nothing is free: the
-- ERP's API processes call it every few seconds (erp_api.backorders).
CREATE FUNCTION erp.fill_backorders(p_actor text) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
DECLARE
    candidates bigint[];
    w erp.work_order;
    v_product bigint[];
    v_reserve numeric[];
BEGIN
    SELECT array_agg(DISTINCT p.work_order_id) INTO candidates
      FROM erp.work_order_part p
      JOIN erp.work_order o ON o.id = p.work_order_id
      JOIN erp.stock s ON s.product_id = p.product_id AND s.warehouse_id = o.warehouse_id
     WHERE p.reserved < p.quantity AND o.status IN ('open', 'in_progress') AND s.on_hand > s.reserved;
    IF candidates IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM erp.work_order WHERE id = ANY(candidates) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM erp.work_order_part WHERE work_order_id = ANY(candidates) ORDER BY work_order_id, product_id
        FOR UPDATE;
    PERFORM 1 FROM erp.stock s
      WHERE (s.product_id, s.warehouse_id) IN (SELECT p.product_id, o.warehouse_id
                                                 FROM erp.work_order_part p JOIN erp.work_order o
                                                   ON o.id = p.work_order_id
                                                WHERE p.work_order_id = ANY(candidates))
      ORDER BY s.product_id, s.warehouse_id FOR UPDATE;
    FOR w IN SELECT * FROM erp.work_order
              WHERE id = ANY(candidates) AND status IN ('open', 'in_progress')
              ORDER BY array_position('{urgent,high,normal,low}'::text[], priority), id
    LOOP
        -- Each part gets what is free of it now (earlier orders in this loop took theirs first).
        SELECT array_agg(p.product_id ORDER BY p.product_id),
               array_agg(least(p.quantity - p.reserved, greatest(coalesce(s.on_hand - s.reserved, 0), 0))
                         ORDER BY p.product_id)
          INTO v_product, v_reserve
          FROM erp.work_order_part p
          LEFT JOIN erp.stock s ON s.product_id = p.product_id AND s.warehouse_id = w.warehouse_id
         WHERE p.work_order_id = w.id AND p.reserved < p.quantity;
        CONTINUE WHEN v_product IS NULL OR NOT EXISTS (SELECT 1 FROM unnest(v_reserve) r WHERE r > 0);
        PERFORM erp.reserve_work_order_parts(w, v_product, v_reserve, 1, 'spare_parts', p_actor);
        UPDATE erp.work_order_part p SET reserved = p.reserved + u.amount
          FROM unnest(v_product, v_reserve) AS u(product, amount)
         WHERE p.work_order_id = w.id AND p.product_id = u.product AND u.amount > 0;
        UPDATE erp.work_order SET version = version + 1, updated_at = now() WHERE id = w.id RETURNING * INTO w;
        PERFORM erp.emit('work_order', w.id, 'work_order.parts_reserved', erp.work_order_doc(w));
        RETURN NEXT w.id;
    END LOOP;
END $$;
