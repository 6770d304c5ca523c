"""`trackflow score` end to end: a registered model, a real Prefect server, a real MLflow store.

The command runs through cli.main in this process (call_main); as the console script where it is killed."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import mlflow
import numpy as np
import pandas as pd
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from tests.helpers.cli import TRACKFLOW, call_main, cli_env
from tests.helpers.scoring import churn_table, register_classifier
from tests.helpers.tables import wine_frame, write

pytestmark = pytest.mark.usefixtures("prefect_server")
TARGET = "cultivar"


def records(out_dir) -> dict[str, dict]:
    recs = [json.loads(line) for line in (out_dir / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len({r["input"] for r in recs}) == len(recs), "more than one record for an input"
    return {r["input"]: r for r in recs}


def champion(tmp_path, client, **kw) -> str:
    version = register_classifier(write(wine_frame(), tmp_path / "train" / "wine.csv"), TARGET, **kw)
    client.set_registered_model_alias("classifier", "champion", version)
    return version


def assert_scored_like_the_model(out_file, frame: pd.DataFrame, version: str) -> None:
    want = mlflow.pyfunc.load_model(f"models:/classifier/{version}").predict(frame.drop(columns=[TARGET]))
    got = pd.read_parquet(out_file)
    assert len(got) == len(frame) and list(got["label"]) == list(want["label"])
    proba = [c for c in want.columns if c.startswith("proba_")]
    np.testing.assert_allclose(got[proba].to_numpy(), want[proba].to_numpy(), rtol=1e-6)


def test_scores_a_csv_and_a_parquet_folder_and_a_rerun_skips(tmp_path, client):
    version = champion(tmp_path, client)
    inbox = tmp_path / "inbox"
    wine = wine_frame()
    write(wine.head(120), inbox / "day1.csv")
    write(wine.tail(58), inbox / "parts" / "day2.parquet")
    out = tmp_path / "out"
    p = call_main("score", inbox, "--out", out, "--batch-rows", "32")
    assert p.returncode == 0, p.stderr
    assert "2 files: 2 scored, 0 failed" in p.stdout and f"models:/classifier/{version}" in p.stdout
    assert_scored_like_the_model(out / "day1.parquet", wine.head(120), version)
    assert_scored_like_the_model(out / "parts" / "day2.parquet", wine.tail(58), version)
    recs = records(out)
    assert {k: (r["status"], r["rows"], r["output"], r["model_version"]) for k, r in recs.items()} == {
        "day1.csv": ("ok", 120, "day1.parquet", version), "parts/day2.parquet": ("ok", 58, "parts/day2.parquet", version)}
    assert all(r["model"] == "models:/classifier@champion" for r in recs.values())

    exp = client.get_experiment_by_name("batch-scoring")
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["model_version"] == version and run.data.params["model"] == "models:/classifier@champion"
    assert run.data.metrics["files_ok"] == 2 and run.data.metrics["rows_scored"] == 178
    assert run.data.metrics["rows_per_second"] > 0
    assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == ["day1.csv", "parts/day2.parquet"]

    p = call_main("score", inbox, "--out", out, "--keep", "alcohol")
    assert p.returncode == 0, p.stderr
    assert "2 files: 0 scored, 0 failed, 2 unchanged" not in p.stdout  # --keep changes the outputs: redone
    assert list(pd.read_parquet(out / "day1.parquet").columns)[:2] == ["alcohol", "label"]
    p = call_main("score", inbox, "--out", out, "--keep", "alcohol")
    assert p.returncode == 0 and "2 files: 0 scored, 0 failed, 2 unchanged" in p.stdout, p.stdout + p.stderr


def test_each_bad_table_gets_its_error_record_and_the_others_finish(tmp_path, client):
    champion(tmp_path, client, epochs=1)
    inbox = tmp_path / "inbox"
    write(wine_frame(), inbox / "good.csv")
    write(wine_frame().drop(columns=["hue"]), inbox / "no-hue.csv")
    typo = wine_frame()
    typo["ash"] = typo["ash"].astype(str)
    typo.loc[7, "ash"] = "2,43"
    write(typo, inbox / "typo.parquet")
    (inbox / "empty.csv").write_bytes(b"")
    (inbox / "broken.parquet").write_bytes(b"PAR1 not really")
    out = tmp_path / "out"
    p = call_main("score", inbox, "--out", out)
    assert p.returncode == 1, p.stderr
    assert "trackflow score: 4 of 5 files failed" in p.stderr and "Traceback" not in p.stderr
    recs = records(out)
    assert recs["good.csv"]["status"] == "ok" and (out / "good.parquet").is_file()
    errors = {k: r["error"] for k, r in recs.items() if r["status"] == "error"}
    assert "missing required column 'hue'" in errors["no-hue.csv"]
    assert "column 'ash', row 8: '2,43' does not convert to a number" in errors["typo.parquet"]
    assert "empty file" in errors["empty.csv"]
    assert "not a readable parquet table" in errors["broken.parquet"]
    assert sorted(p.name for p in out.iterdir()) == [".trackflow.lock", "good.parquet", "results.csv", "results.jsonl"]


@pytest.mark.parametrize("setup, args, message", [
    (lambda t, c: None, ["nope", "--out", "out"], "does not exist"),
    (lambda t, c: write(wine_frame(), t / "in" / "w.csv"), ["in", "--out", "out"],
     "no registered model 'classifier'"),
    (lambda t, c: (write(wine_frame(), t / "in" / "w.csv"), register_classifier(t / "in" / "w.csv", TARGET, epochs=1)),
     ["in", "--out", "out"], "has no alias 'champion' (its versions: 1)"),
    (lambda t, c: write(wine_frame(), t / "in" / "w.csv"), ["in", "--out", "out", "--model", "/tmp/model"],
     "is not a registered model"),
], ids=["missing-input", "no-model", "no-alias", "not-registry"])
def test_bad_arguments_exit_2_in_one_line_before_any_run(tmp_path, client, monkeypatch, setup, args, message):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path, client)
    p = call_main("score", *args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert client.get_experiment_by_name("batch-scoring") is None


def test_an_empty_inbox_is_nothing_to_do(tmp_path, client):
    (tmp_path / "inbox").mkdir()
    p = call_main("score", tmp_path / "inbox", "--out", tmp_path / "out", "--allow-empty")
    assert p.returncode == 0 and "Nothing to do" in p.stdout, p.stderr
    assert client.get_experiment_by_name("batch-scoring") is None


def test_a_promotion_during_the_job_does_not_change_the_model_used(tmp_path, client, monkeypatch):
    from flows.score import score_pipeline
    from tasks import scoring
    from trackflow.config import ScoreConfig

    v1 = champion(tmp_path, client, epochs=1, seed=1)
    v2 = register_classifier(tmp_path / "train" / "wine.csv", TARGET, epochs=8, seed=2)
    inbox = tmp_path / "inbox"
    for name in ("a.csv", "b.csv", "c.csv"):
        write(wine_frame(), inbox / name)
    real = scoring.score_file

    def promote_after_the_first_file(*args, **kw):
        rows = real(*args, **kw)
        client.set_registered_model_alias("classifier", "champion", v2)  # a sweep finishing mid-job
        return rows

    monkeypatch.setattr(scoring, "score_file", promote_after_the_first_file)
    result = score_pipeline(ScoreConfig(in_dir=str(inbox), out_dir=str(tmp_path / "out")))
    assert str(client.get_model_version_by_alias("classifier", "champion").version) == v2 != v1
    assert result.model_uri == f"models:/classifier/{v1}"
    assert {r["model_version"] for r in records(tmp_path / "out").values()} == {v1}
    for name in ("a", "b", "c"):
        assert_scored_like_the_model(tmp_path / "out" / f"{name}.parquet", wine_frame(), v1)
    assert client.get_run(result.run_id).data.params["model_version"] == v1


@pytest.mark.slow
def test_killed_mid_file_then_rerun_leaves_one_complete_output_per_input(tmp_path, client):
    rows = 30_000  # per file: at --batch-rows 500, a kill lands mid-file
    table = churn_table(rows)
    register_classifier(write(table.slice(0, 5000).to_pandas(), tmp_path / "train.parquet"), "target", epochs=1)
    client.set_registered_model_alias("classifier", "champion", "1")
    inbox, out = tmp_path / "inbox", tmp_path / "out"
    inbox.mkdir()
    features = table.drop_columns(["target"])
    for i in range(4):
        pacsv.write_csv(features, inbox / f"part-{i}.csv")
    args = [TRACKFLOW, "score", str(inbox), "--out", str(out), "--batch-rows", "500"]
    proc = subprocess.Popen(args, env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # a file done, and the next one half-written
        if (out / "part-0.parquet").exists() and list(out.glob(".part-*.parquet.partial")):
            break
        assert proc.poll() is None, "the job ended before it could be killed"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(out.glob(".*.partial")) and len(records(out)) < 4

    p = call_main(*args[1:])
    assert p.returncode == 0, p.stderr
    assert "4 files:" in p.stdout and ("1 unchanged" in p.stdout or "2 unchanged" in p.stdout), p.stdout
    files = sorted(x.name for x in out.iterdir() if x.name not in (".trackflow.lock", "results.csv", "results.jsonl"))
    assert files == [f"part-{i}.parquet" for i in range(4)]  # no partial file left
    recs = records(out)
    for i in range(4):
        rec = recs[f"part-{i}.csv"]
        assert rec["status"] == "ok" and rec["rows"] == pq.ParquetFile(out / rec["output"]).metadata.num_rows == rows
    assert len(pd.read_csv(out / "results.csv")) == 4
