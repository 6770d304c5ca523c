"""A classifier trained and registered with the plain task functions (no Prefect), for scoring tests and benchmarks."""

from __future__ import annotations

from pathlib import Path


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
                                       device="cpu", activation="relu", momentum=0.0, l1=0.0)
    run_id = tracking.start_run(tracking.ensure_experiment("scoring-tests"), run_name="fit")
    uri = tracking.log_classifier(run_id, d.classifier_from(encoded, outcome), example_rows(splits))
    version = tracking.register_model(uri, name, run_id)
    tracking.end_run(run_id)
    return version


N_NUMERIC, CATEGORIES = 17, {"region": 8, "channel": 4, "plan": 3}


def churn_table(n: int, seed: int = 0):
    """A synthetic customer table as an Arrow table: 17 numeric and 3 categorical columns, and a 3-class `target`."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    cols = {f"x{i:02d}": rng.standard_normal(n) for i in range(N_NUMERIC)}
    cats = {c: rng.integers(0, k, n) for c, k in CATEGORIES.items()}
    logit = cols["x00"] - 0.5 * cols["x01"] + 0.8 * (cats["region"] % 3 == 0) + 0.3 * rng.standard_normal(n)
    cols |= {c: np.array([f"{c}-{j}" for j in range(k)])[cats[c]] for c, k in CATEGORIES.items()}
    cols["target"] = np.where(logit > 0.3, "churned", np.where(logit < -0.7, "upgraded", "stayed"))
    return pa.table(cols)
