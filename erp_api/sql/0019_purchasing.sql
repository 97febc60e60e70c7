-- Purchasing: suppliers and what they sell, purchase orders and their receipts, supplier
-- invoices matched three ways (ordered, received, invoiced) and payments to suppliers
-- (docs/erp-api.md, "Purchasing"). The CHECKs are the last line of defence: a purchase
-- order line never receives more than was ordered, whatever the application does.
INSERT INTO erp.account (code, name, type) VALUES
    ('1300', 'Input tax', 'asset'),
    ('2200', 'Accounts payable', 'liability'),
    ('5400', 'Purchase price variance', 'expense');

CREATE TABLE erp.supplier (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code               text NOT NULL CONSTRAINT supplier_code_key UNIQUE
                       CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    name               text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    payment_terms_days integer NOT NULL DEFAULT 30 CHECK (payment_terms_days BETWEEN 0 AND 365),
    active             boolean NOT NULL DEFAULT true,
    version            integer NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX supplier_name_idx ON erp.supplier (name, id);

-- What a supplier sells: at its price (in the supplier's currency), lead time and minimum
-- order quantity. At most one supplier is preferred per product (reorder suggestions buy there).
CREATE TABLE erp.supplier_item (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    supplier_id        bigint NOT NULL CONSTRAINT supplier_item_supplier_fkey REFERENCES erp.supplier (id),
    product_id         bigint NOT NULL CONSTRAINT supplier_item_product_fkey REFERENCES erp.product (id),
    price              numeric(14, 4) NOT NULL CHECK (price >= 0),
    lead_time_days     integer NOT NULL DEFAULT 0 CHECK (lead_time_days BETWEEN 0 AND 365),
    min_order_quantity numeric(14, 3) NOT NULL DEFAULT 0 CHECK (min_order_quantity >= 0),
    preferred          boolean NOT NULL DEFAULT false,
    version            integer NOT NULL DEFAULT 1,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT supplier_item_once UNIQUE (supplier_id, product_id)
);
CREATE UNIQUE INDEX supplier_item_one_preferred ON erp.supplier_item (product_id) WHERE preferred;
CREATE INDEX supplier_item_product_idx ON erp.supplier_item (product_id, id);

-- draft -> approved -> partly_received -> received -> invoiced -> closed; draft or approved -> cancelled.
CREATE TABLE erp.purchase_order (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    supplier_id   bigint NOT NULL CONSTRAINT purchase_order_supplier_fkey REFERENCES erp.supplier (id),
    warehouse_id  bigint NOT NULL CONSTRAINT purchase_order_warehouse_fkey REFERENCES erp.warehouse (id),
    status        text NOT NULL DEFAULT 'draft'
                  CHECK (status IN ('draft', 'approved', 'partly_received', 'received', 'invoiced', 'closed',
                                    'cancelled')),
    expected_date date,
    notes         text,
    version       integer NOT NULL DEFAULT 1,
    created_by    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    approved_at   timestamptz,
    closed_at     timestamptz,
    cancelled_at  timestamptz
);
CREATE INDEX purchase_order_status_idx ON erp.purchase_order (status, id);
CREATE INDEX purchase_order_supplier_idx ON erp.purchase_order (supplier_id, id);

-- grni_open: what the receipts of this line credited to goods received not invoiced and no
-- invoice has cleared yet; the invoice that takes the line's last received quantity clears
-- exactly this, so no rounding residue is left on the account.
CREATE TABLE erp.purchase_order_line (
    purchase_order_id bigint NOT NULL REFERENCES erp.purchase_order (id),
    line_no           integer NOT NULL,
    product_id        bigint NOT NULL CONSTRAINT purchase_order_line_product_fkey REFERENCES erp.product (id),
    quantity          numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price        numeric(14, 4) NOT NULL CHECK (unit_price >= 0),
    expected_date     date,
    received_quantity numeric(14, 3) NOT NULL DEFAULT 0 CHECK (received_quantity >= 0),
    invoiced_quantity numeric(14, 3) NOT NULL DEFAULT 0 CHECK (invoiced_quantity >= 0),
    grni_open         numeric(14, 2) NOT NULL DEFAULT 0,
    PRIMARY KEY (purchase_order_id, line_no),
    CONSTRAINT purchase_order_line_not_over_received CHECK (received_quantity <= quantity)
);
CREATE INDEX purchase_order_line_product_idx ON erp.purchase_order_line (product_id);

-- held: the three-way match found a difference (reasons per line), nothing posted yet;
-- posted: in accounts payable; paid. A held invoice is posted when an accountant releases it.
CREATE TABLE erp.supplier_invoice (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    supplier_id        bigint NOT NULL REFERENCES erp.supplier (id),
    purchase_order_id  bigint NOT NULL REFERENCES erp.purchase_order (id),
    supplier_reference text NOT NULL CHECK (length(supplier_reference) BETWEEN 1 AND 64),
    invoice_date       date NOT NULL,
    due_date           date NOT NULL,
    status             text NOT NULL CHECK (status IN ('held', 'posted', 'paid')),
    net                numeric(14, 2) NOT NULL CHECK (net >= 0),
    tax                numeric(14, 2) NOT NULL CHECK (tax >= 0),
    gross              numeric(14, 2) NOT NULL CHECK (gross >= 0),
    paid               numeric(14, 2) NOT NULL DEFAULT 0 CHECK (paid >= 0),
    released_by        text,
    release_reason     text,
    version            integer NOT NULL DEFAULT 1,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    posted_at          timestamptz,
    CONSTRAINT supplier_invoice_reference_key UNIQUE (supplier_id, supplier_reference),
    CONSTRAINT supplier_invoice_settlement_check CHECK (paid <= gross),
    CHECK (gross = net + tax)
);
CREATE INDEX supplier_invoice_order_idx ON erp.supplier_invoice (purchase_order_id, id);
CREATE INDEX supplier_invoice_status_idx ON erp.supplier_invoice (status, id);

-- One line per purchase order line invoiced; hold_reason is the match's finding (NULL: matched).
CREATE TABLE erp.supplier_invoice_line (
    invoice_id  bigint NOT NULL REFERENCES erp.supplier_invoice (id),
    line_no     integer NOT NULL,
    quantity    numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price  numeric(14, 4) NOT NULL CHECK (unit_price >= 0),
    tax_rate    numeric(5, 4) NOT NULL CHECK (tax_rate >= 0 AND tax_rate < 1),
    net         numeric(14, 2) NOT NULL,
    tax         numeric(14, 2) NOT NULL,
    hold_reason text,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE TABLE erp.supplier_payment (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id bigint NOT NULL REFERENCES erp.supplier_invoice (id),
    amount     numeric(14, 2) NOT NULL CHECK (amount > 0),
    paid_on    date NOT NULL,
    reference  text,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX supplier_payment_invoice_idx ON erp.supplier_payment (invoice_id);
