"""Train a challenger on the original window plus accepted new days, the holdout days excluded."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ml.config import Settings
from ml.data import daterange, model_frame, partition_exists, read_days
from ml.exceptions import ModelError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ml.history import History

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataSplit:
    """Which days a challenger trained on at a logical date, and which it was judged on."""

    day: dt.date
    train_days: list[dt.date]
    holdout_days: list[dt.date]

    def to_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "train_days": [d.isoformat() for d in self.train_days],
            "holdout_days": [d.isoformat() for d in self.holdout_days],
            "train_range": f"{self.train_days[0]}..{self.train_days[-1]}" if self.train_days else "",
            "holdout_range": f"{self.holdout_days[0]}..{self.holdout_days[-1]}" if self.holdout_days else "",
        }


def usable_days(settings: Settings, history: History, day: dt.date) -> list[dt.date]:
    """Days up to `day` whose data may be used: the original window's partitions plus accepted days after it.

    A day after the original window counts only when the pipeline accepted it (validated, not quarantined),
    so a bad batch can never reach training, and only once its labels have arrived (`label_delay_days`).
    Original-window days are the user's given, labelled history: they count when their partition is in the
    lake (a quarantined one has been moved out of it).
    """
    accepted = {
        dt.date.fromisoformat(r["day"])
        for r in history.days(settings.name, until=day)
        if r["status"] == "accepted"
    }
    quarantined = {
        dt.date.fromisoformat(r["day"])
        for r in history.days(settings.name, until=day)
        if r["status"] == "quarantined"
    }
    window_end = min(settings.original_end, day)
    original = [
        d
        for d in daterange(settings.original_start, window_end)
        if d not in quarantined and partition_exists(settings, d)
    ]
    # with label_delay_days, a later day counts once its labels have arrived
    later = sorted(d for d in accepted if settings.original_end < d <= day and settings.labels_known(d, day))
    return original + later


def split_days(settings: Settings, history: History, day: dt.date) -> DataSplit:
    """Holdout = the last `holdout_days` usable days up to `day`; training = the usable days before it."""
    usable = usable_days(settings, history, day)
    h = settings.holdout_days
    if len(usable) <= h:
        raise ModelError(
            f"{settings.name} on {day}: {len(usable)} usable days, need more than holdout_days={h} "
            f"to train (original window {settings.original_start}..{settings.original_end})."
        )
    holdout = usable[-h:]
    train = usable[:-h]
    policy = settings.training
    if policy.window == "last_n_days":
        cutoff = holdout[0] - dt.timedelta(days=policy.window_days)
        train = [d for d in train if d >= cutoff]
    return DataSplit(day=day, train_days=train, holdout_days=holdout)


def sample_weights(settings: Settings, dates: pd.Series, day: dt.date) -> np.ndarray | None:
    """Time-decay weights (half-life in days) under the `time_decay` policy, else None."""
    import numpy as np
    import pandas as pd

    if settings.training.window != "time_decay":
        return None
    age = (pd.Timestamp(day) - pd.to_datetime(dates)).dt.days.to_numpy(dtype="float64")
    return np.power(0.5, age / settings.training.half_life_days)


BUILTIN_MODEL = "hist_gradient_boosting"
# what a `training.model: "package.module:factory"` is offered, when its signature takes them
FACTORY_ARGUMENTS = ("numeric", "categorical", "seed")


def custom_model(settings: Settings) -> bool:
    """Whether `training.model` names the user's own factory rather than the built-in model."""
    return settings.training.model != BUILTIN_MODEL


