"""Vision-language training: image data conversion and validation, SFT and DPO with LoRA on tiny LLaVA."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from engine.config import load_config
from engine.errors import DataError, StudioError
from engine.train.data import LineError
from engine.train.images import ImageLimits, check_image, convert_vision, load_vision_examples
from engine.train.vlm import is_vlm_model, load_processor, train_vlm

ROOT = Path(__file__).resolve().parents[2]
IMG = {"type": "image", "image": "images/a.png"}


def _make_vlm_data() -> Any:
    spec = importlib.util.spec_from_file_location("make_vlm_data", ROOT / "scripts" / "make_vlm_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def png(path: Path, size: tuple[int, int] = (24, 24), colour: str = "red") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format="PNG")
    return path


def user(*parts: Any) -> dict[str, Any]:
    return {"role": "user", "content": [p if isinstance(p, dict) else {"type": "text", "text": p} for p in parts]}


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------- conversion
def test_image_parts_in_openai_chat() -> None:
    row = {"messages": [{"role": "system", "content": "Look closely."},
                        user(IMG, "What shape?"), {"role": "assistant", "content": "A circle."}]}
    out = convert_vision(row, "auto", "sft")
    assert out["images"] == ["images/a.png"]
    assert out["messages"] == [
        {"role": "system", "content": [{"type": "text", "text": "Look closely."}]},
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "What shape?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "A circle."}]}]


def test_openai_image_url_parts_and_multi_turn_order() -> None:
    row = {"messages": [user({"type": "image_url", "image_url": {"url": "b.png"}}, "First?"),
                        {"role": "assistant", "content": "One."},
                        user("And this?", {"type": "image", "path": "c.png"},
                             {"type": "image_url", "image_url": "b.png"}),
                        {"role": "assistant", "content": "Two."}]}
    out = convert_vision(row, "openai_chat", "sft")
    assert out["images"] == ["b.png", "c.png", "b.png"]
    assert [p["type"] for p in out["messages"][2]["content"]] == ["text", "image", "image"]


def test_llava_sharegpt_with_top_level_image() -> None:
    row = {"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                               {"from": "gpt", "value": "A cat."}]}
    out = convert_vision(row, "auto", "sft")
    assert out["images"] == ["a.png"]
    assert out["messages"][0]["content"] == [{"type": "image", "text": None}, {"type": "text", "text": "\nWhat is it?"}]


def test_top_level_images_go_before_the_first_user_text() -> None:
    row = {"images": ["a.png", "b.png"], "prompt": "Compare them.", "chosen": "Same.", "rejected": "No."}
    out = convert_vision(row, "auto", "preference")
    assert out["images"] == ["a.png", "b.png"]
    assert [p["type"] for p in out["prompt"][0]["content"]] == ["image", "image", "text"]
    assert out["chosen"] == [{"role": "assistant", "content": [{"type": "text", "text": "Same."}]}]


def test_preference_formats_with_images() -> None:
    prompt = [user(IMG, "Colour?")]
    a, b = {"role": "assistant", "content": "Red."}, {"role": "assistant", "content": "Blue."}
    rows = [{"prompt": prompt, "chosen": "Red.", "rejected": "Blue."},
            {"chosen": [*prompt, a], "rejected": [*prompt, b]},  # implicit prompt
            {"input": {"messages": prompt}, "preferred_output": [a], "non_preferred_output": [b]}]
    outs = [convert_vision(r, "auto", "preference") for r in rows]
    assert outs[0] == outs[1] == outs[2]
    assert outs[0]["images"] == ["images/a.png"]


def test_text_only_rows_have_no_images() -> None:
    out = convert_vision({"instruction": "Say hi", "output": "Hi"}, "auto", "sft")
    assert out["images"] == [] and out["messages"][0]["content"] == [{"type": "text", "text": "Say hi"}]


@pytest.mark.parametrize("row,reason", [
    ({"messages": [user("Q"), {"role": "assistant", "content": [IMG]}]}, "only allowed in user and system"),
    ({"prompt": [user("Q")], "chosen": [{"role": "assistant", "content": [IMG]}], "rejected": "x"},
     "only allowed in user and system"),
    ({"images": ["a.png"], "messages": [user({"type": "image"}, {"type": "image"}, "Q"),
                                        {"role": "assistant", "content": "A"}]}, "2 image placeholder"),
    ({"messages": [user({"type": "image"}, "Q"), {"role": "assistant", "content": "A"}]},
     "1 image placeholder.*but 0 listed"),
    ({"messages": [user({"type": "video", "video": "v.mp4"}), {"role": "assistant", "content": "A"}]},
     r"messages\[0\]\.content\[0\] must be a part of type text, image or image_url"),
    ({"messages": [user({"type": "text", "text": 5}), {"role": "assistant", "content": "A"}]},
     r"content\[0\]\.text must be a string"),
    ({"messages": [user({"type": "image", "image": 12}), {"role": "assistant", "content": "A"}]},
     "relative path or data URL"),
    ({"images": "a.png b.png".split() + [3], "prompt": "Q", "completion": "A"}, "images must be a list"),
    ({"messages": [user("bad \ue000 char"), {"role": "assistant", "content": "A"}]}, "reserved character"),
    ({"messages": [user(IMG, "Q")]}, "conversation has no assistant message"),
])
def test_bad_vision_records(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert_vision(row, "auto", "preference" if "chosen" in row else "sft")


# ----------------------------------------------------------------------------------- image checks
def test_check_image_accepts_files_and_data_urls(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    payload, key = check_image("images/a.png", tmp_path)
    assert key == "images/a.png" and payload["bytes"] is None and Path(payload["path"]).is_file()
    buf = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (16, 16), "blue").save(buf, format="PNG")
    payload, key = check_image("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode(), tmp_path)
    assert key is None and payload["bytes"] == buf.getvalue()


@pytest.mark.parametrize("make,ref,reason", [
    (None, "images/missing.png", "image file not found"),
    ("dir", "images", "not a file"),
    ("text", "notes.png", "not an image PIL can read"),
    ("empty", "empty.png", "not an image PIL can read"),
    ("truncated", "cut.png", "truncated or corrupt"),
    ("truncated_jpeg", "cut.jpg", "truncated or corrupt"),
    ("tiny", "tiny.png", r"too small \(2x2 px"),
    ("wide", "wide.png", r"too large \(300x10 px"),
    (None, "../outside.png", "outside the data file's folder"),
    (None, "/etc/hosts", "must be relative"),
    (None, "https://example.com/cat.png", "not fetched"),
    (None, "data:text/plain;base64,aGk=", "only base64 image data URLs"),
    (None, "data:image/png;base64,!!!", "not valid base64"),
])
def test_check_image_problems(tmp_path: Path, make: str | None, ref: str, reason: str) -> None:
    from engine.train.images import ImageProblem
    from PIL import Image

    base = tmp_path / "data"
    base.mkdir()
    png(tmp_path / "outside.png")
    if make == "dir":
        (base / "images").mkdir()
    elif make == "text":
        (base / ref).write_text("hello")
    elif make == "empty":
        (base / ref).write_bytes(b"")
    elif make == "truncated":
        Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "noise.png")
        data = (tmp_path / "noise.png").read_bytes()
        (base / ref).write_bytes(data[: len(data) // 2])
    elif make == "truncated_jpeg":
        Image.effect_noise((64, 64), 50).convert("RGB").save(tmp_path / "noise.jpg", quality=95)
        data = (tmp_path / "noise.jpg").read_bytes()
        (base / ref).write_bytes(data[: len(data) // 2])
    elif make == "tiny":
        png(base / ref, (2, 2))
    elif make == "wide":
        png(base / ref, (300, 10))
    limits = ImageLimits(max_side=256)
    with pytest.raises(ImageProblem, match=reason):
        check_image(ref, base, limits)


def test_every_bad_line_and_image_is_reported(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    ok = {"messages": [user(IMG, "my secret question"), {"role": "assistant", "content": "A"}]}

    def with_image(ref: str) -> dict[str, Any]:
        return {"messages": [user({"type": "image", "image": ref}, "my secret question"), {"role": "assistant", "content": "A"}]}

    path = write(tmp_path / "train.jsonl", [
        ok, with_image("images/missing.png"), "{oops", ok, with_image("images/broken.png"),
        {"messages": [user("my secret question")]}, with_image("images/missing.png"),
    ])
    with pytest.raises(DataError) as exc:
        load_vision_examples(path, "sft")
    lines = exc.value.what.splitlines()
    assert lines[0] == "5 bad line(s); training refuses to start:"
    assert lines[1] == "train.jsonl:2: image 'images/missing.png': image file not found"
    assert lines[2].startswith("train.jsonl:3: not valid JSON")
    assert lines[3].startswith("train.jsonl:5: image 'images/broken.png': ")
    assert lines[4] == "train.jsonl:6: conversation has no assistant message"
    assert lines[5] == "train.jsonl:7: image 'images/missing.png': image file not found"
    assert "secret" not in str(exc.value)  # no customer text


def test_load_vision_examples_hashes_images(tmp_path: Path) -> None:
    png(tmp_path / "images" / "a.png")
    path = write(tmp_path / "train.jsonl", [{"messages": [user(IMG, "Q"), {"role": "assistant", "content": "A"}]}] * 3)
    rows, info = load_vision_examples(path, "sft")
    assert len(rows) == 3 and rows[0]["images"][0]["path"].endswith("a.png")
    assert set(info["files"]) == {"train.jsonl", "images/a.png"} and info["images"] == 1
    before = info["sha256"]
    png(tmp_path / "images" / "a.png", colour="blue")  # same data file, different image
    assert load_vision_examples(path, "sft")[1]["sha256"] != before


# ------------------------------------------------------------------------------------ model side
def test_is_vlm_model(tmp_path: Path, tiny_vlm_dir: Path) -> None:
    assert is_vlm_model(tiny_vlm_dir)
    for name, config in {"llama": {"model_type": "llama"}, "qwen2vl": {"model_type": "qwen2_vl"},
                         "custom": {"model_type": "my_vlm", "vision_config": {"hidden_size": 8}}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    assert not is_vlm_model(tmp_path / "llama")
    assert is_vlm_model(tmp_path / "qwen2vl") and is_vlm_model(tmp_path / "custom")
    assert not is_vlm_model(tmp_path / "nowhere")


def test_processor_must_be_multimodal(tiny_vlm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    processor = load_processor(tiny_vlm_dir, "tiny-llava")
    assert processor.image_processor is not None
    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", lambda *a, **k: processor.tokenizer)
    with pytest.raises(StudioError, match="no image processor here.*gave only a") as exc:
        load_processor(tiny_vlm_dir, "tiny-llava")
    assert "torchvision" in exc.value.hint


# ------------------------------------------------------------------------------------- training
@pytest.fixture
def project(tmp_path: Path, workspace, registry, tiny_vlm_dir: Path) -> Path:
    from engine.models.store import import_model

    import_model(workspace, registry, str(tiny_vlm_dir), "tiny-llava")
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    _make_vlm_data().make(tmp_path / "data" / "vlm", n=6, seed=3)
    return tmp_path


def _cfg(project: Path, **train: Any) -> Any:
    cfg = load_config(project / "configs" / "vlm_sft.yaml")
    cfg.train.max_steps, cfg.train.batch_size = 2, 2
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg


def _adapter_changed(adapter_dir: Path) -> None:
    from safetensors.torch import load_file

    weights = load_file(adapter_dir / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b.values())  # B starts at zero
    assert all("language_model" in k for k in weights)  # vision tower and projector stay frozen


def test_vlm_sft_lora_trains(project: Path, workspace, registry) -> None:
    """Through the same dispatch `studio train` uses: a vision base model selects the vision recipe."""
    from engine.train.launch import train_run
    from engine.train.preview import preview

    cfg = _cfg(project)
    assert preview(cfg, registry)["modality"] == "vision"
    res = train_run(cfg, workspace, registry)
    assert registry.get_run(res.run_id)["status"] == "succeeded"
    _adapter_changed(res.adapter_dir)
    assert (res.adapter_dir / "processor_config.json").is_file()
    assert res.metrics["loss_mode"] == "assistant_only" and res.metrics["steps"] == 2
    assert res.metrics["lora_scope"] == "language_model" and res.metrics["images"] == 6
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert "images/0000.png" in manifest["dataset"]["files"]


def test_vlm_sft_last_turn_and_dpo(project: Path, workspace, registry) -> None:
    res = train_vlm(_cfg(project, assistant_only_loss=False), workspace, registry)
    assert res.metrics["loss_mode"] == "last_turn" and res.metrics["steps"] == 2
    res = train_vlm(_cfg(project, method="dpo", data="../data/vlm/dpo.jsonl"), workspace, registry)
    assert registry.get_run(res.run_id)["status"] == "succeeded"
    assert res.metrics["loss_mode"] == "preference" and res.metrics["steps"] == 2
    _adapter_changed(res.adapter_dir)
    losses = [json.loads(l) for l in (res.path / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in row for row in losses)


def test_bad_images_refuse_to_start(project: Path, workspace, registry) -> None:
    data = project / "data" / "vlm"
    (data / "images" / "0001.png").unlink()
    (data / "images" / "0004.png").write_bytes((data / "images" / "0004.png").read_bytes()[:60])
    with pytest.raises(DataError) as exc:
        train_vlm(_cfg(project), workspace, registry)
    lines = exc.value.what.splitlines()
    assert lines[1] == "train.jsonl:2: image 'images/0001.png': image file not found"
    assert lines[2].startswith("train.jsonl:5: image 'images/0004.png': image is truncated or corrupt")
    assert registry.list_runs("default") == []  # nothing registered, no model loaded


def test_vlm_recipe_refusals(project: Path, workspace, registry, tiny_model_dir: Path) -> None:
    with pytest.raises(StudioError, match="'kto' is not available for vision-language"):
        train_vlm(_cfg(project, method="kto"), workspace, registry)
    with pytest.raises(StudioError, match="packing is not supported"):
        train_vlm(_cfg(project, packing=True), workspace, registry)
    from engine.models.store import import_model

    import_model(workspace, registry, str(tiny_model_dir), "tiny-llama")
    with pytest.raises(StudioError, match="not a vision-language model"):
        train_vlm(_cfg(project, base_model="tiny-llama"), workspace, registry)
    assert registry.list_runs("default") == []


def test_too_short_max_seq_len_for_the_image_tokens(project: Path, workspace, registry) -> None:
    with pytest.raises(StudioError, match="image tokens is longer than train.max_seq_len") as exc:
        train_vlm(_cfg(project, max_seq_len=16), workspace, registry)
    assert "raise train.max_seq_len" in exc.value.hint
    (run,) = registry.list_runs("default")
    assert run["status"] == "failed"


def test_text_only_refined_dataset_trains_a_vlm(tmp_path: Path, project: Path, workspace, registry) -> None:
    from tests.helpers import make_project, refined_dataset

    text_project = make_project(tmp_path / "text", tickets=20)
    dataset = refined_dataset(text_project, workspace, registry)
    res = train_vlm(_cfg(project, data=None, dataset=dataset["name"]), workspace, registry)
    assert res.metrics["steps"] == 2 and res.metrics["images"] == 0
    manifest = json.loads((res.path / "manifest.json").read_text())
    assert manifest["dataset"]["sha256"] == dataset["sha256"]


@pytest.mark.gpu
def test_vlm_sft_and_dpo_on_cuda(project: Path, workspace, registry) -> None:
    """The bf16 CUDA path of both vision methods (skipped without a GPU)."""
    for overrides in ({}, {"method": "dpo", "data": "../data/vlm/dpo.jsonl"}):
        res = train_vlm(_cfg(project, **overrides), workspace, registry)
        assert registry.get_run(res.run_id)["status"] == "succeeded"
        _adapter_changed(res.adapter_dir)
