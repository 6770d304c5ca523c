"""Batch-inference throughput and memory, each figure beside its peer, measured in one run.

Full-size architectures with random weights (built from their configs: the hub cannot be
reached here, and random weights cost exactly what trained ones cost):

1. GPT-2 small (124M), 32 new tokens per prompt: the tutorial's one-prompt-at-a-time
   `generate` against trackflow's `generate_batch` at batch 8, 16 and 32 (left padding,
   prompts sorted by length), and the fp32 arithmetic bound of this CPU.
2. wav2vec2-base (95M): one clip at a time against trackflow's `transcribe_clips`, on
   clips of equal length and on mixed lengths 2-20 s; the naive zero-padded batch is
   shown too (it is also wrong: padding changes a group-norm model's transcripts).
3. Peak RSS of `trackflow infer text` on N files against 10N files (tiny model).

Usage: python benchmarks/bench_inference.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from trackflow import telemetry  # noqa: E402

telemetry.quiet()
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

NEW_TOKENS = 32


def matmul_gflops() -> float:
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    n, t = 20, time.perf_counter()
    for _ in range(n):
        a @ b
    return 2 * 1024**3 * n / (time.perf_counter() - t) / 1e9


def bench_gpt2(work: Path, quick: bool) -> None:
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from tasks.generation import generate_batch
    from tasks.models import ModelSource, TextModel, make_tiny_gpt2

    # A real tokenizer is not reachable offline; the tiny one's ids are valid GPT-2 ids,
    # and only token counts matter for throughput.
    tok = AutoTokenizer.from_pretrained(make_tiny_gpt2(work / "tok"))
    tok.padding_side, tok.pad_token = "left", tok.eos_token
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id)).eval()
    model.generation_config.pad_token_id = tok.eos_token_id
    lm = TextModel(ModelSource("gpt2", "gpt2", "local"), tok, model, torch.device("cpu"))
    n_params = sum(p.numel() for p in model.parameters())
    words = "the sea and the sky tell a story about models pipelines and stars".split()
    prompts = [" ".join(words[: 3 + (i * 5) % 12]) for i in range(64)]
    settings = {"max_new_tokens": NEW_TOKENS, "do_sample": False}
    # Every new token passes through all weights once (2 FLOPs per weight) at fp32 GEMM speed.
    bound = matmul_gflops() * 1e9 / (2 * n_params)

    def tutorial(ps):  # the tutorial: encode one prompt, generate, decode
        n = 0
        for p in ps:
            ids = tok.encode(p, return_tensors="pt")
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.eos_token_id,
                                 attention_mask=torch.ones_like(ids))
            tok.decode(out[0])
            n += out.shape[1] - ids.shape[1]
        return n

    def batched(ps, bs):
        n = 0
        for i in range(0, len(ps), bs):
            n += sum(g.new_tokens for g in generate_batch(lm, ps[i : i + bs], settings))
        return n

    tutorial(prompts[:1])  # warm-up
    k = 4 if quick else 8
    t = time.perf_counter()
    base_tok = tutorial(prompts[:k]) / (time.perf_counter() - t)
    print(f"\nGPT-2 small ({n_params / 1e6:.0f}M params, random weights), {NEW_TOKENS} new tokens, greedy, fp32 CPU")
    print(f"  fp32 arithmetic bound (1024^3 GEMM speed / 2 FLOPs per weight): {bound:7.1f} tokens/s")
    print(f"  {'one prompt at a time (tutorial)':<34} {base_tok:7.1f} tokens/s   1.00x   {base_tok / bound:5.1%} of bound")
    for bs in ([16] if quick else [8, 16, 32]):
        ps = prompts[: bs * (1 if quick or bs == 32 else 2)]
        batched(ps[:bs], bs)  # warm-up at this shape
        t = time.perf_counter()
        rate = batched(ps, bs) / (time.perf_counter() - t)
        print(f"  {'trackflow generate_batch, batch ' + str(bs):<34} {rate:7.1f} tokens/s  {rate / base_tok:5.2f}x"
              f"   {rate / bound:5.1%} of bound")


def bench_wav2vec2(work: Path, quick: bool) -> None:
    import numpy as np
    import torch
    from transformers import AutoProcessor, Wav2Vec2Config, Wav2Vec2ForCTC

    from tasks.models import ModelSource, SpeechModel, make_tiny_wav2vec2
    from tasks.transcription import transcribe_clips

    processor = AutoProcessor.from_pretrained(make_tiny_wav2vec2(work / "w2v"))  # the 960h vocabulary
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=32)).eval()  # wav2vec2-base: group-norm encoder
    sm = SpeechModel(ModelSource("w2v", "w2v", "local"), processor, model, torch.device("cpu"))
    rng = np.random.default_rng(0)
    rate = 16_000
    n = 4 if quick else 8

    def clip(seconds):
        return (0.1 * rng.standard_normal(int(seconds * rate))).astype(np.float32)

    def one_at_a_time(clips):
        out = []
        for c in clips:  # the tutorial: processor, model, argmax, decode
            iv = processor(c, sampling_rate=rate, return_tensors="pt").input_values
            with torch.inference_mode():
                ids = model(iv).logits.argmax(-1)
            out.append(processor.batch_decode(ids)[0])
        return out

    def naive_padded(clips, bs):
        out = []
        for i in range(0, len(clips), bs):
            iv = processor(clips[i : i + bs], sampling_rate=rate, return_tensors="pt", padding=True).input_values
            with torch.inference_mode():
                out += processor.batch_decode(model(iv).logits.argmax(-1))
        return out

    def timed(fn, clips):
        t = time.perf_counter()
        res = fn(clips)
        return sum(len(c) for c in clips) / rate / (time.perf_counter() - t), res

    one_at_a_time([clip(2)])  # warm-up
    print(f"\nwav2vec2-base (95M params, random weights), batch {n}: seconds of audio per second")
    equal = [clip(10) for _ in range(n)]
    base, ref = timed(one_at_a_time, equal)
    ours, got = timed(lambda cs: transcribe_clips(sm, cs, chunk_seconds=30.0), equal)
    print(f"  equal clips ({n} x 10 s): one at a time {base:5.2f}   trackflow {ours:5.2f} ({ours / base:.2f}x)"
          f"   {sum(a == b for a, b in zip(got, transcribe_single(sm, equal)))}/{n} equal to unbatched")
    lengths = np.linspace(2, 20, n)
    rng.shuffle(lengths)
    mixed = [clip(s) for s in lengths]
    base, ref = timed(one_at_a_time, mixed)
    padded, pad_out = timed(lambda cs: naive_padded(cs, n), mixed)
    ours, got = timed(lambda cs: transcribe_clips(sm, cs, chunk_seconds=30.0), mixed)
    same_ours = sum(a == b for a, b in zip(got, transcribe_single(sm, mixed)))
    same_pad = sum(a == b for a, b in zip(pad_out, ref))
    print(f"  mixed 2-20 s ({n} clips):  one at a time {base:5.2f}   zero-padded batch {padded:5.2f}"
          f" ({padded / base:.2f}x, {same_pad}/{n} transcripts unchanged)   trackflow {ours:5.2f} ({ours / base:.2f}x,"
          f" {same_ours}/{n} equal to unbatched)")


def transcribe_single(sm, clips):
    from tasks.transcription import transcribe_clips

    return [transcribe_clips(sm, [c], chunk_seconds=30.0)[0] for c in clips]


def peak_rss(cmd: list[str], env: dict) -> tuple[float, int]:
    """Peak RSS (MiB) of the command's own process, sampled every 20 ms, and its exit code."""
    import psutil

    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ps, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.02)
    return peak / 2**20, proc.returncode


