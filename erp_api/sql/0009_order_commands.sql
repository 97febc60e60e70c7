-- Every command is one SQL function (docs/erp-api.md, "Where commands live"): shipping and
-- cancelling an order join creating, confirming, invoicing and paying. Each takes
-- (principal, Idempotency-Key, request hash) first, claims the key, locks the order, makes
-- the change, writes the event and records its reply, in one statement.

-- One stock move per line of the order, in its warehouse, all or nothing (erp.apply_moves):
-- each line's quantity times p_on_hand and p_reserved (1 adds, -1 takes, 0 leaves alone).
CREATE FUNCTION erp.move_order_lines(o erp.sales_order, p_kind text, p_on_hand numeric, p_reserved numeric,
                                     p_actor text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM erp.apply_moves(array_agg(p_kind ORDER BY line_no), array_agg(product_id ORDER BY line_no),
                            array_agg(o.warehouse_id ORDER BY line_no), array_agg(quantity * p_on_hand ORDER BY line_no),
                            array_agg(quantity * p_reserved ORDER BY line_no),
                            array_agg('lines[' || (n - 1) || ']' ORDER BY line_no), 'order', o.id, NULL, p_actor)
       FROM (SELECT line_no, product_id, quantity, row_number() OVER (ORDER BY line_no) AS n
               FROM erp.sales_order_line WHERE order_id = o.id) l;
END $$;

-- POST /orders/{id}/ship: consumes the reservation (on hand and reserved both drop) and posts
-- the cost of goods; an order invoiced before it ships stays invoiced.
CREATE FUNCTION erp.ship_order(p_principal text, p_key text, p_hash bytea, p_order bigint, p_expected int)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.sales_order;
    cost numeric;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_order(p_order, p_expected, '{confirmed,invoiced}', 'ship');
    IF o.shipped_at IS NOT NULL THEN
        PERFORM erp.refuse('invalid-state', 'the order has shipped already', json_build_object('status_now', o.status));
    END IF;
    PERFORM erp.move_order_lines(o, 'issue', -1, -1, p_principal);
    SELECT coalesce(sum(p.cost * l.quantity), 0) INTO cost
      FROM erp.sales_order_line l JOIN erp.product p ON p.id = l.product_id WHERE l.order_id = o.id;
    PERFORM erp.post_entry('shipment', 'cost of goods for ' || erp.numbered('SO-', o.id), 'order', o.id,
                           ARRAY['5000', '1200'], ARRAY[cost, -cost]);
    UPDATE erp.sales_order
       SET status = CASE WHEN status = 'confirmed' THEN 'shipped' ELSE status END, shipped_at = now(),
           version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    doc := erp.order_doc(o);
    PERFORM erp.emit('order', o.id, 'order.shipped', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(o.version));
END $$;

-- POST /orders/{id}/cancel: a draft or confirmed order; a confirmed one's reservation is released.
CREATE FUNCTION erp.cancel_order(p_principal text, p_key text, p_hash bytea, p_order bigint, p_expected int)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.sales_order;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_order(p_order, p_expected, '{draft,confirmed}', 'cancel');
    IF o.status = 'confirmed' THEN
        PERFORM erp.move_order_lines(o, 'release', 0, -1, p_principal);
    END IF;
    UPDATE erp.sales_order SET status = 'cancelled', cancelled_at = now(), version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    doc := erp.order_doc(o);
    PERFORM erp.emit('order', o.id, 'order.cancelled', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(o.version));
END $$;
