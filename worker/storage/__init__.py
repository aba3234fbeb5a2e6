"""The defect database: schema (tables), migrations helpers, the writer, the schema check."""
