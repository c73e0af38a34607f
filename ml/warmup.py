"""Warming Evidently up: importing it and building one tiny report loads the parts it imports lazily (plotly
alone ~230 modules on the first report). Used by the scheduler's forkserver preload (ml/preload.py), and by
the Airflow API server in a background thread at start (ml/ui.py), so that the first Drift report someone
opens is not also the one that pays for the imports.
"""

from __future__ import annotations


def evidently_report() -> None:
    import numpy as np
    import pandas as pd
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "x": rng.normal(size=60),
            "c": rng.choice(["a", "b"], 60),
            "target": rng.integers(0, 2, 60),
            "prediction": rng.random(60),
        }
    )
    definition = DataDefinition(
        numerical_columns=["x", "prediction"],
        categorical_columns=["c", "target"],
        classification=[BinaryClassification(target="target", prediction_probas="prediction")],
    )
    data = Dataset.from_pandas(frame, data_definition=definition)
    snapshot = Report([DataDriftPreset(columns=["x", "c"]), ClassificationPreset()]).run(
        current_data=data, reference_data=data
    )
    snapshot.get_html_str(as_iframe=False)
