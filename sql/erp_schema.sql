-- Legacy ERP on MariaDB: finance's system of record.
-- Character keys in ERP formats, company codes as legal entities, fiscal periods as 'YYYY-MM'.

CREATE TABLE company_codes (
    company_code   CHAR(4) NOT NULL PRIMARY KEY,
    name           VARCHAR(120) NOT NULL,
    country        CHAR(2) NOT NULL,
    currency       CHAR(3) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE customers (
    cust_no        VARCHAR(10) NOT NULL PRIMARY KEY,
    company_code   CHAR(4) NOT NULL,
    name           VARCHAR(200) NOT NULL,
    vat_no         VARCHAR(32) NULL,
    country        CHAR(2) NOT NULL,
    city           VARCHAR(80) NULL,
    postcode       VARCHAR(16) NULL,
    street         VARCHAR(160) NULL,
    payment_terms  VARCHAR(8) NOT NULL,
    currency       CHAR(3) NOT NULL,
    created_at     DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at     DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;

CREATE TABLE projects (
    proj_no        VARCHAR(12) NOT NULL PRIMARY KEY,
    cust_no        VARCHAR(10) NOT NULL,
    company_code   CHAR(4) NOT NULL,
    description    VARCHAR(200) NOT NULL,
    currency       CHAR(3) NOT NULL,
    status         CHAR(1) NOT NULL DEFAULT 'A',
    start_date     DATE NOT NULL,
    updated_at     DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;

CREATE TABLE employees (
    emp_no         VARCHAR(10) NOT NULL PRIMARY KEY,
    first_name     VARCHAR(60) NOT NULL,
    last_name      VARCHAR(60) NOT NULL,
    email          VARCHAR(120) NULL,
    company_code   CHAR(4) NOT NULL,
    cost_center    VARCHAR(10) NOT NULL,
    hire_date      DATE NULL,
    updated_at     DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;

CREATE TABLE labor_postings (
    posting_id     BIGINT NOT NULL PRIMARY KEY,
    psa_entry_ref  BIGINT NULL COMMENT 'PSA time entry id: the idempotency key of the interface',
    proj_no        VARCHAR(12) NOT NULL,
    emp_no         VARCHAR(10) NOT NULL,
    company_code   CHAR(4) NOT NULL,
    work_date      DATE NOT NULL,
    fiscal_period  CHAR(7) NOT NULL,
    hours          DECIMAL(8,2) NOT NULL,
    rate           DECIMAL(10,2) NOT NULL,
    amount         DECIMAL(14,2) NOT NULL,
    cost_amount    DECIMAL(14,2) NOT NULL,
    currency       CHAR(3) NOT NULL,
    posted_at      DATETIME(6) NOT NULL,
    KEY labor_postings_ref (psa_entry_ref),
    KEY labor_postings_proj (proj_no, fiscal_period)
) ENGINE=InnoDB;

CREATE TABLE ar_invoices (
    invoice_no       VARCHAR(12) NOT NULL PRIMARY KEY,
    psa_invoice_ref  VARCHAR(20) NULL,
    cust_no          VARCHAR(10) NOT NULL,
    proj_no          VARCHAR(12) NOT NULL,
    company_code     CHAR(4) NOT NULL,
    invoice_date     DATE NOT NULL,
    due_date         DATE NOT NULL,
    fiscal_period    CHAR(7) NOT NULL,
    currency         CHAR(3) NOT NULL,
    net_amount       DECIMAL(14,2) NOT NULL,
    tax_amount       DECIMAL(14,2) NOT NULL,
    gross_amount     DECIMAL(14,2) NOT NULL,
    status           VARCHAR(16) NOT NULL,
    updated_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    KEY ar_invoices_ref (psa_invoice_ref)
) ENGINE=InnoDB;

CREATE TABLE ar_invoice_lines (
    invoice_no     VARCHAR(12) NOT NULL,
    line_no        INT NOT NULL,
    description    VARCHAR(200) NOT NULL,
    quantity       DECIMAL(10,2) NOT NULL,
    unit_price     DECIMAL(12,2) NOT NULL,
    amount         DECIMAL(14,2) NOT NULL,
    PRIMARY KEY (invoice_no, line_no)
) ENGINE=InnoDB;

CREATE TABLE payments (
    payment_id     BIGINT NOT NULL PRIMARY KEY,
    invoice_no     VARCHAR(12) NOT NULL,
    cust_no        VARCHAR(10) NOT NULL,
    payment_date   DATE NOT NULL,
    amount         DECIMAL(14,2) NOT NULL,
    currency       CHAR(3) NOT NULL,
    KEY payments_invoice (invoice_no)
) ENGINE=InnoDB;

CREATE TABLE credit_memos (
    memo_no        VARCHAR(12) NOT NULL PRIMARY KEY,
    invoice_no     VARCHAR(12) NOT NULL,
    cust_no        VARCHAR(10) NOT NULL,
    memo_date      DATE NOT NULL,
    amount         DECIMAL(14,2) NOT NULL,
    currency       CHAR(3) NOT NULL,
    reason         VARCHAR(120) NOT NULL
) ENGINE=InnoDB;

CREATE TABLE gl_entries (
    entry_id       BIGINT NOT NULL PRIMARY KEY,
    company_code   CHAR(4) NOT NULL,
    account        CHAR(6) NOT NULL COMMENT '400000 revenue, 500000 labor cost',
    proj_no        VARCHAR(12) NULL,
    fiscal_period  CHAR(7) NOT NULL,
    posting_date   DATE NOT NULL,
    amount         DECIMAL(14,2) NOT NULL,
    currency       CHAR(3) NOT NULL,
    doc_type       CHAR(2) NOT NULL,
    doc_ref        VARCHAR(20) NULL,
    KEY gl_proj (proj_no, fiscal_period)
) ENGINE=InnoDB;

CREATE TABLE fx_rates (
    rate_date      DATE NOT NULL,
    from_ccy       CHAR(3) NOT NULL,
    to_ccy         CHAR(3) NOT NULL,
    rate           DECIMAL(18,8) NOT NULL,
    PRIMARY KEY (rate_date, from_ccy, to_ccy)
) ENGINE=InnoDB;
