"""Training-data conversion: every accepted format to every row shape, detection, and bad-line reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import DataError
from engine.train.data import LineError, convert, detect, load_examples, load_training_data

U = {"role": "user", "content": "Where is my order?"}
A = {"role": "assistant", "content": "It ships today."}
B = {"role": "assistant", "content": "No idea."}
S = {"role": "system", "content": "Be brief."}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def bot(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def write(path: Path, lines: list[Any]) -> Path:
    """One JSONL line per item; strings are written verbatim (for broken lines)."""
    text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------ detection
@pytest.mark.parametrize("row,fmt", [
    ({"messages": [U, A]}, "openai_chat"),
    ({"input": {"messages": [U]}, "preferred_output": [A], "non_preferred_output": [B]}, "openai_preference"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "sharegpt"),
    ({"instruction": "Say hi", "output": "hi"}, "alpaca"),
    ({"prompt": "q", "completion": "a"}, "prompt_completion"),
    ({"prompt": "q", "chosen": "a", "rejected": "b"}, "trl_preference"),
    ({"chosen": [U, A], "rejected": [U, B]}, "trl_preference"),
    ({"prompt": "q", "completion": "a", "label": True}, "trl_unpaired"),
    ({"prompt": "q", "answer": "4"}, "trl_prompt"),
])
def test_detect(row: dict[str, Any], fmt: str) -> None:
    assert detect(row) == fmt
    assert convert(row, "auto", "prompt" if fmt == "trl_prompt" else _natural_want(fmt)) \
        == convert(row, fmt, "prompt" if fmt == "trl_prompt" else _natural_want(fmt))


def _natural_want(fmt: str) -> str:
    return {"openai_preference": "preference", "trl_preference": "preference",
            "trl_unpaired": "unpaired"}.get(fmt, "sft")


def test_detect_unrecognised_names_the_expected_fields() -> None:
    with pytest.raises(LineError, match="unrecognised record.*messages.*chosen/rejected"):
        detect({"text": "hello"})


# ---------------------------------------------------------------------------------- openai_chat
def test_openai_chat_to_every_shape() -> None:
    row = {"messages": [S, U, A]}
    assert convert(row, "auto", "sft") == {"messages": [S, U, A]}
    assert convert({**row, "answer_key": "x"}, "auto", "prompt") == {
        "prompt": [S, U], "answer": A["content"], "answer_key": "x"}
    assert convert({**row, "label": True}, "auto", "unpaired") == {
        "prompt": [S, U], "completion": [A], "label": True}
    with pytest.raises(LineError, match="cannot be used for preference"):
        convert(row, "auto", "preference")
    with pytest.raises(LineError, match="cannot be used for unpaired"):
        convert(row, "auto", "unpaired")  # no label


def test_openai_chat_keeps_only_role_and_content() -> None:
    row = {"messages": [{**U, "name": "alex"}, {**A, "weight": 1}]}
    assert convert(row, "openai_chat", "sft") == {"messages": [U, A]}


def test_multi_turn_prompt_ends_before_last_reply() -> None:
    row = {"messages": [U, A, user("And the invoice?"), bot("Sent.")]}
    out = convert(row, "auto", "prompt")
    assert out["prompt"] == [U, A, user("And the invoice?")] and out["answer"] == "Sent."


@pytest.mark.parametrize("messages,reason", [
    ([{"role": "tool", "content": "x"}, A], r"messages\[0\] needs a role of system, user or assistant"),
    ([{"content": "x"}, A], r"messages\[0\] needs a role"),
    (["just text", A], r"messages\[0\] needs a role"),
    ([U, {"role": "assistant", "content": 42}], r"messages\[1\]\.content must be a string"),
    ([U, {"role": "assistant", "content": [{"type": "text", "text": "x"}]}],
     r"messages\[1\]\.content must be a string"),
    ([U, {"role": "assistant", "content": None}], r"messages\[1\]\.content must be a string"),
    ([U], "conversation has no assistant message"),
    ([U, A, user("more?")], "conversation must end with an assistant message"),
    ([], "messages must be a non-empty list"),
    ("hello", "messages must be a list of messages"),
])
def test_openai_chat_bad_records(messages: Any, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert({"messages": messages}, "auto", "sft")


def test_conversation_without_prompt_cannot_be_a_prompt_or_unpaired_row() -> None:
    with pytest.raises(LineError, match="no prompt before its final assistant message"):
        convert({"messages": [A]}, "auto", "prompt")
    with pytest.raises(LineError, match="no prompt before"):
        convert({"messages": [A], "label": True}, "auto", "unpaired")


def test_not_an_object() -> None:
    for row in ([1, 2], "text", 3, None):
        with pytest.raises(LineError, match="not a JSON object"):
            convert(row, "auto", "sft")


def test_unknown_format_name() -> None:
    with pytest.raises(LineError, match="unknown data format 'csv'"):
        convert({"messages": [U, A]}, "csv", "sft")


# ---------------------------------------------------------------------------- openai_preference
PREF = {"input": {"messages": [S, U]}, "preferred_output": [A], "non_preferred_output": [B]}


def test_openai_preference_to_every_shape() -> None:
    assert convert(PREF, "auto", "preference") == {"prompt": [S, U], "chosen": [A], "rejected": [B]}
    assert convert(PREF, "auto", "unpaired") == {"pair": [
        {"prompt": [S, U], "completion": [A], "label": True},
        {"prompt": [S, U], "completion": [B], "label": False}]}
    assert convert(PREF, "auto", "sft") == {"messages": [S, U, A]}
    assert convert({**PREF, "topic": "shipping"}, "auto", "prompt") == {
        "prompt": [S, U], "answer": A["content"], "topic": "shipping"}


@pytest.mark.parametrize("row,reason", [
    ({**PREF, "input": [U]}, "input must be an object with messages"),
    ({**PREF, "input": {"messages": [U, A]}}, "input.messages must not end with an assistant message"),
    ({**PREF, "preferred_output": [A, B]}, "preferred_output must be one assistant message"),
    ({**PREF, "preferred_output": [U]}, "preferred_output must be one assistant message"),
    ({**PREF, "non_preferred_output": "  "}, "non_preferred_output is empty"),
    ({k: v for k, v in PREF.items() if k != "non_preferred_output"}, "non_preferred_output must be a non-empty list"),
])
def test_openai_preference_bad_records(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert(row, "auto", "preference")


# ------------------------------------------------------------------------------------- sharegpt
def test_sharegpt_roles_are_mapped() -> None:
    row = {"conversations": [{"from": "system", "value": "Be brief."},
                             {"from": "human", "value": U["content"]},
                             {"from": "gpt", "value": A["content"]},
                             {"from": "user", "value": "Thanks"},
                             {"from": "bot", "value": "Welcome"}]}
    assert convert(row, "auto", "sft") == {"messages": [S, U, A, user("Thanks"), bot("Welcome")]}
    out = convert({**row, "id": 7}, "sharegpt", "prompt")
    assert out == {"prompt": [S, U, A, user("Thanks")], "answer": "Welcome", "id": 7}


@pytest.mark.parametrize("conv,reason", [
    ([{"from": "alien", "value": "x"}], r"conversations\[0\]\.from must be one of"),
    ([{"from": "human", "value": 3}], r"conversations\[0\]\.value must be a string"),
    ([{"from": "human", "value": "x"}, "gpt"], r"conversations\[1\]\.from"),
    ([], "conversations must be a non-empty list"),
    ([{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}], "must end with an assistant message"),
])
def test_sharegpt_bad_records(conv: Any, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert({"conversations": conv}, "auto", "sft")


# --------------------------------------------------------------------------------------- alpaca
@pytest.mark.parametrize("row,messages", [
    ({"instruction": "Summarise", "output": "Short."},
     [user("Summarise"), bot("Short.")]),
    ({"instruction": "Summarise", "input": "A long text.", "output": "Short."},
     [user("Summarise\n\nA long text."), bot("Short.")]),
    ({"instruction": "Summarise", "input": "", "output": "Short.", "system": "Be brief."},
     [S, user("Summarise"), bot("Short.")]),
    ({"instruction": "Summarise", "input": None, "output": "Short.", "system": ""},
     [user("Summarise"), bot("Short.")]),
])
def test_alpaca(row: dict[str, Any], messages: list[dict[str, str]]) -> None:
    assert convert(row, "auto", "sft") == {"messages": messages}
    prompt_row = convert({**row, "answer": "gold"}, "alpaca", "prompt")
    assert prompt_row == {"prompt": messages[:-1], "answer": "gold"}  # an explicit column wins


@pytest.mark.parametrize("row,reason", [
    ({"instruction": "", "output": "x"}, "instruction must be a non-empty string"),
    ({"instruction": "x", "output": " "}, "output must be a non-empty string"),
    ({"instruction": "x"}, "output must be a non-empty string"),
    ({"instruction": "x", "input": ["a"], "output": "y"}, "input must be a string"),
    ({"instruction": "x", "output": "y", "system": 5}, "system must be a string"),
])
def test_alpaca_bad_records(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert(row, "auto", "sft")


# ---------------------------------------------------------------------------- prompt_completion
def test_prompt_completion_strings() -> None:
    row = {"prompt": "2+2?", "completion": "4"}
    assert convert(row, "auto", "sft") == {"messages": [user("2+2?"), bot("4")]}
    assert convert({**row, "level": 1}, "auto", "prompt") == {"prompt": [user("2+2?")], "answer": "4", "level": 1}
    assert convert({**row, "label": "up"}, "prompt_completion", "unpaired") == {
        "prompt": [user("2+2?")], "completion": [bot("4")], "label": True}
    with pytest.raises(LineError, match="prompt/completion records cannot be used for preference"):
        convert(row, "auto", "preference")
    with pytest.raises(LineError, match="cannot be used for unpaired"):
        convert(row, "auto", "unpaired")


def test_prompt_completion_message_lists() -> None:
    row = {"prompt": [S, U], "completion": [A]}
    assert convert(row, "auto", "sft") == {"messages": [S, U, A]}
    assert convert(row, "auto", "prompt") == {"prompt": [S, U], "answer": A["content"]}


@pytest.mark.parametrize("row,reason", [
    ({"prompt": "", "completion": "x"}, "prompt is empty"),
    ({"prompt": "q", "completion": ""}, "completion is empty"),
    ({"prompt": [U, A], "completion": [B]}, "prompt must not end with an assistant message"),
    ({"prompt": [U], "completion": [A, B]}, "completion must be one assistant message"),
    ({"prompt": [U], "completion": [user("x")]}, "completion must be one assistant message"),
    ({"prompt": 5, "completion": "x"}, "prompt must be a non-empty list"),
    ({"completion": "x"}, "prompt_completion needs prompt and completion"),
])
def test_prompt_completion_bad_records(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert(row, "prompt_completion", "sft")


# ------------------------------------------------------------------------------- trl_preference
def test_trl_preference_explicit_prompt() -> None:
    row = {"prompt": "Where is my order?", "chosen": A["content"], "rejected": B["content"]}
    assert convert(row, "auto", "preference") == {"prompt": [U], "chosen": [A], "rejected": [B]}
    row = {"prompt": [S, U], "chosen": [A], "rejected": [B]}
    assert convert(row, "auto", "preference") == {"prompt": [S, U], "chosen": [A], "rejected": [B]}
    assert convert(row, "auto", "sft") == {"messages": [S, U, A]}
    pair = convert(row, "auto", "unpaired")["pair"]
    assert [(p["completion"], p["label"]) for p in pair] == [([A], True), ([B], False)]
    assert convert({**row, "gold": "x"}, "auto", "prompt") == {"prompt": [S, U], "answer": A["content"], "gold": "x"}


def test_trl_preference_implicit_prompt() -> None:
    row = {"chosen": [S, U, A], "rejected": [S, U, B]}
    assert convert(row, "auto", "preference") == {"prompt": [S, U], "chosen": [A], "rejected": [B]}


@pytest.mark.parametrize("row,reason", [
    ({"chosen": [U, A], "rejected": [user("other"), B]}, "must share all but a final assistant message"),
    ({"chosen": [U, A], "rejected": [U, B, user("x")]}, "must share all but a final assistant message"),
    ({"chosen": [A], "rejected": [B]}, "need a prompt"),
    ({"chosen": [U, A, A], "rejected": [U, A, B]}, "need a prompt"),
    ({"prompt": "q", "chosen": "a"}, "needs chosen and rejected"),
    ({"prompt": "q", "chosen": "a", "rejected": [U]}, "rejected must be one assistant message"),
    ({"chosen": "a", "rejected": "b"}, "chosen must be a list of messages"),
])
def test_trl_preference_bad_records(row: dict[str, Any], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        convert(row, "auto", "preference")


# --------------------------------------------------------------------------------- trl_unpaired
@pytest.mark.parametrize("label,expected", [
    (True, True), (False, False), ("up", True), ("down", False), ("UP", True),
    ("thumbs_up", True), ("thumbs_down", False),
])
def test_trl_unpaired_labels(label: Any, expected: bool) -> None:
    row = {"prompt": "q", "completion": "a", "label": label}
    assert convert(row, "auto", "unpaired") == {"prompt": [user("q")], "completion": [bot("a")], "label": expected}


@pytest.mark.parametrize("label", [1, 0, "yes", None, "sideways"])
def test_trl_unpaired_bad_labels(label: Any) -> None:
    with pytest.raises(LineError, match="label must be true/false"):
        convert({"prompt": "q", "completion": "a", "label": label}, "auto", "unpaired")


def test_trl_unpaired_other_shapes() -> None:
    row = {"prompt": [S, U], "completion": [A], "label": False, "topic": "t"}
    assert convert(row, "auto", "prompt") == {"prompt": [S, U], "topic": "t"}  # a thumbs-down is no answer
    for want in ("sft", "preference"):
        with pytest.raises(LineError, match=f"cannot be used for {want} training"):
            convert(row, "auto", want)


# ----------------------------------------------------------------------------------- trl_prompt
def test_trl_prompt_keeps_extra_columns() -> None:
    row = {"prompt": "2+2?", "answer": "4", "difficulty": 1, "tags": ["math"]}
    assert convert(row, "auto", "prompt") == {"prompt": [user("2+2?")], "answer": "4", "difficulty": 1,
                                              "tags": ["math"]}
    assert convert({"prompt": [S, U]}, "trl_prompt", "prompt") == {"prompt": [S, U]}
    for want in ("sft", "preference", "unpaired"):
        with pytest.raises(LineError, match=f"prompt-only records cannot be used for {want} training"):
            convert(row, "auto", want)


# ---------------------------------------------------------------------------------------- files
def test_load_examples_mixed_formats_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "mixed.jsonl", [
        {"messages": [U, A]}, "", "   ",
        {"instruction": "Summarise", "output": "Short."},
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]},
        {"prompt": "q", "completion": "a"},
    ])
    rows = load_examples(path, "sft")
    assert [r["messages"][-1]["content"] for r in rows] == ["It ships today.", "Short.", "yo", "a"]


def test_load_examples_pairs_become_two_unpaired_rows(tmp_path: Path) -> None:
    path = write(tmp_path / "pairs.jsonl", [PREF, {"prompt": "q", "completion": "a", "label": "down"}])
    rows = load_examples(path, "unpaired")
    assert [r["label"] for r in rows] == [True, False, False]


def test_explicit_format_is_enforced(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [{"messages": [U, A]}, {"instruction": "x", "output": "y"}])
    with pytest.raises(DataError) as exc:
        load_examples(path, "sft", "openai_chat")
    assert "d.jsonl:2: messages must be a non-empty list of messages" in str(exc.value)


def test_every_bad_line_is_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "train.jsonl", [
        {"messages": [U, A]},
        '{"messages": [',                                         # 2: bad JSON
        {"messages": [{"role": "robot", "content": "x"}, A]},     # 3: wrong role
        {"messages": [U, {"role": "assistant", "content": 7}]},   # 4: non-string content
        {"messages": [U, A, user("and?")]},                        # 5: does not end with assistant
        [1, 2],                                                    # 6: not an object
        {"messages": [U, A]},
        {"text": "free text"},                                     # 8: unrecognised
    ])
    with pytest.raises(DataError) as exc:
        load_examples(path, "sft")
    err = exc.value
    lines = err.what.splitlines()
    assert lines[0] == "6 bad line(s); training refuses to start:"
    assert lines[1].startswith("train.jsonl:2: not valid JSON (")
    assert lines[2:] == [
        "train.jsonl:3: messages[0] needs a role of system, user or assistant",
        "train.jsonl:4: messages[1].content must be a string",
        "train.jsonl:5: conversation must end with an assistant message",
        "train.jsonl:6: line is not a JSON object",
        "train.jsonl:8: unrecognised record: no messages, conversations, instruction, prompt, "
        "chosen/rejected or preferred_output field",
    ]
    assert err.where == str(path) and "docs/training-data.md" in err.hint
    assert "Where is my order" not in str(err) and "free text" not in str(err)  # no customer text


def test_report_is_truncated_after_twenty(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", ["not json"] * 25 + [{"messages": [U, A]}])
    with pytest.raises(DataError) as exc:
        load_examples(path, "sft")
    lines = exc.value.what.splitlines()
    assert lines[0].startswith("25 bad line(s)")
    assert [l.split(":")[1] for l in lines[1:21]] == [str(i) for i in range(1, 21)]
    assert lines[21] == "… and 5 more bad lines"
    assert len(lines) == 22


def test_empty_file(tmp_path: Path) -> None:
    for content in ("", "\n\n  \n"):
        path = tmp_path / "empty.jsonl"
        path.write_text(content, encoding="utf-8")
        with pytest.raises(DataError, match="no records"):
            load_examples(path, "sft")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_examples(tmp_path / "nope.jsonl", "sft")
    with pytest.raises(DataError, match="cannot open training data"):
        load_examples(tmp_path, "sft")


def test_non_utf8_lines_are_reported_by_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    good = json.dumps({"messages": [U, A]}).encode()
    bad = json.dumps({"messages": [user("Café"), A]}, ensure_ascii=False).encode("latin-1")
    path.write_bytes(good + b"\n" + bad + b"\n" + good + b"\n" + bad + b"\n")
    with pytest.raises(DataError) as exc:
        load_examples(path, "sft")
    assert exc.value.what.splitlines()[1:] == ["latin1.jsonl:2: not UTF-8 text (save the file as UTF-8)",
                                               "latin1.jsonl:4: not UTF-8 text (save the file as UTF-8)"]


def test_utf8_bom_and_crlf_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "excel.jsonl"
    line = json.dumps({"messages": [user("Café ☕"), A]}, ensure_ascii=False)
    path.write_bytes(("\ufeff" + line + "\r\n" + line + "\r\n").encode("utf-8"))
    rows = load_examples(path, "sft")
    assert len(rows) == 2 and rows[0]["messages"][0]["content"] == "Café ☕"


class _Spec:
    def __init__(self, data: str | None = None, dataset: str | None = None, data_format: str = "auto"):
        self.data, self.dataset, self.data_format = data, dataset, data_format


def test_load_training_data_from_a_file(tmp_path: Path) -> None:
    path = write(tmp_path / "prefs.jsonl", [PREF, PREF])
    data = load_training_data(_Spec(data="prefs.jsonl"), None, "default", "preference",
                              resolve_path=lambda p: tmp_path / p)
    assert len(data.train) == 2 and data.val == []
    assert data.info["ref"] == "prefs.jsonl"
    from engine.hashing import sha256_file

    assert data.info["sha256"] == sha256_file(path) == data.info["files"]["prefs.jsonl"]


def test_load_training_data_needs_a_source() -> None:
    from engine.errors import StudioError

    with pytest.raises(StudioError, match="no training data"):
        load_training_data(_Spec(), None, "default", "sft")


def test_every_example_in_the_docs_converts() -> None:
    import re

    from engine.train.images import convert_vision

    doc = (Path(__file__).resolve().parents[2] / "docs" / "training-data.md").read_text(encoding="utf-8")
    lines = [line for block in re.findall(r"```json\n(.*?)```", doc, re.S) for line in block.splitlines()]
    assert len(lines) >= 14
    for line in lines:
        row = json.loads(line)
        vision = "image" in line
        ok = []
        for want in (("sft", "preference") if vision else ("sft", "preference", "unpaired", "prompt")):
            try:
                (convert_vision if vision else convert)(row, "auto", want)
                ok.append(want)
            except LineError:
                pass
        assert ok, line
