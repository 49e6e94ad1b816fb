"""Language identification for the quality stage: py3langid (model shipped in the wheel, no download).

`detect(text)` returns an ISO 639-1 code (ISO 639-3 where the model has no two-letter code) and
the model's normalized probability. Text with fewer than MIN_LETTERS letters, or where the best
language gets less than MIN_CONFIDENCE, comes back as ("und", 0.0): undetermined, which callers
must never treat as a wrong language. The model is loaded once per process on first use (~0.5 s);
classification is deterministic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from engine.config.languages import LANGUAGES  # noqa: F401  (re-exported: every code the model can return)

UND = "und"
MIN_LETTERS = 20       # below this a language guess is noise ("ok", "order 48213", "Danke")
MIN_CONFIDENCE = 0.5   # normalized probability of the best language
MAX_CHARS = 1500       # the head of a long text decides; keeps the cost per record bounded

# Languages the model confuses with each other (close variants, one written standard in two
# scripts). A configured language accepts every member of its group.
_CLOSE_GROUPS = ({"no", "nb", "nn"}, {"sr", "hr", "bs"}, {"ms", "id"})
_NOT_A_LANGUAGE = {"zxx"}  # the model's "no linguistic content" class

_lock = threading.Lock()
_identifier = None


def _model():  # type: ignore[no-untyped-def]
    global _identifier
    if _identifier is None:
        with _lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                _identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _identifier


def letters(text: str) -> int:
    return sum(map(str.isalpha, text))


def detect(text: str) -> tuple[str, float]:
    """(language code, probability) of `text`; ("und", 0.0) when short or ambiguous."""
    text = text[:MAX_CHARS]
    if letters(text) < MIN_LETTERS:
        return UND, 0.0
    code, prob = _model().classify(text)
    if code in _NOT_A_LANGUAGE or prob < MIN_CONFIDENCE:
        return UND, 0.0
    return code, round(float(prob), 4)


def accepted(code: str, languages: Iterable[str]) -> bool:
    """True when `code` is undetermined or one of `languages` (or a close variant of one)."""
    if code == UND:
        return True
    wanted = set(languages)
    if code in wanted:
        return True
    return any(code in group and wanted & group for group in _CLOSE_GROUPS)