def build_model(settings: Settings, params: Mapping[str, Any] | None = None) -> Any:
    """The configured model, seeded: the built-in categorical encoding + HistGradientBoostingClassifier, or
    what `training.model: "package.module:factory"` returns (see `_custom`)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    merged = {**dict(settings.training.params), **dict(params or {})}
    if custom_model(settings):
        return _custom(settings, merged)
    n_num = len(settings.numeric)
    n_cat = len(settings.categorical)
    encode = ColumnTransformer(
        [
            ("num", "passthrough", list(settings.numeric)),
            (
                "cat",
                # unseen categories become -1, which the booster treats as missing
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
                ),
                list(settings.categorical),
            ),
        ],
        verbose_feature_names_out=False,
    )
    booster_class = (
        HistGradientBoostingRegressor if settings.task == "regression" else HistGradientBoostingClassifier
    )
    try:
        booster = booster_class(
            categorical_features=[False] * n_num + [True] * n_cat,
            early_stopping=False,
            random_state=settings.training.seed,
            **merged,
        )
    except TypeError as exc:
        raise ModelError(f"training.params: {exc}") from None
    return Pipeline([("encode", encode), ("model", booster)])


def _factory(settings: Settings) -> Any:
    """The callable `training.model` names ("package.module:factory", the attribute may be dotted).

    Raises:
        ModelError: not of that form, the module cannot be imported, or it has no such callable.
    """
    import importlib

    spec = settings.training.model
    where = f"{settings.yaml_path}: training.model {spec!r}"
    expected = (
        f"expected '{BUILTIN_MODEL}' or 'package.module:factory', a function on the Python path of the "
        "Airflow workers returning a scikit-learn classifier or pipeline"
    )
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ModelError(f"{where}: {expected}.")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to see
        raise ModelError(
            f"{where}: cannot import {module_name!r} ({type(exc).__name__}: {exc}); {expected}."
        ) from None
    for part in attr.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ModelError(f"{where}: {module_name!r} has no callable {attr!r}; {expected}.")
    return target


def _custom(settings: Settings, params: Mapping[str, Any]) -> Any:
    """Call the user's factory with `training.params` and those of FACTORY_ARGUMENTS its signature takes
    (numeric and categorical column lists, the seed); the result must have fit and predict_proba.

    Raises:
        ModelError: the call failed, or the object cannot be trained or cannot give probabilities.
    """
    import inspect

    factory = _factory(settings)
    where = f"{settings.yaml_path}: training.model {settings.training.model!r}"
    offered = {
        "numeric": list(settings.numeric),
        "categorical": list(settings.categorical),
        "seed": settings.training.seed,
    }
    try:
        signature = inspect.signature(factory)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values())
        names = set(signature.parameters)
    except (TypeError, ValueError):
        takes_any, names = False, set()
    kwargs = {k: v for k, v in offered.items() if takes_any or k in names}
    kwargs.update(params)
    try:
        model = factory(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a bad training.params is the usual cause
        raise ModelError(
            f"{where}: calling it with {sorted(kwargs)} failed ({type(exc).__name__}: {exc}); check "
            "training.params."
        ) from None
    method = "predict" if settings.task == "regression" else "predict_proba"
    kind = "regressor" if settings.task == "regression" else "classifier"
    missing = [m for m in ("fit", method) if not callable(getattr(model, m, None))]
    if missing:
        raise ModelError(
            f"{where}: it returned a {type(model).__name__}, which has no {missing[0]}(); expected a "
            f"scikit-learn {kind} or pipeline with fit() and {method}() (task: {settings.task})."
        )
    return model


def _fit_kwargs(settings: Settings, model: Any, weights: np.ndarray | None) -> dict[str, Any]:
    """How `model.fit` receives the time-decay weights (none without them)."""
    if weights is None:
        return {}
    steps = getattr(model, "steps", None)
    if steps:  # a Pipeline routes fit parameters to a step by name
        return {f"{steps[-1][0]}__sample_weight": weights}
    return {"sample_weight": weights}


def fit(
    settings: Settings, frame: pd.DataFrame, day: dt.date, params: Mapping[str, Any] | None = None
) -> Any:
    X, y = model_frame(settings, frame)
    if settings.task != "regression" and y.nunique() < 2:
        raise ModelError(f"{settings.name} on {day}: training data has a single class; cannot train.")
    if settings.task == "multiclass" and (y < 0).any():
        raise ModelError(
            f"{settings.name} on {day}: {int((y < 0).sum())} training rows have a {settings.label!r} outside "
            f"label.classes {list(settings.classes)}."
        )
    model = build_model(settings, params)
    weights = sample_weights(settings, frame[settings.date_column], day)
    if not custom_model(settings):
        model.fit(X, y, model__sample_weight=weights)
        return model
    try:
        model.fit(X, y, **_fit_kwargs(settings, model, weights))
    except TypeError as exc:
        if weights is None or "sample_weight" not in str(exc):
            raise
        raise ModelError(
            f"{settings.yaml_path}: training.window 'time_decay' weights the rows, and the fit() of "
            f"training.model {settings.training.model!r} takes no sample_weight ({exc}); use window 'all' or "
            "'last_n_days', or a model whose fit takes sample_weight."
        ) from None
    return model


def predict_proba(model: Any, settings: Settings, frame: pd.DataFrame) -> np.ndarray:
    """What the model predicts per row, as the task judges it (`ml.objective`): the positive class's
    probability (binary), a probability per class in label.classes order (multiclass), the value
    (regression)."""
    X, _ = model_frame(settings, frame)
    return predictions(model, settings, X)


def predictions(model: Any, settings: Settings, X: pd.DataFrame) -> np.ndarray:
    """`predict_proba` on a model frame's features."""
    import numpy as np

    if settings.task == "regression":
        return np.asarray(model.predict(X), dtype="float64")
    proba = model.predict_proba(X)
    if settings.task == "binary":
        return proba[:, 1]
    return _all_classes(settings, model, proba)


