"""The served model's answers: finite probabilities that sum to 1, or an error naming the row and the column."""

from __future__ import annotations

import inspect
import json
import runpy
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from tasks.data import classifier_from, encode_splits, load_table, split_table
from tasks.training import train_and_score
from tests.helpers.tables import wine_frame, write
from trackflow.classifier import META, FittedClassifier, UnscorableInputError
from trackflow.config import TrainConfig
from trackflow.model import MLPClassifier
from trackflow.served_model import TabularClassifier


@pytest.fixture(scope="module")
def wine(tmp_path_factory):
    """A classifier over the wine table (numbers and a category; the network untrained) and some raw rows."""
    path = write(wine_frame(), tmp_path_factory.mktemp("wine") / "wine.csv")
    splits = split_table(load_table(str(path), "cultivar", None, []), 0.2, 0.1, 0)
    encoded = encode_splits(splits)
    torch.manual_seed(0)  # the network's initial weights
    network = MLPClassifier(encoded.data.X_train.shape[1], [32, 32], len(encoded.classes), 0.0).eval()
    return FittedClassifier(encoded.preprocessor, network, encoded.classes, encoded.columns), splits.X_test.head(5)


def test_ordinary_rows_get_finite_probabilities_that_sum_to_1(wine):
    classifier, rows = wine
    out = classifier.predict(rows)
    proba = out.filter(like="proba_").to_numpy()
    assert np.isfinite(proba).all()
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("value", [1e308, -1e308, 1e300, np.inf, -np.inf])
@pytest.mark.parametrize("column", ["alcohol", "prolin é"])
def test_a_number_the_model_cannot_score_is_refused_naming_the_row_and_column(wine, column, value):
    classifier, rows = wine
    rows = rows.copy()
    rows.loc[rows.index[3], column] = value
    with pytest.raises(UnscorableInputError) as exc:
        classifier.predict(rows)
    message = str(exc.value)
    assert f"row 3 (counting from 0), column {column!r}: {float(value)!r}" in message, message
    assert "np.float64" not in message and "\n" not in message
    rows.loc[rows.index[[1, 4]], column] = value
    with pytest.raises(UnscorableInputError, match=r"row 1 .*\(3 rows in all\)"):
        classifier.predict(rows)


def test_an_overflow_inside_the_network_is_refused_too(wine):
    """A feature float32 holds can still overflow the network's sums: the row's most extreme column is named."""
    classifier, rows = wine
    j = list(classifier.preprocessor.get_feature_names_out()).index("numeric__alcohol")
    network = MLPClassifier(len(classifier.preprocessor.get_feature_names_out()), [8, 8], 3, 0.0).eval()
    with torch.no_grad():  # alcohol alone drives the sums: 1e35 per unit of its scaled value, times 8 twice
        for layer in (*network.hidden, network.head):
            layer.weight.zero_(), layer.bias.zero_()
        network.hidden[0].weight[:, j] = 1e35
        network.hidden[1].weight.fill_(1.0)
        network.head.weight[0].fill_(1.0), network.head.weight[1].fill_(-1.0)
    steep = FittedClassifier(classifier.preprocessor, network, classifier.classes, classifier.columns)
    assert np.isfinite(steep.predict_proba(rows)).all()  # scaled values of a few units: large but finite sums
    rows = rows.assign(alcohol=[13.0, 800.0, 12.0, 14.0, 13.5])  # ~1,000 standard deviations out: fits float32
    with pytest.raises(UnscorableInputError, match=r"^row 1 \(counting from 0\), column 'alcohol': 800.0 is too far"):
        steep.predict(rows)


def test_every_encoded_feature_maps_back_to_its_input_column(wine):
    classifier, _ = wine
    names = classifier.preprocessor.get_feature_names_out()
    got = [classifier._input_column(j) for j in range(len(names))]
    assert set(got) == set(classifier.columns)
    assert [c for c, n in zip(got, names) if n.startswith("categorical__")] == ["colour / tint"] * 4


def test_the_pyfunc_model_refuses_it_with_an_mlflow_invalid_parameter_error(wine):
    """The scoring server answers INVALID_PARAMETER_VALUE with a 400; any other exception loses the message."""
    classifier, rows = wine
    model = TabularClassifier()
    model.fitted = classifier
    assert model.predict(None, rows)["label"].isin(classifier.classes).all()
    rows = rows.assign(alcohol=[1.0, 2.0, 1e308, 3.0, 4.0])
    with pytest.raises(MlflowException) as exc:
        model.predict(None, rows)
    assert exc.value.error_code == "INVALID_PARAMETER_VALUE" and exc.value.get_http_status_code() == 400
    assert "row 2 (counting from 0), column 'alcohol'" in exc.value.message


def test_building_the_served_model_asks_for_no_type_hints():
    """MLflow runs served_model.py at every log and load; its predict() has the hints MLflow asks for."""
    import trackflow.served_model as served

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runpy.run_path(served.__file__)
    assert not [w for w in caught if "type hint" in str(w.message).lower()]
    assert pd.DataFrame is served.TabularClassifier.predict.__annotations__["model_input"]


@pytest.mark.parametrize("optimizer, activation, l1", [("sgd", "tanh", 0.0), ("adagrad", "sigmoid", 0.001),
                                                       ("adamw", "relu", 0.001), ("adam", "tanh", 0.0)])
def test_each_optimizer_activation_and_l1_trains_a_model_mlflow_serves(tmp_path, optimizer, activation, l1):
    """Trained, logged as training runs log it, loaded as MLflow loads it: the training's own test probabilities."""
    import mlflow

    from tasks import tracking

    path = write(wine_frame(), tmp_path / "wine.csv")
    splits = split_table(load_table(str(path), "cultivar", None, []), 0.2, 0.1, 0)
    encoded = encode_splits(splits)
    config = TrainConfig(optimizer=optimizer, activation=activation, l1=l1, lr=0.01, epochs=20, hidden_layers=[32])
    knobs = {k: getattr(config, k) for k in inspect.signature(train_and_score).parameters if k != "data"}
    outcome = train_and_score(encoded.data, **knobs)
    assert outcome.history["train_loss"][-1] < 0.7 * outcome.history["train_loss"][0]
    run_id = tracking.start_run(tracking.ensure_experiment("serving"), run_name="fit")
    uri = tracking.log_classifier(run_id, classifier_from(encoded, outcome), splits.X_train.dropna().head(5))
    tracking.end_run(run_id)
    model = mlflow.pyfunc.load_model(uri)
    assert model.unwrap_python_model().fitted.network.activation == activation
    served = model.predict(splits.X_test)
    np.testing.assert_allclose(served.filter(like="proba_").to_numpy(), outcome.proba_test, rtol=1e-5, atol=1e-6)


def test_a_model_saved_before_activations_were_chosen_loads_as_relu(wine, tmp_path):
    classifier, rows = wine
    artifacts = classifier.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / META).read_text())
    assert meta["network"].pop("activation") == "relu"
    (tmp_path / "model" / META).write_text(json.dumps(meta))
    old = FittedClassifier.load(artifacts)
    assert old.network.activation == "relu"
    np.testing.assert_array_equal(old.predict_proba(rows), classifier.predict_proba(rows))
