"""Training's one progress bar: a bar over every step of the run and one line per finished epoch."""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout

from worker.model.progress import epoch_line, make_progress_callback


def test_epoch_line_shows_the_epoch_and_the_metrics_keras_reported_in_a_fixed_order() -> None:
    logs = {"val_auc": 0.91, "loss": 0.25, "tp": 3.0, "val_loss": 0.5, "auc": 0.875}
    assert epoch_line(2, 8, logs) == "epoch 3/8: loss 0.2500, auc 0.8750, val_loss 0.5000, val_auc 0.9100"
    assert epoch_line(0, 1, None) == "epoch 1/1: "


def test_the_bar_counts_every_step_of_the_remaining_epochs_and_writes_epoch_lines() -> None:
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        bar = make_progress_callback(steps_per_epoch=4, epochs=3, initial_epoch=1)
        bar.on_train_begin()
        for epoch in (1, 2):
            bar.on_epoch_begin(epoch)
            for step in range(4):
                bar.on_train_batch_end(step, {"loss": 0.5})
            bar.on_test_begin()
            bar.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.75})
        assert bar.bar.n == bar.bar.total == 8  # resumed at epoch 1: two epochs of four steps
        bar.on_train_end()
    lines = out.getvalue().splitlines()  # the epoch lines: on stdout, above the bar
    assert lines == ["epoch 2/3: loss 0.5000, val_loss 0.7500", "epoch 3/3: loss 0.5000, val_loss 0.7500"]
    assert "8/8" in err.getvalue()  # the bar: on stderr
