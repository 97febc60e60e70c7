-- The work-order lifecycle as SQL functions (docs/erp-api.md, "Where commands live"):
-- create, change, start, produce, complete and cancel. Each takes (principal,
-- Idempotency-Key, request hash) first, claims the key, locks the work order, then the
-- stock it moves (erp.apply_moves, in key order), posts the journal entry, writes the
-- event and records its reply, in one statement. The document every path returns and
-- every event carries is erp.work_order_doc.

-- A work order as GET /work-orders/{id} returns it (erp_api.schemas.work_orders.WorkOrderPublic),
-- its spare parts in product order.
CREATE FUNCTION erp.work_order_doc(w erp.work_order) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', w.id, 'number', erp.numbered('WO-', w.id), 'kind', w.kind, 'status', w.status,
               'asset', w.asset, 'warehouse_id', w.warehouse_id, 'product_id', w.product_id,
               'planned_quantity', w.planned_quantity::text, 'produced_quantity', w.produced_quantity::text,
               'ideal_rate', w.ideal_rate::text, 'reason', w.reason, 'priority', w.priority, 'notes', w.notes,
               'spare_parts', coalesce((SELECT json_agg(json_build_object(
                                            'product_id', p.product_id, 'sku', pr.sku, 'quantity', p.quantity::text)
                                            ORDER BY p.product_id)
                                          FROM erp.work_order_part p JOIN erp.product pr ON pr.id = p.product_id
                                         WHERE p.work_order_id = w.id), '[]'),
               'version', w.version, 'created_by', w.created_by, 'created_at', erp.iso(w.created_at),
               'updated_at', erp.iso(w.updated_at), 'started_at', erp.iso(w.started_at),
               'finished_at', erp.iso(w.finished_at))
$$;

-- The work order row locked for a change, after the If-Match and state checks. p_expected
-- is numeric because If-Match may carry any digits: it is compared (and named in the
-- refusal), never stored, so a version beyond integer range is a 412 like any other.
CREATE FUNCTION erp.lock_work_order(p_work_order bigint, p_expected numeric, p_allowed text[], p_action text)
RETURNS erp.work_order LANGUAGE plpgsql AS $$
DECLARE
    w erp.work_order;
BEGIN
    SELECT * INTO w FROM erp.work_order WHERE id = p_work_order FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no work order with id ' || p_work_order);
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> w.version THEN
        PERFORM erp.refuse('precondition-failed',
                           format('the resource is at version %s, not %s; read it again', w.version, p_expected));
    END IF;
    IF NOT w.status = ANY(p_allowed) THEN
        PERFORM erp.refuse('invalid-state', format('cannot %s a work order that is %s', p_action, w.status),
                           json_build_object('status_now', w.status));
    END IF;
    RETURN w;
END $$;

