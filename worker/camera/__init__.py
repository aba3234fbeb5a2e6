"""The camera side: the line simulator that publishes frames of simulated strips to the frames
topic (`steel-worker simulate`). A producer only: nothing here consumes.

Public, data flowing one way: `plan` (what to simulate, checked when made) → `frames` (a plan's
frames and their ground truth) → `send` (publishing them, pacing, the summary); `command`.
"""

__all__ = ["command", "frames", "plan", "send"]
