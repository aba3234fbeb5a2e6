"""Cause-linked alerts: rules over stored detections (density, roll marks, severe single), raised
once into the `alerts` table and published from it to the alerts topic; `steel-worker alerts`.

Public: `config` (the rules file), `stage` (the two calls the worker makes), `command`. The rules,
the engine, the outbox and the store are this package's own.
"""

__all__ = ["command", "config", "stage"]
