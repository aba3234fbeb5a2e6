"""Cause-linked alerts: rules over stored detections (density, roll marks, severe single), raised
once into the `alerts` table and published from it to the alerts topic; `steel-worker alerts`.

Public: `config` (the rules file), `stage` (the two calls the worker makes), `store` (reading and
acknowledging alerts: the command and the console), `rules` (the rules as pure functions over a
strip's detections: also for scripts that measure them), `camera` (camera alerts from runs of
frames failing the image-quality gate: the worker's step `camera-health`), `command`. The engine
and the outbox are this package's own.
"""

__all__ = ["camera", "command", "config", "rules", "stage", "store"]
