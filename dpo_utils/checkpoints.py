"""Checkpoints of a training run: where they live, what they hold, and how they are checked.

A run's ``output_dir`` holds ``checkpoint/state.pt`` (everything needed to resume: weights,
optimizer, scheduler, loss scaler, step, history, reference log-probs), ``checkpoint/history.json``
(the same history, readable) and, at the end, ``final/`` (``save_pretrained``). Every file is written
under a temporary name and renamed, so a crash or a full disk never leaves half a checkpoint.

A checkpoint records a **fingerprint** of what decides the run's trajectory: the settings, the
token ids of every pair and every byte of the starting weights. A run resumes, or is loaded as
finished, only from a checkpoint with its own fingerprint; anything else raises
:class:`StaleCheckpointError` saying what differs. Files are read with
``torch.load(weights_only=True)``: tensors and plain values only, so a planted ``state.pt`` runs no code.
"""

from __future__ import annotations

import errno
import hashlib
import json
import pickle
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors import SafetensorError

from dpo_utils.numerics import non_finite_weights
from dpo_utils.reference import ReferenceLogprobs, checked_reference
from dpo_utils.runtime.config import display_path
from dpo_utils.runtime.progress import library_bars_hidden

CHECKPOINT_DIR, STATE_FILE, HISTORY_FILE, FINAL_DIR = "checkpoint", "state.pt", "history.json", "final"
# Settings that do not change what a step computes: a run may be resumed with other values.
RESUMABLE_CHANGES = ("max_steps", "save_every", "save_final_model")
# Config entries that say how a model was saved or is called, not what it computes.
UNFINGERPRINTED_CONFIG = (
    "_name_or_path",
    "_commit_hash",
    "transformers_version",
    "architectures",
    "dtype",
    "torch_dtype",
    "use_cache",
    "output_attentions",
    "output_hidden_states",
    "return_dict",
)


class StaleCheckpointError(RuntimeError):
    """``output_dir`` holds the checkpoint of a run with other settings, other data or another starting model."""


class UnsafeCheckpointError(StaleCheckpointError):
    """``state.pt`` holds objects other than tensors and plain values: refused unread (it could run code)."""


class CheckpointSaveError(RuntimeError):
    """A checkpoint or the final model could not be written (a full disk, most often); what was there before
    is intact."""


def state_path(output_dir) -> Path:
    """``output_dir/checkpoint/state.pt``: the file a run resumes from."""
    return Path(output_dir) / CHECKPOINT_DIR / STATE_FILE


def model_fingerprint(model) -> str:
    """A hash of a model's starting point: its config, every parameter's name, shape, dtype and
    ``requires_grad``, and every byte of every parameter (in the order of their names).

    A model differing in a single element is told apart. The cost grows with the weights: about 0.45 s
    (0.42-0.54 s measured) for SmolLM2-135M (540 MB in fp32) on a 2-core CPU, SHA-256 at about
    1.2 GB/s, paid once per trainer; a GPU model is copied to the CPU one tensor at a time.
    """
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if hasattr(config, "to_dict"):
        settings = {k: v for k, v in config.to_dict().items() if k not in UNFINGERPRINTED_CONFIG}
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, param in sorted(model.named_parameters(), key=lambda item: item[0]):
            digest.update(f"{name} {tuple(param.shape)} {param.dtype} {param.requires_grad}\n".encode())
            digest.update(param.detach().reshape(-1).contiguous().cpu().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def run_fingerprint(config, pairs, model_digest: str = "") -> str:
    """A hash of everything that decides a run's trajectory: the settings of the dataclass ``config``
    (but those in ``RESUMABLE_CHANGES``), the token ids of every pair, in order, and the starting
    model (``model_digest``, from :func:`model_fingerprint`)."""
    settings = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode() + model_digest.encode())
    for pair in pairs:
        digest.update(json.dumps([pair.prompt_ids, pair.chosen_ids, pair.rejected_ids]).encode())
    return digest.hexdigest()[:16]


