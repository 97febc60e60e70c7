-- Work orders: production (BOM consumption, planned vs produced) and maintenance (asset,
-- reason, priority, spare parts reserved), both open -> in_progress -> done | cancelled.
CREATE TABLE erp.work_order (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind              text NOT NULL CHECK (kind IN ('production', 'maintenance')),
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'in_progress', 'done', 'cancelled')),
    asset             text NOT NULL CHECK (length(asset) BETWEEN 1 AND 128),
    warehouse_id      bigint NOT NULL CONSTRAINT work_order_warehouse_fkey REFERENCES erp.warehouse (id),
    product_id        bigint CONSTRAINT work_order_product_fkey REFERENCES erp.product (id),
    planned_quantity  numeric(14, 3) CHECK (planned_quantity > 0),
    produced_quantity numeric(14, 3) NOT NULL DEFAULT 0 CHECK (produced_quantity >= 0),
    reason            text,
    priority          text NOT NULL DEFAULT 'normal' CHECK (priority IN ('low', 'normal', 'high', 'urgent')),
    notes             text,
    version           integer NOT NULL DEFAULT 1,
    created_by        text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    CHECK ((kind = 'production') = (product_id IS NOT NULL AND planned_quantity IS NOT NULL)),
    CHECK (kind = 'production' OR reason IS NOT NULL)
);
CREATE INDEX work_order_status_idx ON erp.work_order (status, id);
CREATE INDEX work_order_asset_idx ON erp.work_order (asset, id);

CREATE TABLE erp.work_order_part (
    work_order_id bigint NOT NULL REFERENCES erp.work_order (id),
    product_id    bigint NOT NULL CONSTRAINT work_order_part_product_fkey REFERENCES erp.product (id),
    quantity      numeric(14, 3) NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (work_order_id, product_id)
);
