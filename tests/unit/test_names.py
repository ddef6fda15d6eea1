"""VM hostnames: shape, the original's length rule, reproducibility, the word lists, spread."""

from __future__ import annotations

import random
import re

import pytest

from vmpooler.names import ADJECTIVES, MAX_NAME_LENGTH, MAX_NOUN_LENGTH, NOUNS, combinations, generate_name

NAME = re.compile(r"^([a-z]+)-([a-z]+)$")


@pytest.fixture(scope="module")
def drawn() -> list[str]:
    rng = random.Random(20240601)
    return [generate_name(rng) for _ in range(10_000)]


def test_names_have_the_prefix_and_the_shape() -> None:
    rng = random.Random(1)
    for _ in range(200):
        name = generate_name(rng, prefix="pool1-")
        assert name.startswith("pool1-")
        assert NAME.match(name.removeprefix("pool1-"))


def test_length_rule_holds_for_ten_thousand_names(drawn: list[str]) -> None:
    for name in drawn:
        match = NAME.match(name)
        assert match, name
        adjective, noun = match.groups()
        assert adjective in ADJECTIVES and noun in NOUNS
        assert len(noun) <= MAX_NOUN_LENGTH
        assert len(adjective) <= 14 - len(noun)
        assert len(name) <= MAX_NAME_LENGTH


def test_seeded_rng_is_reproducible() -> None:
    first = [generate_name(random.Random(99), "p-") for _ in range(3)]
    assert len(set(first)) == 1
    a, b = random.Random(5), random.Random(5)
    assert [generate_name(a) for _ in range(100)] == [generate_name(b) for _ in range(100)]


@pytest.mark.parametrize("words", [ADJECTIVES, NOUNS], ids=["adjectives", "nouns"])
def test_word_lists_are_lowercase_ascii_unique_and_long_enough(words: tuple[str, ...]) -> None:
    assert isinstance(words, tuple)
    assert len(words) >= 300
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]+", word) for word in words)


def test_every_word_can_appear() -> None:
    assert max(len(noun) for noun in NOUNS) <= MAX_NOUN_LENGTH
    shortest_noun = min(len(noun) for noun in NOUNS)
    assert all(len(adjective) <= 14 - shortest_noun for adjective in ADJECTIVES)
    shortest_adjective = min(len(adjective) for adjective in ADJECTIVES)
    assert all(shortest_adjective <= 14 - len(noun) for noun in NOUNS)
    assert not set(ADJECTIVES) & set(NOUNS)


def test_combinations_counts_the_pairs_that_fit() -> None:
    expected = sum(1 for noun in NOUNS for adjective in ADJECTIVES if len(adjective) + len(noun) <= 14)
    assert combinations() == expected
    assert combinations() > 100_000


def test_ten_thousand_draws_are_mostly_distinct(drawn: list[str]) -> None:
    assert len(set(drawn)) >= 9_000
