-- Production counts from the machines: a production work order also records what was made
-- and scrapped (good units go into stock; scrapped units used their components, nothing
-- is received for them), and its document shows progress against the plan. The analytics
-- production-counts job posts the line's counter increases here (role service); planners
-- still record production by hand.
ALTER TABLE erp.work_order
    ADD COLUMN scrapped_quantity numeric(14, 3) NOT NULL DEFAULT 0 CHECK (scrapped_quantity >= 0);

-- The document of 0018 (spare parts with their reservations) plus scrapped_quantity and
-- progress (produced / planned, 4 places; NULL for maintenance orders, which plan no quantity).
CREATE OR REPLACE FUNCTION erp.work_order_doc(w erp.work_order) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', w.id, 'number', erp.numbered('WO-', w.id), 'kind', w.kind, 'status', w.status,
               'asset', w.asset, 'warehouse_id', w.warehouse_id, 'product_id', w.product_id,
               'planned_quantity', w.planned_quantity::text, 'produced_quantity', w.produced_quantity::text,
               'scrapped_quantity', w.scrapped_quantity::text,
               'progress', round(w.produced_quantity / w.planned_quantity, 4)::text,
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

-- POST /work-orders/{id}/produce, now with scrap: consumes the bill of materials times
-- (quantity + scrap) (bom[i] in component order) and receives quantity finished goods, in
-- one set of moves. The journal moves the components' standard cost out of inventory and
-- the good units' in; the difference, scrap included, goes to production variance. The
-- request model makes sure quantity + scrap > 0; a zero quantity receives nothing.
DROP FUNCTION erp.produce_work_order(text, text, bytea, bigint, numeric, numeric);
CREATE FUNCTION erp.produce_work_order(p_principal text, p_key text, p_hash bytea, p_work_order bigint,
                                       p_expected numeric, p_quantity numeric, p_scrap numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.work_order;
    made_units numeric := p_quantity + p_scrap;
    v_kind text[];
    v_product bigint[];
    v_warehouse bigint[];
    v_on_hand numeric[];
    v_reserved numeric[];
    v_field text[];
    consumed numeric;
    made numeric;
    memo text;
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
    -- The components first, then the finished good (none when only scrap was made). A BOM
    -- emptied since the order was opened aggregates to NULL, and NULL || element is {element}.
    SELECT array_agg('issue'::text ORDER BY n), array_agg(component_id ORDER BY n),
           array_agg(w.warehouse_id ORDER BY n), array_agg(-(quantity * made_units) ORDER BY n),
           array_agg(0::numeric ORDER BY n), array_agg('bom[' || (n - 1) || ']' ORDER BY n),
           coalesce(sum(cost * quantity * made_units), 0)
      INTO v_kind, v_product, v_warehouse, v_on_hand, v_reserved, v_field, consumed
      FROM (SELECT b.component_id, b.quantity, p.cost, row_number() OVER (ORDER BY b.component_id) AS n
              FROM erp.bom_line b JOIN erp.product p ON p.id = b.component_id
             WHERE b.product_id = w.product_id) b;
    IF p_quantity > 0 THEN
        v_kind := v_kind || 'receipt'::text;
        v_product := v_product || w.product_id;
        v_warehouse := v_warehouse || w.warehouse_id;
        v_on_hand := v_on_hand || p_quantity;
        v_reserved := v_reserved || 0::numeric;
        v_field := v_field || 'body.quantity'::text;
    END IF;
    IF cardinality(v_kind) > 0 THEN
        SELECT coalesce(sum(m.cost) FILTER (WHERE m.product_id = w.product_id AND m.warehouse_id = w.warehouse_id), 0)
               * p_quantity
          INTO made
          FROM erp.apply_moves(v_kind, v_product, v_warehouse, v_on_hand, v_reserved, v_field, 'work_order', w.id,
                               NULL, p_principal) m;
    ELSE
        made := 0;
    END IF;
    memo := erp.numbered('WO-', w.id) || ': ' || p_quantity || ' produced'
            || CASE WHEN p_scrap > 0 THEN ', ' || p_scrap || ' scrapped' ELSE '' END;
    PERFORM erp.post_entry('production', memo, 'work_order', w.id, ARRAY['1200', '1200', '5200'],
                           ARRAY[made, -consumed, consumed - made]);
    UPDATE erp.work_order SET produced_quantity = produced_quantity + p_quantity,
                              scrapped_quantity = scrapped_quantity + p_scrap, version = version + 1,
                              updated_at = now()
     WHERE id = w.id RETURNING * INTO w;
    RETURN erp.work_order_changed(p_principal, p_key, w, 'work_order.produced');
END $$;
