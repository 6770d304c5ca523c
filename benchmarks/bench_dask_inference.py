"""Batch inference on a Dask cluster of 2 single-threaded workers against one single-threaded process, in one run.

For tiny GPT-2 text (prompt files) and tiny wav2vec2 audio (2 s recordings), side by side:

1. One single-threaded in-process job (`tasks.batch.run_job` into a results log), the
   same files on a warm local Dask cluster of 2 single-threaded worker processes
   (`tasks.shards.run_job_on_cluster`, the default shard size), and this machine's
   parallel ceiling: the same work in 2 bare processes side by side (`_common.parallel_ceiling`).
   Goal: the cluster's speed-up >= 90% of the ceiling.
2. Per-shard overhead at the default shard size: the round trip of an empty shard (scheduling,
   sending the spec, returning a result) plus the job's append of a shard's records, against
   a shard's compute on its worker. Goal: <= 5%. Other shard sizes are shown beside it.
3. The cluster's start-up and first job (each worker imports torch and loads its model once).

The machine may be shared: the load average is printed with the figures.

Usage: python benchmarks/bench_dask_inference.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from trackflow import telemetry  # noqa: E402

telemetry.quiet()

TEXT = {"model": "tiny-gpt2", "max_new_tokens": 48, "do_sample": False}
AUDIO = {"chunk_seconds": 30.0, "max_seconds": 3600.0}
BATCH = 8


class _Quiet:
    def update(self, n: int) -> None:
        pass


def make_inputs(work: Path, n_text: int, n_audio: int) -> dict[str, Path]:
    from tasks.models import make_tiny_models
    from tests.helpers.audio import write_audio

    models = make_tiny_models(work / "models")
    text, audio = work / "text", work / "audio"
    text.mkdir()
    for i in range(n_text):
        (text / f"p{i:05d}.txt").write_text(f"Prompt {i}: " + "the sea and the sky tell a story " * (1 + i % 4))
    for i in range(n_audio):
        write_audio(audio / f"c{i:05d}.wav", 16_000, 2.0, kind="speech", seed=i)
    return {"text_model": models["text"], "audio_model": models["audio"], "text": text, "audio": audio}


def spec(kind: str, paths: dict) -> object:
    from tasks.shards import InferSpec

    return InferSpec(kind, str(paths[f"{kind}_model"]), kind, "cpu", TEXT if kind == "text" else AUDIO,
                     str(paths[kind]), BATCH)


def files_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


_ceiling_args: dict = {}


def _ceiling_init(s, files) -> None:
    _one_thread()
    _ceiling_args.update(spec=s, files=files)


def _work(_) -> float:
    """The compute of half the job in one bare process (model cached after the first call), timed."""
    from tasks.shards import infer_shard

    t = time.perf_counter()
    infer_shard(_ceiling_args["spec"], _ceiling_args["files"], {})
    return time.perf_counter() - t


def in_process(s, files: list[str], out: Path) -> float:
    """One single-threaded in-process job over `files`, model loaded beforehand (as the flow does)."""
    from tasks.batch import run_job
    from tasks.results import ResultsLog, fingerprint
    from tasks.shards import _infer_kind

    kind, _ = _infer_kind(s)
    with ResultsLog(out, fingerprint({"bench": time.time()})) as log:
        t = time.perf_counter()
        stats = run_job(files, Path(s.root), kind, log, s.batch_size, _Quiet())
        took = time.perf_counter() - t
    assert stats.n_processed == len(files)
    return took


def on_cluster(client, s, files: list[str], out: Path, shard_files: int) -> tuple[float, object, float]:
    """The same job on the cluster: (wall seconds, ClusterStats, seconds the job spent appending)."""
    from tasks.results import ResultsLog, fingerprint
    from tasks.shards import run_job_on_cluster

    with ResultsLog(out, fingerprint({"bench": time.time()})) as log:
        appending = [0.0]
        real = log.append

        def timed_append(records):
            t = time.perf_counter()
            real(records)
            appending[0] += time.perf_counter() - t

        log.append = timed_append
        t = time.perf_counter()
        stats, cluster = run_job_on_cluster(client, s, files, log, shard_files, _Quiet(), "m")
        took = time.perf_counter() - t
    assert stats.n_processed == len(files), stats.n_processed
    return took, cluster, appending[0]


def round_trip(client, s, n: int = 30) -> float:
    """Median seconds from submitting an empty shard (the real spec) to holding its result."""
    from tasks.shards import infer_shard

    times = []
    for _ in range(n):
        t = time.perf_counter()
        client.submit(infer_shard, s, [], {}, pure=False).result()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    from tasks.cluster import dask_client
    from trackflow.config import BatchClusterConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer inputs, one repeat (a smoke run)")
    args = ap.parse_args()
    default = BatchClusterConfig.model_fields["shard_files"].default
    n_text, n_audio = (256, 128) if args.quick else (1024, 512)
    rounds = 1 if args.quick else 3
    work = Path(tempfile.mkdtemp(prefix="bench-dask-"))
    paths = make_inputs(work, n_text, n_audio)
    _one_thread()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    t = time.perf_counter()
    with dask_client(None, 2) as client:
        started = time.perf_counter() - t
        for kind, files in (("text", files_of(paths["text"])), ("audio", files_of(paths["audio"]))):
            s = spec(kind, paths)
            t = time.perf_counter()
            _, first, _ = on_cluster(client, s, files[: 4 * default], work / f"warm-{kind}", default)
            warm = time.perf_counter() - t
            ceiling, alone, paired = _common.parallel_ceiling(_work, rounds, _ceiling_init,
                                                              (s, files[: len(files) // 2]))
            here = statistics.median(in_process(s, files, work / f"here-{kind}-{i}") for i in range(rounds))
            runs = [on_cluster(client, s, files, work / f"dask-{kind}-{i}", default) for i in range(rounds)]
            there, cluster, appending = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
            trip = round_trip(client, s)
            shard_compute = cluster.shard_seconds / cluster.shards
            overhead = trip + appending / cluster.shards
            print(f"\n{kind}: {len(files)} files, batch {BATCH}, shards of {default} files (median of {rounds}); "
                  f"load average {os.getloadavg()[0]:.2f}")
            print(f"  1 single-threaded process (in-process job)   {here:7.2f} s   1.00x")
            print(f"  2 single-threaded Dask workers (warm)        {there:7.2f} s   {here / there:4.2f}x")
            print(f"  parallel ceiling (2 bare processes)          one half alone {alone:.2f} s, two side by side "
                  f"{paired:.2f} s: {ceiling:4.2f}x")
            print(f"  Dask speed-up / ceiling                      {here / there / ceiling:6.1%}   (goal >= 90%)")
            print(f"  per-shard overhead: round trip {trip * 1000:.1f} ms + append "
                  f"{appending / cluster.shards * 1000:.1f} ms = {overhead * 1000:.1f} ms vs {shard_compute:.2f} s of compute: {overhead / shard_compute:5.1%}"
                  "   (goal <= 5%)")
            for size in (default // 4, default * 4):
                took, cs, app = on_cluster(client, s, files, work / f"size-{kind}-{size}", size)
                per = cs.shard_seconds / cs.shards
                print(f"    shards of {size:4d} files: {took:6.2f} s ({here / took:4.2f}x); overhead "
                      f"{(trip + app / cs.shards) * 1000:.1f} ms per {per:.2f} s shard "
                      f"({(trip + app / cs.shards) / per:5.1%})")
            print(f"  first job on the fresh cluster ({min(4 * default, len(files))} files): {warm:.2f} s, "
                  f"{first.model_loads} model loads (imports and the model, once per worker)")
    print(f"\nlocal cluster start-up (2 worker processes): {started:.2f} s; "
          f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
