-- Changing a draft order and crediting an invoice as SQL functions (docs/erp-api.md, "Where
-- commands live"). Each takes (principal, Idempotency-Key, request hash) first, claims the
-- key, locks the order or invoice, checks, makes the change, posts the journal entry, writes
-- the event and records its reply, in one statement. The documents are erp.order_doc and
-- erp.invoice_doc, as for every other path.

-- Replace a draft order's lines with the ones given (line_no 1..n in the given order): line
-- prices default to the product's, tax rates come from the products, every product must
-- exist and be active (the first that is not is named).
CREATE FUNCTION erp.replace_order_lines(p_order bigint, p_product bigint[], p_quantity numeric[], p_price numeric[])
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
    DELETE FROM erp.sales_order_line WHERE order_id = p_order;
    INSERT INTO erp.sales_order_line (order_id, line_no, product_id, quantity, unit_price, tax_rate)
    SELECT p_order, u.n, u.id, u.q, coalesce(u.price, p.price), p.tax_rate
      FROM unnest(p_product, p_quantity, p_price) WITH ORDINALITY AS u(id, q, price, n)
      JOIN erp.product p ON p.id = u.id;
END $$;

-- PATCH /orders/{id}: change a draft. p_warehouse NULL keeps the warehouse; p_set_notes says
-- whether notes change (NULL clears them); p_product NULL keeps the lines, otherwise the
-- lines are replaced by (p_product, p_quantity, p_price in p_currency; a NULL price is the
-- product's). p_expected is numeric because If-Match may carry any digits, and erp.lock_order
-- compares an int: a number past int range is capped at the int maximum, which no version
-- reaches, so it is refused (412) like any other stale version.
CREATE FUNCTION erp.update_order(
    p_principal text, p_key text, p_hash bytea, p_order bigint, p_expected numeric, p_warehouse bigint,
    p_notes text, p_set_notes boolean, p_product bigint[], p_quantity numeric[], p_price numeric[],
    p_currency text[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    ledger_currency text := (SELECT currency FROM erp.company);
    foreign_price record;
    o erp.sales_order;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    o := erp.lock_order(p_order, CASE WHEN p_expected IS NOT NULL THEN least(p_expected, 2147483647)::int END,
                        '{draft}', 'change');
    IF p_product IS NOT NULL THEN
        SELECT u.n, u.cur INTO foreign_price
          FROM unnest(p_currency) WITH ORDINALITY AS u(cur, n) WHERE u.cur <> ledger_currency ORDER BY u.n LIMIT 1;
        IF FOUND THEN
            PERFORM erp.refuse_field('validation', format('body.lines[%s].unit_price.currency', foreign_price.n - 1),
                                     format('this ledger keeps %s; got %s', ledger_currency, foreign_price.cur));
        END IF;
        PERFORM erp.replace_order_lines(o.id, p_product, p_quantity, p_price);
    END IF;
    UPDATE erp.sales_order
       SET warehouse_id = coalesce(p_warehouse, warehouse_id),
           notes = CASE WHEN p_set_notes THEN p_notes ELSE notes END, version = version + 1, updated_at = now()
     WHERE id = o.id RETURNING * INTO o;
    doc := erp.order_doc(o);
    PERFORM erp.emit('order', o.id, 'order.updated', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(o.version));
END $$;

-- What is left to credit on each line of an invoice: what was invoiced minus what earlier
-- credit notes (whose lines keep the invoice's line numbers) took.
CREATE FUNCTION erp.left_to_credit(p_invoice bigint)
RETURNS TABLE (line_no int, product_id bigint, description text, unit_price numeric, tax_rate numeric,
               quantity numeric, net numeric, tax numeric)
LANGUAGE sql STABLE AS $$
    SELECT l.line_no, l.product_id, l.description, l.unit_price, l.tax_rate, l.quantity - coalesce(d.quantity, 0),
           l.net - coalesce(d.net, 0), l.tax - coalesce(d.tax, 0)
      FROM erp.invoice_line l
      LEFT JOIN (SELECT c.line_no, sum(c.quantity) AS quantity, sum(c.net) AS net, sum(c.tax) AS tax
                   FROM erp.invoice_line c JOIN erp.invoice n ON n.id = c.invoice_id
                  WHERE n.credited_invoice_id = p_invoice
                  GROUP BY c.line_no) d ON d.line_no = l.line_no
     WHERE l.invoice_id = p_invoice
$$;

-- The lines of a credit note on inv (invoice_id left NULL): (p_line_no, p_quantity) as asked,
-- or everything left when p_line_no is NULL. Never more than is left on a line; crediting
-- the whole remainder of a line credits exactly its remaining amounts, so no rounding
-- residue stays behind; a part is priced and taxed like the invoice, capped at what is left.
CREATE FUNCTION erp.credit_lines(inv erp.invoice, p_line_no int[], p_quantity numeric[])
RETURNS SETOF erp.invoice_line LANGUAGE plpgsql AS $$
DECLARE
    l record;
    line erp.invoice_line;
    missing int;
    taken int := 0;
BEGIN
    FOR l IN SELECT * FROM erp.left_to_credit(inv.id) ORDER BY line_no LOOP
        line := ROW(NULL, l.line_no, l.product_id, l.description,
                    CASE WHEN p_line_no IS NULL THEN l.quantity
                         ELSE coalesce((SELECT w.q FROM unnest(p_line_no, p_quantity) AS w(n, q)
                                         WHERE w.n = l.line_no), 0) END,
                    l.unit_price, NULL, l.tax_rate, NULL);
        CONTINUE WHEN line.quantity <= 0;
        IF line.quantity > l.quantity THEN
            PERFORM erp.refuse_field('validation', 'body.lines',
                                     format('line %s: only %s left to credit', l.line_no, l.quantity));
        END IF;
        IF line.quantity = l.quantity THEN
            line.net := l.net;
            line.tax := l.tax;
        ELSE
            line.net := least(round(line.quantity * l.unit_price, 2), l.net);
            line.tax := least(round(line.net * l.tax_rate, 2), l.tax);
        END IF;
        taken := taken + 1;
        RETURN NEXT line;
    END LOOP;
    SELECT min(n) INTO missing
      FROM unnest(p_line_no) n WHERE n NOT IN (SELECT i.line_no FROM erp.invoice_line i WHERE i.invoice_id = inv.id);
    IF missing IS NOT NULL THEN
        PERFORM erp.refuse_field('validation', 'body.lines', format('no line %s on invoice %s', missing, inv.number));
    END IF;
    IF taken = 0 THEN
        PERFORM erp.refuse('invalid-state', 'nothing left to credit on ' || inv.number);
    END IF;
END $$;

-- POST /invoices/{id}/credit-notes: credit some lines (p_line_no NULL: everything left) of an
-- invoice, up to what is outstanding (no refunds). The note takes the next gapless CN number
-- (the last lock taken), reverses revenue and tax against receivables, and raises the
-- invoice's credited amount; the event, on the invoice, carries the note.
CREATE FUNCTION erp.credit_invoice(
    p_principal text, p_key text, p_hash bytea, p_invoice bigint, p_expected numeric, p_reason text,
    p_line_no int[], p_quantity numeric[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    inv erp.invoice;
    note erp.invoice;
    v_line_no int[];
    v_product bigint[];
    v_description text[];
    v_quantity numeric[];
    v_unit_price numeric[];
    v_net numeric[];
    v_tax_rate numeric[];
    v_tax numeric[];
    credit_net numeric;
    credit_tax numeric;
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
    IF inv.kind <> 'invoice' THEN
        PERFORM erp.refuse('invalid-state', 'only invoices can be credited');
    END IF;
    SELECT array_agg(c.line_no ORDER BY c.line_no), array_agg(c.product_id ORDER BY c.line_no),
           array_agg(c.description ORDER BY c.line_no), array_agg(c.quantity ORDER BY c.line_no),
           array_agg(c.unit_price ORDER BY c.line_no), array_agg(c.net ORDER BY c.line_no),
           array_agg(c.tax_rate ORDER BY c.line_no), array_agg(c.tax ORDER BY c.line_no), sum(c.net), sum(c.tax)
      INTO v_line_no, v_product, v_description, v_quantity, v_unit_price, v_net, v_tax_rate, v_tax,
           credit_net, credit_tax
      FROM erp.credit_lines(inv, p_line_no, p_quantity) c;
    IF credit_net + credit_tax > inv.gross - inv.paid - inv.credited THEN
        PERFORM erp.refuse_field('conflict', 'body.lines',
                                 format('credit of %s exceeds the outstanding %s (refunds are not supported)',
                                        credit_net + credit_tax, inv.gross - inv.paid - inv.credited));
    END IF;
    UPDATE erp.invoice SET credited = credited + credit_net + credit_tax, version = version + 1 WHERE id = inv.id
    RETURNING * INTO inv;
    note := erp.issue_document('CN', 'credit_note', NULL, inv.id, inv.customer_id, p_reason, v_line_no, v_product,
                               v_description, v_quantity, v_unit_price, v_net, v_tax_rate, v_tax);
    PERFORM erp.post_entry('credit_note', format('credit note %s for %s', note.number, inv.number), 'invoice', inv.id,
                           ARRAY['4000', '2100', '1100'], ARRAY[credit_net, credit_tax, -(credit_net + credit_tax)]);
    doc := erp.invoice_doc(note);
    PERFORM erp.emit('invoice', inv.id, 'invoice.credited', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(note.version) || jsonb_build_object('Location', '/api/v1/invoices/' || note.id));
END $$;