def load_state(path: Path, map_location=None) -> dict:
    """The state a checkpoint holds, unpickling only tensors and plain Python values
    (``torch.load(weights_only=True)``): a planted ``state.pt`` cannot run code, it is refused unread."""
    try:
        state = torch.load(path, weights_only=True, map_location=map_location)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))  # the callable the pickle would have called
        raise UnsafeCheckpointError(
            f"{path} is not a checkpoint this trainer can load safely: it holds objects other than tensors and "
            f"plain values ({refused.group(1) if refused else 'refused by weights_only=True'}), which only a "
            f"pickle could restore, and a pickle can run code. Nothing in it was run. Delete {path.parent}, or "
            "use another output_dir."
        ) from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise StaleCheckpointError(
            f"{path} is not a DPOTrainer checkpoint (no fingerprint). Delete {path.parent}, or use another output_dir."
        )
    return state


def check_run(state: dict, path: Path, config, pairs, model_digest: str) -> None:
    """Refuse ``state`` (read from ``path``) unless it is a checkpoint of this run: same settings
    (but ``RESUMABLE_CHANGES``), same pairs, same starting model."""
    if state.get("fingerprint") != run_fingerprint(config, pairs, model_digest):
        raise StaleCheckpointError(
            f"{path} belongs to {_stale_reason(state, config, model_digest)}. Resuming it would train the wrong "
            f"thing. Start fresh with trainer.train(resume=False), another output_dir, or delete {path.parent}."
        )


def _stale_reason(state: dict, config, model_digest: str) -> str:
    """Whose checkpoint ``state`` is, when it is not this run's."""
    if state.get("model_fingerprint") != model_digest:
        return "a run from another starting model (other weights or another model config)"
    now = asdict(config)
    changed = [
        f"{k}: {state['config'].get(k)!r} -> {now[k]!r}"
        for k in now
        if k not in RESUMABLE_CHANGES and state["config"].get(k) != now[k]
    ]
    differences = "; ".join(changed) or "same settings, different pairs"
    return f"a run with other settings or other data (its config: {differences})"


def save_checkpoint(trainer, keep_optimizer: bool = True) -> bool:
    """Write everything a :class:`~dpo_utils.trainer.DPOTrainer` needs to resume into ``output_dir/checkpoint``,
    atomically (:func:`write_state`). Weights that are no longer finite are never written: it returns
    ``False`` and the previous checkpoint stays.

    The state holds tensors and plain Python values only (numbers, strings, lists, dicts), so that
    :func:`load_checkpoint` reads it with ``torch.load(weights_only=True)``. A finished run drops the
    optimizer state; extending it later (a larger ``max_steps``) restarts AdamW's moment estimates from zero.
    """
    if non_finite_weights(trainer.model):  # broken weights never replace a good checkpoint
        return False
    trainer.accelerator.wait_for_everyone()
    mark_saved = lambda: setattr(trainer, "saved_step", trainer.step)
    if trainer.accelerator.is_main_process:
        state = {
            "step": trainer.step,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict() if keep_optimizer else None,
            "scheduler": trainer.scheduler.state_dict(),
            "scaler": trainer.scaler.state_dict(),
            "history": trainer.history,
            "skipped_steps": trainer.skipped_steps,
            "reference_logps": None if trainer.reference_logps is None else vars(trainer.reference_logps),
            "config": asdict(trainer.config),
            "fingerprint": run_fingerprint(trainer.config, trainer.pairs, trainer.model_digest),
            "model_fingerprint": trainer.model_digest,
        }
        write_state(trainer.output_dir / CHECKPOINT_DIR, state, trainer.history, on_state_written=mark_saved)
    mark_saved()
    return True


