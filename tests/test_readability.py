"""The memo's reading grade: dictionary syllables, and a grade that separates plain from dense prose."""

from diffaudit.report.readability import readability, syllables


def test_syllables_come_from_the_pronouncing_dictionary() -> None:
    assert [syllables(w) for w in ("university", "membership", "copy", "the")] == [5, 3, 2, 1]
    assert syllables("OpenMoji") >= 2, "a word the dictionary lacks falls back to hyphenation"


def test_the_grade_separates_plain_from_dense_prose() -> None:
    plain = readability("The model can copy a picture. We tried three fixes. One of them worked well.")
    dense = readability("Differential privacy guarantees, instantiated through stochastic gradient perturbation "
                        "with per-example clipping, provide formal indistinguishability bounds that nevertheless "
                        "remain uninformative regarding memorization attributable to pretraining distributions.")
    assert plain.grade < 6 < 12 < dense.grade, (plain.grade, dense.grade)
    assert plain.dictionary_share == 1.0 and plain.sentences == 3
