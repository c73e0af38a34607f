"""What a model is judged on, per task: binary, multiclass, regression. Pure: arrays in, numbers out.

The daily flow judges a model in three places: the quality trigger (how much worse the champion does on the
day's labels than on its holdout, beyond the day's noise), the promotion gate (a paired bootstrap of the
challenger's gain on the same holdout rows, with guardrails) and the reports. Each needs, per task, the
metrics, which one is primary and in which direction it improves, its sampling noise on a batch, and the
paired bootstrap of its difference. This module declares them once:

    task        primary (direction)     guardrail          also reported
    binary      roc_auc (higher)        log_loss           accuracy, f1, brier, positive_rate
    multiclass  macro_f1 (higher)       log_loss           accuracy, per-class rate
    regression  rmse (lower)            mae                r2, mean prediction, mean label

`y` is what `ml.data.model_frame` gives: 0/1 (binary), the class's position in `classes` (multiclass, -1 for
a value not among them: `encode`), the value (regression). `pred` is what the model gives per row: the
positive class's probability (binary), a probability per class in `classes` order (multiclass, an n x k
array), the predicted value (regression). On disk (`to_frame`/`from_frame`) a prediction is the `score`
column (multiclass: the predicted class, and its probabilities in `p_0`..`p_{k-1}`).

The binary figures are ml/evaluate.py's own (`test_objective.py` pins it), so a binary dataset's decisions
do not depend on this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

TASKS = ("binary", "multiclass", "regression")
LABELS = {"roc_auc": "AUC", "macro_f1": "macro F1", "rmse": "RMSE"}


@dataclass(frozen=True)
class Objective:
    task: str
    classes: tuple[Any, ...] = ()  # multiclass: the label values, in the order of the probability columns

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task: expected one of {' | '.join(TASKS)}. Got {self.task!r}.")
        if self.task == "multiclass" and len(self.classes) < 3:
            raise ValueError(
                f"task multiclass: expected 3 classes or more (2 is a binary task). Got {list(self.classes)}."
            )

    @property
    def primary(self) -> str:
        return {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[self.task]

    @property
    def guardrail(self) -> str:
        return "mae" if self.task == "regression" else "log_loss"

    def guardrail_change(self, base: dict[str, Any], new: dict[str, Any]) -> float:
        """How much worse `new` is than `base` on the guardrail, from their `metrics` (positive: worse): the
        log loss's increase, or for MAE the relative increase (as `thresholds.mae_tolerance` reads)."""
        if self.task == "regression":
            before = float(base["mae"] or 0.0)
            return (float(new["mae"] or 0.0) - before) / before if before > 0 else 0.0
        return float(new["log_loss"] or 0.0) - float(base["log_loss"] or 0.0)

    @property
    def higher_is_better(self) -> bool:
        return self.task != "regression"

    @property
    def label(self) -> str:
        """How reports and plots name the primary metric."""
        return LABELS[self.primary]

    def encode(self, labels: Any) -> Any:
        """Multiclass labels as positions in `classes` (-1: not among them)."""
        import numpy as np

        return _index(np.asarray(labels, dtype=object), self.classes)

    def decode(self, positions: Any) -> Any:
        """Positions in `classes` as the class values."""
        import numpy as np

        return np.asarray(self.classes, dtype=object)[np.asarray(positions, dtype="int64")]

    def to_frame(self, pred: Any) -> Any:
        """Predictions as stored beside a batch and with a model version: `score` (+ `p_i` for multiclass)."""
        import numpy as np
        import pandas as pd

        pred = np.asarray(pred)
        if self.task != "multiclass":
            return pd.DataFrame({"score": pred.astype("float64")})
        frame = pd.DataFrame({"score": self.decode(pred.argmax(axis=1)).astype(str)})
        for i in range(len(self.classes)):
            frame[f"p_{i}"] = pred[:, i].astype("float64")
        return frame

    def from_frame(self, frame: Any) -> Any:
        """`to_frame`'s inverse."""
        import numpy as np

        if self.task != "multiclass":
            return frame["score"].to_numpy(dtype="float64")
        return np.column_stack([frame[f"p_{i}"].to_numpy(dtype="float64") for i in range(len(self.classes))])

    def output(self, pred: Any) -> Any:
        """One value per row, what prediction drift compares: the score, or the predicted class."""
        import numpy as np

        pred = np.asarray(pred)
        return self.decode(pred.argmax(axis=1)).astype(str) if self.task == "multiclass" else pred

    def metrics(self, y: Any, pred: Any) -> dict[str, float | None]:
        """Every metric of the task on labelled rows (`y` the labels, `pred` as in the module doc)."""
        import numpy as np

        if self.task == "binary":
            from ml.evaluate import classification_metrics

            return classification_metrics(np.asarray(y), np.asarray(pred))
        if self.task == "multiclass":
            return _multiclass(np.asarray(y), np.asarray(pred, dtype="float64"), self.classes)
        return _regression(np.asarray(y, dtype="float64"), np.asarray(pred, dtype="float64"))

    def value(self, y: Any, pred: Any) -> float | None:
        """The primary metric (None when it cannot be computed: a one-class binary batch)."""
        import numpy as np

        if self.task == "binary":
            from ml.evaluate import auc

            return auc(np.asarray(y).astype(int), np.asarray(pred, dtype="float64"))
        if self.task == "multiclass":
            return _macro_f1(np.asarray(y, dtype="int64"), np.asarray(pred).argmax(axis=1), len(self.classes))
        y, pred = np.asarray(y, dtype="float64"), np.asarray(pred, dtype="float64")
        return float(np.sqrt(np.mean((y - pred) ** 2))) if len(y) else None

    def gain(self, base: float, new: float) -> float:
        """How much better `new` is than `base` on the primary metric (positive: better)."""
        return new - base if self.higher_is_better else base - new

    def drop(self, reference: float, batch: float) -> float:
        """How much worse a batch is than the reference (the quality trigger; positive: worse). For RMSE a
        relative change (0.10: 10% larger errors), so `thresholds.quality_drop` reads alike across units."""
        if self.task == "regression":
            # relative; a perfect reference (RMSE 0) has no scale: the absolute increase then
            return (batch - reference) / reference if reference > 0 else batch - reference
        return reference - batch

    def paired_bootstrap(
        self,
        y: Any,
        base: Any,
        new: Any,
        *,
        resamples: int = 1000,
        confidence: float = 0.95,
        seed: int = 0,
    ) -> dict[str, float]:
        """Confidence interval of the gain of `new` over `base` (both scored on each resample of the rows).
        Binary: ml.evaluate.paired_bootstrap_auc itself (the promotion gate's numbers, unchanged)."""
        import numpy as np

        if self.task == "binary":
            from ml.evaluate import paired_bootstrap_auc

            return paired_bootstrap_auc(
                np.asarray(y),
                np.asarray(base),
                np.asarray(new),
                resamples=resamples,
                confidence=confidence,
                seed=seed,
            )
        y, base, new = np.asarray(y), np.asarray(base), np.asarray(new)
        delta = self.gain(self._value(y, base), self._value(y, new))
        rng = np.random.default_rng(seed)
        n = len(y)
        diffs = np.empty(resamples)
        for i in range(resamples):
            idx = rng.integers(0, n, n)
            diffs[i] = self.gain(self._value(y[idx], base[idx]), self._value(y[idx], new[idx]))
        alpha = (1 - confidence) / 2
        low, high = np.quantile(diffs, [alpha, 1 - alpha])
        return {"delta": float(delta), "low": float(low), "high": float(high), "resamples": resamples}

    def standard_error(self, y: Any, pred: Any, *, resamples: int = 200, seed: int = 0) -> float | None:
        """The sampling noise of the primary metric on these rows: Hanley & McNeil for the AUC, a bootstrap
        otherwise (for RMSE in the relative units of `drop`)."""
        import numpy as np

        y, pred = np.asarray(y), np.asarray(pred)
        if self.task == "binary":
            from ml.evaluate import auc_standard_error

            value = self.value(y, pred)
            positives = int(np.asarray(y).astype(int).sum())
            return None if value is None else auc_standard_error(value, positives, len(y) - positives)
        if len(y) < 2:
            return None
        rng = np.random.default_rng(seed)
        values = []
        for _ in range(resamples):
            idx = rng.integers(0, len(y), len(y))
            values.append(self._value(y[idx], pred[idx]))
        sd = float(np.std(values, ddof=1))
        if self.task == "regression":
            center = self._value(y, pred)
            return sd / center if center > 0 else None
        return sd

    def batch_quality(self, labels: Any, pred: Any) -> dict[str, Any] | None:
        """A day's metrics on its labelled rows, with the primary metric's noise as `<primary>_se`; None
        without labels or predictions. `labels` as `ml.drift._model_columns` gives them (NaN: unlabelled)."""
        import numpy as np

        if labels is None or pred is None:
            return None
        y = np.asarray(labels, dtype="float64")
        known = ~np.isnan(y)
        if not known.any():
            return None
        y = y[known] if self.task == "regression" else y[known].astype("int64")
        p = np.asarray(pred)[known]
        out: dict[str, Any] = dict(self.metrics(y, p))
        out[f"{self.primary}_se"] = self.standard_error(y, p)
        return out

    def _value(self, y: Any, pred: Any) -> float:
        value = self.value(y, pred)
        if value is None:
            raise ValueError(f"{self.task}: the primary metric {self.primary} is undefined on these rows")
        return value


