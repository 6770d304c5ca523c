from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")

REPO = Path(__file__).resolve().parents[1]
TRACKFLOW = shutil.which("trackflow", path=str(Path(sys.executable).parent))


def cli_env(**extra: str) -> dict[str, str]:
    """The test process's environment, pointed at the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    return os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value()} | extra


def run_cli(*args, timeout=300, **env):
    """Run the `trackflow` console script as a user does; stdin closed so nothing can wait on it."""
    return subprocess.run([TRACKFLOW, *map(str, args)], env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(autouse=True, scope="session")
def prefect_server():
    """One temporary Prefect server (a real one, with its own database) for the whole session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """A migrated, empty MLflow SQLite database: migrating costs seconds, copying it does not."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def mlflow_store(tmp_path, monkeypatch, mlflow_template) -> str:
    """Each test gets its own SQLite store (artifacts beside it) under tmp_path; never the repo's mlruns/."""
    store = tmp_path / "mlruns"
    store.mkdir()
    shutil.copy(mlflow_template, store / "mlflow.db")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    return uri


@pytest.fixture(autouse=True, scope="session")
def repo_mlruns_untouched():
    """Fail the session if any test wrote into the repository's own mlruns/."""
    before = sorted(p.name for p in (REPO / "mlruns").iterdir()) if (REPO / "mlruns").exists() else []
    yield
    after = sorted(p.name for p in (REPO / "mlruns").iterdir()) if (REPO / "mlruns").exists() else []
    assert after == before, f"tests wrote into the repository's mlruns/: {set(after) - set(before)}"


@pytest.fixture
def client(mlflow_store):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=mlflow_store, registry_uri=mlflow_store)


@pytest.fixture
def tiny_config():
    """A training config that runs in well under a second."""
    from trackflow.config import TrainConfig

    return TrainConfig(n_samples=300, epochs=3, batch_size=32)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Small GPT-2 and Wav2Vec2 models built from configs and saved locally (no download)."""
    from tasks.models import make_tiny_models

    return make_tiny_models(tmp_path_factory.mktemp("models"))


def write_audio(path: Path, rate: int, seconds: float, channels: int = 1, kind: str = "tone", seed: int = 0) -> Path:
    """A test recording: a sine tone or speech-like noise (noise bursts under a syllable-rate envelope)."""
    import numpy as np
    import soundfile as sf

    n = int(rate * seconds)
    t = np.arange(n) / rate
    if kind == "tone":
        x = 0.3 * np.sin(2 * np.pi * 220 * t)
    else:
        rng = np.random.default_rng(seed)
        x = 0.2 * rng.standard_normal(n) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
    data = np.stack([x * (0.8 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate)
    return path
