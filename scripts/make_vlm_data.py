#!/usr/bin/env python3
"""Sample image+text training data: PIL-drawn coloured shapes with questions and answers (deterministic).

Writes into --out (default data/vlm/):
  images/NNNN.png   one coloured shape on a light background per image
  train.jsonl       SFT conversations: a user message with an image part and a question, the answer
  dpo.jsonl         preference pairs on the same images: the right answer vs. a wrong one
Images are referenced by paths relative to the JSONL files (see docs/training-data.md).
With --model DIR a tiny random-weight LLaVA-style model is also built there, to try the
vision recipe end to end: `studio models import DIR --name tiny-llava`.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLOURS = {"red": (220, 40, 40), "green": (40, 160, 60), "blue": (40, 80, 220),
           "yellow": (230, 200, 30), "purple": (140, 60, 170), "orange": (240, 140, 30)}
SHAPES = ("circle", "square", "triangle")
QUESTIONS = {
    "shape": ["What shape is in the picture?", "Which shape do you see?"],
    "colour": ["What colour is the shape?", "Which colour is the shape in the image?"],
    "both": ["Describe the image in a few words.", "What is shown here?"],
}


def draw(shape: str, colour: tuple[int, int, int], size: int, rng: random.Random):  # -> PIL.Image.Image
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (245, 245, 240))
    pen = ImageDraw.Draw(image)
    margin = rng.randint(size // 10, size // 4)
    box = (margin, margin, size - margin, size - margin)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(size // 2, margin), (size - margin, size - margin), (margin, size - margin)], fill=colour)
    return image


def answer(kind: str, shape: str, colour: str) -> str:
    if kind == "shape":
        return f"A {shape}."
    if kind == "colour":
        return f"It is {colour}."
    return f"A {colour} {shape} on a light background."


def make(out: Path, n: int, seed: int, size: int = 48) -> dict[str, int]:
    """Write n images, n SFT conversations and n preference pairs into out; return the counts."""
    rng = random.Random(seed)
    (out / "images").mkdir(parents=True, exist_ok=True)
    sft, dpo = [], []
    for i in range(n):
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        rel = f"images/{i:04d}.png"
        draw(shape, COLOURS[colour], size, rng).save(out / rel, format="PNG", optimize=False)
        kind = rng.choice(sorted(QUESTIONS))
        question = rng.choice(QUESTIONS[kind])
        user = {"role": "user", "content": [{"type": "image", "image": rel}, {"type": "text", "text": question}]}
        sft.append({"messages": [user, {"role": "assistant", "content": answer(kind, shape, colour)}]})
        wrong_shape = rng.choice([s for s in SHAPES if s != shape])
        wrong_colour = rng.choice([c for c in sorted(COLOURS) if c != colour])
        dpo.append({"prompt": [user], "chosen": answer(kind, shape, colour),
                    "rejected": answer(kind, wrong_shape, wrong_colour)})
    for name, rows in (("train.jsonl", sft), ("dpo.jsonl", dpo)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return {"images": n, "conversations": len(sft), "pairs": len(dpo)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "vlm", help="output folder")
    parser.add_argument("-n", type=int, default=24, help="number of images (and of examples)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", type=Path, default=None,
                        help="also build a tiny LLaVA-style model in this folder")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("-n must be at least 1")
    counts = make(args.out, args.n, args.seed)
    print(f"wrote {counts['images']} images, {counts['conversations']} conversations and "
          f"{counts['pairs']} preference pairs to {args.out}")
    if args.model is not None:
        import tempfile

        sys.path.insert(0, str(ROOT))
        from engine import offline

        offline.enforce()
        with tempfile.TemporaryDirectory(prefix="studio-vlm-") as caches:
            offline.confine_caches(Path(caches))  # library caches never land in the home folder
            from engine.models.tiny import build_tiny_llava

            build_tiny_llava(args.model)
        print(f"built a tiny LLaVA-style model in {args.model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
