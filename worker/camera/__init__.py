"""The camera side: the line simulator that publishes frames of simulated strips to the frames
topic (`steel-worker simulate`). A producer only: nothing here consumes.

Public: `simulator`, `command`.
"""

__all__ = ["command", "simulator"]
