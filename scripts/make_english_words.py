#!/usr/bin/env python3
"""Regenerate engine/data/stages/english_words.txt.gz: the lower-case English words (ASCII letters
only) of an English word list such as Debian's `wamerican` (SCOWL, Copyright 2000-2020 Kevin
Atkinson, permissive license): /usr/share/dict/american-english.

The PII stage's free-text name detector (engine/data/stages/pii_person.py) uses it to tell a name
from a word: "Will", "May", "Price" are census names that are also words, and "Yesterday" or
"Order" before a surname is a word, not a first name.

    python scripts/make_english_words.py /usr/share/dict/american-english
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "engine" / "data" / "stages" / "english_words.txt.gz"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("wordlist", type=Path)
    args = ap.parse_args(argv)
    with open(args.wordlist, encoding="utf-8", errors="ignore") as f:
        words = sorted({w for w in (line.strip() for line in f)
                        if w.isascii() and w.isalpha() and w.islower()})
    data = ("\n".join(words) + "\n").encode("ascii")
    TARGET.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
    print(f"{len(words)} words -> {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
