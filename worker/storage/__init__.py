"""The defect database: schema (tables), migrations helpers, the writer, the schema check, the
evidence crops' month partitions.

Public: `engine`, `tables`, `migrate`, `schema_check`, `writer`, `roles`, `partitions`, `command`.
"""

__all__ = ["command", "engine", "migrate", "partitions", "roles", "schema_check", "tables", "writer"]
