"""Batch inference: a Hugging Face model over a folder of files, results that survive crashes.

Two flows share one job loop: `infer-text` (causal LM generation over prompt files)
and `infer-audio` (CTC transcription over recordings). The model is loaded once per
flow run; the folder is streamed in windows, the next window is read while the
current one runs, and each batch's records are made durable before the next starts.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, get_run_logger

from flows.train import flow_run_url, prefect_tags, tracked
from tasks.generation import check_prompt_lengths, generate_batch
from tasks.inputs import (
    Loaded,
    check_input_dir,
    count_items,
    decode_audio_files,
    escape_name,
    iter_files,
    read_prompt_files,
)
from tasks.models import load_speech_model, load_text_model
from tasks.reporting import metrics_markdown, publish_markdown
from tasks.results import RESULTS_CSV, RESULTS_JSONL, ResultsLog, fingerprint
from tasks.tracking import ensure_experiment, log_artifact_files, log_metrics, log_params, start_run
from tasks.transcription import transcribe_clips
from trackflow import store
from trackflow.config import AudioInferConfig, InferConfig, TextInferConfig
from trackflow.progress import Progress


@dataclass
class InferResult:
    run_id: str
    experiment_id: str
    out_dir: str
    n_inputs: int = 0
    n_ok: int = 0
    n_failed: int = 0
    n_skipped: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (input, error), first 20
    run_url: str = ""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record(loaded: Loaded, model: str, status: str, output=None, error=None, seconds=None, **extra) -> dict:
    return {
        "input": loaded.item.input, "line": loaded.item.line, "status": status, "output": output,
        "error": error, "seconds": seconds, "model": model, "digest": loaded.item.digest,
        "finished_at": _now(), **extra,
    }


def _windows(config: InferConfig, size: int) -> Iterator[list[str]]:
    root = Path(config.in_dir)
    files = (escape_name(p.relative_to(root).as_posix()) for p in iter_files(root, config.glob, exclude=config.out_dir))
    while window := list(itertools.islice(files, size)):
        yield window


def _run_job(
    config: InferConfig,
    kind: str,
    source: str,
    settings: dict,
    read: Callable[[list[str], ResultsLog], object],
    process: Callable[[list[Loaded]], Iterator[list[dict]]],
    window: int,
) -> InferResult:
    """Stream the folder through `read` (a task, submitted one window ahead) and `process` (batches of records)."""
    logger = get_run_logger()
    experiment_id = ensure_experiment(config.experiment)
    run_id = start_run(experiment_id, run_name=f"infer-{kind}-{Path(config.model).name}",
                       tags=prefect_tags() | {"trackflow.job": f"infer-{kind}"})
    result = InferResult(run_id, experiment_id, str(Path(config.out_dir).resolve()),
                         run_url=store.run_url(store.tracking_uri(), experiment_id, run_id))
    with tracked(run_id), ResultsLog(config.out_dir, fingerprint(settings)) as log:
        log_params(run_id, config.model_dump() | {"kind": kind, "model_source": source, "fingerprint": log.fingerprint})
        total = count_items(config.in_dir, config.glob, exclude=config.out_dir)
        progress = Progress(total, f"infer {kind}", logger, config.log_every)
        started, busy, sums = time.perf_counter(), 0.0, {"new_tokens": 0.0, "audio_seconds": 0.0}
        windows = _windows(config, window)
        pending = read(next(windows, []), log)
        while pending is not None:
            loaded = pending.result()
            nxt = next(windows, None)
            pending = read(nxt, log) if nxt else None  # read ahead while this window runs
            todo = []
            for x in loaded:
                if x.error is None and log.is_done(x.item.key, x.item.digest):
                    result.n_skipped += 1
                else:
                    todo.append(x)
            progress.update(len(loaded) - len(todo))
            t0 = time.perf_counter()
            for records in process(todo):
                log.append(records)
                progress.update(len(records))
                for r in records:
                    for k in sums:
                        sums[k] += r.get(k) or 0
                    if r["status"] != "ok" and len(result.failures) < 20:
                        result.failures.append((r["input"] + (f":{r['line']}" if r["line"] else ""), r["error"]))
            busy += time.perf_counter() - t0
        progress.close()
        wall = time.perf_counter() - started
        counts = log.finalize()
        result.n_ok, result.n_failed = counts.get("ok", 0), counts.get("error", 0)
        result.n_inputs = result.n_ok + result.n_failed
        done_now = progress.done - result.n_skipped
        result.metrics = {
            "n_inputs": result.n_inputs, "n_ok": result.n_ok, "n_failed": result.n_failed,
            "n_skipped": result.n_skipped, "n_processed": done_now, "wall_seconds": wall,
            "inputs_per_second": done_now / wall if wall > 0 else 0.0,
            "compute_seconds": busy,
        }
        if kind == "text":
            result.metrics |= {"new_tokens": sums["new_tokens"], "new_tokens_per_second": sums["new_tokens"] / busy if busy else 0.0}
        else:
            result.metrics |= {"audio_seconds": sums["audio_seconds"],
                               "audio_seconds_per_second": sums["audio_seconds"] / busy if busy else 0.0}
        log_metrics(run_id, result.metrics)
        log_artifact_files(run_id, [str(log.path), str(log.dir / RESULTS_CSV)], "results")
        links = {"MLflow run": result.run_url, "results": str(log.path)}
        if url := flow_run_url():
            links["Prefect flow run"] = url
        publish_markdown(f"infer-{kind}-summary", metrics_markdown(f"Batch inference ({kind})", result.metrics, links),
                         f"Counts and throughput of infer-{kind}")
        if result.n_failed:
            logger.warning("%d of %d inputs failed; see %s", result.n_failed, result.n_inputs, log.path)
    return result


def _nothing_to_do(config: InferConfig) -> bool:
    """Refuse a missing or empty input folder before any model is loaded or run is created.

    With `allow_empty` (a scheduled inbox), an existing folder with no inputs is not an error.
    """
    if check_input_dir(config.in_dir, config.glob, exclude=config.out_dir, allow_empty=config.allow_empty):
        get_run_logger().info("nothing to do: no files matching %r in %s", config.glob, config.in_dir)
        return True
    return False


@flow(name="infer-text", log_prints=True)
def text_inference_pipeline(config: TextInferConfig) -> InferResult:
    """Continue every prompt under `in_dir` with a causal LM; results in `out_dir`."""
    if _nothing_to_do(config):
        return InferResult("", "", str(Path(config.out_dir).resolve()))
    lm = load_text_model(config.model, config.device)
    settings = {k: getattr(config, k) for k in ("model", "max_new_tokens", "do_sample")}
    if config.do_sample:
        settings |= {k: getattr(config, k) for k in ("temperature", "top_k", "top_p", "seed")}

    def read(rels: list[str], log: ResultsLog):
        return read_prompt_files.submit(config.in_dir, rels)

    def process(todo: list[Loaded]) -> Iterator[list[dict]]:
        bad = [x for x in todo if x.error is not None]
        good = [x for x in todo if x.error is None]
        lengths = check_prompt_lengths(lm, [x.value for x in good], config.max_new_tokens)
        bad += [Loaded(x.item, error=str(n)) for x, n in zip(good, lengths) if isinstance(n, Exception)]
        if bad:
            yield [_record(x, config.model, "error", error=x.error) for x in bad]
        # Sorted by length so a batch pads little.
        ready = sorted((n, i, x) for i, (x, n) in enumerate(zip(good, lengths)) if not isinstance(n, Exception))
        for i in range(0, len(ready), config.batch_size):
            batch = [x for _, _, x in ready[i : i + config.batch_size]]
            yield _run_batch(batch, lambda xs: generate_batch(lm, [x.value for x in xs], settings),
                             lambda x, g, s: _record(x, config.model, "ok", g.text, seconds=s, new_tokens=g.new_tokens),
                             config.model)

    return _run_job(config, "text", lm.source.path, settings, read, process, window=config.batch_size * 8)


@flow(name="infer-audio", log_prints=True)
def audio_inference_pipeline(config: AudioInferConfig) -> InferResult:
    """Transcribe every recording under `in_dir` with a CTC model; results in `out_dir`."""
    from tasks.inputs import TARGET_RATE

    if _nothing_to_do(config):
        return InferResult("", "", str(Path(config.out_dir).resolve()))
    sm = load_speech_model(config.model, config.device)
    settings = {"model": config.model, "chunk_seconds": config.chunk_seconds}

    def read(rels: list[str], log: ResultsLog):
        return decode_audio_files.submit(config.in_dir, rels, config.max_seconds, log.is_done)

    def process(todo: list[Loaded]) -> Iterator[list[dict]]:
        short = f"clip is shorter than the model's {sm.min_samples / TARGET_RATE * 1000:.0f} ms receptive field"
        todo = [Loaded(x.item, error=short) if x.error is None and len(x.value) < sm.min_samples else x for x in todo]
        bad = [x for x in todo if x.error is not None]
        if bad:
            yield [_record(x, config.model, "error", error=x.error) for x in bad]
        good = sorted((x for x in todo if x.error is None), key=lambda x: len(x.value))
        for i in range(0, len(good), config.batch_size):
            batch = good[i : i + config.batch_size]
            yield _run_batch(
                batch, lambda xs: transcribe_clips(sm, [x.value for x in xs], config.batch_size, config.chunk_seconds),
                lambda x, text, s: _record(x, config.model, "ok", text, seconds=s,
                                           audio_seconds=round(len(x.value) / TARGET_RATE, 3)),
                config.model)

    return _run_job(config, "audio", sm.source.path, settings, read, process, window=config.batch_size * 4)


def _run_batch(batch: list[Loaded], run: Callable, ok: Callable, model: str) -> list[dict]:
    """Run one batch; if it raises, run its inputs one by one so only the culprit gets an error record."""
    t0 = time.perf_counter()
    try:
        outputs = run(batch)
        per_item = (time.perf_counter() - t0) / len(batch)
        return [ok(x, out, round(per_item, 4)) for x, out in zip(batch, outputs)]
    except Exception as exc:
        if len(batch) == 1:
            return [_record(batch[0], model, "error", error=f"model failed on this input: {type(exc).__name__}: {exc}")]
    records = []
    for x in batch:
        t0 = time.perf_counter()
        try:
            (out,) = run([x])
            records.append(ok(x, out, round(time.perf_counter() - t0, 4)))
        except Exception as exc:
            records.append(_record(x, model, "error", error=f"model failed on this input: {type(exc).__name__}: {exc}"))
    return records
