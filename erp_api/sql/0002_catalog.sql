-- Products (with an optional bill of materials), customers and warehouses.
CREATE TABLE erp.product (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku           text NOT NULL CONSTRAINT product_sku_key UNIQUE CHECK (sku ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    uom           text NOT NULL CHECK (uom ~ '^[a-z0-9]{1,8}$'),
    price         numeric(14, 4) NOT NULL CHECK (price >= 0),
    cost          numeric(14, 4) NOT NULL DEFAULT 0 CHECK (cost >= 0),
    tax_rate      numeric(5, 4) NOT NULL CHECK (tax_rate >= 0 AND tax_rate < 1),
    reorder_point numeric(14, 3) NOT NULL DEFAULT 0 CHECK (reorder_point >= 0),
    active        boolean NOT NULL DEFAULT true,
    version       integer NOT NULL DEFAULT 1,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX product_name_idx ON erp.product (name, id);

CREATE TABLE erp.bom_line (
    product_id   bigint NOT NULL REFERENCES erp.product (id) ON DELETE CASCADE,
    component_id bigint NOT NULL CONSTRAINT bom_line_component_fkey REFERENCES erp.product (id),
    quantity     numeric(14, 3) NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (product_id, component_id),
    CONSTRAINT bom_line_not_self CHECK (product_id <> component_id)
);

CREATE TABLE erp.customer (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name              text NOT NULL CONSTRAINT customer_name_key UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    email             text,
    tax_id            text,
    address           text,
    payment_terms_days integer NOT NULL DEFAULT 30 CHECK (payment_terms_days BETWEEN 0 AND 365),
    version           integer NOT NULL DEFAULT 1,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erp.warehouse (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code       text NOT NULL CONSTRAINT warehouse_code_key UNIQUE CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$'),
    name       text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    version    integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
