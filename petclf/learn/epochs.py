"""A fastai callback base for work done once per epoch that really ran."""
from __future__ import annotations

from fastai.callback.core import Callback

__all__ = ["CompletedEpochCallback"]


class CompletedEpochCallback(Callback):
    """Calls ``after_completed_epoch`` after each epoch that trained and validated.

    fastai still calls ``after_epoch`` for the epochs ``fit(start_epoch=…)`` skips on resume
    (after ``after_cancel_epoch``); those are not passed on.
    """

    _cancelled = False

    def before_epoch(self) -> None:
        self._cancelled = False

    def after_cancel_epoch(self) -> None:
        self._cancelled = True

    def after_epoch(self) -> None:
        if not self._cancelled:
            self.after_completed_epoch()

    def after_completed_epoch(self) -> None:
        raise NotImplementedError

    def epoch_values(self) -> dict[str, float]:
        """This epoch's figures from fastai's Recorder: losses, then the metrics, by name."""
        names = list(self.learn.recorder.metric_names[1:-1])  # without 'epoch' and 'time'
        return {name: float(value) for name, value in zip(names, self.learn.recorder.values[-1])}
