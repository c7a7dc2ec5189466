CREATE UNIQUE INDEX items_sku ON items (sku);
