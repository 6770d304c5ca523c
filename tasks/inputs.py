"""Finding and reading batch-inference inputs: prompt files and recordings.

The folder is streamed (a sorted walk, one directory at a time), never listed whole,
and every reader turns a bad file into an `InputError` naming the cause, so one bad
file becomes one error record and never stops the batch.

Only regular files are read, and never in a way that can block: a FIFO opened for
reading would wait forever for a writer, so files are opened non-blocking and checked
with fstat before a byte is read. A symlink is followed only to a regular file inside
the input folder. A file name that is not valid UTF-8 is recorded escaped (`escape_name`),
losslessly, and read like any other.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.results import JOB_FILES, item_key
from trackflow.naming import param

TARGET_RATE = 16_000  # Wav2Vec2 checkpoints are trained on 16 kHz mono
SILENCE_PEAK = 1e-4  # -80 dBFS: below this a clip holds no signal worth transcribing


class InputFolderError(ValueError):
    """The input folder is missing, not a folder, or has nothing to process: the whole job is refused."""


class InputError(Exception):
    """A single input cannot be processed; the message names the cause (and the fix, where there is one)."""


def escape_name(rel: str) -> str:
    """A file name from the file system as valid Unicode, reversibly (`unescape_name`).

    Names that are valid UTF-8 without a backslash (nearly all) come back unchanged.
    Otherwise a backslash is doubled and each byte that is not UTF-8 becomes `\\xNN`,
    as `ls --quoting-style=escape` shows it, so distinct names stay distinct.
    """
    raw = os.fsencode(rel)
    if b"\\" not in raw:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
    # A backslash byte is never part of a multi-byte UTF-8 sequence, so doubling it first is safe.
    return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


_ESCAPE = re.compile(r"\\(\\|x[0-9a-f]{2})")


def unescape_name(name: str) -> str:
    """The file-system name (surrogate-escaped str, as os.walk gives it) that `escape_name` made `name` from."""
    if "\\" not in name:
        return name
    out, i = bytearray(), 0
    for m in _ESCAPE.finditer(name):
        out += name[i : m.start()].encode("utf-8")
        out += b"\\" if m.group(1) == "\\" else bytes([int(m.group(1)[1:], 16)])
        i = m.end()
    out += name[i:].encode("utf-8")
    return os.fsdecode(bytes(out))


_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def _not_regular(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return None
    kind = next((what for test, what in _KINDS if test(mode)), "not a regular file")
    return f"not a regular file ({kind}); only regular files are read"


def open_input(path: Path, root: Path):
    """Open an input for binary reading, or raise InputError: never blocks, never leaves `root`.

    A symlink must resolve to a regular file inside `root`; FIFOs, sockets, devices and
    folders are refused. The file is opened non-blocking (a FIFO swapped in after the
    check cannot stall the job) and checked again with fstat before it is read.
    """
    real = os.path.realpath(path)
    if os.path.islink(path) and os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
        raise InputError(f"symlink to {escape_name(real)!r}, outside the input folder; copy the file in instead")
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None
    if why := _not_regular(st.st_mode):
        raise InputError(why)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}") from None
    if why := _not_regular(os.fstat(fd).st_mode):
        os.close(fd)
        raise InputError(why)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_input(path: Path, root: Path, limit: int | None = None) -> bytes:
    """The whole content of an input (see `open_input`); InputError past `limit` bytes."""
    with open_input(path, root) as f:
        data = f.read(limit + 1 if limit is not None else -1)
    if limit is not None and len(data) > limit:
        raise InputError(f"file is over {limit // 1024} KiB, more than one prompt can be; split it into a .jsonl "
                         'file of {"prompt": ...} lines')
    return data


@dataclass(frozen=True)
class Item:
    """One unit of work: a file, or one line of a .jsonl file."""

    input: str  # path relative to the input folder, POSIX separators, escaped by escape_name
    line: int | None  # 1-based line for .jsonl prompts, else None
    digest: str  # sha256 of the content this item stands for

    @property
    def key(self) -> str:
        return item_key(self.input, self.line)


def glob_matcher(pattern: str):
    """A compiled glob: `**` (any depth), `*`, `?`, `[...]`, `{a,b}` alternatives, case-insensitive (wcmatch)."""
    from wcmatch import glob

    return glob.compile(pattern, flags=glob.GLOBSTAR | glob.BRACE | glob.IGNORECASE)


def iter_files(in_dir: str | Path, pattern: str, exclude: str | Path | None = None) -> Iterator[Path]:
    """Files under `in_dir` matching `pattern`, in sorted order, streamed directory by directory.

    Hidden files and folders (".DS_Store", "._x.wav", ".git") are skipped, and so is the
    `exclude` folder (the output folder, when it sits inside the input one); when the
    output folder is the input folder itself, the job's own files in it (results.jsonl,
    results.csv and their temporary files) are skipped.
    """
    root = Path(in_dir)
    matcher = glob_matcher(pattern)
    skip = Path(exclude).resolve() if exclude else None
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (skip is None or Path(dirpath, d).resolve() != skip)
        )
        own = JOB_FILES if skip is not None and Path(dirpath).resolve() == skip else ()
        for name in sorted(filenames):
            if name.startswith(".") or name in own:
                continue
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if matcher.match(rel) and not path.is_dir():
                yield path


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise InputFolderError(f"input folder {str(root)!r} does not exist; check the path")
    if not root.is_dir():
        raise InputFolderError(f"input {str(root)!r} is a file, not a folder; pass the folder that holds it")


def _nothing_matches(root: Path, pattern: str) -> InputFolderError:
    return InputFolderError(f"input folder {str(root)!r} has no files matching {pattern!r}; add files or change "
                           f"{param('glob')}")


def check_input_dir(in_dir: str | Path, pattern: str, exclude: str | Path | None, allow_empty: bool) -> bool:
    """Raise InputFolderError naming the folder when there is nothing to process; stops at the first input.

    With `allow_empty` (a scheduled inbox), a folder that is missing or has no inputs is
    not an error: the result is True ("nothing to do") instead. False means there is work.
    """
    root = Path(in_dir)
    if allow_empty and not root.exists():
        return True
    _check_folder(root)
    if next(iter_files(root, pattern, exclude), None) is None:
        if allow_empty:
            return True
        raise _nothing_matches(root, pattern)
    return False


def file_digest(path: Path, root: Path) -> str:
    h = hashlib.sha256()
    with open_input(path, root) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------- text


def _decode_utf8(data: bytes, where: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where} is not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); re-save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{where} contains NUL bytes: it looks like a binary file, not text")
    return text


# A prompt that fills GPT-2's whole context is ~4 KiB of text; a .txt input far larger
# than that is a mistake (a log, a dump), refused before it is read into memory.
MAX_PROMPT_FILE = 1 << 20
MAX_JSONL_FILE = 1 << 30


def read_prompts(path: Path, rel: str, root: Path) -> Iterator[tuple[Item, str | InputError]]:
    """The prompts in one file: (item, prompt) or (item, InputError) per prompt.

    A `.txt` file is one prompt; a `.jsonl` file is one `{"prompt": ...}` per line
    (blank lines are skipped). A file that cannot be read at all yields one error item.
    `rel` is the escaped name (escape_name) the records carry.
    """
    jsonl = path.suffix.lower() == ".jsonl"
    try:
        data = read_input(path, root, MAX_JSONL_FILE if jsonl else MAX_PROMPT_FILE)
    except InputError as exc:
        yield Item(rel, None, ""), exc
        return
    if not jsonl:
        item = Item(rel, None, hashlib.sha256(data).hexdigest())
        try:
            text = _decode_utf8(data, "file")
            if not text.strip():
                raise InputError("empty prompt: the file is empty or only whitespace")
            yield item, text
        except InputError as exc:
            yield item, exc
        return
    try:
        text = _decode_utf8(data, "file")
    except InputError as exc:
        yield Item(rel, None, hashlib.sha256(data).hexdigest()), exc
        return
    if not text.strip():
        yield Item(rel, None, hashlib.sha256(data).hexdigest()), InputError("empty file: no JSON lines")
        return
    # Lines end at "\n" only: str.splitlines() also splits at U+2028, U+2029 and U+0085, which
    # JSON strings hold unescaped, and that would shift every later line number.
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        item = Item(rel, n, text_digest(line))
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            yield item, InputError(f"line {n} is not valid JSON ({exc.msg}); expected {{\"prompt\": \"...\"}}")
            continue
        prompt = obj.get("prompt") if isinstance(obj, dict) else None
        if not isinstance(prompt, str):
            yield item, InputError(f'line {n} has no string "prompt" field; expected {{"prompt": "..."}}')
        elif not prompt.strip():
            yield item, InputError(f"line {n}: empty prompt")
        else:
            yield item, prompt


# --------------------------------------------------------------------------- audio


def decode_audio(path: Path, root: Path, max_seconds: float = float("inf")) -> np.ndarray:
    """Decode a WAV/FLAC/OGG/MP3 file to 16 kHz mono float32 (soundfile decodes, torchaudio resamples).

    A recording without signal (digital silence) decodes fine: what it says is for the
    model, so it is not an error here.
    """
    import soundfile as sf

    with open_input(path, root) as f:
        return _decode(f, max_seconds, sf)


def _decode(f, max_seconds: float, sf) -> np.ndarray:
    try:
        info = sf.info(f)
        f.seek(0)
    except Exception as exc:  # libsndfile's errors carry no useful type
        raise InputError(f"not a readable audio file ({_sf_reason(exc)}); expected WAV, FLAC, OGG or MP3") from None
    if info.frames == 0 or info.samplerate <= 0:
        raise InputError("zero-length clip: the file holds no audio frames")
    if info.duration > max_seconds:
        raise InputError(
            f"recording is {info.duration:.0f} s, longer than --max-seconds {max_seconds:g}; split it or raise the limit"
        )
    try:
        data, rate = sf.read(f, dtype="float32", always_2d=True)
    except Exception as exc:
        raise InputError(f"corrupt audio: decoding failed ({_sf_reason(exc)})") from None
    if len(data) == 0:
        raise InputError("zero-length clip: the file holds no audio frames")
    # libsndfile shortens a truncated WAV's length to what the file holds and notes the
    # header's claim in its log ("data : 132300 (should be 66128)"); compressed formats
    # decode fewer frames than their header promises (1% slack for MP3's encoder padding).
    claimed = re.search(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", info.extra_info or "", re.MULTILINE)
    if claimed and int(claimed.group(2)) < int(claimed.group(1)):
        raise InputError(
            f"truncated audio: the header promises {int(claimed.group(1))} bytes of samples, "
            f"the file holds {int(claimed.group(2))}"
        )
    if len(data) < 0.99 * info.frames:
        raise InputError(
            f"truncated audio: the header promises {info.frames / rate:.2f} s, the file holds {len(data) / rate:.2f} s"
        )
    if not np.isfinite(data).all():
        raise InputError("corrupt audio: the samples contain NaN or infinity")
    mono = data.mean(axis=1)
    if rate != TARGET_RATE:
        import torch
        import torchaudio.functional as AF

        mono = AF.resample(torch.from_numpy(mono), rate, TARGET_RATE).numpy()
    return np.ascontiguousarray(mono, dtype=np.float32)


def _sf_reason(exc: Exception) -> str:
    msg = str(exc)
    # "Error opening '/abs/path': Format not recognised." -> "Format not recognised."
    return msg.split(": ", 1)[1] if msg.startswith("Error opening") and ": " in msg else msg


# --------------------------------------------------------------------------- loaded inputs


@dataclass
class Loaded:
    """An input read from disk: its value (prompt text or 16 kHz samples), or why it could not be read."""

    item: Item
    value: object = None
    error: str | None = None
    size: int = 0  # tokens, samples: inputs of similar size share a batch


def list_inputs(in_dir: str | Path, pattern: str, exclude: str | Path | None, allow_empty: bool) -> list[str]:
    """The input files under `in_dir`, as escaped relative names, in one walk of the folder.

    Raises InputFolderError naming the folder when it is missing or has nothing to
    process, unless `allow_empty` (a scheduled inbox, whose folder a fresh clone does not
    have yet) makes that an empty list. Names only are kept (~100 bytes a file), never contents.
    """
    root = Path(in_dir)
    if allow_empty and not root.exists():
        return []
    _check_folder(root)
    files = [escape_name(p.relative_to(root).as_posix()) for p in iter_files(root, pattern, exclude)]
    if not files and not allow_empty:
        raise _nothing_matches(root, pattern)
    return files


def read_prompt_file(root: Path, rel: str) -> list[Loaded]:
    """The prompts of one file (escaped name `rel`), each loaded or with its error."""
    return [Loaded(item, error=str(value)) if isinstance(value, InputError) else Loaded(item, value)
            for item, value in read_prompts(root / unescape_name(rel), rel, root)]


def read_recording(root: Path, rel: str, max_seconds: float, is_done) -> Loaded:
    """One recording decoded, unless `is_done(key, digest)` says its content was already transcribed."""
    path = root / unescape_name(rel)
    try:
        digest = file_digest(path, root)
    except (OSError, InputError) as exc:
        return Loaded(Item(rel, None, ""), error=str(exc) if isinstance(exc, InputError) else f"cannot read file: {exc}")
    item = Item(rel, None, digest)
    if is_done(item.key, digest):
        return Loaded(item)  # skipped by the job; not decoded
    try:
        return Loaded(item, decode_audio(path, root, max_seconds))
    except (OSError, InputError) as exc:
        return Loaded(item, error=str(exc) if isinstance(exc, InputError) else f"cannot read file: {exc}")
