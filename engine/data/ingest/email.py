"""Ingest e-mail (.eml, .mbox, or a directory of .eml files) into one Conversation per thread.

Threads: messages are joined through Message-ID / In-Reply-To / References; a message with neither
In-Reply-To nor References joins the thread with the same normalised subject (without Re:, Fwd:,
AW:, WG:, SV: … prefixes) and the same customer address. Within a thread messages are ordered by
Date (a message without a usable Date keeps its place after the one before it in the input).
Threads come out in the order of their first message in the input, with that message's file and
line (the mbox "From " line; line 1 of an .eml file) as the source reference; a ticket number in
the subject ("[Ticket #4471]", "Case 88") becomes the source id.

Speaker: the From header (display name, address, domain) through the input's `speakers` map:
assistant or bot labels (e.g. "support@brightwave.example", "Brightwave Support",
"@brightwave.example") give those roles, everyone else is the customer (user). Customers' display
names go into Conversation.hints["names"] for the PII stage. The body is the text/plain part, else
the HTML part as plain text (engine.data.html_text); quoted replies and signatures are left in for
the turns stage. A message that cannot be parsed rejects its thread (`bad_email`). Messages are read
twice (headers first, bodies per thread) so that only headers are held in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timezone
from email import errors as email_errors
from email import policy
from email.header import decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from pathlib import Path

from engine.config import InputSpec, SpeakerMap
from engine.data.html_text import html_to_text
from engine.data.ingest.common import Advance, read_head, record_id, reject
from engine.data.ingest.speakers import role_for
from engine.errors import DataError
from engine.records import Conversation, Reject, SourceRef

class _RawHeaders(policy.Compat32):
    """compat32, but header values come back as stored (8-bit bytes as surrogate escapes) instead
    of as unknown-8bit Header objects; decoded only where needed. (policy.default parses every
    header it touches through the header registry: ~8x slower on a large mailbox.)"""

    def header_fetch_parse(self, name: str, value: str) -> str:
        return value


_PARSER = BytesParser(policy=_RawHeaders())
_PARSE_ERRORS = (email_errors.MessageError, ValueError, LookupError, IndexError, TypeError,
                 AttributeError, UnicodeError)
_MSGID = re.compile(r"<[^<>\s]+>")
_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|vs|antw|tr|rv|ref)\s*(?:\[\d+\])?\s*[:：]\s*)+",
                             re.I)
_TICKET = re.compile(r"(?:\b(?:ticket|case|request|incident)\s*(?:#|no\.?|id)?\s*:?\s*|\[#|#)"
                     r"([A-Z]{0,6}-?\d{2,})\b", re.I)


@dataclass
class _Msg:
    pos: int                   # order in the input
    path: Path
    offset: int                # where the message bytes start in `path`
    length: int | None         # None: to the end of the file
    file: str                  # source label
    line: int
    own_id: str | None
    refs: list[str]
    subject: str               # normalised
    ticket: str | None
    ts: float | None
    role: str
    name: str | None
    party: str                 # the customer's address
    lines: int = 0             # physical lines (for progress of .eml files)


@dataclass
class _Thread:
    msgs: list[_Msg] = field(default_factory=list)


def email_files(path: Path) -> list[Path]:
    """The files an input path stands for: itself, or the *.eml files of a directory (sorted)."""
    if not path.is_dir():
        return [path]
    files = sorted(f for f in path.iterdir() if f.suffix.lower() == ".eml" and f.is_file())
    if not files:
        raise DataError("the input directory has no *.eml files", where=str(path),
                        hint="format 'email' reads an .eml or .mbox file, or a directory of .eml files")
    return files


def is_mbox(head: bytes) -> bool:
    return head.lstrip(b"\r\n").startswith(b"From ")


def check_email(path: Path) -> None:
    """Cheap checks: readable, and an mbox starts with a 'From ' line, an .eml with a header."""
    for f in email_files(path):
        head = read_head(f)
        if f.suffix.lower() == ".mbox" and not is_mbox(head):
            raise DataError("not an mbox file (the first line must start with 'From ')", where=str(f))
        if not is_mbox(head) and not re.match(rb"[\x21-\x39\x3b-\x7e]+:", head.lstrip(b"\r\n")):
            raise DataError("not an e-mail message (no header line at the start)", where=str(f),
                            hint="format 'email' reads .eml (RFC 822) or .mbox files")


def _clean(text: str) -> str:
    """Drop undecodable bytes (surrogate escapes) that cannot be written as UTF-8."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _header(msg: Message, name: str) -> str:
    """The header value (RFC 2047 words still encoded; raw 8-bit bytes read as UTF-8), or ''."""
    value = msg.get(name)
    if not isinstance(value, str):
        return ""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _decoded(value: str) -> str:
    """RFC 2047 encoded words ("=?utf-8?q?Ana_Ru=C3=ADz?=") as text."""
    if "=?" not in value:
        return value
    try:
        return _clean(str(make_header(decode_header(value))))
    except _PARSE_ERRORS:
        return value


