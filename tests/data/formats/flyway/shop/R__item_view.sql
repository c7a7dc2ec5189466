DROP VIEW IF EXISTS item_prices;
CREATE VIEW item_prices AS SELECT sku, price FROM items;
