"""A classifier trained and registered with the plain task functions (no Prefect), for scoring tests and benchmarks."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def register_classifier(data: Path, target: str, name: str = "classifier", epochs: int = 5, seed: int = 42,
                        hidden_layers=(16,)) -> str:
    """Train on the table `data` and register the model as a new version of `name`; return the version."""
    from flows.common import example_rows
    from tasks import data as d, tracking, training

    table = d.load_data(str(data), target, None, [], 1000, 10, 5, seed, 0.2, 0.1)
    splits = d.split_table(table, 0.2, 0.1, seed)
    encoded = d.encode_splits(splits)
    outcome = training.train_and_score(encoded.data, hidden_layers=list(hidden_layers), dropout=0.0, optimizer="adam",
                                       lr=0.01, weight_decay=0.0, batch_size=32, epochs=epochs, seed=seed,
                                       device="cpu")
    run_id = tracking.start_run(tracking.ensure_experiment("scoring-tests"), run_name="fit")
    uri = tracking.log_classifier(run_id, d.classifier_from(encoded, outcome), example_rows(splits))
    version = tracking.register_model(uri, name, run_id)
    tracking.end_run(run_id)
    return version


def features(frame: pd.DataFrame, target: str) -> pd.DataFrame:
    return frame.drop(columns=[target])
