"""The model server's numpy path (ml/serving/fast.py): used only where it scores exactly as the pipeline."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ml.config import load_settings
from ml.serving import fast
from ml.serving.model import score
from ml.train import fit

DAYS = ["2013-01-01", "2013-01-02"]


@pytest.fixture(scope="module")
def fitted(flights_frame):
    s = load_settings("flights", environ={})
    train = flights_frame[flights_frame["date"].isin(DAYS)].reset_index(drop=True)
    rows = flights_frame[flights_frame["date"] == "2013-06-01"].reset_index(drop=True)[s.features]
    return s, fit(s, train, dt.date(2013, 1, 2), {"max_iter": 20}), rows


def _compile(s, model, rows):
    return fast.compile_scorer(s, model, fast.check_rows(s, rows.head(5)), lambda r: score(s, model, r))


def test_the_numpy_path_scores_real_rows_exactly_as_the_pipeline(fitted):
    s, model, rows = fitted
    scorer = _compile(s, model, rows)
    assert scorer is not None
    # a June day: destinations the January model never saw, missing weather; all rows at once and one by one
    seen = set(model.named_steps["encode"].named_transformers_["cat"].categories_[2].tolist())
    assert (~rows["dest"].isin(seen)).any() and rows[list(s.numeric)].isna().any().any()
    expected = score(s, model, rows)
    assert np.array_equal(scorer(rows), expected)
    assert [scorer(rows.iloc[[i]])[0] for i in range(20)] == expected[:20].tolist()


def test_a_pipeline_of_another_shape_is_scored_the_generic_way(fitted):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    s, model, rows = fitted
    other = Pipeline(
        [
            (
                "encode",
                ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), list(s.categorical))]),
            ),
            ("model", LogisticRegression()),
        ]
    ).fit(rows, (rows.index % 2).to_numpy())
    assert _compile(s, other, rows) is None


def test_a_path_that_would_disagree_is_not_used(fitted, caplog):
    s, model, rows = fitted
    # a reference that differs from what the trees give (as a changed encoder would): not proven exact
    assert (
        fast.compile_scorer(s, model, fast.check_rows(s, rows.head(5)), lambda r: score(s, model, r) + 1e-9)
        is None
    )
    assert "disagrees" in caplog.text
    assert _compile(s, model, rows.head(3)) is not None
