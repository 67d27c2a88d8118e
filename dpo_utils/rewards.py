"""The reward the sentiment experiments score samples with: VADER's compound sentiment score.

VADER (Hutto and Gilbert 2014) is rule-based and runs offline, so it plays the ground-truth reward of
the DPO paper's controlled-sentiment task without a model or a network: a reward function maps
completion texts to one number each, the interface every method here (DPO's pairs, best-of-N, GRPO,
evaluation) uses.
"""

from __future__ import annotations


def vader_reward(texts: list[str]) -> list[float]:
    """VADER's compound sentiment score in [-1, 1] for each text (offline, rule-based): the task's reward."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer  # imported on first use: it is slow

    analyzer = SentimentIntensityAnalyzer()
    return [analyzer.polarity_scores(text)["compound"] for text in texts]