def _index(y: Any, classes: Sequence[Any]) -> Any:
    """Labels as positions in `classes` (-1 for a label not among them: never predicted, always wrong)."""
    import numpy as np

    lookup = {str(c): i for i, c in enumerate(classes)}
    return np.asarray([lookup.get(str(v), -1) for v in y.tolist()], dtype="int64")


def _macro_f1(y: Any, predicted: Any, k: int) -> float:
    """The mean F1 over the k classes (a class absent from both labels and predictions scores 0)."""
    import numpy as np

    scores = []
    for c in range(k):
        tp = float(np.sum((predicted == c) & (y == c)))
        fp = float(np.sum((predicted == c) & (y != c)))
        fn = float(np.sum((predicted != c) & (y == c)))
        scores.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


def _multiclass(y: Any, proba: Any, classes: Sequence[Any]) -> dict[str, float | None]:
    import numpy as np
    from sklearn.metrics import log_loss

    index = np.asarray(y, dtype="int64")
    predicted = proba.argmax(axis=1)
    known = index >= 0
    clipped = np.clip(proba, 1e-7, 1.0)
    out: dict[str, float | None] = {
        "macro_f1": _macro_f1(index, predicted, len(classes)),
        "accuracy": float(np.mean(predicted == index)) if len(y) else None,
        "log_loss": float(log_loss(index[known], clipped[known], labels=list(range(len(classes)))))
        if known.any()
        else None,
        "rows": int(len(y)),
    }
    for i, c in enumerate(classes):
        out[f"rate_{c}"] = float(np.mean(index == i)) if len(y) else None
    return out


def _regression(y: Any, pred: Any) -> dict[str, float | None]:
    import numpy as np

    if not len(y):
        return {"rmse": None, "mae": None, "r2": None, "mean_prediction": None, "mean_label": None, "rows": 0}
    errors = y - pred
    total = float(np.sum((y - y.mean()) ** 2))
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1 - float(np.sum(errors**2)) / total if total > 0 else None,
        "mean_prediction": float(pred.mean()),
        "mean_label": float(y.mean()),
        "rows": int(len(y)),
    }