def load_checkpoint(trainer) -> None:
    """Resume ``trainer`` from ``output_dir/checkpoint``, after checking that it is a checkpoint of its run
    (:func:`check_run`). Only tensors and plain values are unpickled (:func:`load_state`). ``state.pt`` holds
    the history too: a ``history.json`` left behind by a save interrupted between its two renames is
    rewritten from it, and stray ``.tmp`` files are removed."""
    path = state_path(trainer.output_dir)
    # accelerate's CPU device under torchrun is "cpu:0", which torch.load cannot restore to
    state = load_state(path, "cpu" if trainer.device.type == "cpu" else trainer.device)
    check_run(state, path, trainer.config, trainer.pairs, trainer.model_digest)
    trainer.model.load_state_dict(state["model"])
    if state["optimizer"] is not None:
        trainer.optimizer.load_state_dict(state["optimizer"])
    elif state["step"] < trainer.config.max_steps:
        print("the checkpoint is of a finished run, without optimizer state: AdamW's moments restart from zero")
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.step, trainer.history = state["step"], state["history"]
    saved = state["reference_logps"]
    try:
        saved = None if saved is None else ReferenceLogprobs(**saved)
        trainer.reference_logps = checked_reference(saved, len(trainer.pairs), trainer.mixed_precision)
    except ValueError as error:
        raise StaleCheckpointError(f"{path}: {error}") from None
    trainer.skipped_steps, trainer.saved_step = state["skipped_steps"], state["step"]
    if trainer.accelerator.is_main_process:
        repair_folder(path.parent, trainer.history)
        print(f"resumed from {display_path(path.parent)} at step {trainer.step}")


def save_reached(trainer, until: int, trained: bool) -> None:
    """Checkpoint ``trainer`` at step ``until`` (a finished run without Adam's moments, 2x the weights) and, at
    ``max_steps``, write ``final/``; a run loaded as it was writes nothing again (but a ``final/`` it lacks)."""
    finished = until == trainer.config.max_steps
    if trained or trainer.saved_step != trainer.step:
        trainer.save_checkpoint(keep_optimizer=not finished)
    wanted = finished and trainer.config.save_final_model and trainer.accelerator.is_main_process
    if wanted and (trained or not (trainer.output_dir / FINAL_DIR).exists()):
        save_final(trainer.model, trainer.tokenizer, trainer.output_dir, trainer.step)


def resume_hint(trainer) -> str:
    """What a Ctrl-C leaves: the step reached, and where a new ``train()`` starts from."""
    stopped = f"stopped at step {trainer.step} of {trainer.config.max_steps}"
    folder = trainer.output_dir / CHECKPOINT_DIR if trainer.output_dir else None
    if folder is None:
        return f"{stopped}; no output_dir, so no checkpoint was written and a new run starts over"
    if trainer.saved_step is None:
        return f"{stopped}; no checkpoint was written yet to {folder}, so a new run starts over"
    return f"{stopped}; run again to resume from the checkpoint of step {trainer.saved_step} in {folder}"


def load_finished_run(model, pairs, config, output_dir) -> list[dict]:
    """Load into ``model`` the trained weights of the finished run in ``output_dir`` and return its history.

    ``model`` must be the run's starting model, ``pairs`` and ``config`` its data and settings: the
    checkpoint's fingerprint is checked against them (:class:`StaleCheckpointError` otherwise), and a
    run that stopped before ``config.max_steps`` is refused, so the weights loaded are those this run ends with.
    """
    path = state_path(output_dir)
    state = load_state(path, "cpu")
    check_run(state, path, config, pairs, model_fingerprint(model))
    if state["step"] < config.max_steps:
        raise StaleCheckpointError(
            f"{path} holds step {state['step']} of {config.max_steps}: the run is not finished. Train it to the "
            "end (DPOTrainer(...).train() resumes from it) before loading it as finished."
        )
    if state["step"] > config.max_steps:
        raise StaleCheckpointError(
            f"{path} holds step {state['step']}, past this run's max_steps={config.max_steps}: the weights of step "
            f"{config.max_steps} are not kept. Load it with max_steps={state['step']}, or train into another folder."
        )
    model.load_state_dict(state["model"])
    return state["history"]


