"""Cause-linked alerts: rules over stored detections (density, roll marks, severe single), raised
once into the `alerts` table and published from it to the alerts topic; `steel-worker alerts`."""
