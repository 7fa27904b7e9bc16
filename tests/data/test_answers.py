"""The `#### N` answer format: extraction and accuracy."""

import pytest

from jirl.data.answers import answer_accuracy, extract_answer


@pytest.mark.parametrize(
    "text, expected",
    [
        ("She has 3 + 4 = 7.\n#### 7", "7"),
        ("#### 1,234", "1234"),
        ("loss\n#### -5", "-5"),
        ("#### 2.50", "2.50"),
        ("#### 12 apples", "12"),
        ("#### 3\n#### 4", "3"),
        ("The answer is 7", None),
        ("####7", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_answer_accuracy():
    predictions = ["1 + 1 = 2\n#### 2", "#### 1,000", "no answer", "#### 5"]
    references = ["2", "1000", "3", "4"]
    assert answer_accuracy(predictions, references) == 0.5
    assert answer_accuracy([], []) == 0.0


def test_answer_accuracy_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        answer_accuracy(["#### 1"], ["1", "2"])
