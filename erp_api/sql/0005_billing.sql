-- Invoices and credit notes with gapless numbers per series and year, payments, and the
-- double-entry journal. A deferred constraint trigger refuses, at commit, any journal
-- entry whose debits and credits differ: an unbalanced posting cannot be stored.
CREATE TABLE erp.account (
    code text PRIMARY KEY,
    name text NOT NULL,
    type text NOT NULL CHECK (type IN ('asset', 'liability', 'equity', 'revenue', 'expense'))
);
INSERT INTO erp.account (code, name, type) VALUES
    ('1000', 'Cash', 'asset'),
    ('1100', 'Accounts receivable', 'asset'),
    ('1200', 'Inventory', 'asset'),
    ('2000', 'Goods received, not invoiced', 'liability'),
    ('2100', 'Tax payable', 'liability'),
    ('4000', 'Revenue', 'revenue'),
    ('5000', 'Cost of goods sold', 'expense'),
    ('5100', 'Inventory adjustments', 'expense'),
    ('5200', 'Production variance', 'expense'),
    ('5300', 'Maintenance spare parts', 'expense');

CREATE TABLE erp.journal_entry (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    posted_at      timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL,
    memo           text NOT NULL,
    reference_type text,
    reference_id   bigint
);
CREATE INDEX journal_entry_reference_idx ON erp.journal_entry (reference_type, reference_id);

CREATE TABLE erp.journal_line (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    entry_id     bigint NOT NULL REFERENCES erp.journal_entry (id),
    account_code text NOT NULL REFERENCES erp.account (code),
    debit        numeric(14, 2) NOT NULL DEFAULT 0 CHECK (debit >= 0),
    credit       numeric(14, 2) NOT NULL DEFAULT 0 CHECK (credit >= 0),
    CHECK ((debit > 0 AND credit = 0) OR (credit > 0 AND debit = 0))
);
CREATE INDEX journal_line_entry_idx ON erp.journal_line (entry_id);
CREATE INDEX journal_line_account_idx ON erp.journal_line (account_code);

CREATE FUNCTION erp.journal_entry_balances() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total_debit numeric;
    total_credit numeric;
    lines integer;
BEGIN
    SELECT coalesce(sum(debit), 0), coalesce(sum(credit), 0), count(*)
      INTO total_debit, total_credit, lines
      FROM erp.journal_line WHERE entry_id = NEW.entry_id;
    IF total_debit <> total_credit OR lines < 2 THEN
        RAISE EXCEPTION 'journal entry % does not balance: debit %, credit %, % lines',
            NEW.entry_id, total_debit, total_credit, lines USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER journal_entry_balances AFTER INSERT ON erp.journal_line
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION erp.journal_entry_balances();
CREATE TRIGGER journal_line_append_only BEFORE UPDATE OR DELETE ON erp.journal_line
    FOR EACH ROW EXECUTE FUNCTION erp.forbid_change();
CREATE TRIGGER journal_entry_append_only BEFORE UPDATE OR DELETE ON erp.journal_entry
    FOR EACH ROW EXECUTE FUNCTION erp.forbid_change();

-- Gapless numbering: the counter row is updated inside the invoice's transaction, so a
-- rolled-back invoice gives its number back and concurrent invoices queue on the row.
CREATE TABLE erp.document_sequence (
    series text NOT NULL,
    year   integer NOT NULL,
    last   integer NOT NULL,
    PRIMARY KEY (series, year)
);

CREATE TABLE erp.invoice (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('invoice', 'credit_note')),
    number              text NOT NULL CONSTRAINT invoice_number_key UNIQUE,
    year                integer NOT NULL,
    seq                 integer NOT NULL,
    order_id            bigint REFERENCES erp.sales_order (id),
    credited_invoice_id bigint REFERENCES erp.invoice (id),
    customer_id         bigint NOT NULL REFERENCES erp.customer (id),
    issue_date          date NOT NULL,
    due_date            date NOT NULL,
    net                 numeric(14, 2) NOT NULL CHECK (net >= 0),
    tax                 numeric(14, 2) NOT NULL CHECK (tax >= 0),
    gross               numeric(14, 2) NOT NULL CHECK (gross >= 0),
    paid                numeric(14, 2) NOT NULL DEFAULT 0 CHECK (paid >= 0),
    credited            numeric(14, 2) NOT NULL DEFAULT 0 CHECK (credited >= 0),
    reason              text,
    version             integer NOT NULL DEFAULT 1,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (kind, year, seq),
    CONSTRAINT invoice_one_per_order UNIQUE (order_id),
    CONSTRAINT invoice_settlement_check CHECK (paid + credited <= gross),
    CHECK (gross = net + tax),
    CHECK ((kind = 'invoice') = (credited_invoice_id IS NULL))
);
CREATE INDEX invoice_customer_idx ON erp.invoice (customer_id, id);
CREATE INDEX invoice_due_idx ON erp.invoice (due_date) WHERE kind = 'invoice';

CREATE TABLE erp.invoice_line (
    invoice_id  bigint NOT NULL REFERENCES erp.invoice (id),
    line_no     integer NOT NULL,
    product_id  bigint NOT NULL REFERENCES erp.product (id),
    description text NOT NULL,
    quantity    numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price  numeric(14, 4) NOT NULL,
    net         numeric(14, 2) NOT NULL,
    tax_rate    numeric(5, 4) NOT NULL,
    tax         numeric(14, 2) NOT NULL,
    PRIMARY KEY (invoice_id, line_no)
);

CREATE TABLE erp.payment (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    invoice_id  bigint NOT NULL REFERENCES erp.invoice (id),
    amount      numeric(14, 2) NOT NULL CHECK (amount > 0),
    received_on date NOT NULL,
    method      text NOT NULL,
    reference   text,
    created_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_invoice_idx ON erp.payment (invoice_id);
