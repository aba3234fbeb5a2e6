"""One progress bar for a whole training run, instead of Keras' line of metrics per step.

On a terminal `train` shows a single tqdm bar over every step of the run (all epochs), with the
epoch, the running loss and, after each epoch, the validation loss and AUC beside it; each
finished epoch also leaves one summary line above the bar, so the history stays on screen. Off a
terminal (logs, CI) training keeps Keras' one line per epoch and this bar is not used.
"""

from __future__ import annotations

from typing import Any

#: Metrics shown after each epoch, in this order, when Keras reports them.
EPOCH_METRICS = ("loss", "auc", "val_loss", "val_auc")


def epoch_line(epoch: int, epochs: int, logs: dict[str, Any] | None) -> str:
    """`epoch 3/8: loss 0.1234, auc 0.9876, val_loss …` from the logs Keras passes at an epoch's end."""
    logs = logs or {}
    shown = [f"{name} {float(logs[name]):.4f}" for name in EPOCH_METRICS if name in logs]
    return f"epoch {epoch + 1}/{epochs}: " + ", ".join(shown)


def make_progress_callback(*, steps_per_epoch: int, epochs: int, initial_epoch: int) -> Any:
    """A Keras callback drawing the run's one progress bar (steps of the epochs still to run)."""
    import keras  # noqa: PLC0415
    from tqdm import tqdm  # noqa: PLC0415

    class RunProgress(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.bar: Any = None
            self.epoch = initial_epoch

        def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
            total = max(0, epochs - initial_epoch) * steps_per_epoch
            self.bar = tqdm(total=total, desc="training", unit="step", dynamic_ncols=True, leave=True)

        def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
            self.bar.update(1)
            if logs and "loss" in logs and batch % 5 == 0:
                self.bar.set_postfix_str(f"epoch {self.epoch + 1}/{epochs}, loss {float(logs['loss']):.4f}")

        def on_test_begin(self, logs: dict[str, Any] | None = None) -> None:
            self.bar.set_postfix_str(f"epoch {self.epoch + 1}/{epochs}, validating")

        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            self.bar.write(epoch_line(epoch, epochs, logs))

        def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
            if self.bar is not None:
                self.bar.close()

    return RunProgress()
