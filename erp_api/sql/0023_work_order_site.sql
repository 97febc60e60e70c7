-- Work orders name their site: the line or asset an order is for is a name at a site, and two
-- sites may both have a "mill1". Production counts and OEE match an order to a line at its
-- site (an order without a site, as every order made before this, matches the line at any
-- site); the maintenance job keeps one open order per asset and cause at each site.
ALTER TABLE erp.work_order
    ADD COLUMN site text CHECK (site ~ '^[a-z0-9][a-z0-9_-]{0,62}$');
CREATE INDEX work_order_site_asset_idx ON erp.work_order (site, asset, id);

-- The document of 0021 plus site.
CREATE OR REPLACE FUNCTION erp.work_order_doc(w erp.work_order) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', w.id, 'number', erp.numbered('WO-', w.id), 'kind', w.kind, 'status', w.status,
               'site', w.site, 'asset', w.asset, 'warehouse_id', w.warehouse_id, 'product_id', w.product_id,
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


-- POST /work-orders, now with p_site (NULL: no site).
DROP FUNCTION erp.create_work_order(text, text, bytea, text, text, bigint, bigint, numeric, numeric, text, text,
                                    text, bigint[], numeric[], boolean);
CREATE FUNCTION erp.create_work_order(
    p_principal text, p_key text, p_hash bytea, p_kind text, p_asset text, p_warehouse bigint, p_product bigint,
    p_planned numeric, p_ideal_rate numeric, p_reason text, p_priority text, p_notes text,
    p_part_product bigint[], p_part_quantity numeric[], p_backorder boolean, p_site text)
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
    INSERT INTO erp.work_order (kind, site, asset, warehouse_id, product_id, planned_quantity, ideal_rate, reason,
                                priority, notes, created_by)
    VALUES (p_kind, p_site, p_asset, p_warehouse, p_product, p_planned, p_ideal_rate, p_reason, p_priority, p_notes,
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
