"""Reports for analysts from the defect database: a strip's defect map and tables, a period's class
counts and top causes (`steel-worker report`).

Public: `queries` (what reports read), `strip`, `period`, `command`.
"""

__all__ = ["command", "period", "queries", "strip"]
