"""The offline model cache: converted once, published in one step, safe with two processes at once."""

import multiprocessing
import time
from pathlib import Path

import pytest

from dpo_utils.runtime import model_cache

pytestmark = pytest.mark.lowest_versions  # .ci/min-versions runs these


def slow_fake_conversion(gguf, out):
    """Stands in for the 20 s GGUF conversion: a few files written over half a second."""
    (Path(out) / "config.json").write_text("{}")
    time.sleep(0.5)
    (Path(out) / "model.safetensors").write_bytes(b"\0" * 1_000_000)


def convert_in_a_process(cache, barrier, queue):
    import os

    os.environ["DPO_TUTORIAL_CACHE"] = str(cache)
    model_cache.convert_gguf = slow_fake_conversion
    barrier.wait()  # both processes look for the cache at the same moment
    try:
        queue.put(("ok", str(model_cache.offline_model_dir())))
    except Exception as error:  # reported to the test, which fails with it
        queue.put(("error", f"{type(error).__name__}: {error}"))


def test_two_processes_converting_at_once_both_get_the_model(tmp_path):
    context = multiprocessing.get_context("spawn")
    barrier, queue = context.Barrier(2), context.Queue()
    processes = [context.Process(target=convert_in_a_process, args=(tmp_path, barrier, queue)) for _ in range(2)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=600) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert [status for status, _ in results] == ["ok", "ok"], results
    assert results[0][1] == results[1][1]
    target = Path(results[0][1])
    assert sorted(path.name for path in tmp_path.iterdir()) == [target.name]  # no partial folder left
    assert sorted(path.name for path in target.iterdir()) == ["config.json", "model.safetensors"]


def test_a_failed_conversion_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("DPO_TUTORIAL_CACHE", str(tmp_path))

    def broken(gguf, out):
        (Path(out) / "model.safetensors").write_bytes(b"\0" * 1000)
        raise KeyboardInterrupt  # the user stopped the kernel mid-conversion

    monkeypatch.setattr(model_cache, "convert_gguf", broken)
    with pytest.raises(KeyboardInterrupt):
        model_cache.offline_model_dir()
    assert list(tmp_path.iterdir()) == []


def test_a_complete_cache_is_reused_and_named_after_what_made_it(tmp_path, monkeypatch):
    import transformers

    monkeypatch.setenv("DPO_TUTORIAL_CACHE", str(tmp_path))
    monkeypatch.setattr(model_cache, "convert_gguf", slow_fake_conversion)
    first = model_cache.offline_model_dir()
    assert transformers.__version__ in first.name and first.stat().st_mode & 0o755 == 0o755
    monkeypatch.setattr(model_cache, "convert_gguf", lambda gguf, out: pytest.fail("converted twice"))
    assert model_cache.offline_model_dir() == first


def test_publishing_onto_an_existing_folder_keeps_it(tmp_path):
    target, work = tmp_path / "model", tmp_path / "work"
    for folder, text in ((target, "first"), (work, "second")):
        folder.mkdir()
        (folder / "config.json").write_text(text)
    assert model_cache.publish_folder(work, target) is False
    assert (target / "config.json").read_text() == "first"


def test_the_converted_tokenizer_ends_with_im_end_and_adds_no_bos(tokenizer):
    """Before transformers 5.18 the GGUF converter read EOS as <|im_start|> and added a BOS."""
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 2)
    assert tokenizer("Hi there")["input_ids"] == tokenizer("Hi there", add_special_tokens=False)["input_ids"]


def convert_slowly_in_a_process(cache, started):
    import os

    os.environ["DPO_TUTORIAL_CACHE"] = str(cache)

    def hang(gguf, out):
        (Path(out) / "config.json").write_text("{}")
        started.set()
        time.sleep(600)  # killed long before

    model_cache.convert_gguf = hang
    model_cache.offline_model_dir()


def test_a_killed_conversion_leaves_a_folder_that_a_later_load_removes_once_stale(tmp_path, monkeypatch):
    import os

    context = multiprocessing.get_context("spawn")
    started = context.Event()
    process = context.Process(target=convert_slowly_in_a_process, args=(tmp_path, started))
    process.start()
    assert started.wait(timeout=300)
    process.kill()  # SIGKILL: no finally block runs
    process.join(timeout=60)
    (partial,) = tmp_path.glob(".*.partial-*")

    monkeypatch.setenv("DPO_TUTORIAL_CACHE", str(tmp_path))
    monkeypatch.setattr(model_cache, "convert_gguf", slow_fake_conversion)
    target = model_cache.offline_model_dir()  # its owner is dead, but it changed just now: it could be another host's
    assert partial.exists()
    old = time.time() - 3600  # an hour later
    for path in [partial, *partial.iterdir()]:
        os.utime(path, (old, old))
    assert model_cache.offline_model_dir() == target  # a later load, the model already there
    assert sorted(path.name for path in tmp_path.iterdir()) == [target.name]


def test_a_partial_folder_is_kept_while_its_owner_may_be_writing_it(tmp_path):
    import os
    import subprocess
    import sys

    host, day = model_cache._host_tag(), 24 * 3600
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folders = {  # name: (seconds untouched, removed?)
        f".model.partial-{host}-{os.getpid()}-live": (2 * day, False),  # its owner runs: never removed
        f".model.partial-{host}-{dead.pid}-fresh": (60, False),  # owner gone, but touched a minute ago
        f".model.partial-{host}-{dead.pid}-stale": (model_cache.PARTIAL_OWNER_GONE_SECONDS + 60, True),
        f".model.partial-otherhost-{dead.pid}-recent": (day - 60, False),  # another host's: its pid cannot be checked
        f".model.partial-otherhost-{dead.pid}-abandoned": (day + 60, True),
        ".model.partial-k2j4x9": (day + 60, True),  # named by an older version, without owner
        ".model.partial-k2j4x8": (3600, False),
    }
    now = time.time()
    for name, (untouched, _) in folders.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text("{}")
        for path in (tmp_path / name, tmp_path / name / "config.json"):
            os.utime(path, (now - untouched, now - untouched))
    removed = model_cache.remove_stale_partials(tmp_path, now)
    assert sorted(path.name for path in removed) == sorted(name for name, (_, gone) in folders.items() if gone)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        name for name, (_, gone) in folders.items() if not gone
    )
