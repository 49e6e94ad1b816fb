"""Tests for free-text person names (engine/data/stages/pii_person.py): the rules that find names
no column, signature or greeting announced, and the words that must never become names.

The names here are written by hand, none from the benchmark's generator: Polish, Serbian, Dutch,
German, Spanish and Andean names, with the particles, hyphens, accents and cues real tickets use."""

from __future__ import annotations

import pytest

from engine.data.stages.pii_person import free_text_names


@pytest.mark.parametrize("text, name", [
    # two words unknown to the census and to English, after a cue: however long the surname
    ("The parcel was signed for by Wojciech Brzęczyszczykiewicz.", "Wojciech Brzęczyszczykiewicz"),
    ("Please add Teodora Vukašinović as an authorised user.", "Teodora Vukašinović"),
    ("your technician Radosław Pietrzak never showed up", "Radosław Pietrzak"),
    # a verb that takes a person after the pair
    ("Urszula Zawadzka made the order today", "Urszula Zawadzka"),
    # an accent makes a word no English word ("Ascensión" is not "ascension")
    ("the gift was for Ascensión Moreno, not me", "Ascensión Moreno"),
    # name particles between first name and surname, and before a reversed surname
    ("My landlord, Joost van Dijk, has to approve it.", "Joost van Dijk"),
    ("can you check with Lieke de Gruyter in billing?", "Lieke de Gruyter"),
    ("the receipt says the buyer was van Leeuwen, Femke", "Femke van Leeuwen"),
    # hyphenated first names, also reversed
    ("the account belongs to my mother, Hans-Jürgen Oberdorfer.", "Hans-Jürgen Oberdorfer"),
    ("the warranty is registered to Oberdorfer, Hans-Jürgen.", "Hans-Jürgen Oberdorfer"),
    # a strong cue right before: a first name that is also an English word ("dieter")
    ("my flatmate Dieter Kowalczyk uses it too", "Dieter Kowalczyk"),
    # three given names and surnames
    ("the order is under Maria Fernanda Quispe, not me", "Maria Fernanda Quispe"),
])
def test_free_text_names_found(text: str, name: str) -> None:
    assert free_text_names([text]) == [name]


@pytest.mark.parametrize("text", [
    # country and territory names (CLDR, in several languages) are places, not people
    "I'm travelling to Burkina Faso in November.",
    "I'm travelling to Sierra Leone next week.",
    "The parcel went to Costa Rica by mistake.",
    "We moved from Hong Kong to Puerto Rico.",
    "Is Zentralafrikanische Republik on the list?",
    # companies named after people, with their legal form
    "Our IT contractor is Weber Hoffmann GbR.",
    "Our lawyers are Kowalczyk Nowak Sp. z o.o. in Warsaw.",
    # English words, with or without a cue
    "I am Very Sorry about Order Tracking.",
    "I bought it for Christmas Eve.",
    "It was shipped with Federal Express.",
])
def test_places_companies_and_words_are_not_names(text: str) -> None:
    assert free_text_names([text]) == []


def test_one_name_once() -> None:
    """A name after a strong cue is not found again as a lone first name (that would number the
    same person twice)."""
    assert free_text_names(["my mother, Hans-Jürgen Oberdorfer, and my mother Hans-Jürgen"]) == [
        "Hans-Jürgen Oberdorfer"]