def _display_name(name: str) -> str:
    """ "Ruiz, Ana" → "Ana Ruiz" (the way the name appears in text); other names unchanged."""
    name = " ".join(name.split())
    last, comma, first = name.partition(",")
    if comma and "," not in first and 1 <= len(last.split()) <= 2 and 1 <= len(first.split()) <= 2:
        return f"{first.strip()} {last.strip()}"
    return name


def _timestamp(value: str) -> float | None:
    if not value:
        return None
    try:
        dt = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def _info(headers: Message, pos: int, path: Path, offset: int, length: int | None, file: str,
          line: int, speakers: SpeakerMap) -> _Msg:
    name, addr = parseaddr(_header(headers, "From"))
    name = _display_name(_decoded(name))
    sender = f"{name} <{addr}>" if name and addr else name or addr
    role = role_for(sender, speakers) if sender else None
    role = {"assistant": "assistant", "bot": "bot", "tool": "tool", "system": "bot"}.get(role or "",
                                                                                         "user")
    to = [a for _, a in getaddresses([_header(headers, "To")]) if a]
    party = (addr if role == "user" else (to[0] if to else "")).casefold()
    raw_subject = _decoded(_header(headers, "Subject"))
    ticket = _TICKET.search(raw_subject)
    own = _MSGID.findall(_header(headers, "Message-ID"))
    refs = _MSGID.findall(_header(headers, "References")) + _MSGID.findall(_header(headers, "In-Reply-To"))
    return _Msg(pos=pos, path=path, offset=offset, length=length, file=file, line=line,
                own_id=own[0] if own else None, refs=refs,
                subject=" ".join(_SUBJECT_PREFIX.sub("", raw_subject).split()).casefold(),
                ticket=ticket.group(1) if ticket else None, ts=_timestamp(_header(headers, "Date")),
                role=role, name=name if role == "user" and name and "@" not in name else None,
                party=party)


def _headers_of(data: bytes) -> Message:
    return _PARSER.parsebytes(data, headersonly=True)


def _scan_mbox(path: Path, file: str, start: int, speakers: SpeakerMap,
               advance: Advance | None) -> list[_Msg]:
    """One pass over an mbox: the headers of every message and where its bytes are."""
    out: list[_Msg] = []
    offset = 0
    cur: tuple[int, int] | None = None  # (offset after the From_ line, its line number)
    head: list[bytes] = []
    in_head = False

    def flush(end: int) -> None:
        if cur is not None:
            out.append(_info(_headers_of(b"".join(head)), start + len(out), path, cur[0],
                             end - cur[0], file, cur[1], speakers))

    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if advance is not None:
                advance(1)
            if raw.startswith(b"From "):
                flush(offset)
                cur, head, in_head = (offset + len(raw), line_no), [], True
            elif in_head:
                if raw.strip(b"\r\n"):
                    head.append(raw)
                else:
                    in_head = False
            offset += len(raw)
    flush(offset)
    return out


def _scan_eml(path: Path, file: str, pos: int, speakers: SpeakerMap) -> _Msg:
    head: list[bytes] = []
    lines = 0
    with open(path, "rb") as f:
        for raw in f:
            lines += 1
            if not raw.strip(b"\r\n") and head:
                break
            if raw.strip(b"\r\n"):
                head.append(raw)
        lines += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    msg = _info(_headers_of(b"".join(head)), pos, path, 0, None, file, 1, speakers)
    msg.lines = lines
    return msg


