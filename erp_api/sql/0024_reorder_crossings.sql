-- Stock crossing its reorder point, whatever moved it: a sales order's reservation, a
-- maintenance order's spare parts, production consuming components, a back-order filled.
-- Inventory commands already carry the stock levels in their events; the rest did not, so
-- the alert bridge learned of a reservation that took stock below its reorder point only at
-- the next stock movement. Every change of a stock row that moves its available quantity
-- (on hand - reserved) across the product's reorder point, either way, now emits
-- `stock.reorder_crossed` with that level, in the same transaction. A receipt or adjustment
-- that crosses it sends both its own event and this one; both say the same.
CREATE FUNCTION erp.stock_reorder_crossed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    point numeric;
    was_below boolean;
BEGIN
    SELECT reorder_point INTO point FROM erp.product WHERE id = NEW.product_id;
    was_below := CASE WHEN TG_OP = 'INSERT' THEN 0 < point ELSE OLD.on_hand - OLD.reserved < point END;
    IF was_below IS DISTINCT FROM (NEW.on_hand - NEW.reserved < point) THEN
        PERFORM erp.emit('stock', NEW.id, 'stock.reorder_crossed',
                         json_build_object('stock', json_build_array(
                             erp.stock_level_doc(NEW.product_id, NEW.warehouse_id))));
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER stock_reorder_crossed AFTER INSERT OR UPDATE OF on_hand, reserved ON erp.stock
    FOR EACH ROW EXECUTE FUNCTION erp.stock_reorder_crossed();
