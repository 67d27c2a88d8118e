"""Progress bars that stay readable in stored notebook outputs.

In JupyterLab with ipywidgets a bar is one widget. Without widgets (a notebook executed by
nbclient, as ``dpo-run-notebook`` and CI do) tqdm prints a text bar, and every refresh becomes
one more chunk of stored output: hundreds per training run. Text bars here refresh at most
every ``TEXT_REFRESH_SECONDS`` (a terminal still redraws in place), so a stored run keeps a few
lines and its final state; ``dpo-run-notebook`` then stores each bar as its final line
(:func:`dpo_utils.tools.notebooks.render_streams`).
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

TEXT_REFRESH_SECONDS = 30.0


def progress_bar(iterable=None, **kwargs):
    """``tqdm.auto.tqdm`` with a slow refresh for text bars that are not drawn on a terminal."""
    if not sys.stderr.isatty():
        kwargs.setdefault("mininterval", TEXT_REFRESH_SECONDS)
    return tqdm(iterable, **kwargs)
