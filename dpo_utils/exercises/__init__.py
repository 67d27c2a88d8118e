"""Answer checks for the notebooks' exercises: call one on your answer to hear whether it is right.

    from dpo_utils.exercises import check
    check("01.2", 0.02)    # prints "Exercise 01.2: right." or "Exercise 01.2: not yet. Hint: ..."

An exercise is a key (notebook.number), a hint, and its expected answer, *computed* from the
notebook's own functions so it is never written down here. An answer is a number, an array or a
tensor (compared with a relative tolerance), or a function, which is called on the exercise's
inputs and compared with the reference function on the same inputs. Each notebook's solution
cells end with ``assert check(key, answer)``, so CI fails on a wrong solution.

- ``registry``        the machinery: an exercise's key, hint and expected answer; ``check``
- ``theory``          the exercises of notebooks 01-06
- ``language_models`` the exercises of notebooks 07-12
"""

from dpo_utils.exercises import language_models, theory  # noqa: F401  (importing registers them)
from dpo_utils.exercises.registry import EXERCISES, Exercise, Verdict, as_array, check

__all__ = ["EXERCISES", "Exercise", "Verdict", "as_array", "check"]
