--liquibase formatted sql

--changeset ann:1
--comment: customers, with the first three of them
CREATE TABLE customers (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT
);
INSERT INTO customers (id, name, email) VALUES
    (1, 'Ann', 'ann@example.com'),
    (2, 'Bob', 'bob@example.com'),
    (3, 'Cy', NULL);
--rollback DROP TABLE customers;

--changeset ann:2
CREATE TABLE orders (
    id INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL REFERENCES customers (id),
    total_cents INTEGER NOT NULL
);
CREATE INDEX ix_orders_customer ON orders (customer_id);
/* liquibase rollback
DROP INDEX ix_orders_customer;
DROP TABLE orders;
*/

--changeset bob:3 runInTransaction:false
CREATE INDEX ix_customers_email ON customers (email);
--rollback DROP INDEX ix_customers_email;

--changeset bob:4 context:production
--preconditions onFail:MARK_RAN onError:HALT
--precondition-sql-check expectedResult:0 SELECT count(*) FROM orders WHERE total_cents < 0
ALTER TABLE orders ADD COLUMN currency TEXT NOT NULL DEFAULT 'EUR';
--rollback ALTER TABLE orders DROP COLUMN currency;
