"""Flesch-Kincaid grade of the memo's prose, so "plain words" is measured rather than claimed.

Syllables come from pyphen's hyphenation dictionary (offline); it slightly undercounts long words, so
the grade it gives is a mild underestimate, stated beside the number wherever it is reported.
"""

import re

import pyphen

_DICT = pyphen.Pyphen(lang="en_US")


def syllables(word: str) -> int:
    return max(1, len(_DICT.positions(word)) + 1)


def flesch_kincaid_grade(text: str) -> float:
    """0.39 * words/sentence + 11.8 * syllables/word - 15.59 (Kincaid et al. 1975)."""
    sentences = [s for s in re.split(r"[.!?]+\s", text) if re.search(r"[A-Za-z]", s)]
    words = re.findall(r"[A-Za-z]+(?:'[a-z]+)?", text)
    if not sentences or not words:
        return 0.0
    return 0.39 * len(words) / len(sentences) + 11.8 * sum(map(syllables, words)) / len(words) - 15.59
