"""Memory bounded by design: whole `trackflow train` commands on tables that used to take the machine down.

An ID column made the dense one-hot encoding grow with rows x rows (20k rows: 4.9 GB), and
500 classes drew a 30,000-pixel confusion matrix (21.5 GB). The peak RSS of the command's
whole process tree is sampled with psutil.
"""

import numpy as np
import pandas as pd
import pytest

from tests.helpers.cli import cli_env
from tests.helpers.processes import peak_rss, start

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow]

LIMIT = 2.5 * 2**30


def _id_table(rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    return pd.DataFrame({"id": [f"order-{i:07d}" for i in range(rows)],
                         "customer": rng.choice([f"c{i}" for i in range(5000)], rows),  # high cardinality
                         **{f"x{j}": x[:, j] for j in range(4)},
                         "y": (x[:, 0] + x[:, 1] > 0).astype(int)})


def _many_classes(rows: int, k: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    y = np.arange(rows) % k
    return pd.DataFrame({"x0": y + rng.normal(size=rows), "x1": rng.normal(size=rows), "y": y})


@pytest.mark.parametrize("name, frame, classes", [
    ("ids-50k.parquet", lambda: _id_table(50_000), 2),
    ("classes-300.csv", lambda: _many_classes(9_000, 300), 300),
])
def test_a_hostile_table_trains_within_2_5_gb_for_the_whole_process_tree(client, tmp_path, name, frame, classes):
    import json

    path = tmp_path / name
    table = frame()
    table.to_parquet(path, index=False) if name.endswith(".parquet") else table.to_csv(path, index=False)
    log = tmp_path / "train.log"
    proc = start(["train", "--data", path, "--target", "y", "--epochs", "2", "--batch-size", "256"], cli_env(), log)
    peak = peak_rss(proc, timeout=600)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert peak <= LIMIT, f"peak RSS {peak / 2**30:.2f} GB"
    print(f"{name}: peak RSS {peak / 2**20:.0f} MiB")
    [run] = client.search_runs([client.get_experiment_by_name("classifier").experiment_id])
    if classes == 2:  # the ID column: left out, said so, recorded on the run
        assert "column 'id' of" in out and "looks like an ID" in out and "pass --drop 'id'" in out
        assert json.loads(run.data.params["left_out_columns"]) == ["id"]
        profile = client.download_artifacts(run.info.run_id, "data/profile.json", str(tmp_path))
        assert "id" in json.loads(open(profile).read())["left_out_columns"]
    else:  # per-class figures capped, and the run says which classes they leave out
        assert "of 300 classes" in run.data.tags["trackflow.figures_classes"]
        shown = client.download_artifacts(run.info.run_id, "plots/classes_shown.json", str(tmp_path))
        assert len(json.loads(open(shown).read())["confusion_matrix"]["left_out"]) == 300 - 30
