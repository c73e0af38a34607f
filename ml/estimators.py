"""Estimators to name in a dataset YAML instead of the built-in model, and the template for your own:

    training:
      model: "ml.estimators:logistic_regression"   # package.module:factory, importable by the workers
      params: {C: 0.5}                              # passed to the factory as keyword arguments

A factory returns a scikit-learn classifier or pipeline with fit() and predict_proba(). It is called with
`training.params` and, when its signature takes them, `numeric` and `categorical` (the YAML's feature
lists) and `seed`. It is fitted on a DataFrame of the features (numeric as float with NaN for missing,
categorical as str or None) and, under `training.window: time_decay`, with `sample_weight` (routed to a
pipeline's last step). The fitted model is logged to MLflow with cloudpickle, so the module must be
importable wherever models are loaded (the Airflow workers, `driftwatch serve`).
"""

from __future__ import annotations

from typing import Any


def logistic_regression(numeric: list[str], categorical: list[str], seed: int, C: float = 1.0) -> Any:
    """Median-imputed, standardized numeric columns and one-hot categories (rare and unseen ones as one) into a
    logistic regression: a simple, well-calibrated baseline to compare the booster with."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    encode = ColumnTransformer(
        [
            ("num", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numeric),
            # a missing category (None) is a category of its own
            ("cat", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20), categorical),
        ]
    )
    return Pipeline(
        [("encode", encode), ("model", LogisticRegression(C=C, max_iter=1000, random_state=seed))]
    )
