-- Stock per product and warehouse, and the append-only movement ledger that explains it.
-- The CHECKs are the last line of defence: stock never goes negative and never reserves
-- more than is on hand, whatever the application does.
CREATE TABLE erp.stock (
    id           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    product_id   bigint NOT NULL REFERENCES erp.product (id),
    warehouse_id bigint NOT NULL REFERENCES erp.warehouse (id),
    on_hand      numeric(14, 3) NOT NULL DEFAULT 0 CONSTRAINT stock_on_hand_check CHECK (on_hand >= 0),
    reserved     numeric(14, 3) NOT NULL DEFAULT 0 CONSTRAINT stock_reserved_check CHECK (reserved >= 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (product_id, warehouse_id),
    CONSTRAINT stock_available_check CHECK (reserved <= on_hand)
);
CREATE INDEX stock_warehouse_idx ON erp.stock (warehouse_id, product_id);

CREATE TABLE erp.stock_movement (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL CHECK (kind IN ('receipt', 'issue', 'adjustment', 'transfer', 'reservation', 'release')),
    product_id     bigint NOT NULL REFERENCES erp.product (id),
    warehouse_id   bigint NOT NULL REFERENCES erp.warehouse (id),
    on_hand_delta  numeric(14, 3) NOT NULL DEFAULT 0,
    reserved_delta numeric(14, 3) NOT NULL DEFAULT 0,
    reference_type text,
    reference_id   bigint,
    note           text,
    actor          text NOT NULL,
    CHECK (on_hand_delta <> 0 OR reserved_delta <> 0)
);
CREATE INDEX stock_movement_stock_idx ON erp.stock_movement (product_id, warehouse_id, id);
CREATE INDEX stock_movement_reference_idx ON erp.stock_movement (reference_type, reference_id);
CREATE TRIGGER stock_movement_append_only BEFORE UPDATE OR DELETE ON erp.stock_movement
    FOR EACH ROW EXECUTE FUNCTION erp.forbid_change();
