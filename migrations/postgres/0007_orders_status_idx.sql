-- GET /api/v1/trading/orders?status=… without a symbol: an index leading with
-- status, so that the few working orders are found without reading the whole
-- order history (orders_symbol_status_idx serves status with a symbol).
CREATE INDEX orders_status_id_idx ON orders (status, id);