def bench_memory(work: Path, quick: bool) -> None:
    from tasks.models import make_tiny_gpt2

    model = make_tiny_gpt2(work / "tiny-gpt2")
    trackflow = str(Path(sys.executable).parent / "trackflow")
    env = os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"}
    small = 100 if quick else 200
    print("\nPeak RSS of `trackflow infer text` (tiny GPT-2, 4 new tokens), streamed folder:")
    rows = []
    for n in (small, small * 10):
        d = work / f"in{n}"
        d.mkdir()
        for i in range(n):
            (d / f"{i:05d}.txt").write_text(f"prompt {i} " + "about the sea " * (i % 7))
        rss, rc = peak_rss([trackflow, "infer", "text", str(d), "--out", str(work / f"out{n}"), "--model", str(model),
                            "--max-new-tokens", "4", "--batch-size", "16"], env)
        if rc != 0:
            raise SystemExit(f"trackflow infer failed on {n} files (exit {rc})")
        rows.append((n, rss))
    (n1, r1), (n2, r2) = rows
    print(f"  {n1:>5} files: {r1:7.1f} MiB   {n2:>5} files: {r2:7.1f} MiB   ratio {r2 / r1:.3f} (goal <= 1.10)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer prompts, clips and files")
    ap.add_argument("--only", choices=["gpt2", "wav2vec2", "memory"], help="run one part")
    args = ap.parse_args()
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        work = Path(tmp)
        for name, fn in (("gpt2", bench_gpt2), ("wav2vec2", bench_wav2vec2), ("memory", bench_memory)):
            if args.only in (None, name):
                fn(work, args.quick)


if __name__ == "__main__":
    main()