-- One stock move per spare part of the work order, in its warehouse and in product order,
-- all or nothing: each part's quantity times p_on_hand and p_reserved (1 adds, -1 takes).
-- The caller makes sure the order has parts.
CREATE FUNCTION erp.move_work_order_parts(w erp.work_order, p_kind text, p_on_hand numeric, p_reserved numeric,
                                          p_actor text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM erp.apply_moves(array_agg(p_kind ORDER BY product_id), array_agg(product_id ORDER BY product_id),
                            array_agg(w.warehouse_id ORDER BY product_id),
                            array_agg(quantity * p_on_hand ORDER BY product_id),
                            array_agg(quantity * p_reserved ORDER BY product_id),
                            array_agg('spare_parts[' || (n - 1) || ']' ORDER BY product_id),
                            'work_order', w.id, NULL, p_actor)
       FROM (SELECT product_id, quantity, row_number() OVER (ORDER BY product_id) AS n
               FROM erp.work_order_part WHERE work_order_id = w.id) p;
END $$;

-- The reply to a change of an existing work order: its event and its document, ETag its version.
CREATE FUNCTION erp.work_order_changed(p_principal text, p_key text, w erp.work_order, p_event text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    doc json := erp.work_order_doc(w);
BEGIN
    PERFORM erp.emit('work_order', w.id, p_event, doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(w.version));
END $$;

-- POST /work-orders: production needs a bill of materials; maintenance reserves its spare
-- parts (in request order, so a refusal names body.spare_parts[i]), all or none.
CREATE FUNCTION erp.create_work_order(
    p_principal text, p_key text, p_hash bytea, p_kind text, p_asset text, p_warehouse bigint, p_product bigint,
    p_planned numeric, p_ideal_rate numeric, p_reason text, p_priority text, p_notes text,
    p_part_product bigint[], p_part_quantity numeric[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
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
        INSERT INTO erp.work_order_part (work_order_id, product_id, quantity)
        SELECT w.id, u.* FROM unnest(p_part_product, p_part_quantity) AS u;
        PERFORM erp.apply_moves(array_agg('reservation'::text ORDER BY n), array_agg(product ORDER BY n),
                                array_agg(w.warehouse_id ORDER BY n), array_agg(0::numeric ORDER BY n),
                                array_agg(quantity ORDER BY n),
                                array_agg('body.spare_parts[' || (n - 1) || ']' ORDER BY n),
                                'work_order', w.id, NULL, p_principal)
           FROM unnest(p_part_product, p_part_quantity) WITH ORDINALITY AS u(product, quantity, n);
    END IF;
    doc := erp.work_order_doc(w);
    PERFORM erp.emit('work_order', w.id, 'work_order.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(w.version) || jsonb_build_object('Location', '/api/v1/work-orders/' || w.id));
END $$;

-- PATCH /work-orders/{id}: priority and notes of an open or running order. NULL p_priority
-- leaves it; notes change only when p_set_notes (a PATCH may clear them with null).
CREATE FUNCTION erp.update_work_order(
    p_principal text, p_key text, p_hash bytea, p_work_order bigint, p_expected numeric, p_priority text,
    p_notes text, p_set_notes boolean)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{open,in_progress}', 'change');
    UPDATE erp.work_order
       SET priority = coalesce(p_priority, priority), notes = CASE WHEN p_set_notes THEN p_notes ELSE notes END,
           version = version + 1, updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.updated');
END $$;

-- POST /work-orders/{id}/start: open -> in_progress.
CREATE FUNCTION erp.start_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                     p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{open}', 'start');
    UPDATE erp.work_order SET status = 'in_progress', started_at = now(), version = version + 1, updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.started');
END $$;

-- POST /work-orders/{id}/produce: consumes the bill of materials times the quantity (bom[i] in
-- component order) and receives the finished goods, in one set of moves. The journal moves
-- the components' standard cost out of inventory and the finished goods' in, the
-- difference to production variance.
CREATE FUNCTION erp.produce_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                       p_expected numeric, p_quantity numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
    v_kind text[];
    v_product bigint[];
    v_warehouse bigint[];
    v_on_hand numeric[];
    v_reserved numeric[];
    v_field text[];
    consumed numeric;
    made numeric;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{in_progress}', 'record production on');
    IF w.kind <> 'production' THEN
        PERFORM erp.refuse('invalid-state', 'only production work orders produce goods');
    END IF;
    -- The components first, then the finished good. A BOM emptied since the order was opened
    -- aggregates to NULL, and NULL || element is {element}: only the finished good moves.
    SELECT array_agg('issue'::text ORDER BY n) || 'receipt'::text, array_agg(component_id ORDER BY n) || w.product_id,
           array_agg(w.warehouse_id ORDER BY n) || w.warehouse_id,
           array_agg(-(quantity * p_quantity) ORDER BY n) || p_quantity, array_agg(0::numeric ORDER BY n) || 0::numeric,
           array_agg('bom[' || (n - 1) || ']' ORDER BY n) || 'body.quantity'::text,
           coalesce(sum(cost * quantity * p_quantity), 0)
      INTO v_kind, v_product, v_warehouse, v_on_hand, v_reserved, v_field, consumed
      FROM (SELECT b.component_id, b.quantity, p.cost, row_number() OVER (ORDER BY b.component_id) AS n
              FROM erp.bom_line b JOIN erp.product p ON p.id = b.component_id
             WHERE b.product_id = w.product_id) b;
    SELECT m.cost * p_quantity INTO made
      FROM erp.apply_moves(v_kind, v_product, v_warehouse, v_on_hand, v_reserved, v_field, 'work_order', w.id, NULL,
                           p_principal) m
     WHERE m.product_id = w.product_id AND m.warehouse_id = w.warehouse_id;
    PERFORM erp.post_entry('production', erp.numbered('WO-', w.id) || ': ' || p_quantity || ' produced',
                           'work_order', w.id, ARRAY['1200', '1200', '5200'], ARRAY[made, -consumed, consumed - made]);
    UPDATE erp.work_order SET produced_quantity = produced_quantity + p_quantity, version = version + 1,
                              updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.produced');
END $$;

-- POST /work-orders/{id}/complete: in_progress -> done; a maintenance order consumes its
-- reserved spare parts (on hand and reserved both drop) and expenses them at standard cost.
CREATE FUNCTION erp.complete_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                        p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
    cost numeric;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{in_progress}', 'complete');
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

-- POST /work-orders/{id}/cancel: open or in_progress -> cancelled; reserved spare parts are released.
CREATE FUNCTION erp.cancel_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                      p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    w := erp.lock_work_order(p_work_order, p_expected, '{open,in_progress}', 'cancel');
    IF EXISTS (SELECT 1 FROM erp.work_order_part WHERE work_order_id = w.id) THEN
        PERFORM erp.move_work_order_parts(w, 'release', 0, -1, p_principal);
    END IF;
    UPDATE erp.work_order SET status = 'cancelled', finished_at = now(), version = version + 1, updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.cancelled');
END $$;
