"""Batch inference: a Hugging Face model over a folder of files, results that survive crashes.

`infer-text` (causal LM generation over prompt files) and `infer-audio` (CTC
transcription over recordings) are the same job with a different input kind: the folder
is listed once, the model loaded once, and the batch-job engine (`tasks.batch`) streams
the files through it into a results log that a rerun resumes. On a Dask cluster (`runner`
dask, or `dask_address`) the files go in shards to the workers, each loading the model
once, and this process appends what comes back (`tasks.shards`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger

from flows import steps
from flows.common import (batch_cluster, flow_run_url, prefect_tags, runner_metrics, runner_params, stage_for_workers,
                          tracked)
from tasks.batch import InputKind, job_metrics
from tasks.generation import TextGeneration
from tasks.inputs import list_inputs
from tasks.models import check_generation_room, resolve_model_source
from tasks.reporting import metrics_markdown
from tasks.results import RESULTS_CSV, ResultsLog, fingerprint
from tasks.shards import InferSpec
from tasks.transcription import Transcription
from trackflow import store
from trackflow.config import AudioInferConfig, InferConfig, TextInferConfig
from trackflow.progress import Progress


@dataclass
class InferResult:
    out_dir: str
    run_id: str | None = None  # None: the folder had nothing to process, and no run was made
    experiment_id: str | None = None
    n_inputs: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    n_gone: int = 0  # inputs of earlier runs that no longer exist: their records are kept, marked gone
    metrics: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error), the first few
    run_url: str = ""

    @property
    def nothing_to_do(self) -> bool:
        return self.run_id is None


@flow(name="infer-text", log_prints=True)
def text_inference_pipeline(config: TextInferConfig) -> InferResult:
    """Continue every prompt under `in_dir` with a causal LM; results in `out_dir`."""
    files = list_inputs(config.in_dir, config.glob, config.out_dir, config.allow_empty)
    if not files:
        return _nothing_to_do(config)
    check_generation_room(resolve_model_source(config.model), config.max_new_tokens)  # else every input fails
    settings = {k: getattr(config, k) for k in ("model", "max_new_tokens", "do_sample")}
    if config.do_sample:
        settings |= {k: getattr(config, k) for k in ("temperature", "top_k", "top_p", "seed")}
    if config.on_dask:  # the workers load the model, once each
        return _run_job(config, files, "text", "new_tokens", settings, settings)
    lm = steps.load_text_model(config.model, config.device)
    return _run_job(config, files, "text", "new_tokens", settings, settings,
                    TextGeneration(lm, settings, config.model), lm.source.path)


@flow(name="infer-audio", log_prints=True)
def audio_inference_pipeline(config: AudioInferConfig) -> InferResult:
    """Transcribe every recording under `in_dir` with a CTC model; results in `out_dir`."""
    files = list_inputs(config.in_dir, config.glob, config.out_dir, config.allow_empty)
    if not files:
        return _nothing_to_do(config)
    settings = {"model": config.model, "chunk_seconds": config.chunk_seconds}
    knobs = {"chunk_seconds": config.chunk_seconds, "max_seconds": config.max_seconds}
    if config.on_dask:
        return _run_job(config, files, "audio", "audio_seconds", settings, knobs)
    sm = steps.load_speech_model(config.model, config.device)
    kind = Transcription(sm, config.chunk_seconds, config.max_seconds, config.model)
    return _run_job(config, files, "audio", "audio_seconds", settings, knobs, kind, sm.source.path)


def _nothing_to_do(config: InferConfig) -> InferResult:
    missing = "" if Path(config.in_dir).exists() else " (the folder does not exist yet)"
    get_run_logger().info("nothing to do: no files matching %r in %s%s", config.glob, config.in_dir, missing)
    return InferResult(str(Path(config.out_dir).resolve()))


def _run_job(config: InferConfig, files: list[str], name: str, measure: str, settings: dict, knobs: dict,
             kind: InputKind | None = None, source: str = "") -> InferResult:
    """One tracked run around the engine: params, the results log, metrics, artifacts, a summary.

    With `kind` (its model loaded here) the files go through it in this process; without, through
    workers of the Dask cluster the config names, each loading the model once (`knobs`: the kind's settings).
    """
    # The log first: a folder that is busy or cannot be written is refused before any run is made.
    with ResultsLog(config.out_dir, fingerprint(settings)) as log, batch_cluster(config, log.dir) as client:
        spec = None
        if client is not None:
            source = resolve_model_source(config.model).path
            spec = InferSpec(name, stage_for_workers(config.model, source, log.dir), config.model, config.device,
                             knobs, str(Path(config.in_dir).resolve()), config.batch_size)
        experiment_id = steps.ensure_experiment(config.experiment)
        run_id = steps.start_run(experiment_id, run_name=f"infer-{name}-{Path(config.model).name}",
                                 tags=prefect_tags() | {"trackflow.job": f"infer-{name}"})
        run_url = store.run_url(store.tracking_uri(), experiment_id, run_id)
        with tracked(run_id):
            steps.log_params(run_id, config.model_dump() | runner_params(client) | {
                "kind": name, "model_source": source, "fingerprint": log.fingerprint, "n_files": len(files)})
            started = time.perf_counter()
            progress = Progress(len(files), f"infer {name}", "file", get_run_logger(), config.log_every)
            if client is None:
                stats, cluster = steps.process_inputs(files, Path(config.in_dir), kind, log, config.batch_size,
                                                      progress), None
            else:
                stats, cluster = steps.process_inputs_on_cluster(client, spec, files, log, config.shard_files,
                                                                 progress, measure)
            runner = runner_metrics(run_id, cluster, measure)
            progress.close()
            counts = log.finalize(stats.present)  # inputs gone since an earlier run are counted apart
            metrics = job_metrics(stats, counts, time.perf_counter() - started, measure) | runner
            steps.log_metrics(run_id, metrics)
            steps.log_artifact_files(run_id, [str(log.path), str(log.dir / RESULTS_CSV)], "results")
            links = {"MLflow run": run_url, "results": str(log.path)} | (
                {"Prefect flow run": u} if (u := flow_run_url()) else {})
            steps.publish_markdown(f"infer-{name}-summary",
                                   metrics_markdown(f"Batch inference ({name})", metrics, links),
                                   f"Counts and throughput of infer-{name}")
    result = InferResult(str(log.dir.resolve()), run_id, experiment_id, int(metrics["n_inputs"]), counts.get("ok", 0),
                         counts.get("error", 0), stats.n_skipped, counts.get("gone", 0), metrics, stats.failures,
                         run_url)
    if result.n_failed:
        get_run_logger().warning("%d of %d inputs failed; see %s", result.n_failed, result.n_inputs, log.path)
    return result
