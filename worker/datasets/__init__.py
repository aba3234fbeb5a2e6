"""Importers that turn labelled images into tile sets, and the synthetic frame generator.

Public: `labelled` (labelled tiles, tile labels from masks, reading images, writing a tile set),
`synthetic`, `severstal`, `folders`, `voc` (the importers), `command` (`steel-worker dataset`).
"""

__all__ = ["command", "folders", "labelled", "severstal", "synthetic", "voc"]