def _threads(msgs: list[_Msg]) -> list[_Thread]:
    """Union-find over message ids and (subject, customer) keys; threads in input order."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    nodes = []
    for m in msgs:
        node = f"id:{m.own_id}" if m.own_id else f"pos:{m.pos:012d}"
        nodes.append(node)
        find(node)
        for ref in m.refs:
            union(node, f"id:{ref}")
        if not m.refs and m.subject:
            union(node, f"subject:{m.subject}\x00{m.party}")
    groups: dict[str, _Thread] = {}
    for m, node in zip(msgs, nodes):
        groups.setdefault(find(node), _Thread()).msgs.append(m)
    return sorted(groups.values(), key=lambda t: t.msgs[0].pos)


def _ordered(thread: _Thread) -> list[_Msg]:
    """By Date; a message without one sorts right after the message before it in the input."""
    keyed, last = [], float("-inf")
    for m in thread.msgs:  # in input order
        last = m.ts if m.ts is not None else last
        keyed.append(((last, m.ts is None, m.pos), m))
    return [m for _, m in sorted(keyed, key=lambda kv: kv[0])]


def _text_part(msg: Message) -> Message | None:
    """The first inline text/plain part, else the first inline text/html part."""
    html = None
    for part in msg.walk():
        if part.is_multipart() or part.get_content_disposition() == "attachment":
            continue
        kind = part.get_content_type()
        if kind == "text/plain":
            return part
        if kind == "text/html" and html is None:
            html = part
    return html


def _body(data: bytes) -> str:
    part = _text_part(_PARSER.parsebytes(data))
    if part is None:
        return ""
    payload = part.get_payload(decode=True)  # base64 / quoted-printable undone
    if not isinstance(payload, bytes):
        return ""
    try:
        text = payload.decode(part.get_content_charset() or "utf-8", "replace")
    except LookupError:  # unknown charset name
        text = payload.decode("utf-8", "replace")
    text = _clean(text).replace("\r\n", "\n")
    return (html_to_text(text) if part.get_content_type() == "text/html" else text).strip()


def _read_bytes(m: _Msg) -> bytes:
    with open(m.path, "rb") as f:
        f.seek(m.offset)
        return f.read() if m.length is None else f.read(m.length)


def read_email(path: str | Path, spec: InputSpec, *, label: str | None = None,
               advance: Advance | None = None) -> Iterator[Conversation | Reject]:
    """Yield one Conversation per thread (or a Reject), in the order threads start in the input."""
    p = Path(path)
    base = label or p.name
    msgs: list[_Msg] = []
    for f in email_files(p):
        file = f"{base}/{f.name}" if p.is_dir() else base
        head = read_head(f)
        if is_mbox(head):
            msgs += _scan_mbox(f, file, len(msgs), spec.speakers, advance)
        else:
            msgs.append(_scan_eml(f, file, len(msgs), spec.speakers))
    for thread in _threads(msgs):
        first = thread.msgs[0]
        sid = next((m.ticket for m in thread.msgs if m.ticket), None)
        messages: list[dict[str, str]] = []
        bad = None
        if advance is not None and (lines := sum(m.lines for m in thread.msgs)):
            advance(lines)  # .eml files; an mbox reported its lines while scanning
        for m in _ordered(thread):
            try:
                text = _body(_read_bytes(m))
            except _PARSE_ERRORS:
                bad = m
                break
            messages.append({"role": m.role, "content": text})
        if bad is not None:
            yield reject(first.file, first.line, "bad_email",
                         f"message at {bad.file}:{bad.line} cannot be parsed", sid=sid)
            continue
        conv = Conversation(id=record_id(first.file, first.line, sid), messages=messages,
                            source=SourceRef(first.file, first.line, sid))
        names = list(dict.fromkeys(_clean(m.name) for m in thread.msgs if m.name))
        if names:
            conv.hints["names"] = names
        yield conv
