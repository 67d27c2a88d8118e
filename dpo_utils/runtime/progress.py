"""Progress bars: live widgets for a person in JupyterLab or Colab, one text line in stored outputs.

Run by a person in JupyterLab or Colab (ipywidgets installed), a bar is a live widget. A notebook
executed headlessly to store its outputs (``dpo-run-notebook``, which sets ``DPO_TUTORIAL_TEXT_BARS``)
or checked by CI (``CI`` set) gets text bars instead: a widget would be stored as a model that no
handout can draw. Text bars that are not drawn on a terminal refresh at most every
``TEXT_REFRESH_SECONDS``, so a stored run keeps a few lines and its final state;
``dpo-run-notebook`` then stores each bar as its final line
(:func:`dpo_utils.tools.notebooks.render_streams`).
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from tqdm import tqdm as text_tqdm
from tqdm.auto import tqdm as auto_tqdm
from tqdm.notebook import tqdm as widget_tqdm

TEXT_REFRESH_SECONDS = 30.0
TEXT_BARS_VARIABLE = "DPO_TUTORIAL_TEXT_BARS"


def text_bars_wanted() -> bool:
    """True where outputs are stored or checked rather than watched: ``DPO_TUTORIAL_TEXT_BARS`` or ``CI`` set."""
    return bool(os.environ.get(TEXT_BARS_VARIABLE) or os.environ.get("CI"))


def progress_bar(iterable=None, **kwargs):
    """A live widget bar in a notebook run by a person; a slowly refreshed text bar elsewhere."""
    bar = text_tqdm if text_bars_wanted() else auto_tqdm  # auto: a widget in a notebook kernel
    if not issubclass(bar, widget_tqdm) and not sys.stderr.isatty():
        kwargs.setdefault("mininterval", TEXT_REFRESH_SECONDS)
    return bar(iterable, **kwargs)


@contextmanager
def library_bars_hidden():
    """transformers' own loading and saving bars, hidden where outputs are stored or checked (there
    they are noise around every model load); shown as usual where a person watches."""
    from transformers.utils import logging as hf_logging  # transformers is imported lazily everywhere

    hide = text_bars_wanted() and hf_logging.is_progress_bar_enabled()
    if hide:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if hide:
            hf_logging.enable_progress_bar()
