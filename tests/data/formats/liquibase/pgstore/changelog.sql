--liquibase formatted sql

--changeset ann:1
--comment: customers, with the first three of them
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text);
INSERT INTO customers (name, email) VALUES
    ('Ann', 'ann@example.com'), ('Bob', 'bob@example.com'), ('Cy', NULL);
--rollback DROP TABLE customers;

--changeset ann:2
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id),
    total_cents integer NOT NULL
);
/* liquibase rollback
DROP TABLE orders;
*/

--changeset bob:3
ALTER TABLE customers DROP COLUMN email;
--rollback ALTER TABLE customers ADD COLUMN email text;

--changeset bob:4 runInTransaction:false
CREATE INDEX CONCURRENTLY ix_orders_customer ON orders (customer_id);
--rollback DROP INDEX CONCURRENTLY ix_orders_customer;
