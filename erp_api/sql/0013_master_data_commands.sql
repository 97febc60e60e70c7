-- Master data commands as SQL functions (docs/erp-api.md, "Where commands live"): creating
-- and changing products (with their bill of materials), customers and warehouses. Each
-- takes (principal, Idempotency-Key, request hash) first, claims the key, locks the row it
-- changes, makes the change, writes the event and records its reply, in one statement.
-- The documents the API returns, for commands and reads alike, are erp.product_doc,
-- erp.customer_doc and erp.warehouse_doc.
--
-- A PATCH locks its row FOR NO KEY UPDATE, the lock its UPDATE takes anyway: it does not
-- conflict with the KEY SHARE locks that foreign-key checks take, so changing a product
-- never waits for (or deadlocks with) orders, stock moves or other bills of materials
-- being written that refer to it.

-- A product as GET /products/{id} returns it (erp_api.schemas.catalog.ProductPublic), its
-- bill of materials in component order.
CREATE FUNCTION erp.product_doc(p erp.product) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', p.id, 'sku', p.sku, 'name', p.name, 'uom', p.uom,
               'price', erp.money(p.price, c.currency), 'cost', erp.money(p.cost, c.currency),
               'tax_rate', p.tax_rate::text, 'reorder_point', p.reorder_point::text,
               'ideal_rate', p.ideal_rate::text, 'active', p.active,
               'bom', coalesce((SELECT json_agg(json_build_object('component_id', b.component_id,
                                                                  'quantity', b.quantity::text)
                                                ORDER BY b.component_id)
                                  FROM erp.bom_line b WHERE b.product_id = p.id), '[]'),
               'version', p.version, 'created_at', erp.iso(p.created_at), 'updated_at', erp.iso(p.updated_at))
      FROM erp.company c
$$;

-- A customer as GET /customers/{id} returns it (CustomerPublic).
CREATE FUNCTION erp.customer_doc(c erp.customer) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', c.id, 'name', c.name, 'email', c.email, 'tax_id', c.tax_id, 'address', c.address,
               'payment_terms_days', c.payment_terms_days, 'version', c.version,
               'created_at', erp.iso(c.created_at), 'updated_at', erp.iso(c.updated_at))
$$;

-- A warehouse as GET /warehouses/{id} returns it (WarehousePublic).
CREATE FUNCTION erp.warehouse_doc(w erp.warehouse) RETURNS json LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
               'id', w.id, 'code', w.code, 'name', w.name, 'version', w.version,
               'created_at', erp.iso(w.created_at), 'updated_at', erp.iso(w.updated_at))
$$;

-- A price or cost as stored: the amount when it is in the ledger currency (one per
-- deployment), NULL when none was sent, else a refusal naming body.<field>.currency.
CREATE FUNCTION erp.catalog_amount(p_field text, p_amount numeric, p_currency text) RETURNS numeric
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ledger text := (SELECT currency FROM erp.company);
BEGIN
    IF p_amount IS NOT NULL AND p_currency IS DISTINCT FROM ledger THEN
        PERFORM erp.refuse_field('validation', 'body.' || p_field || '.currency',
                                 format('this ledger keeps %s; got %s', ledger, p_currency));
    END IF;
    RETURN p_amount;
END $$;

-- The whole bill of materials of a product, replaced; a missing component or the product
-- itself is refused by the constraints (bom_line_component_fkey, bom_line_not_self).
CREATE FUNCTION erp.replace_bom(p_product bigint, p_component bigint[], p_quantity numeric[])
RETURNS void LANGUAGE sql AS $$
    DELETE FROM erp.bom_line WHERE product_id = p_product;
    INSERT INTO erp.bom_line (product_id, component_id, quantity)
    SELECT p_product, u.component, u.quantity FROM unnest(p_component, p_quantity) AS u(component, quantity);
$$;

-- The refusal of a PATCH whose If-Match names another version than the row's. p_expected
-- is numeric because If-Match may carry any digits: compared and named, never stored.
CREATE FUNCTION erp.check_master_version(p_current int, p_expected numeric) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_expected IS NOT NULL AND p_expected <> p_current THEN
        PERFORM erp.refuse('precondition-failed',
                           format('the resource is at version %s, not %s; read it again', p_current, p_expected));
    END IF;
END $$;

