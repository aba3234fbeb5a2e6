"""The web console: what maintenance, analysts and reviewers see in a browser.

Public: `app` (`create_app`, the Starlette application), `users` (accounts, roles, passwords),
`queries` (what the pages read), `actions` (reviews and acknowledgements), `svg` (the pictures),
`explainer` (heat maps by the model that made a detection), `outbox` (the reviews topic),
`reviewed` (the reviewed crops as a tile set for `train`), `command` (`steel-worker console`).
"""

__all__ = ["actions", "app", "command", "explainer", "outbox", "queries", "reviewed", "svg", "users"]
