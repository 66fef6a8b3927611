-- PSA (professional services automation) on PostgreSQL: delivery's system of record.
-- Surrogate integer keys, PSA-style codes, legal entity as a country-level name.

CREATE TYPE billing_type AS ENUM ('T&M', 'fixed_fee', 'milestone');
CREATE TYPE time_status AS ENUM ('draft', 'submitted', 'approved', 'rejected');

CREATE TABLE clients (
    client_id        integer PRIMARY KEY,
    client_name      text NOT NULL,
    tax_id           text,
    billing_country  char(2) NOT NULL,
    billing_city     text,
    billing_postcode text,
    billing_address  text,
    currency         char(3) NOT NULL,
    legal_entity     text NOT NULL,
    erp_customer_no  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE projects (
    project_id      integer PRIMARY KEY,
    project_code    text NOT NULL UNIQUE,
    project_name    text NOT NULL,
    client_id       integer NOT NULL REFERENCES clients,
    billing_type    billing_type NOT NULL,
    budget_amount   numeric(14,2),
    currency        char(3) NOT NULL,
    legal_entity    text NOT NULL,
    status          text NOT NULL DEFAULT 'active',
    start_date      date NOT NULL,
    end_date        date,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE resources (
    resource_id      integer PRIMARY KEY,
    employee_number  text NOT NULL,
    full_name        text NOT NULL,
    email            text,
    labor_category   text NOT NULL,
    cost_rate        numeric(10,2) NOT NULL,
    bill_rate        numeric(10,2) NOT NULL,
    currency         char(3) NOT NULL,
    legal_entity     text NOT NULL,
    active           boolean NOT NULL DEFAULT true,
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rate_cards (
    rate_card_id    integer PRIMARY KEY,
    project_id      integer NOT NULL REFERENCES projects,
    labor_category  text NOT NULL,
    bill_rate       numeric(10,2) NOT NULL,
    currency        char(3) NOT NULL,
    valid_from      date NOT NULL
);

CREATE TABLE invoices (
    invoice_id      integer PRIMARY KEY,
    invoice_number  text NOT NULL UNIQUE,
    client_id       integer NOT NULL REFERENCES clients,
    project_id      integer NOT NULL REFERENCES projects,
    invoice_date    date NOT NULL,
    period          char(7) NOT NULL,
    currency        char(3) NOT NULL,
    amount          numeric(14,2) NOT NULL,
    status          text NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE time_entries (
    entry_id        bigint PRIMARY KEY,
    resource_id     integer NOT NULL REFERENCES resources,
    project_id      integer NOT NULL REFERENCES projects,
    work_date       date NOT NULL,
    hours           numeric(6,2) NOT NULL,
    bill_rate       numeric(10,2) NOT NULL,
    cost_rate       numeric(10,2) NOT NULL,
    amount          numeric(14,2) NOT NULL,
    cost_amount     numeric(14,2) NOT NULL,
    currency        char(3) NOT NULL,
    billable        boolean NOT NULL DEFAULT true,
    status          time_status NOT NULL,
    approved_at     timestamptz,
    invoice_id      integer REFERENCES invoices,
    notes           text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE expenses (
    expense_id      bigint PRIMARY KEY,
    resource_id     integer NOT NULL REFERENCES resources,
    project_id      integer NOT NULL REFERENCES projects,
    expense_date    date NOT NULL,
    category        text NOT NULL,
    amount          numeric(12,2) NOT NULL,
    currency        char(3) NOT NULL,
    billable        boolean NOT NULL,
    status          text NOT NULL
);

CREATE TABLE milestones (
    milestone_id    integer PRIMARY KEY,
    project_id      integer NOT NULL REFERENCES projects,
    name            text NOT NULL,
    due_date        date NOT NULL,
    amount          numeric(14,2) NOT NULL,
    status          text NOT NULL
);

CREATE INDEX time_entries_project ON time_entries (project_id, work_date);
CREATE INDEX invoices_project ON invoices (project_id, period);

-- Debezium needs whole before-images on update and delete.
ALTER TABLE clients REPLICA IDENTITY FULL;
ALTER TABLE projects REPLICA IDENTITY FULL;
ALTER TABLE resources REPLICA IDENTITY FULL;
ALTER TABLE rate_cards REPLICA IDENTITY FULL;
ALTER TABLE invoices REPLICA IDENTITY FULL;
ALTER TABLE time_entries REPLICA IDENTITY FULL;
ALTER TABLE expenses REPLICA IDENTITY FULL;
ALTER TABLE milestones REPLICA IDENTITY FULL;
