"""Grad-CAM heat maps for the console, by the model version that made the detection.

`Explainer(models_dir)` finds the model artefacts in `models_dir` (the folder itself, or its
sub-folders, each with a model.json) and, on demand, loads the one whose version made the crop's
detections (at most `MAX_LOADED` kept in memory, loads serialised) to paint the class's heat map
over the crop (`worker.model.explain`). A crop whose model is not there gets a LookupError that says
so: a heat map by another model would explain something the detection never saw.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from worker.core.evidence import decode
from worker.model.artefact import META_FILE, load_classifier, read_model_meta
from worker.model.explain import heat_map_png

MAX_LOADED = 2


class Explainer:
    def __init__(self, models_dir: Path | None) -> None:
        self.models_dir = models_dir
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def versions(self) -> dict[str, Path]:
        """Model version → artefact folder, for every artefact in `models_dir` (read each time: a
        model added while the console runs is found)."""
        if self.models_dir is None or not self.models_dir.is_dir():
            return {}
        folders = (
            [self.models_dir]
            if (self.models_dir / META_FILE).is_file()
            else sorted(self.models_dir.iterdir())
        )
        found = {}
        for folder in folders:
            if (folder / META_FILE).is_file():
                try:
                    found[str(read_model_meta(folder)["version"])] = folder
                except Exception:  # a broken artefact is not one to explain with
                    continue
        return found

    def heat_map_png(self, version: str, crop: bytes, class_name: str) -> bytes:
        """The crop with `class_name`'s heat map by model `version` painted over it, as PNG bytes.
        LookupError when that model is not available; ModelError for a class it does not have."""
        if self.models_dir is None:
            raise LookupError(
                "heat maps need the models: start the console with --models DIR (CONSOLE_MODELS_DIR)"
            )
        with self._lock:  # one load and one forward pass at a time: the model is not free to share
            return heat_map_png(self._classifier(version), decode(crop), class_name)

    def _classifier(self, version: str) -> Any:
        if version in self._loaded:
            self._loaded.move_to_end(version)
            return self._loaded[version]
        folder = self.versions().get(version)
        if folder is None:
            raise LookupError(
                f"model version {version[:12]} (the one that made this detection) is not among the"
                f" artefacts in {self.models_dir}"
            )
        self._loaded[version] = load_classifier(folder)
        while len(self._loaded) > MAX_LOADED:
            self._loaded.popitem(last=False)
        return self._loaded[version]