def write_state(folder: Path, state: dict, history: list[dict], on_state_written=None) -> None:
    """Write ``state.pt`` and ``history.json`` into ``folder``, each under a temporary name first, so that a
    crash or a full disk leaves the previous checkpoint whole (:class:`CheckpointSaveError` says which).
    ``on_state_written()`` runs once the new ``state.pt`` is in place (the checkpoint a resume would read)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [(folder / f"{name}.tmp", folder / name) for name in (STATE_FILE, HISTORY_FILE)]
    try:
        torch.save(state, written[0][0])
        written[1][0].write_text(json.dumps(history))
    except BaseException as error:  # a full disk, or Ctrl-C: no partial file is left
        for tmp, _ in written:
            tmp.unlink(missing_ok=True)
        if not isinstance(error, (OSError, RuntimeError)):
            raise
        raise _state_save_error(error, folder, state) from error
    # state first: a crash between the two leaves an older history.json, which repair_folder rewrites
    written[0][0].replace(written[0][1])
    if on_state_written:
        on_state_written()
    written[1][0].replace(written[1][1])


def repair_folder(folder: Path, history: list[dict]) -> None:
    """Make ``history.json`` match ``state.pt``'s history; remove stray ``.tmp`` files (of an interrupted save)."""
    for tmp in folder.glob("*.tmp"):
        tmp.unlink(missing_ok=True)
    text = json.dumps(history)
    path = folder / HISTORY_FILE
    if not path.exists() or path.read_text() != text:
        path.with_name(f"{HISTORY_FILE}.tmp").write_text(text)
        path.with_name(f"{HISTORY_FILE}.tmp").replace(path)


def save_final(model, tokenizer, output_dir: Path, step: int) -> None:
    """``save_pretrained`` into ``output_dir/final.tmp``, then renamed to ``final``: ``final/`` is always
    complete (an older one is replaced only once the new one is written)."""
    final = output_dir / FINAL_DIR
    tmp, old = final.with_name(f"{FINAL_DIR}.tmp"), final.with_name(f"{FINAL_DIR}.old")
    for leftover in (tmp, old):  # from a run killed mid-save
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        with library_bars_hidden():
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(error, (OSError, RuntimeError, SafetensorError)):
            raise
        full = _is_disk_full(error, output_dir)
        problem = "no space left on the device" if full else f"{type(error).__name__}: {error}"
        previous = "the previous final model there is as it was" if final.exists() else "no final/ was written"
        raise CheckpointSaveError(
            f"{problem} while saving the final model to {final}; the partial folder was removed and {previous}. "
            f"The checkpoint {output_dir / CHECKPOINT_DIR} (step {step}) is intact: "
            f"{'free some space and ' if full else ''}run again to resume from it, which only writes {final}."
        ) from error
    if final.exists():
        final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)


def _state_save_error(error: BaseException, folder: Path, state: dict) -> CheckpointSaveError:
    previous = (
        f"the previous checkpoint {folder / STATE_FILE} is intact"
        if (folder / STATE_FILE).exists()
        else "there was no previous checkpoint"
    )
    full = _is_disk_full(error, folder)
    problem = "no space left on the device" if full else f"{type(error).__name__}: {error}"
    advice = f" Free about {_state_gib(state):.2f} GiB (the checkpoint's size) and resume." if full else ""
    return CheckpointSaveError(
        f"{problem} while saving the checkpoint of step {state['step']} to {folder}; the partial "
        f"file was removed and {previous}.{advice}"
    )


def _is_disk_full(error: BaseException, folder: Path) -> bool:
    """Whether a failed save ran out of space: ``ENOSPC``, or torch's zip writer failing with the disk
    (nearly) full."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return True
    try:
        nearly_full = shutil.disk_usage(folder).free < 64 * 2**20
    except OSError:
        nearly_full = False
    return (
        "No space left" in str(error)
        or (isinstance(error, RuntimeError) and "unexpected pos" in str(error))
        or nearly_full
    )


def _state_gib(state: dict) -> float:
    """Size of the tensors in a checkpoint's state, in GiB."""
    tensors = []

    def visit(value):
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)

    visit(state)
    return sum(t.numel() * t.element_size() for t in tensors) / 2**30
