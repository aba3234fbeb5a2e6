"""The image-quality checks by name: the flags a frame carries in `frames.quality_flags`, the
`check` label of `steel_worker_frame_quality_flags_total`, and the words of IMAGE_QUALITY_CHECKS and
IMAGE_QUALITY_REFUSE. The checks themselves are `worker.streaming.image_quality`.

`IMAGE_CHECKS` judge the pixels: a frame flagged by one of them shows the camera, not the steel,
and the alert rules do not count its detections (`worker.alerts.engine`). `CLOCK_SKEW` judges the
metadata (captured_at against the broker's timestamp): the pixels are fine, and its detections
count.
"""

from __future__ import annotations

DARK = "dark"  # mean grey level under the camera's min_mean
BRIGHT = "bright"  # mean over max_mean
FLAT = "flat"  # spread (standard deviation) under min_std: black, white, a dead lamp, a covered lens
CLIPPED = "clipped"  # share of pixels at 0 or at full scale over max_clipped_share
BIT_DEPTH = "bit-depth"  # bits the samples use do not match the camera's bit_depth
CLOCK_SKEW = "clock-skew"  # captured_at further than CLOCK_SKEW_MAX_S from the broker's timestamp

IMAGE_CHECKS = (DARK, BRIGHT, FLAT, CLIPPED, BIT_DEPTH)
CHECKS = (*IMAGE_CHECKS, CLOCK_SKEW)


def parse_checks(text: str) -> frozenset[str]:
    """`all`, `none`, or check names separated by commas (`flat,bit-depth`); ValueError otherwise."""
    value = text.strip().lower()
    if value == "all":
        return frozenset(CHECKS)
    if value in ("none", ""):
        return frozenset()
    names = [part.strip() for part in value.split(",") if part.strip()]
    if any(n not in CHECKS for n in names):
        raise ValueError(f"expected all, none or some of {','.join(CHECKS)}, received {text!r}")
    return frozenset(names)
