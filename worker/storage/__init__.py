"""The defect database: schema (tables), migrations helpers, the writer, the schema check.

Public: `engine`, `tables`, `migrate`, `schema_check`, `writer`, `roles`, `command`.
"""

__all__ = ["command", "engine", "migrate", "roles", "schema_check", "tables", "writer"]
