-- Sales orders: draft -> confirmed (stock reserved) -> shipped / invoiced; cancelled.
CREATE TABLE erp.sales_order (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id  bigint NOT NULL CONSTRAINT sales_order_customer_fkey REFERENCES erp.customer (id),
    warehouse_id bigint NOT NULL CONSTRAINT sales_order_warehouse_fkey REFERENCES erp.warehouse (id),
    status       text NOT NULL DEFAULT 'draft'
                 CHECK (status IN ('draft', 'confirmed', 'shipped', 'invoiced', 'cancelled')),
    notes        text,
    version      integer NOT NULL DEFAULT 1,
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    confirmed_at timestamptz,
    shipped_at   timestamptz,
    invoiced_at  timestamptz,
    cancelled_at timestamptz
);
CREATE INDEX sales_order_customer_idx ON erp.sales_order (customer_id, id);
CREATE INDEX sales_order_status_idx ON erp.sales_order (status, id);
CREATE INDEX sales_order_created_idx ON erp.sales_order (created_at, id);

CREATE TABLE erp.sales_order_line (
    order_id   bigint NOT NULL REFERENCES erp.sales_order (id) ON DELETE CASCADE,
    line_no    integer NOT NULL CHECK (line_no > 0),
    product_id bigint NOT NULL CONSTRAINT sales_order_line_product_fkey REFERENCES erp.product (id),
    quantity   numeric(14, 3) NOT NULL CHECK (quantity > 0),
    unit_price numeric(14, 4) NOT NULL CHECK (unit_price >= 0),
    tax_rate   numeric(5, 4) NOT NULL CHECK (tax_rate >= 0 AND tax_rate < 1),
    PRIMARY KEY (order_id, line_no)
);
