-- Purchasing as SQL functions (docs/erp-api.md, "Where commands live" and "Purchasing"):
-- suppliers and their items, purchase orders (create, change, approve, cancel, receive),
-- supplier invoices with the three-way match (create, release), payments to suppliers and
-- the conversion of reorder suggestions into draft orders. Each takes (principal,
-- Idempotency-Key, request hash) first, claims the key, locks what it changes (the
-- purchase order before its lines and stock), moves stock through erp.apply_moves, posts
-- through erp.post_entry, writes the event and records its reply, in one statement.

-- Within this share of the order's price an invoiced price matches (2 %).
CREATE FUNCTION erp.price_tolerance() RETURNS numeric LANGUAGE sql IMMUTABLE AS $$ SELECT 0.02 $$;

-- A supplier as GET /suppliers/{id} returns it (erp_api.schemas.purchasing.SupplierPublic).
CREATE FUNCTION erp.supplier_doc(s erp.supplier) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', s.id, 'code', s.code, 'name', s.name, 'currency', s.currency,
               'payment_terms_days', s.payment_terms_days, 'active', s.active, 'version', s.version,
               'created_at', erp.iso(s.created_at), 'updated_at', erp.iso(s.updated_at))
$$;

-- A supplier item as GET /supplier-items/{id} returns it (SupplierItemPublic); its price in
-- the supplier's currency.
CREATE FUNCTION erp.supplier_item_doc(i erp.supplier_item) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', i.id, 'supplier_id', i.supplier_id, 'product_id', i.product_id, 'sku', p.sku,
               'price', erp.money(i.price, s.currency), 'lead_time_days', i.lead_time_days,
               'min_order_quantity', i.min_order_quantity::text, 'preferred', i.preferred, 'version', i.version,
               'created_at', erp.iso(i.created_at), 'updated_at', erp.iso(i.updated_at))
      FROM erp.supplier s, erp.product p
     WHERE s.id = i.supplier_id AND p.id = i.product_id
$$;

-- A purchase order as GET /purchase-orders/{id} returns it (PurchaseOrderPublic), lines in order.
CREATE FUNCTION erp.purchase_order_doc(o erp.purchase_order) RETURNS json LANGUAGE sql STABLE AS $$
    WITH c AS (SELECT currency::text AS cur FROM erp.company),
         l AS (SELECT l.*, p.sku, round(l.quantity * l.unit_price, 2) AS net
                 FROM erp.purchase_order_line l JOIN erp.product p ON p.id = l.product_id
                WHERE l.purchase_order_id = o.id)
    SELECT json_build_object(
               'id', o.id, 'number', erp.numbered('PO-', o.id), 'supplier_id', o.supplier_id,
               'warehouse_id', o.warehouse_id, 'status', o.status, 'expected_date', o.expected_date,
               'notes', o.notes,
               'lines', coalesce((SELECT json_agg(json_build_object(
                                     'line_no', l.line_no, 'product_id', l.product_id, 'sku', l.sku,
                                     'quantity', l.quantity::text, 'unit_price', erp.money(l.unit_price, c.cur),
                                     'expected_date', l.expected_date, 'received_quantity', l.received_quantity::text,
                                     'invoiced_quantity', l.invoiced_quantity::text, 'net', erp.money(l.net, c.cur))
                                     ORDER BY l.line_no) FROM l), '[]'),
               'net', erp.money((SELECT coalesce(sum(net), 0) FROM l), c.cur),
               'version', o.version, 'created_by', o.created_by, 'created_at', erp.iso(o.created_at),
               'updated_at', erp.iso(o.updated_at), 'approved_at', erp.iso(o.approved_at),
               'closed_at', erp.iso(o.closed_at), 'cancelled_at', erp.iso(o.cancelled_at))
      FROM c
$$;

-- A supplier invoice as GET /supplier-invoices/{id} returns it (SupplierInvoicePublic).
CREATE FUNCTION erp.supplier_invoice_doc(i erp.supplier_invoice) RETURNS json LANGUAGE sql STABLE AS $$
    WITH c AS (SELECT currency::text AS cur FROM erp.company)
    SELECT json_build_object(
               'id', i.id, 'number', erp.numbered('SI-', i.id), 'supplier_id', i.supplier_id,
               'purchase_order_id', i.purchase_order_id, 'supplier_reference', i.supplier_reference,
               'invoice_date', i.invoice_date, 'due_date', i.due_date, 'status', i.status,
               'lines', coalesce((SELECT json_agg(json_build_object(
                                     'line_no', l.line_no, 'product_id', ol.product_id, 'sku', p.sku,
                                     'quantity', l.quantity::text, 'unit_price', erp.money(l.unit_price, c.cur),
                                     'tax_rate', l.tax_rate::text, 'net', erp.money(l.net, c.cur),
                                     'tax', erp.money(l.tax, c.cur), 'hold_reason', l.hold_reason)
                                     ORDER BY l.line_no)
                                    FROM erp.supplier_invoice_line l
                                    JOIN erp.purchase_order_line ol
                                      ON ol.purchase_order_id = i.purchase_order_id AND ol.line_no = l.line_no
                                    JOIN erp.product p ON p.id = ol.product_id
                                   WHERE l.invoice_id = i.id), '[]'),
               'net', erp.money(i.net, c.cur), 'tax', erp.money(i.tax, c.cur), 'gross', erp.money(i.gross, c.cur),
               'paid', erp.money(i.paid, c.cur), 'outstanding', erp.money(i.gross - i.paid, c.cur),
               'released_by', i.released_by, 'release_reason', i.release_reason, 'version', i.version,
               'created_by', i.created_by, 'created_at', erp.iso(i.created_at), 'updated_at', erp.iso(i.updated_at),
               'posted_at', erp.iso(i.posted_at))
      FROM c
