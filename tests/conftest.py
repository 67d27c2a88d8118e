"""Fixtures shared by the test files (the suite-wide settings are in the repository's conftest.py).

Imports of transformers and dpo_utils stay inside the fixtures: ``tests/book`` runs in .venv-docs,
which has neither."""

from pathlib import Path

import pytest

_shared = {}  # "tokenizer": (the session's tokenizer, its state as loaded), once a test has asked for it


def pytest_collection_modifyitems(items):
    """A warning in a test of tests/test_*.py fails it, unless the test expects it (``pytest.warns``) or a
    ``filterwarnings`` mark on the test or its module filters it (those marks are applied after this one).
    The notebooks (nbval) and tests/book (another venv) keep pyproject.toml's filters."""
    for item in items:
        if item.path.parent == Path(__file__).parent and item.path.name.startswith("test_"):
            item.add_marker(pytest.mark.filterwarnings("error"), append=False)


def _state(tokenizer) -> dict:
    return dict(
        padding_side=tokenizer.padding_side,
        truncation_side=tokenizer.truncation_side,
        pad_token=tokenizer.pad_token,
        eos_token=tokenizer.eos_token,
        chat_template=tokenizer.chat_template,
        vocab_size=len(tokenizer),
    )


@pytest.fixture(scope="session")
def tokenizer():
    """The bundled SmolLM2-135M-Instruct's tokenizer with a pad token that is not EOS, loaded once (~4 s).

    One object for the whole session: a test that changes it works on a ``copy.deepcopy``, and a test that
    changes the shared one fails (``sample_completions`` among them: it must leave the caller's tokenizer as it
    was)."""
    from transformers import AutoTokenizer

    from dpo_utils.runtime.model_cache import offline_model_dir
    from dpo_utils.runtime.models import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(offline_model_dir())
    ensure_pad_token(tok)
    _shared["tokenizer"] = (tok, _state(tok))
    return tok


@pytest.fixture(autouse=True)
def _shared_tokenizer_unchanged():
    yield
    if "tokenizer" not in _shared:
        return
    tok, loaded = _shared["tokenizer"]
    changed = {key for key, value in _state(tok).items() if value != loaded[key]}
    if changed:
        del _shared["tokenizer"]  # report it once, in the test that changed it
        pytest.fail(f"the test changed the shared tokenizer's {sorted(changed)}: change a copy.deepcopy of it")
