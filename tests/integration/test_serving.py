"""The model users get, served as MLflow users serve it: named columns in, labels and probabilities out."""

from __future__ import annotations

import json
import math

import httpx
import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from flows.train import training_pipeline
from tests.helpers.tables import wine_frame, write
from tests.helpers.servers import scoring_server
from trackflow.config import TrainConfig

pytestmark = pytest.mark.usefixtures("prefect_server")


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON sends them: missing cells are null."""
    return json.loads(frame.to_json(orient="records"))


def trained(tmp_path, which: str):
    if which == "table":
        path = write(wine_frame(), tmp_path / "wine.csv")
        config = TrainConfig(data=str(path), target="cultivar", epochs=30, hidden_layers=[32])
        rows = wine_frame().drop(columns="cultivar").iloc[[0, 3, 5, 60, 130, 150]]  # gaps in rows 3 and 5
    else:  # the generated set; "sgd-tanh": the other optimizers, activations and the L1 penalty serve alike
        knobs = {"optimizer": "sgd", "activation": "tanh", "l1": 0.001} if which == "sgd-tanh" else {}
        config = TrainConfig(n_samples=300, epochs=3, **knobs)
        from tasks.data import generate_table

        rows = generate_table(300, 10, 5, 42).X.head(6)
    return training_pipeline(config), rows


def with_huge_number(rows: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows with 1e308 in row 1 of the first numeric column (inf in a float32 one): it overflows float32."""
    column = rows.select_dtypes("number").columns[0]
    huge = rows.copy()
    huge.loc[huge.index[1], column] = 1e308
    return huge, column


@pytest.mark.parametrize("which", ["table", "generated", "sgd-tanh"])
def test_the_logged_model_takes_named_columns_and_loads_no_pickle(tmp_path, which):
    result, rows = trained(tmp_path, which)
    model = mlflow.pyfunc.load_model(f"models:/classifier/{result.model_version}")
    assert model.unwrap_python_model().fitted.network.activation == ("tanh" if which == "sgd-tanh" else "relu")
    assert [c.name for c in model.metadata.signature.inputs.inputs] == list(rows.columns)
    assert all(c.required for c in model.metadata.signature.inputs.inputs)
    out = model.predict(rows)
    assert list(out.columns) == ["label"] + [f"proba_{c}" for c in result.classes]
    assert set(out["label"]) <= set(result.classes)
    np.testing.assert_allclose(out.filter(like="proba_").sum(axis=1), 1.0, rtol=1e-6)
    huge, column = with_huge_number(rows)
    with pytest.raises(MlflowException, match=rf"row 1 \(counting from 0\), column '{column}': (1e\+308|inf) is "):
        model.predict(huge)  # not NaN probabilities (a float32 column holds 1e308 as inf)
    folder = mlflow.artifacts.download_artifacts(result.model_uri, dst_path=str(tmp_path / "model"))
    files = {p.name for p in __import__("pathlib").Path(folder).rglob("*") if p.is_file()}
    assert {"weights.safetensors", "preprocessor.skops", "meta.json", "input_example.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".pt", ".bin"))]  # nothing is unpickled
    example = json.loads((__import__("pathlib").Path(folder) / "input_example.json").read_text())
    assert example["columns"] == list(rows.columns) and len(example["data"]) >= 2  # real rows


@pytest.mark.slow
@pytest.mark.parametrize("which", ["table", "generated"])  # the server runs the pyfunc loaded above, whatever its knobs
def test_the_scoring_server_answers_like_the_loaded_model(tmp_path, which):
    result, rows = trained(tmp_path, which)
    uri = f"models:/classifier/{result.model_version}"
    loaded = mlflow.pyfunc.load_model(uri)
    expected = loaded.predict(rows)
    with scoring_server(uri, tmp_path / "serve.log") as url:
        r = httpx.post(f"{url}/invocations", json={"dataframe_records": records(rows)}, timeout=60)
        assert r.status_code == 200, r.text
        got = pd.DataFrame(r.json()["predictions"])
        assert list(got["label"]) == list(expected["label"])
        for c in result.classes:
            np.testing.assert_allclose(got[f"proba_{c}"], expected[f"proba_{c}"], rtol=1e-5)
            assert all(0 <= p <= 1 and not math.isnan(p) for p in got[f"proba_{c}"])
        np.testing.assert_allclose(got.filter(like="proba_").sum(axis=1), 1.0, rtol=1e-6)

        # Where the signature's column is float32 (the generated set), MLflow casts 1e308 to inf before
        # predict; float64 (the table) keeps it. Either way the row is refused, not answered with NaN.
        column = rows.select_dtypes("number").columns[0]
        huge = records(rows)
        huge[1][column] = 1e308
        r = httpx.post(f"{url}/invocations", json={"dataframe_records": huge}, timeout=60)
        assert r.status_code == 400, r.text
        assert r.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert f"row 1 (counting from 0), column {column!r}" in r.json()["message"]

        split = json.loads(rows.to_json(orient="split", index=False))
        r = httpx.post(f"{url}/invocations", json={"dataframe_split": split}, timeout=60)
        assert r.status_code == 200 and [p["label"] for p in r.json()["predictions"]] == list(expected["label"])

        missing = rows.columns[1]
        r = httpx.post(f"{url}/invocations", json={"dataframe_records": records(rows.drop(columns=missing))}, timeout=60)
        assert r.status_code == 400, r.text
        assert missing in r.json()["message"]
    assert "Add type hints" not in (tmp_path / "serve.log").read_text()  # MLflow loads served_model.py quietly