$$;

-- POST /suppliers: codes are unique (supplier_code_key).
CREATE FUNCTION erp.create_supplier(
    p_principal text, p_key text, p_hash bytea, p_code text, p_name text, p_currency text, p_terms int,
    p_active boolean)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    s erp.supplier;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    INSERT INTO erp.supplier (code, name, currency, payment_terms_days, active)
    VALUES (p_code, p_name, p_currency, p_terms, p_active) RETURNING * INTO s;
    doc := erp.supplier_doc(s);
    PERFORM erp.emit('supplier', s.id, 'supplier.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(s.version) || jsonb_build_object('Location', '/api/v1/suppliers/' || s.id));
END $$;

-- PATCH /suppliers/{id}: NULL leaves a field as it is (none may be cleared; the code never changes).
CREATE FUNCTION erp.update_supplier(
    p_principal text, p_key text, p_hash bytea, p_supplier bigint, p_expected numeric, p_name text,
    p_currency text, p_terms int, p_active boolean)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    s erp.supplier;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO s FROM erp.supplier WHERE id = p_supplier FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no supplier with id ' || p_supplier);
    END IF;
    PERFORM erp.check_master_version(s.version, p_expected);
    UPDATE erp.supplier
       SET name = coalesce(p_name, name), currency = coalesce(p_currency, currency),
           payment_terms_days = coalesce(p_terms, payment_terms_days), active = coalesce(p_active, active),
           version = version + 1, updated_at = now()
     WHERE id = s.id RETURNING * INTO s;
    doc := erp.supplier_doc(s);
    PERFORM erp.emit('supplier', s.id, 'supplier.updated', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(s.version));
END $$;

-- A supplier item's price as stored: in the supplier's currency, else a refusal naming body.price.currency.
CREATE FUNCTION erp.supplier_price(p_supplier bigint, p_amount numeric, p_currency text) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
DECLARE
    trades text := (SELECT currency FROM erp.supplier WHERE id = p_supplier);
BEGIN
    IF p_amount IS NOT NULL AND trades IS NOT NULL AND p_currency IS DISTINCT FROM trades THEN
        PERFORM erp.refuse_field('validation', 'body.price.currency',
                                 format('the supplier trades in %s; got %s', trades, p_currency));
    END IF;
    RETURN p_amount;
END $$;

-- POST /supplier-items: one per supplier and product (supplier_item_once), at most one
-- preferred per product (supplier_item_one_preferred).
CREATE FUNCTION erp.create_supplier_item(
    p_principal text, p_key text, p_hash bytea, p_supplier bigint, p_product bigint, p_price numeric,
    p_currency text, p_lead_time int, p_moq numeric, p_preferred boolean)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    i erp.supplier_item;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    INSERT INTO erp.supplier_item (supplier_id, product_id, price, lead_time_days, min_order_quantity, preferred)
    VALUES (p_supplier, p_product, erp.supplier_price(p_supplier, p_price, p_currency), p_lead_time, p_moq,
            p_preferred)
    RETURNING * INTO i;
    doc := erp.supplier_item_doc(i);
    PERFORM erp.emit('supplier_item', i.id, 'supplier_item.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(i.version) || jsonb_build_object('Location', '/api/v1/supplier-items/' || i.id));
END $$;

-- PATCH /supplier-items/{id}: NULL leaves a field as it is.
CREATE FUNCTION erp.update_supplier_item(
    p_principal text, p_key text, p_hash bytea, p_item bigint, p_expected numeric, p_price numeric,
    p_currency text, p_lead_time int, p_moq numeric, p_preferred boolean)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    i erp.supplier_item;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO i FROM erp.supplier_item WHERE id = p_item FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no supplier item with id ' || p_item);
    END IF;
    PERFORM erp.check_master_version(i.version, p_expected);
    UPDATE erp.supplier_item
       SET price = coalesce(erp.supplier_price(i.supplier_id, p_price, p_currency), price),
           lead_time_days = coalesce(p_lead_time, lead_time_days), min_order_quantity = coalesce(p_moq, min_order_quantity),
           preferred = coalesce(p_preferred, preferred), version = version + 1, updated_at = now()
     WHERE id = i.id RETURNING * INTO i;
    doc := erp.supplier_item_doc(i);
    PERFORM erp.emit('supplier_item', i.id, 'supplier_item.updated', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(i.version));
END $$;

-- The lines of a draft purchase order, replaced: products must be active; a price left out
-- is the supplier's for the product, else the product's standard cost.
CREATE FUNCTION erp.replace_purchase_lines(o erp.purchase_order, p_product bigint[], p_quantity numeric[],
                                           p_price numeric[], p_date date[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    bad integer;
BEGIN
    SELECT min(u.n) INTO bad
      FROM unnest(p_product) WITH ORDINALITY AS u(id, n) LEFT JOIN erp.product p ON p.id = u.id
     WHERE p.id IS NULL OR NOT p.active;
    IF bad IS NOT NULL THEN
        PERFORM erp.refuse_field('validation', format('body.lines[%s].product_id', bad - 1), 'no such active product');
    END IF;
    DELETE FROM erp.purchase_order_line WHERE purchase_order_id = o.id;
    INSERT INTO erp.purchase_order_line (purchase_order_id, line_no, product_id, quantity, unit_price, expected_date)
    SELECT o.id, u.n, u.id, u.q, coalesce(u.price, i.price, p.cost), coalesce(u.day, o.expected_date)
      FROM unnest(p_product, p_quantity, p_price, p_date) WITH ORDINALITY AS u(id, q, price, day, n)
      JOIN erp.product p ON p.id = u.id
      LEFT JOIN erp.supplier_item i ON i.supplier_id = o.supplier_id AND i.product_id = u.id;
END $$;

-- The supplier of a new purchase order: active, and trading in the ledger's currency
-- (foreign-currency purchasing would need exchange rates in the ledger, which it does not keep).
CREATE FUNCTION erp.check_purchase_supplier(p_supplier bigint) RETURNS void LANGUAGE plpgsql STABLE AS $$
DECLARE
    s erp.supplier;
    ledger text := (SELECT currency FROM erp.company);
BEGIN
    SELECT * INTO s FROM erp.supplier WHERE id = p_supplier;
    IF NOT FOUND OR NOT s.active THEN
        PERFORM erp.refuse_field('validation', 'body.supplier_id', 'no such active supplier');
    END IF;
    IF s.currency <> ledger THEN
        PERFORM erp.refuse('conflict', format('supplier %s trades in %s; this ledger keeps %s', s.code, s.currency,
                                              ledger));
    END IF;
END $$;

-- A new draft purchase order with its lines and its event (no reply: shared by the
-- create command and the conversion of reorder suggestions).
CREATE FUNCTION erp.new_purchase_order(
    p_principal text, p_supplier bigint, p_warehouse bigint, p_expected_date date, p_notes text,
    p_product bigint[], p_quantity numeric[], p_price numeric[], p_date date[])
RETURNS erp.purchase_order LANGUAGE plpgsql AS $$
DECLARE
    o erp.purchase_order;
BEGIN
    INSERT INTO erp.purchase_order (supplier_id, warehouse_id, expected_date, notes, created_by)
    VALUES (p_supplier, p_warehouse, p_expected_date, p_notes, p_principal) RETURNING * INTO o;
    PERFORM erp.replace_purchase_lines(o, p_product, p_quantity, p_price, p_date);
    PERFORM erp.emit('purchase_order', o.id, 'purchase_order.created', erp.purchase_order_doc(o));
    RETURN o;
END $$;

-- POST /purchase-orders: a draft.
CREATE FUNCTION erp.create_purchase_order(
    p_principal text, p_key text, p_hash bytea, p_supplier bigint, p_warehouse bigint, p_expected_date date,
    p_notes text, p_product bigint[], p_quantity numeric[], p_price numeric[], p_date date[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.purchase_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    PERFORM erp.check_purchase_supplier(p_supplier);
    o := erp.new_purchase_order(p_principal, p_supplier, p_warehouse, p_expected_date, p_notes, p_product, p_quantity,
                                p_price, p_date);
    RETURN erp.finish_reply(p_principal, p_key, 201, erp.purchase_order_doc(o),
                            erp.etag(o.version) || jsonb_build_object('Location', '/api/v1/purchase-orders/' || o.id));
END $$;

-- The purchase order row locked for a change, after the If-Match and state checks.
CREATE FUNCTION erp.lock_purchase_order(p_order bigint, p_expected numeric, p_allowed text[], p_action text)
RETURNS erp.purchase_order LANGUAGE plpgsql AS $$
DECLARE
    o erp.purchase_order;
BEGIN
    SELECT * INTO o FROM erp.purchase_order WHERE id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no purchase order with id ' || p_order);
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> o.version THEN
        PERFORM erp.refuse('precondition-failed',
                           format('the resource is at version %s, not %s; read it again', o.version, p_expected));
    END IF;
    IF NOT o.status = ANY(p_allowed) THEN
        PERFORM erp.refuse('invalid-state', format('cannot %s a purchase order that is %s', p_action, o.status),
                           json_build_object('status_now', o.status));
    END IF;
    RETURN o;
END $$;

-- The reply to a change of an existing purchase order: its event and its document, ETag its version.
CREATE FUNCTION erp.purchase_order_changed(p_principal text, p_key text, o erp.purchase_order, p_event text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    doc json := erp.purchase_order_doc(o);
BEGIN
    PERFORM erp.emit('purchase_order', o.id, p_event, doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(o.version));
END $$;

-- PATCH /purchase-orders/{id}: a draft's expected date, notes (both may be cleared) and lines
-- (NULL p_product: unchanged; else the whole list is replaced).
CREATE FUNCTION erp.update_purchase_order(
    p_principal text, p_key text, p_hash bytea, p_order bigint, p_expected numeric, p_fields text[],
    p_expected_date date, p_notes text, p_product bigint[], p_quantity numeric[], p_price numeric[], p_date date[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.purchase_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_purchase_order(p_order, p_expected, '{draft}', 'change');
    UPDATE erp.purchase_order
       SET expected_date = CASE WHEN 'expected_date' = ANY(p_fields) THEN p_expected_date ELSE expected_date END,
           notes = CASE WHEN 'notes' = ANY(p_fields) THEN p_notes ELSE notes END,
           version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    IF p_product IS NOT NULL THEN
        PERFORM erp.replace_purchase_lines(o, p_product, p_quantity, p_price, p_date);
    END IF;
    RETURN erp.purchase_order_changed(p_principal, p_key, o, 'purchase_order.updated');
END $$;

-- POST /purchase-orders/{id}/approve: draft -> approved; goods may be received from now on.
CREATE FUNCTION erp.approve_purchase_order(p_principal text, p_key text, p_hash bytea, p_order bigint,
                                           p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.purchase_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_purchase_order(p_order, p_expected, '{draft}', 'approve');
    PERFORM erp.check_purchase_supplier(o.supplier_id);
    UPDATE erp.purchase_order SET status = 'approved', approved_at = now(), version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    RETURN erp.purchase_order_changed(p_principal, p_key, o, 'purchase_order.approved');
END $$;

-- POST /purchase-orders/{id}/cancel: draft or approved (nothing received yet) -> cancelled, unless
-- an invoice was entered against it (a held one would otherwise be left without its order).
CREATE FUNCTION erp.cancel_purchase_order(p_principal text, p_key text, p_hash bytea, p_order bigint,
                                          p_expected numeric)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.purchase_order;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_purchase_order(p_order, p_expected, '{draft,approved}', 'cancel');
    IF EXISTS (SELECT 1 FROM erp.supplier_invoice WHERE purchase_order_id = o.id) THEN
        PERFORM erp.refuse('invalid-state', format('cannot cancel %s: supplier invoices were entered against it',
                                                   erp.numbered('PO-', o.id)));
    END IF;
    UPDATE erp.purchase_order SET status = 'cancelled', cancelled_at = now(), version = version + 1,
                                  updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    RETURN erp.purchase_order_changed(p_principal, p_key, o, 'purchase_order.cancelled');
END $$;

-- POST /purchase-orders/{id}/receive: goods in against one line, never more than is left to
-- receive on it. The order's row lock queues concurrent receipts of the same order, so each
-- sees what the ones before it received. Inventory is debited at standard cost, goods
-- received not invoiced credited at the order's price, the difference to purchase price variance.
CREATE FUNCTION erp.receive_purchase_order(
    p_principal text, p_key text, p_hash bytea, p_order bigint, p_expected numeric, p_line_no int,
    p_quantity numeric, p_note text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.purchase_order;
    l erp.purchase_order_line;
    level record;
    at_cost numeric;
    at_price numeric;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_purchase_order(p_order, p_expected, '{approved,partly_received,received}', 'receive goods on');
    SELECT * INTO l FROM erp.purchase_order_line WHERE purchase_order_id = o.id AND line_no = p_line_no;
    IF NOT FOUND THEN
        PERFORM erp.refuse_field('validation', 'body.line_no',
                                 format('no line %s on purchase order %s', p_line_no, erp.numbered('PO-', o.id)));
    END IF;
    IF p_quantity > l.quantity - l.received_quantity THEN
        PERFORM erp.refuse('conflict',
                           format('body.quantity: only %s left to receive on line %s (ordered %s, received %s)',
                                  l.quantity - l.received_quantity, l.line_no, l.quantity, l.received_quantity),
                           json_build_object('errors', json_build_array(json_build_object(
                               'field', 'body.quantity',
                               'reason', format('only %s left to receive on line %s', l.quantity - l.received_quantity,
                                                l.line_no))),
                               'left_to_receive', (l.quantity - l.received_quantity)::text));
    END IF;
    SELECT * INTO level
      FROM erp.apply_moves('{receipt}', ARRAY[l.product_id], ARRAY[o.warehouse_id], ARRAY[p_quantity], '{0}',
                           '{body.quantity}', 'purchase_order', o.id, p_note, p_principal);
    at_cost := round(level.cost * p_quantity, 2);
    at_price := round(l.unit_price * p_quantity, 2);
    PERFORM erp.post_entry('purchase_receipt',
                           format('%s line %s: %s %s received', erp.numbered('PO-', o.id), l.line_no, p_quantity,
                                  level.sku),
                           'purchase_order', o.id, ARRAY['1200', '5400', '2000'],
                           ARRAY[at_cost, at_price - at_cost, -at_price]);
    UPDATE erp.purchase_order_line
       SET received_quantity = received_quantity + p_quantity, grni_open = grni_open + at_price
     WHERE purchase_order_id = o.id AND line_no = l.line_no;
    UPDATE erp.purchase_order
       SET status = CASE WHEN EXISTS (SELECT 1 FROM erp.purchase_order_line
                                       WHERE purchase_order_id = o.id AND received_quantity < quantity)
                         THEN 'partly_received' ELSE 'received' END,
           version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    RETURN erp.purchase_order_changed(p_principal, p_key, o, 'purchase_order.received');
END $$;

-- After an invoice is posted or paid: a fully received order whose lines are all invoiced
-- becomes invoiced, and closed once none of its invoices is held or unpaid. The caller holds
-- the order's row lock.
CREATE FUNCTION erp.settle_purchase_order(p_order bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    o erp.purchase_order;
BEGIN
    SELECT * INTO o FROM erp.purchase_order WHERE id = p_order;
    IF o.status = 'received' AND NOT EXISTS (SELECT 1 FROM erp.purchase_order_line
                                              WHERE purchase_order_id = o.id AND invoiced_quantity < quantity) THEN
        UPDATE erp.purchase_order SET status = 'invoiced', version = version + 1, updated_at = now()
         WHERE id = o.id RETURNING * INTO o;
        PERFORM erp.emit('purchase_order', o.id, 'purchase_order.invoiced', erp.purchase_order_doc(o));
    END IF;
    IF o.status = 'invoiced' AND NOT EXISTS (SELECT 1 FROM erp.supplier_invoice
                                              WHERE purchase_order_id = o.id AND status <> 'paid') THEN
        UPDATE erp.purchase_order SET status = 'closed', closed_at = now(), version = version + 1, updated_at = now()
         WHERE id = o.id RETURNING * INTO o;
        PERFORM erp.emit('purchase_order', o.id, 'purchase_order.closed', erp.purchase_order_doc(o));
    END IF;
END $$;

-- Post a matched or released invoice: per line, goods received not invoiced is cleared for
-- the quantity received and not yet invoiced at the order's price (the line's whole open
-- amount when the invoice takes all of it); the rest of the net goes to purchase price
-- variance, the tax to input tax, the gross to accounts payable. The caller holds the
-- order's row lock.
CREATE FUNCTION erp.post_supplier_invoice(i erp.supplier_invoice) RETURNS erp.supplier_invoice
LANGUAGE plpgsql AS $$
DECLARE
    grni numeric;
BEGIN
    WITH m AS (SELECT l.line_no, l.quantity, ol.received_quantity, ol.invoiced_quantity, ol.grni_open, ol.unit_price,
                      greatest(ol.received_quantity - ol.invoiced_quantity, 0) AS open_quantity
                 FROM erp.supplier_invoice_line l
                 JOIN erp.purchase_order_line ol
                   ON ol.purchase_order_id = i.purchase_order_id AND ol.line_no = l.line_no
                WHERE l.invoice_id = i.id),
         c AS (SELECT line_no, quantity,
                      CASE WHEN open_quantity = 0 THEN 0
                           WHEN quantity >= open_quantity THEN grni_open
                           ELSE round(quantity * unit_price, 2) END AS cleared
                 FROM m),
         u AS (UPDATE erp.purchase_order_line ol
                  SET invoiced_quantity = ol.invoiced_quantity + c.quantity, grni_open = ol.grni_open - c.cleared
                 FROM c WHERE ol.purchase_order_id = i.purchase_order_id AND ol.line_no = c.line_no
               RETURNING c.cleared)
    SELECT coalesce(sum(cleared), 0) INTO grni FROM u;
    PERFORM erp.post_entry('supplier_invoice',
                           format('supplier invoice %s (%s) for %s', erp.numbered('SI-', i.id), i.supplier_reference,
                                  erp.numbered('PO-', i.purchase_order_id)),
                           'supplier_invoice', i.id, ARRAY['2000', '5400', '1300', '2200'],
                           ARRAY[grni, i.net - grni, i.tax, -i.gross]);
    UPDATE erp.supplier_invoice SET status = 'posted', posted_at = now(), version = version + 1, updated_at = now()
     WHERE id = i.id RETURNING * INTO i;
    PERFORM erp.settle_purchase_order(i.purchase_order_id);
    RETURN i;
END $$;

-- POST /supplier-invoices: an invoice against a purchase order, matched per line three ways:
-- the quantity may not exceed what was received and not yet invoiced, the price may differ
-- from the order's by at most erp.price_tolerance(). A match posts it; a difference holds it
-- with the reason on each line, posting nothing until an accountant releases it.
CREATE FUNCTION erp.create_supplier_invoice(
    p_principal text, p_key text, p_hash bytea, p_order bigint, p_reference text, p_invoice_date date,
    p_line_no int[], p_quantity numeric[], p_price numeric[], p_tax_rate numeric[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.purchase_order;
    i erp.supplier_invoice;
    missing int;
    held boolean;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO o FROM erp.purchase_order WHERE id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse_field('validation', 'body.purchase_order_id', 'no such purchase order');
    END IF;
    IF o.status NOT IN ('approved', 'partly_received', 'received', 'invoiced') THEN
        PERFORM erp.refuse('invalid-state', format('cannot invoice a purchase order that is %s', o.status),
                           json_build_object('status_now', o.status));
    END IF;
    SELECT min(u.n) INTO missing
      FROM unnest(p_line_no) WITH ORDINALITY AS u(line_no, n)
      LEFT JOIN erp.purchase_order_line l ON l.purchase_order_id = o.id AND l.line_no = u.line_no
     WHERE l.line_no IS NULL;
    IF missing IS NOT NULL THEN
        PERFORM erp.refuse_field('validation', format('body.lines[%s].line_no', missing - 1),
                                 format('no line %s on purchase order %s', p_line_no[missing],
                                        erp.numbered('PO-', o.id)));
    END IF;
    INSERT INTO erp.supplier_invoice (supplier_id, purchase_order_id, supplier_reference, invoice_date, due_date,
                                      status, net, tax, gross, created_by)
    VALUES (o.supplier_id, o.id, p_reference, p_invoice_date,
            p_invoice_date + (SELECT payment_terms_days FROM erp.supplier WHERE id = o.supplier_id),
            'held', 0, 0, 0, p_principal)
    RETURNING * INTO i;
    INSERT INTO erp.supplier_invoice_line (invoice_id, line_no, quantity, unit_price, tax_rate, net, tax, hold_reason)
    SELECT i.id, u.line_no, u.q, u.price, u.rate, round(u.q * u.price, 2), round(round(u.q * u.price, 2) * u.rate, 2),
           nullif(concat_ws('; ',
               CASE WHEN u.q > greatest(l.received_quantity - l.invoiced_quantity, 0)
                    THEN format('quantity %s is more than the %s received and not yet invoiced', u.q,
                                greatest(l.received_quantity - l.invoiced_quantity, 0)) END,
               CASE WHEN abs(u.price - l.unit_price) > l.unit_price * erp.price_tolerance()
                    THEN format('price %s differs from the order''s %s by more than %s%%', u.price, l.unit_price,
                                erp.price_tolerance() * 100) END), '')
      FROM (SELECT t.line_no, t.q::numeric(14, 3) AS q, t.price::numeric(14, 4) AS price, t.rate
              FROM unnest(p_line_no, p_quantity, p_price, p_tax_rate) AS t(line_no, q, price, rate)) u
      JOIN erp.purchase_order_line l ON l.purchase_order_id = o.id AND l.line_no = u.line_no;
    UPDATE erp.supplier_invoice s
       SET net = t.net, tax = t.tax, gross = t.net + t.tax
      FROM (SELECT sum(net) AS net, sum(tax) AS tax FROM erp.supplier_invoice_line WHERE invoice_id = i.id) t
     WHERE s.id = i.id RETURNING s.* INTO i;
    held := EXISTS (SELECT 1 FROM erp.supplier_invoice_line WHERE invoice_id = i.id AND hold_reason IS NOT NULL);
    IF NOT held THEN
        i := erp.post_supplier_invoice(i);
    END IF;
    doc := erp.supplier_invoice_doc(i);
    PERFORM erp.emit('supplier_invoice', i.id,
                     CASE WHEN held THEN 'supplier_invoice.held' ELSE 'supplier_invoice.posted' END, doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(i.version)
                            || jsonb_build_object('Location', '/api/v1/supplier-invoices/' || i.id));
END $$;

-- The supplier invoice row locked for a change, after the If-Match and state checks; then
-- its purchase order's row (invoice first, order second, in every command that takes both).
CREATE FUNCTION erp.lock_supplier_invoice(p_invoice bigint, p_expected numeric, p_allowed text[], p_action text)
RETURNS erp.supplier_invoice LANGUAGE plpgsql AS $$
DECLARE
    i erp.supplier_invoice;
BEGIN
    SELECT * INTO i FROM erp.supplier_invoice WHERE id = p_invoice FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no supplier invoice with id ' || p_invoice);
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> i.version THEN
        PERFORM erp.refuse('precondition-failed',
                           format('the resource is at version %s, not %s; read it again', i.version, p_expected));
    END IF;
    IF NOT i.status = ANY(p_allowed) THEN
        PERFORM erp.refuse('invalid-state', format('cannot %s a supplier invoice that is %s', p_action, i.status),
                           json_build_object('status_now', i.status));
    END IF;
    PERFORM 1 FROM erp.purchase_order WHERE id = i.purchase_order_id FOR UPDATE;
    RETURN i;
END $$;

-- POST /supplier-invoices/{id}/release: an accountant accepts a held invoice as it is, with a
-- reason (kept on the invoice and in its event); it is posted as a matched one would be.
CREATE FUNCTION erp.release_supplier_invoice(p_principal text, p_key text, p_hash bytea, p_invoice bigint,
                                             p_expected numeric, p_reason text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    i erp.supplier_invoice;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    i := erp.lock_supplier_invoice(p_invoice, p_expected, '{held}', 'release');
    UPDATE erp.supplier_invoice SET released_by = p_principal, release_reason = p_reason WHERE id = i.id
    RETURNING * INTO i;
    i := erp.post_supplier_invoice(i);
    doc := erp.supplier_invoice_doc(i);
    PERFORM erp.emit('supplier_invoice', i.id, 'supplier_invoice.released', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(i.version));
END $$;

-- POST /supplier-invoices/{id}/payments: a (partial) payment of a posted invoice, never more
-- than is outstanding; cash against accounts payable. The last one may close the order.
CREATE FUNCTION erp.pay_supplier_invoice(
    p_principal text, p_key text, p_hash bytea, p_invoice bigint, p_expected numeric, p_amount numeric,
    p_currency text, p_paid_on date, p_reference text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    i erp.supplier_invoice;
    ledger_currency text := (SELECT currency FROM erp.company);
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    i := erp.lock_supplier_invoice(p_invoice, p_expected, '{posted}', 'pay');
    IF p_currency <> ledger_currency THEN
        PERFORM erp.refuse_field('validation', 'body.amount.currency',
                                 format('this ledger keeps %s; got %s', ledger_currency, p_currency));
    END IF;
    IF p_amount > i.gross - i.paid THEN
        PERFORM erp.refuse_field('conflict', 'body.amount.amount', 'exceeds the outstanding ' || (i.gross - i.paid));
    END IF;
    INSERT INTO erp.supplier_payment (invoice_id, amount, paid_on, reference, created_by)
    VALUES (i.id, p_amount, coalesce(p_paid_on, current_date), p_reference, p_principal);
    UPDATE erp.supplier_invoice
       SET paid = paid + p_amount, status = CASE WHEN paid + p_amount >= gross THEN 'paid' ELSE status END,
           version = version + 1, updated_at = now()
     WHERE id = i.id RETURNING * INTO i;
    PERFORM erp.post_entry('supplier_payment', format('payment of %s (%s)', erp.numbered('SI-', i.id),
                                                      i.supplier_reference),
                           'supplier_invoice', i.id, ARRAY['2200', '1000'], ARRAY[p_amount, -p_amount]);
    doc := erp.supplier_invoice_doc(i);
    PERFORM erp.emit('supplier_invoice', i.id,
                     CASE WHEN i.status = 'paid' THEN 'supplier_invoice.paid' ELSE 'supplier_invoice.payment' END,
                     json_build_object('invoice', doc, 'amount', p_amount::text));
    PERFORM erp.settle_purchase_order(i.purchase_order_id);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc, erp.etag(i.version));
END $$;

-- What open and running maintenance orders still wait for, per spare part and warehouse:
-- the quantity they need minus what is reserved for them (erp.work_order_part.reserved,
-- 0018_backorders.sql).
CREATE FUNCTION erp.back_ordered_parts()
RETURNS TABLE (product_id bigint, warehouse_id bigint, quantity numeric, work_orders text[])
LANGUAGE sql STABLE AS $$
    SELECT p.product_id, w.warehouse_id, sum(p.quantity - p.reserved),
           array_agg(erp.numbered('WO-', w.id) ORDER BY w.id)
      FROM erp.work_order_part p JOIN erp.work_order w ON w.id = p.work_order_id
     WHERE w.kind = 'maintenance' AND w.status IN ('open', 'in_progress') AND p.quantity > p.reserved
     GROUP BY p.product_id, w.warehouse_id
$$;

-- GET /purchasing/reorder-suggestions: per product and warehouse (one warehouse, or all for
-- NULL) that has stock or back-orders, what to buy so that available stock plus what is on
-- order (draft, approved and partly received purchase order lines not yet received) reaches
-- the reorder point and covers the back-orders; at least the supplier's minimum order
-- quantity, from the preferred supplier (else the cheapest that sells it), needed by today
-- plus its lead time. A product no supplier sells is listed without one.
CREATE FUNCTION erp.reorder_suggestions(p_warehouse bigint)
RETURNS TABLE (product_id bigint, sku text, warehouse_id bigint, warehouse_code text, on_hand numeric,
               reserved numeric, on_order numeric, back_ordered numeric, reorder_point numeric, quantity numeric,
               supplier_id bigint, supplier_code text, unit_price numeric, lead_time_days int, needed_by date,
               reasons text[])
LANGUAGE sql STABLE AS $$
    WITH back AS (SELECT * FROM erp.back_ordered_parts() b WHERE p_warehouse IS NULL OR b.warehouse_id = p_warehouse),
         pairs AS (SELECT s.product_id, s.warehouse_id FROM erp.stock s
                    WHERE p_warehouse IS NULL OR s.warehouse_id = p_warehouse
                   UNION
                   SELECT b.product_id, b.warehouse_id FROM back b),
         ordered AS (SELECT l.product_id, o.warehouse_id, sum(l.quantity - l.received_quantity) AS quantity
                       FROM erp.purchase_order_line l JOIN erp.purchase_order o ON o.id = l.purchase_order_id
                      WHERE o.status IN ('draft', 'approved', 'partly_received')
                      GROUP BY l.product_id, o.warehouse_id),
         n AS (SELECT p.id AS product_id, p.sku, w.id AS warehouse_id, w.code AS warehouse_code,
                      coalesce(s.on_hand, 0) AS on_hand, coalesce(s.reserved, 0) AS reserved,
                      coalesce(oo.quantity, 0) AS on_order, coalesce(b.quantity, 0) AS back_ordered,
                      b.work_orders, p.reorder_point
                 FROM pairs
                 JOIN erp.product p ON p.id = pairs.product_id AND p.active
                 JOIN erp.warehouse w ON w.id = pairs.warehouse_id
                 LEFT JOIN erp.stock s ON s.product_id = p.id AND s.warehouse_id = w.id
                 LEFT JOIN ordered oo ON oo.product_id = p.id AND oo.warehouse_id = w.id
                 LEFT JOIN back b ON b.product_id = p.id AND b.warehouse_id = w.id),
         short AS (SELECT n.*, n.reorder_point + n.back_ordered - (n.on_hand - n.reserved) - n.on_order AS shortfall
                     FROM n)
    SELECT short.product_id, short.sku, short.warehouse_id, short.warehouse_code, short.on_hand, short.reserved,
           short.on_order, short.back_ordered, short.reorder_point,
           greatest(short.shortfall, coalesce(si.min_order_quantity, 0)), si.supplier_id, si.code, si.price,
           si.lead_time_days, current_date + coalesce(si.lead_time_days, 0),
           array_remove(ARRAY[
               CASE WHEN short.on_hand - short.reserved + short.on_order < short.reorder_point
                    THEN format('available %s + on order %s is below the reorder point %s',
                                short.on_hand - short.reserved, short.on_order, short.reorder_point) END,
               CASE WHEN short.back_ordered > 0
                    THEN format('%s back-ordered by maintenance orders %s', short.back_ordered,
                                array_to_string(short.work_orders, ', ')) END,
               CASE WHEN si.min_order_quantity > short.shortfall
                    THEN format('raised from %s to the minimum order quantity %s', short.shortfall,
                                si.min_order_quantity) END,
               CASE WHEN si.supplier_id IS NULL THEN 'no active supplier sells this product' END], NULL)
      FROM short
      LEFT JOIN LATERAL (SELECT i.*, s.code
                           FROM erp.supplier_item i JOIN erp.supplier s ON s.id = i.supplier_id
                          WHERE i.product_id = short.product_id AND s.active
                            AND s.currency = (SELECT currency FROM erp.company)
                          ORDER BY i.preferred DESC, i.price, i.id
                          LIMIT 1) si ON true
     WHERE short.shortfall > 0
     ORDER BY short.product_id, short.warehouse_id
$$;


-- The suggestions as GET /purchasing/reorder-suggestions returns them (a list of ReorderSuggestionPublic).
CREATE FUNCTION erp.reorder_suggestions_doc(p_warehouse bigint) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT coalesce(json_agg(json_build_object(
               'product_id', r.product_id, 'sku', r.sku, 'warehouse_id', r.warehouse_id,
               'warehouse_code', r.warehouse_code, 'on_hand', r.on_hand::text, 'reserved', r.reserved::text,
               'on_order', r.on_order::text, 'back_ordered', r.back_ordered::text,
               'reorder_point', r.reorder_point::text, 'quantity', r.quantity::text, 'supplier_id', r.supplier_id,
               'supplier_code', r.supplier_code,
               'unit_price', CASE WHEN r.unit_price IS NOT NULL THEN erp.money(r.unit_price, c.currency) END,
               'lead_time_days', r.lead_time_days, 'needed_by', r.needed_by, 'reasons', to_json(r.reasons))
               ORDER BY r.product_id, r.warehouse_id), '[]')
      FROM erp.reorder_suggestions(p_warehouse) r, erp.company c
$$;

-- POST /purchasing/reorder-suggestions/convert: one draft purchase order per supplier and
-- warehouse for the suggestions that have a supplier. Conversions queue on one advisory
-- lock, and the drafts count as on order: a second conversion finds nothing left to order.
CREATE FUNCTION erp.convert_reorder_suggestions(p_principal text, p_key text, p_hash bytea, p_warehouse bigint)
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
              WHERE r.supplier_id IS NOT NULL
              GROUP BY r.supplier_id, r.warehouse_id
              ORDER BY r.supplier_id, r.warehouse_id
    LOOP
        o := erp.new_purchase_order(p_principal, g.supplier_id, g.warehouse_id, g.expected, 'from reorder suggestions',
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
