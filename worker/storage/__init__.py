"""The defect database: schema (tables), migrations helpers, the writer, the schema check, the
evidence crops' month partitions, strip passes (which pass of its strip a frame shows; the strips'
lock rows).

Public: `engine`, `tables`, `migrate`, `schema_check`, `writer`, `roles`, `partitions`, `passes`,
`command`.
"""

__all__ = [
    "command",
    "engine",
    "migrate",
    "partitions",
    "passes",
    "roles",
    "schema_check",
    "tables",
    "writer",
]
