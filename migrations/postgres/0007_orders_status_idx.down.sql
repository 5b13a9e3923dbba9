-- Reverts 0007_orders_status_idx.sql.
DROP INDEX orders_status_id_idx;
