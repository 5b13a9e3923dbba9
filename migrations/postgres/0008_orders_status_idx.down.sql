-- Reverts 0008_orders_status_idx.sql.
DROP INDEX orders_status_id_idx;
