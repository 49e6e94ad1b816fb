"""Image+text training data: JSONL with image parts, converted through data.py, every image validated.

A message's `content` may be a list of parts; images are referenced by a path relative to the
data file (or a base64 `data:` URL), never fetched from the network:
  {"type": "text", "text": "What shape is this?"}
  {"type": "image", "image": "images/0001.png"}            ("path" or "url" work as the key too)
  {"type": "image_url", "image_url": {"url": "images/0001.png"}}   (OpenAI's vision format)
  {"type": "image"}                                         a placeholder filled from "images"
A record may instead list its images at the top level (`"images": [...]` or LLaVA's `"image": ...`);
they fill the `{"type": "image"}` placeholders and `<image>` markers in order, or, without any, go
before the first user message. Any accepted text format (see data.py) can carry images this way.

How: image parts become private-use markers inside the text, the record goes through data.py's
`convert` (so every format is converted in one place), and the markers become parts again.
Every referenced image is checked before training (relative, inside the data folder, exists,
opens with PIL, not truncated, sensible size); each problem is reported as file:line with the
image reference, and the run refuses to start.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import DataError
from engine.hashing import sha256_file, sha256_json
from engine.train.data import MAX_REPORTED, LineError, Want, convert

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use code points: never in real text (checked)
_MARK = re.compile(f"{_OPEN}(\\d*){_CLOSE}")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
IMAGE_MARKER = "<image>"
_MESSAGE_KEYS = ("messages", "prompt", "completion", "chosen", "rejected", "preferred_output",
                 "non_preferred_output")
_COLUMNS: dict[str, tuple[str, ...]] = {"sft": ("messages",), "preference": ("prompt", "chosen", "rejected")}


@dataclass(frozen=True)
class ImageLimits:
    """What counts as a usable training image."""

    max_bytes: int = 50 * 2**20
    min_side: int = 8
    max_side: int = 16_384
    max_pixels: int = 64_000_000


@dataclass
class VisionData:
    """Rows for a vision recipe: each has `images` (dataset payloads, in placeholder order)."""

    train: list[dict[str, Any]]
    val: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)  # ref, sha256, files, images


class ImageProblem(ValueError):
    """An image that cannot be used; the message is the reason."""


# --------------------------------------------------------------------------------- flattening
def _flatten_parts(content: list[Any], where: str, refs: list[str]) -> str:
    """A list of parts as one string with image markers; image references are collected in refs."""
    out = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise LineError(f"{where}.content[{j}].text must be a string")
            out.append(part["text"])
            continue
        if kind == "image":
            ref = next((part[k] for k in ("image", "path", "url") if part.get(k) is not None), None)
        elif kind == "image_url":
            url = part.get("image_url")
            ref = url.get("url") if isinstance(url, dict) else url
            if ref is None:
                raise LineError(f"{where}.content[{j}].image_url needs a url")
        else:
            raise LineError(f"{where}.content[{j}] must be a part of type text, image or image_url")
        if ref is None:  # a placeholder for a top-level image
            out.append(_OPEN + _CLOSE)
            continue
        if not isinstance(ref, str) or not ref.strip():
            raise LineError(f"{where}.content[{j}]: an image reference must be a relative path or data URL")
        if ref not in refs:
            refs.append(ref)
        out.append(f"{_OPEN}{refs.index(ref)}{_CLOSE}")
    return "".join(out)


def _check_strings(value: Any, placeholders: bool) -> Any:
    """Refuse the reserved marker characters; turn `<image>` into a placeholder where asked."""
    if isinstance(value, str):
        if _OPEN in value or _CLOSE in value:
            raise LineError("text contains a reserved character (U+E000 or U+E001)")
        return value.replace(IMAGE_MARKER, _OPEN + _CLOSE) if placeholders else value
    if isinstance(value, list):
        return [_check_strings(v, placeholders) for v in value]
    if isinstance(value, dict):
        return {k: _check_strings(v, placeholders) for k, v in value.items()}
    return value


def _flatten(row: dict[str, Any], top_images: list[str], refs: list[str]) -> dict[str, Any]:
    """The record with every part list replaced by a marked string (a new dict; row is untouched)."""
    flat = {k: v for k, v in row.items() if k not in ("images", "image")}
    flat = _check_strings(flat, placeholders=bool(top_images))

    def messages(value: Any, where: str) -> Any:
        if not isinstance(value, list):
            return value
        out = []
        for i, m in enumerate(value):
            if isinstance(m, dict) and isinstance(m.get("content"), list):
                m = {**m, "content": _flatten_parts(m["content"], f"{where}[{i}]", refs)}
            out.append(m)
        return out

    for key in _MESSAGE_KEYS:
        if key in flat:
            flat[key] = messages(flat[key], key)
    if isinstance(flat.get("input"), dict) and "messages" in flat["input"]:
        flat["input"] = {**flat["input"], "messages": messages(flat["input"]["messages"], "input.messages")}
    return flat


def _top_level_images(row: dict[str, Any]) -> list[str]:
    value = row.get("images", row.get("image"))
    if value is None:
        return []
    value = [value] if isinstance(value, str) else value
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise LineError("images must be a list of relative image paths (or data URLs)")
    return value


# ---------------------------------------------------------------------------------- expanding
def _expand(row: dict[str, Any], want: Want, refs: list[str], top_images: list[str]) -> dict[str, Any]:
    """A converted row with marked strings -> parts lists and the row's `images` in order."""
    columns = _COLUMNS[want]
    out: dict[str, Any] = {}
    order: list[str | None] = []  # a reference, or None for a placeholder
    for col in columns:
        msgs = []
        for m in row[col]:
            parts: list[dict[str, Any]] = []
            pieces = _MARK.split(m["content"])  # text, index, text, index, …, text
            for k, piece in enumerate(pieces):
                if k % 2 == 0:
                    if piece:
                        parts.append({"type": "text", "text": piece})
                    continue
                if m["role"] == "assistant":
                    raise LineError("images are only allowed in user and system messages "
                                    "(for preference pairs: in the prompt)")
                parts.append({"type": "image", "text": None})
                order.append(refs[int(piece)] if piece else None)
            msgs.append({"role": m["role"], "content": parts or [{"type": "text", "text": ""}]})
        out[col] = msgs
    placeholders = sum(1 for o in order if o is None)
    if top_images and placeholders == 0:  # TRL's convention: images before the first user text
        first = columns[0]
        at = next((i for i, m in enumerate(out[first]) if m["role"] == "user"), None)
        if at is None:
            raise LineError("the record lists images but has no user message to attach them to")
        out[first][at]["content"][:0] = [{"type": "image", "text": None} for _ in top_images]
        order[:0] = [None] * len(top_images)
        placeholders = len(top_images)
    if placeholders != len(top_images):
        raise LineError(f"{placeholders} image placeholder(s) but {len(top_images)} listed image(s)")
    pending = iter(top_images)
    out["images"] = [o if o is not None else next(pending) for o in order]
    return out


