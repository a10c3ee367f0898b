//! SQL text helpers shared by the PostgreSQL and MySQL parsers: literal redaction, operation
//! and table extraction.
