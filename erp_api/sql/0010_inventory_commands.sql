-- Goods receipts, stock adjustments and transfers as SQL functions (docs/erp-api.md, "Where
-- commands live"). Each takes (principal, Idempotency-Key, request hash) first, claims the
-- key, moves the stock (erp.apply_moves: locks the rows in key order, refuses a shortfall
-- naming the request field), posts the stock's value at standard cost, writes the event
-- and records its reply, in one statement. The reply, and the event's payload, is
-- erp.stock_change_doc.

-- A movement as GET /inventory/movements lists it (erp_api.schemas.inventory.MovementPublic).
CREATE FUNCTION erp.movement_doc(m erp.stock_movement) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', m.id, 'at', erp.iso(m.at), 'kind', m.kind, 'product_id', m.product_id,
               'warehouse_id', m.warehouse_id, 'on_hand_delta', m.on_hand_delta::text,
               'reserved_delta', m.reserved_delta::text, 'reference_type', m.reference_type,
               'reference_id', m.reference_id, 'note', m.note, 'actor', m.actor)
$$;

-- The stock of one product in one warehouse as GET /inventory/stock/{product}/{warehouse}
-- returns it (StockPublic): zeros for a pair that never had stock, NULL when the product or
-- the warehouse does not exist.
CREATE FUNCTION erp.stock_level_doc(p_product bigint, p_warehouse bigint) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT erp.stock_doc(p.id, p.sku, w.id, w.code, coalesce(s.on_hand, 0::numeric(14, 3)),
                         coalesce(s.reserved, 0::numeric(14, 3)), p.reorder_point, s.updated_at)
      FROM erp.product p
     CROSS JOIN erp.warehouse w
      LEFT JOIN erp.stock s ON s.product_id = p.id AND s.warehouse_id = w.id
     WHERE p.id = p_product AND w.id = p_warehouse
$$;

-- The reply of a stock command (StockChangePublic): its movements in the order they were
-- made, then the stock after it of each (product, warehouse) pair, in the order given.
CREATE FUNCTION erp.stock_change_doc(p_movements bigint[], p_product bigint[], p_warehouse bigint[])
RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'movements', coalesce((SELECT json_agg(erp.movement_doc(m) ORDER BY m.id)
                                        FROM erp.stock_movement m WHERE m.id = ANY(p_movements)), '[]'),
               'stock', coalesce((SELECT json_agg(erp.stock_level_doc(k.product, k.warehouse) ORDER BY k.n)
                                    FROM unnest(p_product, p_warehouse) WITH ORDINALITY AS k(product, warehouse, n)),
                                 '[]'))
$$;

-- POST /inventory/receipts: goods in, valued at standard cost (inventory against goods
-- received not invoiced). A missing stock row is created; an unknown product or warehouse
-- fails on its foreign key (422 naming it).
CREATE FUNCTION erp.receive_stock(p_principal text, p_key text, p_hash bytea, p_product bigint, p_warehouse bigint,
                                  p_quantity numeric, p_note text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    level record;
    value numeric;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO level
      FROM erp.apply_moves('{receipt}', ARRAY[p_product], ARRAY[p_warehouse], ARRAY[p_quantity], '{0}',
                           '{body.quantity}', 'receipt', NULL, p_note, p_principal);
    value := level.cost * p_quantity;
    PERFORM erp.post_entry('receipt', format('receipt of %s %s', p_quantity, level.sku), 'stock', level.stock_id,
                           ARRAY['1200', '2000'], ARRAY[value, -value]);
    doc := erp.stock_change_doc(level.movement_ids, ARRAY[p_product], ARRAY[p_warehouse]);
    PERFORM erp.emit('stock', level.stock_id, 'inventory.received', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc, '{}');
END $$;

-- POST /inventory/adjustments: corrects on hand after a count, never below zero nor below
-- what is reserved; the value of the difference goes to inventory adjustments.
CREATE FUNCTION erp.adjust_stock(p_principal text, p_key text, p_hash bytea, p_product bigint, p_warehouse bigint,
                                 p_delta numeric, p_reason text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    level record;
    value numeric;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO level
      FROM erp.apply_moves('{adjustment}', ARRAY[p_product], ARRAY[p_warehouse], ARRAY[p_delta], '{0}',
                           '{body.delta}', 'adjustment', NULL, p_reason, p_principal);
    value := level.cost * p_delta;
    PERFORM erp.post_entry('adjustment', format('adjustment %s %s: %s', p_delta, level.sku, p_reason), 'stock',
                           level.stock_id, ARRAY['1200', '5100'], ARRAY[value, -value]);
    doc := erp.stock_change_doc(level.movement_ids, ARRAY[p_product], ARRAY[p_warehouse]);
    PERFORM erp.emit('stock', level.stock_id, 'inventory.adjusted', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc, '{}');
END $$;

-- POST /inventory/transfers: available stock from one warehouse to another, both moves or
-- neither. Nothing is posted (the value stays on the inventory account); the event belongs
-- to the source warehouse's stock row.
CREATE FUNCTION erp.transfer_stock(p_principal text, p_key text, p_hash bytea, p_product bigint, p_from bigint,
                                   p_to bigint, p_quantity numeric, p_note text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    source record;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO source
      FROM erp.apply_moves('{transfer,transfer}', ARRAY[p_product, p_product], ARRAY[p_from, p_to],
                           ARRAY[-p_quantity, p_quantity], '{0,0}', '{body.quantity,body.to_warehouse_id}',
                           'transfer', NULL, p_note, p_principal) m
     WHERE m.warehouse_id = p_from;
    doc := erp.stock_change_doc(source.movement_ids, ARRAY[p_product, p_product], ARRAY[p_from, p_to]);
    PERFORM erp.emit('stock', source.stock_id, 'inventory.transferred', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc, '{}');
END $$;
