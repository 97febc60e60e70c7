-- Purchase requisitions from maintenance (docs/erp-api.md, "Spare parts short"): the
-- conversion of reorder suggestions into draft purchase orders may be limited to named
-- products, so that the maintenance job turns exactly the parts its order waits for into a
-- draft order to their preferred supplier (a planner approves it). NULL: every suggestion.
DROP FUNCTION erp.convert_reorder_suggestions(text, text, bytea, bigint);
CREATE FUNCTION erp.convert_reorder_suggestions(p_principal text, p_key text, p_hash bytea, p_warehouse bigint,
                                                p_products bigint[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    g record;
    o erp.purchase_order;
    ids bigint[] := '{}';
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('erp.convert_reorder_suggestions'));
    FOR g IN SELECT r.supplier_id, r.warehouse_id, array_agg(r.product_id ORDER BY r.product_id) AS products,
                    array_agg(r.quantity ORDER BY r.product_id) AS quantities,
                    array_agg(r.unit_price ORDER BY r.product_id) AS prices,
                    array_agg(r.needed_by ORDER BY r.product_id) AS dates, max(r.needed_by) AS expected
               FROM erp.reorder_suggestions(p_warehouse) r
              WHERE r.supplier_id IS NOT NULL AND (p_products IS NULL OR r.product_id = ANY(p_products))
              GROUP BY r.supplier_id, r.warehouse_id
              ORDER BY r.supplier_id, r.warehouse_id
    LOOP
        o := erp.new_purchase_order(p_principal, g.supplier_id, g.warehouse_id, g.expected,
                                    CASE WHEN p_products IS NULL THEN 'from reorder suggestions'
                                         ELSE 'requisition: parts waited for' END,
                                    g.products, g.quantities, g.prices, g.dates);
        ids := ids || o.id;
    END LOOP;
    RETURN erp.finish_reply(p_principal, p_key, 200,
                            json_build_object('purchase_orders',
                                              coalesce((SELECT json_agg(erp.purchase_order_doc(made) ORDER BY made.id)
                                                          FROM erp.purchase_order made WHERE made.id = ANY(ids)),
                                                         '[]')),
                            '{}');
END $$;