def _all_classes(settings: Settings, model: Any, proba: np.ndarray) -> np.ndarray:
    """Multiclass probabilities with one column per label.classes entry (a class the training data lacked
    gets 0), whatever the order of the model's classes_."""
    import numpy as np

    seen = [int(c) for c in getattr(model, "classes_", range(proba.shape[1]))]
    out = np.zeros((proba.shape[0], len(settings.classes)))
    for j, c in enumerate(seen):
        if 0 <= c < len(settings.classes):
            out[:, c] = proba[:, j]
    return out


def out_of_fold_scores(
    settings: Settings, frame: pd.DataFrame, params: Mapping[str, Any] | None = None, folds: int = 3
) -> np.ndarray:
    """Scores of `frame`'s rows from models that did not train on them (k-fold), as the prediction-drift
    reference: a model's scores on its own training rows are over-confident."""
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict

    X, y = model_frame(settings, frame)
    if settings.task == "regression":
        cv_r = KFold(n_splits=folds, shuffle=True, random_state=settings.training.seed)
        return cross_val_predict(build_model(settings, params), X, y, cv=cv_r, method="predict")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.training.seed)
    proba = cross_val_predict(build_model(settings, params), X, y, cv=cv, method="predict_proba")
    if settings.task == "binary":
        return proba[:, 1]
    fake = type("Classes", (), {"classes_": sorted(set(y.tolist()))})()
    return _all_classes(settings, fake, proba)


def data_digest(settings: Settings, days: list[dt.date]) -> str:
    """A content digest of the training data files, for lineage and to recognise a re-run."""
    from ml.data import batch_files

    h = hashlib.sha256()
    for d in days:
        for f in batch_files(settings.partition_dir(d)):
            h.update(f"{d}:{f.name}:".encode())
            h.update(f.read_bytes())
    if settings.captured:  # the labels joined to captured traffic are training data too
        from ml.capture import label_files

        for f in label_files(settings):
            h.update(f"{f.parent.name}/{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def load_split(settings: Settings, split: DataSplit) -> tuple[pd.DataFrame, pd.DataFrame]:
    train = read_days(settings, split.train_days)
    holdout = read_days(settings, split.holdout_days)
    if train.empty or holdout.empty:
        raise ModelError(f"{settings.name} on {split.day}: no rows to train on or to evaluate on.")
    return train, holdout