-- POST /products: a product and its bill of materials (components must exist); a cost
-- left out is zero.
CREATE FUNCTION erp.create_product(
    p_principal text, p_key text, p_hash bytea, p_sku text, p_name text, p_uom text, p_price numeric,
    p_price_currency text, p_cost numeric, p_cost_currency text, p_tax_rate numeric, p_reorder_point numeric,
    p_ideal_rate numeric, p_component bigint[], p_quantity numeric[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    v_price numeric;
    v_cost numeric;
    p erp.product;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    v_price := erp.catalog_amount('price', p_price, p_price_currency);
    v_cost := coalesce(erp.catalog_amount('cost', p_cost, p_cost_currency), 0);
    INSERT INTO erp.product (sku, name, uom, price, cost, tax_rate, reorder_point, ideal_rate)
    VALUES (p_sku, p_name, p_uom, v_price, v_cost, p_tax_rate, p_reorder_point, p_ideal_rate)
    RETURNING * INTO p;
    PERFORM erp.replace_bom(p.id, p_component, p_quantity);
    doc := erp.product_doc(p);
    PERFORM erp.emit('product', p.id, 'product.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(p.version) || jsonb_build_object('Location', '/api/v1/products/' || p.id));
END $$;

-- PATCH /products/{id}: every field but the SKU. NULL leaves a field as it is (none may be
-- cleared); a bill of materials, when sent, replaces the whole list ('{}' empties it).
CREATE FUNCTION erp.update_product(
    p_principal text, p_key text, p_hash bytea, p_product bigint, p_expected numeric, p_name text, p_uom text,
    p_price numeric, p_price_currency text, p_cost numeric, p_cost_currency text, p_tax_rate numeric,
    p_reorder_point numeric, p_ideal_rate numeric, p_active boolean, p_component bigint[], p_quantity numeric[])
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    v_price numeric;
    v_cost numeric;
    p erp.product;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO p FROM erp.product WHERE id = p_product FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no product with id ' || p_product);
    END IF;
    PERFORM erp.check_master_version(p.version, p_expected);
    v_price := erp.catalog_amount('price', p_price, p_price_currency);
    v_cost := erp.catalog_amount('cost', p_cost, p_cost_currency);
    IF p_component IS NOT NULL THEN
        PERFORM erp.replace_bom(p.id, p_component, p_quantity);
    END IF;
    UPDATE erp.product
       SET name = coalesce(p_name, name), uom = coalesce(p_uom, uom), price = coalesce(v_price, price),
           cost = coalesce(v_cost, cost), tax_rate = coalesce(p_tax_rate, tax_rate),
           reorder_point = coalesce(p_reorder_point, reorder_point), ideal_rate = coalesce(p_ideal_rate, ideal_rate),
           active = coalesce(p_active, active), version = version + 1, updated_at = now()
     WHERE id = p.id
    RETURNING * INTO p;
    doc := erp.product_doc(p);
    PERFORM erp.emit('product', p.id, 'product.updated', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(p.version));
END $$;

-- POST /customers: names are unique (customer_name_key).
CREATE FUNCTION erp.create_customer(
    p_principal text, p_key text, p_hash bytea, p_name text, p_email text, p_tax_id text, p_address text,
    p_payment_terms_days int)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    c erp.customer;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    INSERT INTO erp.customer (name, email, tax_id, address, payment_terms_days)
    VALUES (p_name, p_email, p_tax_id, p_address, p_payment_terms_days)
    RETURNING * INTO c;
    doc := erp.customer_doc(c);
    PERFORM erp.emit('customer', c.id, 'customer.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(c.version) || jsonb_build_object('Location', '/api/v1/customers/' || c.id));
END $$;

-- PATCH /customers/{id}: p_fields names the fields the request sends; email, tax_id and
-- address may be cleared with null, which is why presence and value travel apart.
CREATE FUNCTION erp.update_customer(
    p_principal text, p_key text, p_hash bytea, p_customer bigint, p_expected numeric, p_fields text[],
    p_name text, p_email text, p_tax_id text, p_address text, p_payment_terms_days int)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    c erp.customer;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO c FROM erp.customer WHERE id = p_customer FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no customer with id ' || p_customer);
    END IF;
    PERFORM erp.check_master_version(c.version, p_expected);
    UPDATE erp.customer
       SET name = CASE WHEN 'name' = ANY(p_fields) THEN p_name ELSE name END,
           email = CASE WHEN 'email' = ANY(p_fields) THEN p_email ELSE email END,
           tax_id = CASE WHEN 'tax_id' = ANY(p_fields) THEN p_tax_id ELSE tax_id END,
           address = CASE WHEN 'address' = ANY(p_fields) THEN p_address ELSE address END,
           payment_terms_days = CASE WHEN 'payment_terms_days' = ANY(p_fields) THEN p_payment_terms_days
                                     ELSE payment_terms_days END,
           version = version + 1, updated_at = now()
     WHERE id = c.id
    RETURNING * INTO c;
    doc := erp.customer_doc(c);
    PERFORM erp.emit('customer', c.id, 'customer.updated', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(c.version));
END $$;

-- POST /warehouses: codes are unique (warehouse_code_key).
CREATE FUNCTION erp.create_warehouse(p_principal text, p_key text, p_hash bytea, p_code text, p_name text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.warehouse;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    INSERT INTO erp.warehouse (code, name) VALUES (p_code, p_name) RETURNING * INTO w;
    doc := erp.warehouse_doc(w);
    PERFORM erp.emit('warehouse', w.id, 'warehouse.created', doc);
    RETURN erp.finish_reply(p_principal, p_key, 201, doc,
                            erp.etag(w.version) || jsonb_build_object('Location', '/api/v1/warehouses/' || w.id));
END $$;

-- PATCH /warehouses/{id}: the name (NULL leaves it; the code never changes).
CREATE FUNCTION erp.update_warehouse(
    p_principal text, p_key text, p_hash bytea, p_warehouse bigint, p_expected numeric, p_name text)
RETURNS erp.reply LANGUAGE plpgsql AS $$
DECLARE
    claimed erp.idempotency_key;
    w erp.warehouse;
    doc json;
BEGIN
    IF p_key IS NOT NULL THEN
        claimed := erp.claim_key(p_principal, p_key, p_hash);
        IF claimed IS NOT NULL THEN
            RETURN erp.replayed(claimed);
        END IF;
    END IF;
    SELECT * INTO w FROM erp.warehouse WHERE id = p_warehouse FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        PERFORM erp.refuse('not-found', 'no warehouse with id ' || p_warehouse);
    END IF;
    PERFORM erp.check_master_version(w.version, p_expected);
    UPDATE erp.warehouse SET name = coalesce(p_name, name), version = version + 1, updated_at = now()
     WHERE id = w.id
    RETURNING * INTO w;
    doc := erp.warehouse_doc(w);
    PERFORM erp.emit('warehouse', w.id, 'warehouse.updated', doc);
    RETURN erp.finish_reply(p_principal, p_key, 200, doc, erp.etag(w.version));
END $$;
