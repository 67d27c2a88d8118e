"""Command-line tools around the notebooks, apart from the library code the notebooks import.

- ``notebooks``  ``dpo-run-notebook``: re-execute notebooks and store their outputs
- ``colab``      ``dpo-set-repo-url``: the repository URL, kept in one place, and the Colab set-up cell that uses it
"""