def convert_vision(row: Any, fmt: str, want: Want) -> dict[str, Any]:
    """One parsed JSON line -> a `want` row ('sft' or 'preference') whose images are references."""
    if want not in _COLUMNS:
        raise ValueError(f"vision rows come in shapes {sorted(_COLUMNS)}, not {want!r}")
    if not isinstance(row, dict):
        raise LineError("line is not a JSON object")
    top_images = _top_level_images(row)
    refs: list[str] = []
    converted = convert(_flatten(row, top_images, refs), fmt, want)
    return _expand(converted, want, refs, top_images)


# -------------------------------------------------------------------------------- image checks
def _describe(ref: str) -> str:
    """The reference as shown in errors: paths as written, data URLs without their payload."""
    return ref.split(",", 1)[0] + ",…" if ref.startswith("data:") else ref


def _inspect(source: Path | io.BytesIO, limits: ImageLimits) -> None:
    """ImageProblem unless PIL reads the whole image and its size is sensible."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as im:  # reads the header only
            w, h = im.size
            if max(w, h) > limits.max_side or w * h > limits.max_pixels:
                raise ImageProblem(f"image is too large ({w}x{h} px; at most {limits.max_side} px a "
                                   f"side and {limits.max_pixels // 1_000_000} megapixels)")
            if min(w, h) < limits.min_side:
                raise ImageProblem(f"image is too small ({w}x{h} px; at least {limits.min_side} px a side)")
            im.verify()
        if isinstance(source, io.BytesIO):
            source.seek(0)
        with Image.open(source) as im:
            im.load()  # decodes every pixel: truncated files fail here
    except ImageProblem:
        raise
    except Image.DecompressionBombError:
        raise ImageProblem("image is too large (decompression bomb check)") from None
    except UnidentifiedImageError:
        raise ImageProblem("not an image PIL can read (PNG, JPEG, WebP, GIF, BMP, …)") from None
    except Exception as exc:  # PIL raises many types (OSError, SyntaxError, struct.error…) for bad data
        raise ImageProblem(f"image is truncated or corrupt ({exc.__class__.__name__})") from None


def _too_many_bytes(size: int, limits: ImageLimits) -> str:
    return f"image file is too large ({size / 2**20:.1f} MiB; at most {limits.max_bytes // 2**20} MiB)"


def check_image(ref: str, base: Path, limits: ImageLimits = ImageLimits()) -> tuple[dict[str, Any], str | None]:
    """(dataset payload, manifest key or None) for one reference; ImageProblem when unusable."""
    if ref.startswith("data:"):
        header, _, payload = ref.partition(",")
        if not header.startswith("data:image/") or not header.endswith(";base64"):
            raise ImageProblem("only base64 image data URLs (data:image/…;base64,…) are accepted")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ImageProblem("data URL is not valid base64") from None
        if len(data) > limits.max_bytes:
            raise ImageProblem(_too_many_bytes(len(data), limits))
        _inspect(io.BytesIO(data), limits)
        return {"path": None, "bytes": data}, None
    if _URL.match(ref):
        raise ImageProblem("image URLs are not fetched (Expert Studio works offline); save the image "
                           "next to the data file and give its relative path")
    rel = Path(ref)
    if rel.is_absolute() or ref.startswith(("~", "\\")) or re.match(r"^[A-Za-z]:", ref):
        raise ImageProblem("image path must be relative to the data file's folder")
    root = base.resolve()
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        raise ImageProblem("image path leads outside the data file's folder")
    if not path.exists():
        raise ImageProblem("image file not found")
    if not path.is_file():
        raise ImageProblem("image path is not a file")
    size = path.stat().st_size
    if size > limits.max_bytes:
        raise ImageProblem(_too_many_bytes(size, limits))
    _inspect(path, limits)
    return {"path": str(path), "bytes": None}, path.relative_to(root).as_posix()


# ---------------------------------------------------------------------------------------- files
def load_vision_examples(path: str | Path, want: Want, fmt: str = "auto",
                         limits: ImageLimits = ImageLimits()) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(rows, info) for a JSONL with images; DataError listing every bad line and image otherwise.

    info: ref, sha256 (over the data file and every image), files {relative path: sha256}, images.
    """
    p = Path(path)
    try:
        f = p.open("rb")
    except FileNotFoundError:
        raise DataError("training data file not found", where=str(p)) from None
    except OSError as exc:
        raise DataError(f"cannot open training data ({exc.__class__.__name__})", where=str(p)) from None
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    checked: dict[str, tuple[dict[str, Any], str | None] | ImageProblem] = {}
    with f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                errors.append(f"{p.name}:{lineno}: not UTF-8 text (save the file as UTF-8)")
                continue
            if not line.strip():
                continue
            try:
                row = convert_vision(json.loads(line), fmt, want)
            except json.JSONDecodeError as exc:
                errors.append(f"{p.name}:{lineno}: not valid JSON ({exc.msg})")
                continue
            except LineError as exc:
                errors.append(f"{p.name}:{lineno}: {exc}")
                continue
            payloads, bad = [], False
            for ref in row["images"]:
                if ref not in checked:
                    try:
                        checked[ref] = check_image(ref, p.parent, limits)
                    except ImageProblem as exc:
                        checked[ref] = exc
                result = checked[ref]
                if isinstance(result, ImageProblem):
                    errors.append(f"{p.name}:{lineno}: image {_describe(ref)!r}: {result}")
                    bad = True
                else:
                    payloads.append(result[0])
            if not bad:
                rows.append({**row, "images": payloads})
    if errors:
        shown = errors[:MAX_REPORTED]
        more = f"\n… and {len(errors) - len(shown)} more bad lines" if len(errors) > len(shown) else ""
        raise DataError(f"{len(errors)} bad line(s); training refuses to start:\n" + "\n".join(shown) + more,
                        where=str(p), hint="fix or remove these lines and images; see docs/training-data.md")
    if not rows:
        raise DataError("training data has no records", where=str(p))
    data_sha = sha256_file(p)
    images = {key: sha256_file(p.parent / key) for result in checked.values()
              if not isinstance(result, ImageProblem) and (key := result[1]) is not None}
    files = {p.name: data_sha, **dict(sorted(images.items()))}
    return rows, {"ref": p.name, "sha256": sha256_json(files) if images else data_sha, "files": files,
                  "images": len(checked)}


def dataset_features(columns: tuple[str, ...]) -> Any:
    """datasets.Features for vision rows: `images` decode lazily to RGB; message content is parts."""
    from datasets import Features, Image, List, Value

    messages = List({"role": Value("string"),
                     "content": List({"type": Value("string"), "text": Value("string")})})
    return Features({"images": List(Image(mode="RGB")), **{c: messages for c in columns}})
