"""Typed records shared by the stages: Conversation (one sample), Reject (why a sample was dropped).

On disk every record is one JSON line. Conversations carry a source reference (file, line/row,
id) so that every golden sample can be traced back to the raw log it came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
# Ingest may also emit "bot" (automated widget/IVR messages) and "tool" (API/tool noise);
# the turns stage drops them or maps them onto ROLES (engine/data/stages/turns.py).
INGEST_ROLES = (*ROLES, "bot", "tool")


@dataclass
class SourceRef:
    file: str
    line: int | None = None
    id: str | None = None

    def label(self) -> str:
        loc = f"{self.file}:{self.line}" if self.line is not None else self.file
        return f"{loc} (id {self.id})" if self.id else loc


@dataclass
class Conversation:
    id: str
    messages: list[dict[str, str]]
    source: SourceRef
    meta: dict[str, Any] = field(default_factory=dict)
    # In-flight hints between stages, never written to disk: e.g. {"names": ["Ana Ruiz"]} from a
    # customer-name column, which the PII stage redacts wherever the name appears.
    hints: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "messages": self.messages, "meta": self.meta,
                "source": asdict(self.source)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Conversation":
        return cls(id=data["id"], messages=data["messages"], meta=data.get("meta", {}),
                   source=SourceRef(**data["source"]))


@dataclass
class Reject:
    """A dropped record. `detail` never contains customer text: codes, counts and ids only."""

    source: SourceRef
    stage: str
    reason: str
    detail: str = ""
    record_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "stage": self.stage, "reason": self.reason,
                "detail": self.detail, "source": asdict(self.source)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Reject":
        return cls(source=SourceRef(**data["source"]), stage=data["stage"], reason=data["reason"],
                   detail=data.get("detail", ""), record_id=data.get("record_id"))


def message_text(content: Any) -> str:
    """Message content — a string or multimodal parts (their text parts) — as plain text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal content parts: keep the text parts
        return "\n".join(str(p.get("text", "")) for p in content
                         if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)
