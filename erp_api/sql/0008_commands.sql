-- The order flow's commands as single statements, and the pieces they share with the
-- Python commands: documents (the API's JSON for orders and invoices), stock moves,
-- journal postings, idempotency records and numbered documents.
--
-- Why in the database: a command used to cost 8-12 statements, each a round trip with its
-- own syscalls on both sides; as one statement it is one round trip and one implicit
-- transaction (autocommit), and its row locks are held only while PostgreSQL works.
-- Refusals are raised with SQLSTATE P0001, HINT 'erp:<problem slug>', MESSAGE the
-- problem's detail and DETAIL a JSON object of problem members (errors, extensions);
-- erp_api.db translates them into problem documents.

-- No NOTIFY per event: a transaction that notifies holds one database-wide lock from
-- before its commit until after the commit's WAL flush, so every command queued behind
-- every other one. The relay polls the (partial, small) unpublished index instead.
DROP TRIGGER outbox_notify ON erp.outbox;
DROP FUNCTION erp.outbox_notify();

CREATE FUNCTION erp.refuse(slug text, detail text, members json DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'P0001', MESSAGE = detail, HINT = 'erp:' || slug,
        DETAIL = coalesce(members::text, '{}');
END $$;

-- A problem naming one request field: detail "field: reason", errors [{field, reason}].
CREATE FUNCTION erp.refuse_field(slug text, field text, reason text) RETURNS void
LANGUAGE sql AS $$
    SELECT erp.refuse(slug, field || ': ' || reason,
                      json_build_object('errors', json_build_array(json_build_object('field', field, 'reason', reason))))
$$;

-- Timestamps as the rest of the API writes them (pydantic): UTC, "Z", microseconds unless zero.
CREATE FUNCTION erp.iso(t timestamptz) RETURNS text LANGUAGE sql STABLE AS $$
    SELECT to_char(t AT TIME ZONE 'UTC',
                   CASE WHEN extract(microseconds FROM t) % 1000000 = 0 THEN 'YYYY-MM-DD"T"HH24:MI:SS"Z"'
                        ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"' END)
$$;

CREATE FUNCTION erp.money(amount numeric, currency text) RETURNS json LANGUAGE sql IMMUTABLE AS $$
    SELECT json_build_object('amount', amount::text, 'currency', currency)
$$;

CREATE FUNCTION erp.numbered(prefix text, id bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT prefix || CASE WHEN id < 1000000 THEN lpad(id::text, 6, '0') ELSE id::text END
$$;

-- An order as GET /orders/{id} returns it (erp_api.schemas.orders.OrderPublic). Line
-- amounts are rounded half up to cents: net on quantity x price, then tax on that net.
CREATE FUNCTION erp.order_doc(o erp.sales_order) RETURNS json LANGUAGE sql STABLE AS $$
    WITH c AS (SELECT currency::text AS cur FROM erp.company),
         l AS (SELECT l.line_no, l.product_id, p.sku, l.quantity, l.unit_price, l.tax_rate,
                      round(l.quantity * l.unit_price, 2) AS net
                 FROM erp.sales_order_line l JOIN erp.product p ON p.id = l.product_id
                WHERE l.order_id = o.id),
         t AS (SELECT l.*, round(l.net * l.tax_rate, 2) AS tax FROM l),
         s AS (SELECT coalesce(sum(net), 0) AS net, coalesce(sum(tax), 0) AS tax FROM t)
    SELECT json_build_object(
               'id', o.id, 'number', erp.numbered('SO-', o.id), 'customer_id', o.customer_id,
               'warehouse_id', o.warehouse_id, 'status', o.status, 'notes', o.notes,
               'lines', coalesce((SELECT json_agg(json_build_object(
                                     'line_no', t.line_no, 'product_id', t.product_id, 'sku', t.sku,
                                     'quantity', t.quantity::text, 'unit_price', erp.money(t.unit_price, c.cur),
                                     'tax_rate', t.tax_rate::text, 'net', erp.money(t.net, c.cur),
                                     'tax', erp.money(t.tax, c.cur)) ORDER BY t.line_no) FROM t), '[]'),
               'net', erp.money(s.net, c.cur), 'tax', erp.money(s.tax, c.cur), 'gross', erp.money(s.net + s.tax, c.cur),
               'version', o.version, 'created_by', o.created_by, 'created_at', erp.iso(o.created_at),
               'updated_at', erp.iso(o.updated_at), 'confirmed_at', erp.iso(o.confirmed_at),
               'shipped_at', erp.iso(o.shipped_at), 'invoiced_at', erp.iso(o.invoiced_at),
               'cancelled_at', erp.iso(o.cancelled_at))
      FROM c, s
$$;

-- A stock level as GET /inventory/stock returns it (StockPublic); zeros for a pair that never had stock.
CREATE FUNCTION erp.stock_doc(product_id bigint, sku text, warehouse_id bigint, warehouse_code text,
                              on_hand numeric, reserved numeric, reorder_point numeric, updated_at timestamptz)
RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'product_id', product_id, 'sku', sku, 'warehouse_id', warehouse_id, 'warehouse_code', warehouse_code,
               'on_hand', on_hand::text, 'reserved', reserved::text, 'available', (on_hand - reserved)::text,
               'reorder_point', reorder_point::text, 'below_reorder', on_hand - reserved < reorder_point,
               'updated_at', erp.iso(updated_at))
$$;

-- An invoice or credit note as GET /invoices/{id} returns it (InvoicePublic).
CREATE FUNCTION erp.invoice_doc(i erp.invoice) RETURNS json LANGUAGE sql STABLE AS $$
    WITH c AS (SELECT currency::text AS cur FROM erp.company)
    SELECT json_build_object(
               'id', i.id, 'kind', i.kind, 'number', i.number,
               'status', CASE WHEN i.kind = 'credit_note' THEN 'issued'
                              WHEN i.paid + i.credited = 0 THEN 'open'
                              WHEN i.paid + i.credited < i.gross THEN 'partially_paid'
                              WHEN i.paid > 0 THEN 'paid' ELSE 'credited' END,
               'order_id', i.order_id, 'credited_invoice_id', i.credited_invoice_id, 'customer_id', i.customer_id,
               'issue_date', to_char(i.issue_date, 'YYYY-MM-DD'), 'due_date', to_char(i.due_date, 'YYYY-MM-DD'),
               'net', erp.money(i.net, c.cur), 'tax', erp.money(i.tax, c.cur), 'gross', erp.money(i.gross, c.cur),
               'paid', erp.money(i.paid, c.cur), 'credited', erp.money(i.credited, c.cur),
               'outstanding', erp.money(i.gross - i.paid - i.credited, c.cur), 'reason', i.reason,
               'lines', coalesce((SELECT json_agg(json_build_object(
                                     'line_no', l.line_no, 'product_id', l.product_id, 'description', l.description,
                                     'quantity', l.quantity::text, 'unit_price', erp.money(l.unit_price, c.cur),
                                     'net', erp.money(l.net, c.cur), 'tax_rate', l.tax_rate::text,
                                     'tax', erp.money(l.tax, c.cur)) ORDER BY l.line_no)
                                    FROM erp.invoice_line l WHERE l.invoice_id = i.id), '[]'),
               'payments', coalesce((SELECT json_agg(json_build_object(
                                        'id', p.id, 'amount', erp.money(p.amount, c.cur),
                                        'received_on', to_char(p.received_on, 'YYYY-MM-DD'), 'method', p.method,
                                        'reference', p.reference, 'created_by', p.created_by,
                                        'created_at', erp.iso(p.created_at)) ORDER BY p.id)
                                       FROM erp.payment p WHERE p.invoice_id = i.id), '[]'),
               'version', i.version, 'created_at', erp.iso(i.created_at))
      FROM c
$$;

-- Idempotency: claim (principal, key) first in the command's transaction. NULL: claimed,
-- run the command. Otherwise the recorded reply of the same request (a concurrent first
-- attempt is waited for on the unique index); a different request under the key is refused.
CREATE FUNCTION erp.claim_key(p_principal text, p_key text, p_hash bytea) RETURNS erp.idempotency_key
LANGUAGE plpgsql AS $$
DECLARE
    found_row erp.idempotency_key;
BEGIN
    LOOP
        INSERT INTO erp.idempotency_key (principal, key, request_hash) VALUES (p_principal, p_key, p_hash)
            ON CONFLICT DO NOTHING;
        IF FOUND THEN
            RETURN NULL;
        END IF;
        SELECT * INTO found_row FROM erp.idempotency_key WHERE principal = p_principal AND key = p_key;
        IF FOUND THEN  -- else purged in between: claim again
            IF found_row.request_hash <> p_hash THEN
                PERFORM erp.refuse_field('idempotency-key-reused', 'header.Idempotency-Key',
                                         'already used for a different request; use a new key for a new request');
            END IF;
            RETURN found_row;
        END IF;
    END LOOP;
END $$;

CREATE FUNCTION erp.record_reply(p_principal text, p_key text, p_status int, p_body text, p_headers jsonb)
RETURNS void LANGUAGE sql AS $$
    UPDATE erp.idempotency_key SET status = p_status, body = convert_to(p_body, 'UTF8'), headers = p_headers
     WHERE principal = p_principal AND key = p_key
$$;

-- Stock moves, atomically: lock the stock rows in key order (concurrent commands never
-- deadlock), create missing rows where goods arrive, walk the moves in order over the
-- locked levels and refuse the whole set naming every move that does not fit; then update
-- the rows and append the movements. One row per (product, warehouse) after the change.
CREATE FUNCTION erp.apply_moves(
    p_kind text[], p_product bigint[], p_warehouse bigint[], p_on_hand numeric[], p_reserved numeric[],
    p_field text[], p_reference_type text, p_reference_id bigint, p_note text, p_actor text)
RETURNS TABLE (product_id bigint, warehouse_id bigint, stock_id bigint, sku text, cost numeric,
               on_hand numeric, reserved numeric, movement_ids bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    k_product bigint[];
    k_warehouse bigint[];
    k_id bigint[];
    k_sku text[];
    k_cost numeric[];
    k_on_hand numeric[];
    k_reserved numeric[];
    keys integer;
    j integer;
    level_on_hand numeric;
    level_reserved numeric;
    new_on_hand numeric;
    new_reserved numeric;
    short json[] := '{}';
    ids bigint[];
BEGIN
    SELECT count(*) INTO keys FROM (SELECT DISTINCT * FROM unnest(p_product, p_warehouse)) d;
    FOR attempt IN 1..2 LOOP
        SELECT array_agg(s.product_id ORDER BY s.product_id, s.warehouse_id),
               array_agg(s.warehouse_id ORDER BY s.product_id, s.warehouse_id),
               array_agg(s.id ORDER BY s.product_id, s.warehouse_id),
               array_agg(p.sku ORDER BY s.product_id, s.warehouse_id),
               array_agg(p.cost ORDER BY s.product_id, s.warehouse_id),
               array_agg(s.on_hand ORDER BY s.product_id, s.warehouse_id),
               array_agg(s.reserved ORDER BY s.product_id, s.warehouse_id)
          INTO k_product, k_warehouse, k_id, k_sku, k_cost, k_on_hand, k_reserved
          FROM (SELECT s.id, s.product_id, s.warehouse_id, s.on_hand, s.reserved
                  FROM erp.stock s
                 WHERE (s.product_id, s.warehouse_id) IN (SELECT * FROM unnest(p_product, p_warehouse))
                 ORDER BY s.product_id, s.warehouse_id
                   FOR UPDATE) s
          JOIN erp.product p ON p.id = s.product_id;
        EXIT WHEN attempt = 2 OR coalesce(cardinality(k_id), 0) = keys
                  OR NOT EXISTS (SELECT 1 FROM unnest(p_on_hand) v WHERE v > 0);
        INSERT INTO erp.stock (product_id, warehouse_id)
        SELECT DISTINCT * FROM unnest(p_product, p_warehouse) ORDER BY 1, 2 ON CONFLICT DO NOTHING;
    END LOOP;
    k_product := coalesce(k_product, '{}');
    FOR i IN 1..cardinality(p_kind) LOOP
        j := NULL;
        FOR x IN 1..cardinality(k_product) LOOP
            IF k_product[x] = p_product[i] AND k_warehouse[x] = p_warehouse[i] THEN
                j := x;
                EXIT;
            END IF;
        END LOOP;
        IF j IS NULL THEN  -- no stock row: nothing on hand or reserved
            k_product := k_product || p_product[i];
            k_warehouse := k_warehouse || p_warehouse[i];
            k_id := k_id || 0::bigint;
            k_sku := k_sku || ('#' || p_product[i]);
            k_cost := k_cost || 0::numeric;
            k_on_hand := k_on_hand || 0::numeric;
            k_reserved := k_reserved || 0::numeric;
            j := cardinality(k_product);
        END IF;
        level_on_hand := k_on_hand[j];
        level_reserved := k_reserved[j];
        new_on_hand := level_on_hand + p_on_hand[i];
        new_reserved := level_reserved + p_reserved[i];
        IF new_on_hand < 0 OR new_reserved < 0 OR new_reserved > new_on_hand THEN
            short := short || json_build_object(
                'field', p_field[i],
                'reason', format('SKU %s in warehouse %s: needs %s, available %s', k_sku[j], p_warehouse[i],
                                 greatest(-p_on_hand[i], p_reserved[i], -p_reserved[i]),
                                 CASE WHEN p_reserved[i] < 0 AND p_on_hand[i] = 0 THEN level_reserved
                                      ELSE level_on_hand - level_reserved END));
        ELSE
            k_on_hand[j] := new_on_hand;
            k_reserved[j] := new_reserved;
        END IF;
    END LOOP;
    IF cardinality(short) > 0 THEN
        PERFORM erp.refuse('insufficient-stock',
                           cardinality(short) || CASE WHEN cardinality(short) = 1 THEN ' move' ELSE ' moves' END
                           || ' cannot be covered by stock',
                           json_build_object('errors', array_to_json(short)));
    END IF;
    WITH d AS (SELECT p, w, sum(oh) AS oh, sum(rs) AS rs
                 FROM unnest(p_product, p_warehouse, p_on_hand, p_reserved) AS t(p, w, oh, rs) GROUP BY p, w),
         upd AS (UPDATE erp.stock s SET on_hand = s.on_hand + d.oh, reserved = s.reserved + d.rs, updated_at = now()
                   FROM d WHERE s.product_id = d.p AND s.warehouse_id = d.w),
         ins AS (INSERT INTO erp.stock_movement (kind, product_id, warehouse_id, on_hand_delta, reserved_delta,
                                                 reference_type, reference_id, note, actor)
                 SELECT k, p, w, oh, rs, p_reference_type, p_reference_id, p_note, p_actor
                   FROM unnest(p_kind, p_product, p_warehouse, p_on_hand, p_reserved) WITH ORDINALITY AS m(k, p, w, oh, rs, n)
                  ORDER BY n
                 RETURNING id)
    SELECT array_agg(id ORDER BY id) INTO ids FROM ins;
    RETURN QUERY
        SELECT k_product[x], k_warehouse[x], k_id[x], k_sku[x], k_cost[x], k_on_hand[x], k_reserved[x], ids
          FROM generate_subscripts(k_product, 1) AS x;
END $$;

-- One balanced journal entry: amounts (positive debit, negative credit) are rounded half
-- up to cents and netted per account; an entry that nets to nothing is not posted. An
-- unbalanced entry is a bug, never user input: it fails here (and at commit, by trigger).
CREATE FUNCTION erp.post_entry(p_kind text, p_memo text, p_reference_type text, p_reference_id bigint,
                               p_accounts text[], p_amounts numeric[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    accounts text[];
    amounts numeric[];
BEGIN
    SELECT array_agg(a ORDER BY a), array_agg(v ORDER BY a) INTO accounts, amounts
      FROM (SELECT a, sum(round(v, 2)) AS v FROM unnest(p_accounts, p_amounts) AS t(a, v) GROUP BY a) n
     WHERE v <> 0;
    IF accounts IS NULL THEN
        RETURN;
    END IF;
    IF (SELECT sum(v) FROM unnest(amounts) v) <> 0 THEN
        RAISE EXCEPTION 'unbalanced journal entry for %: % %', p_kind, accounts, amounts;
    END IF;
    WITH entry AS (INSERT INTO erp.journal_entry (kind, memo, reference_type, reference_id)
                   VALUES (p_kind, p_memo, p_reference_type, p_reference_id) RETURNING id)
    INSERT INTO erp.journal_line (entry_id, account_code, debit, credit)
    SELECT entry.id, a, greatest(v, 0), greatest(-v, 0) FROM entry, unnest(accounts, amounts) AS t(a, v);
END $$;

-- A numbered document (invoice or credit note) with its lines. The number is gapless per
-- series and year: the counter row is bumped in this transaction and stays locked until
-- commit, so callers take it as the last thing they lock.
CREATE FUNCTION erp.issue_document(
    p_series text, p_kind text, p_order bigint, p_credited bigint, p_customer bigint, p_reason text,
    p_line_no int[], p_product bigint[], p_description text[], p_quantity numeric[], p_unit_price numeric[],
    p_net numeric[], p_tax_rate numeric[], p_tax numeric[])
RETURNS erp.invoice LANGUAGE plpgsql AS $$
DECLARE
    doc erp.invoice;
    net numeric := (SELECT coalesce(sum(v), 0) FROM unnest(p_net) v);
    tax numeric := (SELECT coalesce(sum(v), 0) FROM unnest(p_tax) v);
BEGIN
    WITH seq AS (INSERT INTO erp.document_sequence (series, year, last)
                 VALUES (p_series, extract(year FROM current_date)::int, 1)
                 ON CONFLICT (series, year) DO UPDATE SET last = erp.document_sequence.last + 1
                 RETURNING year, last)
    INSERT INTO erp.invoice (kind, number, year, seq, order_id, credited_invoice_id, customer_id, issue_date,
                             due_date, net, tax, gross, reason)
    SELECT p_kind, p_series || '-' || seq.year || '-' || lpad(seq.last::text, 6, '0'), seq.year, seq.last,
           p_order, p_credited, p_customer, current_date,
           current_date + CASE WHEN p_kind = 'invoice'
                               THEN (SELECT payment_terms_days FROM erp.customer WHERE id = p_customer) ELSE 0 END,
           net, tax, net + tax, p_reason
      FROM seq
    RETURNING * INTO doc;
    INSERT INTO erp.invoice_line (invoice_id, line_no, product_id, description, quantity, unit_price, net, tax_rate, tax)
    SELECT doc.id, t.*
      FROM unnest(p_line_no, p_product, p_description, p_quantity, p_unit_price, p_net, p_tax_rate, p_tax) AS t;
    RETURN doc;
END $$;

CREATE FUNCTION erp.emit(p_type text, p_id bigint, p_kind text, p_payload json) RETURNS void LANGUAGE sql AS $$
    INSERT INTO erp.outbox (aggregate_type, aggregate_id, kind, payload) VALUES (p_type, p_id, p_kind, p_payload::jsonb)
$$;

-- The result of a command function: the reply as recorded for Idempotency-Key replays.
CREATE TYPE erp.reply AS (status int, body text, headers jsonb, replayed boolean);

CREATE FUNCTION erp.finish_reply(p_principal text, p_key text, p_status int, p_body json, p_headers jsonb)
RETURNS erp.reply LANGUAGE plpgsql AS $$
BEGIN
    IF p_key IS NOT NULL THEN
        PERFORM erp.record_reply(p_principal, p_key, p_status, p_body::text, p_headers);
    END IF;
    RETURN ROW(p_status, p_body::text, p_headers, false)::erp.reply;
END $$;

CREATE FUNCTION erp.replayed(r erp.idempotency_key) RETURNS erp.reply LANGUAGE sql IMMUTABLE AS $$
    SELECT ROW(r.status, convert_from(r.body, 'UTF8'), r.headers, true)::erp.reply
$$;

CREATE FUNCTION erp.etag(version int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('ETag', '"' || version || '"')
$$;

-- POST /orders: a draft; line prices default to the product's, tax rates come from the products.
CREATE FUNCTION erp.create_order(
    p_principal text, p_key text, p_hash bytea, p_customer bigint, p_warehouse bigint, p_notes text,
    p_product bigint[], p_quantity numeric[], p_price numeric[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    bad integer;
    o erp.sales_order;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT min(u.n) INTO bad
      FROM unnest(p_product) WITH ORDINALITY AS u(id, n) LEFT JOIN erp.product p ON p.id = u.id
     WHERE p.id IS NULL OR NOT p.active;
    IF bad IS NOT NULL THEN
        PERFORM erp.refuse_field('validation', format('body.lines[%s].product_id', bad - 1), 'no such active product');
    END IF;
    INSERT INTO erp.sales_order (customer_id, warehouse_id, notes, created_by)
    VALUES (p_customer, p_warehouse, p_notes, p_principal) RETURNING * INTO o;
    INSERT INTO erp.sales_order_line (order_id, line_no, product_id, quantity, unit_price, tax_rate)
    SELECT o.id, u.n, u.id, u.q, coalesce(u.price, p.price), p.tax_rate
      FROM unnest(p_product, p_quantity, p_price) WITH ORDINALITY AS u(id, q, price, n)
      JOIN erp.product p ON p.id = u.id;
    doc := erp.order_doc(o);
    PERFORM erp.emit('order', o.id, 'order.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(o.version) || jsonb_build_object('Location', '/api/v1/orders/' || o.id));
END $$;

-- The order row locked for a state change, after the If-Match and state checks.
CREATE FUNCTION erp.lock_order(p_order bigint, p_expected int, p_allowed text[], p_action text)
RETURNS erp.sales_order LANGUAGE plpgsql AS $$
DECLARE
    o erp.sales_order;
BEGIN
    SELECT * INTO o FROM erp.sales_order WHERE id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no order with id ' || p_order);
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> o.version THEN
        PERFORM erp.refuse('precondition-failed',
                           format('the resource is at version %s, not %s; read it again', o.version, p_expected));
    END IF;
    IF NOT o.status = ANY(p_allowed) THEN
        PERFORM erp.refuse('invalid-state', format('cannot %s an order that is %s', p_action, o.status),
                           json_build_object('status_now', o.status));
    END IF;
    RETURN o;
END $$;

-- POST /orders/{id}/confirm: reserve every line in the order's warehouse, all or nothing.
CREATE FUNCTION erp.confirm_order(p_principal text, p_key text, p_hash bytea, p_order bigint, p_expected int)
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
    o := erp.lock_order(p_order, p_expected, '{draft}', 'confirm');
    PERFORM erp.apply_moves(array_agg('reservation'::text ORDER BY line_no), array_agg(product_id ORDER BY line_no),
                            array_agg(o.warehouse_id ORDER BY line_no), array_agg(0::numeric ORDER BY line_no),
                            array_agg(quantity ORDER BY line_no),
                            array_agg('lines[' || (n - 1) || ']' ORDER BY line_no), 'order', o.id, NULL, p_principal)
       FROM (SELECT line_no, product_id, quantity, row_number() OVER (ORDER BY line_no) AS n
               FROM erp.sales_order_line WHERE order_id = o.id) l;
    UPDATE erp.sales_order SET status = 'confirmed', confirmed_at = now(), version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    doc := erp.order_doc(o);
    PERFORM erp.emit('order', o.id, 'order.confirmed', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(o.version));
END $$;

-- POST /invoices: invoice a confirmed or shipped order once; the number is taken last.
CREATE FUNCTION erp.invoice_order(p_principal text, p_key text, p_hash bytea, p_order bigint)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    o erp.sales_order;
    inv erp.invoice;
    doc json;
    v_line_no int[];
    v_product bigint[];
    v_description text[];
    v_quantity numeric[];
    v_unit_price numeric[];
    v_net numeric[];
    v_tax_rate numeric[];
    v_tax numeric[];
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO o FROM erp.sales_order WHERE id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no order with id ' || p_order);
    END IF;
    IF o.status NOT IN ('confirmed', 'shipped') OR o.invoiced_at IS NOT NULL THEN
        PERFORM erp.refuse('invalid-state',
                           format('order %s is %s: only confirmed or shipped orders are invoiced', o.id, o.status));
    END IF;
    UPDATE erp.sales_order SET status = 'invoiced', invoiced_at = now(), version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    PERFORM erp.emit('order', o.id, 'order.invoiced', erp.order_doc(o));
    SELECT array_agg(line_no ORDER BY line_no), array_agg(product_id ORDER BY line_no),
           array_agg(sku || ' ' || name ORDER BY line_no), array_agg(quantity ORDER BY line_no),
           array_agg(unit_price ORDER BY line_no), array_agg(net ORDER BY line_no),
           array_agg(tax_rate ORDER BY line_no), array_agg(round(net * tax_rate, 2) ORDER BY line_no)
      INTO v_line_no, v_product, v_description, v_quantity, v_unit_price, v_net, v_tax_rate, v_tax
      FROM (SELECT l.line_no, l.product_id, p.sku, p.name, l.quantity, l.unit_price, l.tax_rate,
                   round(l.quantity * l.unit_price, 2) AS net
              FROM erp.sales_order_line l JOIN erp.product p ON p.id = l.product_id WHERE l.order_id = o.id) l;
    inv := erp.issue_document('INV', 'invoice', o.id, NULL, o.customer_id, NULL,
                              v_line_no, v_product, v_description, v_quantity, v_unit_price, v_net, v_tax_rate,
                              v_tax);
    PERFORM erp.post_entry('invoice', 'invoice ' || inv.number, 'invoice', inv.id,
                           ARRAY['1100', '4000', '2100'], ARRAY[inv.gross, -inv.net, -inv.tax]);
    doc := erp.invoice_doc(inv);
    PERFORM erp.emit('invoice', inv.id, 'invoice.issued', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(inv.version) || jsonb_build_object('Location', '/api/v1/invoices/' || inv.id));
END $$;

-- POST /invoices/{id}/payments: a (partial) payment, never more than what is outstanding.
CREATE FUNCTION erp.pay_invoice(
    p_principal text, p_key text, p_hash bytea, p_invoice bigint, p_expected int, p_amount numeric,
    p_currency text, p_received_on date, p_method text, p_reference text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    inv erp.invoice;
    ledger_currency text := (SELECT currency FROM erp.company);
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO inv FROM erp.invoice WHERE id = p_invoice FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no invoice with id ' || p_invoice);
    END IF;
    IF p_expected IS NOT NULL AND p_expected <> inv.version THEN
        PERFORM erp.refuse('precondition-failed',
                           format('the resource is at version %s, not %s; read it again', inv.version, p_expected));
    END IF;
    IF p_currency <> ledger_currency THEN
        PERFORM erp.refuse_field('validation', 'body.amount.currency',
                                 format('this ledger keeps %s; got %s', ledger_currency, p_currency));
    END IF;
    IF inv.kind <> 'invoice' THEN
        PERFORM erp.refuse('invalid-state', 'payments apply to invoices, not credit notes');
    END IF;
    IF p_amount > inv.gross - inv.paid - inv.credited THEN
        PERFORM erp.refuse_field('conflict', 'body.amount.amount',
                                 'exceeds the outstanding ' || (inv.gross - inv.paid - inv.credited));
    END IF;
    INSERT INTO erp.payment (invoice_id, amount, received_on, method, reference, created_by)
    VALUES (inv.id, p_amount, coalesce(p_received_on, current_date), p_method, p_reference, p_principal);
    UPDATE erp.invoice SET paid = paid + p_amount, version = version + 1 WHERE id = inv.id RETURNING * INTO inv;
    PERFORM erp.post_entry('payment', 'payment for ' || inv.number, 'invoice', inv.id,
                           ARRAY['1000', '1100'], ARRAY[p_amount, -p_amount]);
    doc := erp.invoice_doc(inv);
    PERFORM erp.emit('invoice', inv.id, CASE WHEN inv.paid + inv.credited >= inv.gross THEN 'invoice.paid' ELSE 'invoice.payment' END,
                     json_build_object('invoice', doc, 'amount', p_amount::text));
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(inv.version) || jsonb_build_object('Location', '/api/v1/invoices/' || inv.id));
END $$;
