"""The kernel: what every other package shares, importing nothing of the project above it.

`errors` (every exception the project raises on purpose), `catalogue` (defect classes, causes,
actions), `tiling` (the one tiling rule), `tileset` (the tile-set format), `records` (the frozen
records the pipeline passes on), `contracts` (the message schemas), `refusals` (why a message is
refused, and `shown()`), `failures` (what a failure means: retry, wait for people, set aside),
`thresholds` (per-class decision thresholds, one shape from the artefact to the row), `evidence`
(the crops kept with detections: sampling, encoding, decoding), `clients`
(the Kafka consumer and producer as Protocols), `resources` (the schemas, migrations and rules
shipped in the package), `native_logs` (TensorFlow's native start-up lines kept off the terminal),
`quality` (the image-quality checks by name), `yaml_files` (reading a settings file). All public.
"""

__all__ = [
    "catalogue",
    "clients",
    "contracts",
    "errors",
    "evidence",
    "failures",
    "native_logs",
    "quality",
    "records",
    "refusals",
    "resources",
    "thresholds",
    "tileset",
    "tiling",
    "yaml_files",
]
