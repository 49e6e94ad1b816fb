"""Turns stage: turns a raw support thread into clean turns (roles, quotes, signatures, boilerplate).

Per conversation, in this order:
  1. roles: `bot` turns (widget/IVR greetings) are dropped, or become assistant turns with
     bot_turns: assistant; `tool` turns (API/webhook noise) are dropped unless keep_tool_turns
     (then kept verbatim as role "tool"); system turns are kept verbatim;
  2. per user/assistant turn, line by line (the normalize stage has already made the line endings
     LF and, by default, stripped each line):
     - strip_quoted: a reply header ("On Mon, 3 Mar 2026 at 10:02, X <y> wrote:", also de/fr/es/
       it/nl/pt/sv; it must carry a time or an address) and everything after it (when
       the header is followed by ">" lines, only those lines go and any text below them stays);
       "-----Original Message-----" (and its translations) or an Outlook header block ("From:"
       followed within five lines by two of Sent/Date/To/Cc/Subject, one of them the subject, and
       an address or a timestamp; in seven languages) and everything after it, unless the block
       is announced as a forwarded message; every line
       that starts with ">" followed by a space, another ">" or nothing (">5 minutes" stays);
     - strip_boilerplate: ticket-system lines (Zendesk "##- … -##" markers and "reply above/below
       this line" — with text above them they also cut the ticket history below; "[Ticket #123]
       updated"; "Your request (1234) has been updated."; "This ticket was created via …"; "To
       add additional comments, reply to this email."; [cid:…] image placeholders), survey and
       confidentiality-disclaimer paragraphs (up to the next blank line), and every line matched
       by one of `spec.boilerplate` (re.search on the stripped line);
     - strip_signatures: "Sent from my iPhone"/"Get Outlook for iOS" lines (and translations);
       a "--" delimiter line with text above it and at most 8 short lines below it; a closing
       line ("Best regards,", "Mit freundlichen Grüßen", "Cordialement", "Thanks,", optionally
       with a name: "Cheers, Tom") with text above it and only up to five short name/title/
       company/phone lines below it. "Thanks"/"Danke"/"Best"-like closings count only with a
       trailing comma or a following line, so "Thanks!" ending a message, or "Thanks, that fixed
       it!", stay. A question, a "P.S." or an order/ticket number below a closing keeps the
       whole block;
  3. merge_consecutive: neighbouring turns of the same role (tool turns excepted) are joined with
     a blank line; turns left empty are dropped. A conversation can end up with no turns: it is
     passed on and the quality stage rejects it.
The Counter holds numbers of turns per action (a turn counts once per action), never text.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import replace
from functools import lru_cache

from engine.config import TurnsSpec
from engine.records import Conversation

STAGE = "turns"
MAX_SIG_LINES = 5        # name, title, company, phone, web/e-mail under a closing line
MAX_DELIM_SIG_LINES = 8  # below a "-- " delimiter
_SHORT = 80              # characters of a signature line

# ------------------------------------------------------------------------------------ quoting
_QUOTE_LINE = re.compile(r"^\s*>(?:[ >\t]|$)")
_WROTE_START = re.compile(r"^(?:on|am|le|el|il|op|em|den|på)\s", re.I)
_WROTE = re.compile(r"^(?:on|am|le|el|il|op|em|den|på)\s.{4,300}?\s(?:wrote|schrieb|a\s+écrit|"
                    r"escribió|ha\s+scritto|schreef|escreveu|skrev)(?:\s.{1,200}?)?\s*:$", re.I)
_DATEISH = re.compile(r"\d{1,2}:\d{2}|@")  # every mail client writes a time or an address
_TIMESTAMP = re.compile(r"\b\d{4}\b|\b\d{1,2}:\d{2}\b")
_ORIGINAL = re.compile(r"^-{2,}\s*(?:original message|ursprüngliche nachricht|message d'origine|"
                       r"mensaje original|messaggio originale|oorspronkelijk bericht|"
                       r"mensagem original|originalmeddelande)\s*-{2,}$", re.I)
_HDR_FROM = re.compile(r"^\*?(?:from|von|de|da|van|från)\s?:\*?\s+\S", re.I)
_HDR_FIELD = re.compile(r"^\*?(?:sent|date|to|cc|subject|gesendet|datum|an|betreff|envoyé|à|"
                        r"objet|enviado|fecha|para|asunto|inviato|data|a|oggetto|verzonden|aan|"
                        r"onderwerp|skickat|till|ämne)\s?:", re.I)
_HDR_SUBJECT = re.compile(r"^\*?(?:subject|betreff|objet|asunto|oggetto|onderwerp|ämne|assunto)"
                          r"\s?:", re.I)
_FORWARDED = re.compile(r"forwarded message|weitergeleitete nachricht|message transféré|"
                        r"mensaje reenviado|messaggio inoltrato|doorgestuurd bericht|"
                        r"mensagem encaminhada|vidarebefordrat meddelande", re.I)
_SEPARATOR = re.compile(r"^[_\-=]{8,}$")

# -------------------------------------------------------------------------------- boilerplate
_ZENDESK_MARK = re.compile(r"^##-.{0,120}-##$")
_REPLY_MARK = re.compile(r"^[#\-\s]*please (?:type|write|enter) your (?:reply|response) above this "
                         r"line|^[#\-\s]*please do not (?:reply|write|type) below this line", re.I)
_BOILER_LINE = re.compile(
    r"^\[(?:ticket|request|case)\s*#?\s*\d+\]\s*(?:has\s+been\s+)?(?:updated|created|opened|"
    r"reopened|closed|solved|resolved|received|pending|assigned)\.?$"
    r"|^your (?:request|ticket|case)\s*(?:\(#?\d+\)|#\d+)\s*has been (?:updated|received|created|"
    r"solved|resolved|closed|reopened)\.?$"
    r"|^this (?:ticket|request|case) was (?:created|submitted|opened|received) (?:via|by|through|"
    r"from) .{1,80}$"
    r"|^to add additional comments,? reply to this e-?mail\.?$"
    r"|^this e-?mail is a service from .{1,60}$"
    r"|^\[cid:[^\]]{1,200}\]$", re.I)
_BOILER_PARAGRAPH = re.compile(
    r"^(?:confidentiality notice|disclaimer|legal notice)\s*:"
    r"|^(?:this|the information in this) (?:e-?mail|message|communication)(?: and any (?:attachments?|"
    r"files?)(?: (?:transmitted|sent) with it)?)? (?:is|are|may be|contains?|may contain)\b.{0,40}"
    r"\b(?:confidential|privileged|intended solely|intended only)"
    r"|^if you (?:are not the intended recipient|have received this (?:e-?mail|message) in error)"
    r"|^diese (?:e-?mail|nachricht)\b.{0,80}\bvertrauliche?"
    r"|^ce (?:message|courriel|mail|e-mail)\b.{0,80}\bconfidentiel"
    r"|^este (?:mensaje|correo)\b.{0,80}\bconfidencial"
    r"|^how would you rate (?:our|my|the|this) (?:support|service|reply|response|answer|"
    r"conversation)\b"
    r"|^how (?:did we do|was your (?:support )?experience)\?"
    r"|^(?:please )?(?:take a moment to )?rate (?:our|my|the|this|your) (?:support|service|reply|"
    r"response|conversation|experience)\b", re.I)

# ---------------------------------------------------------------------------------- signatures
_DEVICE = (r"(?:[\w\-]+\s){0,3}(?:iphone|ipad|android|galaxy|samsung|mobile|phone|smartphone|"
           r"handy|portable|móvil|movil|cellulare|telefoon|celular|blackberry|huawei|xiaomi|pixel|"
           r"tablet|xperia|oneplus|motorola|nokia)\b[\w\s\-]{0,30}")
_SENT_FROM = re.compile(
    rf"^(?:sent from my {_DEVICE}|sent from (?:mail|outlook|yahoo mail|gmail|aol|proton ?mail)"
    r"(?: (?:for|on) [\w ]{1,20})?|get outlook for (?:ios|android|mac|windows)"
    rf"|von meinem {_DEVICE} gesendet|gesendet (?:von|mit) meinem {_DEVICE}"
    rf"|envoyé (?:de|depuis) mon {_DEVICE}|enviado desde mi {_DEVICE}|inviato da(?:l mio)? {_DEVICE}"
    rf"|verzonden (?:vanaf|met) mijn {_DEVICE}|enviado do meu {_DEVICE}|skickat från min {_DEVICE})"
    r"[.!]?$", re.I)
_SIG_DASHES = re.compile(r"^--\s*$")
_GRUSS = r"gr(?:ü|ue)(?:ß|ss)"  # Grüße / Grüsse (Swiss) / Gruesse


def _alternatives(*phrases: str) -> str:
    """Longest first, so that "thanks in advance" wins over "thanks"; spaces match any whitespace."""
    return "|".join(p.replace(" ", r"\s+") for p in sorted(phrases, key=len, reverse=True))


_THANKS_AND = (r"(?:(?:thanks|thank you|many thanks|danke|vielen dank|merci|gracias|grazie|"
               r"bedankt)(?:\s*[,!]?\s+(?:and|und|et|y|e|en|&)\s+|\s*[,!]\s*))?")
_CLOSING_STRONG = _THANKS_AND + "(?:" + _alternatives(
    "regards", "best regards", "kind regards", "warm regards", "warmest regards", "kindest regards",
    "many regards", "with kind regards", "with best regards", "best wishes", "all the best",
    "sincerely", "yours sincerely", "yours truly", "yours faithfully", "respectfully", "cheers",
    "take care",
    f"mit freundlichen {_GRUSS}en", "mit freundlichem gru(?:ß|ss)", f"freundliche {_GRUSS}e",
    f"viele {_GRUSS}e", f"beste {_GRUSS}e", f"liebe {_GRUSS}e", f"herzliche {_GRUSS}e",
    f"schöne {_GRUSS}e",
    "cordialement", "bien cordialement", "bien à vous", "meilleures salutations",
    "sincères salutations", "amicalement",
    "saludos", "un saludo", "saludos cordiales", "un cordial saludo", "atentamente", "cordialmente",
    "cordiali saluti", "distinti saluti", "saluti", "un saluto",
    "met vriendelijke groet", "met vriendelijke groeten", "vriendelijke groet", "vriendelijke groeten",
    "groeten", "atenciosamente", "cumprimentos", "com os melhores cumprimentos",
    "med vänliga hälsningar", "vänliga hälsningar") + ")"
_CLOSING_WEAK = _alternatives(  # need a trailing comma or a line below to count as a closing
    "thanks", "thank you", "thanks again", "many thanks", "thanks in advance",
    "thank you in advance", "thx", "best", "br", "danke", "vielen dank", "danke schön", "mfg", "lg",
    "vg", "gru(?:ß|ss)", f"{_GRUSS}e", "merci", "merci beaucoup", "gracias", "muchas gracias",
    "grazie", "grazie mille", "bedankt", "obrigado", "obrigada", "muito obrigado", "muito obrigada",
    "tack")
_NAME = r"[^\W\d_][\w.'\-]*"
_CONNECTORS = ("from", "at", "of", "the", "your", "von", "de", "du", "der", "la", "el", "und",
               "and", "&", "|")
_NAME_LOWER = (*_CONNECTORS, "team", "support", "service", "care", "crew")
_NAME_TAIL = rf"(?:{_NAME}|&|\|)"
_CLOSING = re.compile(
    rf"^(?:(?P<strong>{_CLOSING_STRONG})|(?P<weak>{_CLOSING_WEAK}))(?P<punct>\s*[,.!]+|\s+-)?"
    rf"(?:\s*(?P<name>{_NAME}(?:\s+{_NAME_TAIL}){{0,4}}))?$", re.I)
_PS = re.compile(r"^p\.?\s?s\b", re.I)
# "Order #4821" under a name is what the ticket is about, not part of the signature
_REFERENCE = re.compile(r"\b(?:order|ticket|case|invoice|serial|account (?:no|number|id)|"
                        r"customer (?:no|number|id)|bestell\w*|auftrag\w*|rechnung\w*|kundennummer|"
                        r"commande|facture|pedido|factura|ordine|fattura|bestelling|factuur|"
                        r"encomenda)\b\D{0,12}\d", re.I)


@lru_cache(maxsize=32)
def _extra_patterns(patterns: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    return tuple(re.compile(p) for p in patterns)


# ------------------------------------------------------------------------------------ helpers
def _has_text(lines: list[str]) -> bool:
    return any(line.strip() for line in lines)


def _quote_header_span(lines: list[str], i: int) -> int:
    """Number of lines (1-3) of a "On … wrote:" header starting at line i, else 0."""
    if not _WROTE_START.match(lines[i].strip()):
        return 0
    for span in (1, 2, 3):
        if i + span > len(lines):
            break
        text = " ".join(line.strip() for line in lines[i:i + span])
        if _WROTE.match(text) and _DATEISH.search(text):
            return span
    return 0


def _outlook_header(lines: list[str], i: int) -> bool:
    if not _HDR_FROM.match(lines[i].strip()):
        return False
    block = [line.strip() for line in lines[i:i + 6]]
    fields = sum(bool(_HDR_FIELD.match(line)) for line in block[1:])
    # a real header block has a subject and an address or a timestamp ("From: Berlin / To: Munich
    # / Date: 3 March" in a delivery question does not)
    if (fields < 2 or not any(_HDR_SUBJECT.match(line) for line in block[1:])
            or not any("@" in line or _TIMESTAMP.search(line) for line in block)):
        return False
    above = [line for line in lines[max(0, i - 3):i] if line.strip()]
    return not any(_FORWARDED.search(line) for line in above)


def _trim_separators(out: list[str]) -> list[str]:
    while out and (not out[-1].strip() or _SEPARATOR.match(out[-1].strip())):
        out.pop()
    return out


# ------------------------------------------------------------------------------------ strippers
def strip_quoted(lines: list[str]) -> tuple[list[str], bool]:
    out: list[str] = []
    hit, i = False, 0
    while i < len(lines):
        line = lines[i].strip()
        span = _quote_header_span(lines, i)
        if span:
            j = i + span
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _QUOTE_LINE.match(lines[j]):
                hit, i = True, j  # inline reply: drop the header, the ">" block goes below
                continue
            return _trim_separators(out), True
        if _ORIGINAL.match(line) or _outlook_header(lines, i):
            return _trim_separators(out), True
        if _QUOTE_LINE.match(lines[i]):
            hit, i = True, i + 1
            continue
        out.append(lines[i])
        i += 1
    return out, hit


def strip_boilerplate(lines: list[str], extra: tuple[re.Pattern[str], ...]) -> tuple[list[str], bool]:
    out: list[str] = []
    hit, i = False, 0
    while i < len(lines):
        line = lines[i].strip()
        if _ZENDESK_MARK.match(line) or _REPLY_MARK.match(line):
            hit = True
            if _has_text(out):  # the reply sits above the marker; below it is the ticket history
                return _trim_separators(out), True
            i += 1
            continue
        if _BOILER_PARAGRAPH.match(line):
            hit = True
            while i < len(lines) and lines[i].strip():
                i += 1
            continue
        if line and (_BOILER_LINE.match(line) or any(p.search(line) for p in extra)):
            hit, i = True, i + 1
            continue
        out.append(lines[i])
        i += 1
    return out, hit


def strip_sent_from(lines: list[str]) -> tuple[list[str], bool]:
    out = [line for line in lines if not _SENT_FROM.match(line.strip())]
    return out, len(out) != len(lines)


def _signature_line(line: str) -> bool:
    """A line that can sit in a signature block: short, no question, P.S., lead-in or order number."""
    return (len(line) <= _SHORT and len(line.split()) <= 10 and not line.endswith(("?", ":"))
            and not _PS.match(line) and not _REFERENCE.search(line))


def strip_delimited_signature(lines: list[str]) -> tuple[list[str], bool]:
    """A "-- " delimiter (RFC 3676) with text above it and only a short signature below it."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    for k in filled[1:]:
        if _SIG_DASHES.match(lines[k].strip()):
            tail = [lines[i].strip() for i in filled if i > k]
            if len(tail) <= MAX_DELIM_SIG_LINES and all(_signature_line(t) for t in tail):
                return _trim_separators(lines[:k]), True
    return lines, False


def strip_closing(lines: list[str]) -> tuple[list[str], bool]:
    """A closing line near the end with text above it and only signature lines below it."""
    filled = [i for i, line in enumerate(lines) if line.strip()]
    for pos in range(len(filled) - 1, max(0, len(filled) - 2 - MAX_SIG_LINES), -1):
        k = filled[pos]
        m = _CLOSING.match(lines[k].strip())
        if m is None:
            continue
        tail = [lines[i].strip() for i in filled[pos + 1:]]
        if not all(_signature_line(t) for t in tail):
            break  # a question or a P.S. below: this is not a signature block
        weak, name, comma = m.group("weak") is not None, m.group("name"), "," in (m.group("punct") or "")
        if name:  # "Cheers, Tom" / "Best regards, the Brightwave team"; not "Thanks, that fixed it"
            words = name.split()
            if weak and not comma:
                continue  # "Thanks Tom" is said to the agent
            if any(w[0].islower() and w.lower() not in _NAME_LOWER for w in words) or \
                    words[0].lower() in _CONNECTORS[:3] or words[-1].lower() in _CONNECTORS:
                continue
        elif weak and not comma:
            if not tail:
                continue  # "Thanks!" closing a message is content
            above = lines[filled[pos - 1]].strip()
            if filled[pos - 1] == k - 1 and not above.endswith((".", "!", "?", ")", ":")):
                continue  # "Reset / Best / Nothing": a list, not a closing
        return _trim_separators(lines[:k]), True
    return lines, False


def strip_signature(lines: list[str]) -> tuple[list[str], bool]:
    """The "-- " signature, then the closing above it ("Cheers,\nOskar\n\n-- \nOskar Rossi…")."""
    lines, delimited = strip_delimited_signature(lines)
    lines, closing = strip_closing(lines)
    return lines, delimited or closing


def clean_text(text: str, spec: TurnsSpec, counts: Counter | None = None) -> str:
    """One user/assistant turn with quotes, boilerplate and signatures removed."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    done: list[str] = []
    if spec.strip_quoted:
        lines, hit = strip_quoted(lines)
        done += ["quoted"] * hit
    if spec.strip_boilerplate:
        lines, hit = strip_boilerplate(lines, _extra_patterns(tuple(spec.boilerplate)))
        done += ["boilerplate"] * hit
    if spec.strip_signatures:
        lines, hit = strip_sent_from(lines)
        done += ["sent_from"] * hit
        lines, hit = strip_signature(lines)
        done += ["signatures"] * hit
    if counts is not None:
        counts.update(done)
    if not done:
        return text
    out = "\n".join(lines)
    return re.sub(r"\n\s*\n(?:\s*\n)+", "\n\n", out).strip()


# --------------------------------------------------------------------------------- the stage
def clean_turns(conv: Conversation, spec: TurnsSpec) -> tuple[Conversation, Counter]:
    """(cleaned copy, Counter of what was done). Never rejects; the input is not mutated."""
    counts: Counter = Counter()
    messages: list[dict[str, str]] = []
    for msg in conv.messages:
        role, content = msg["role"], msg["content"]
        if role == "bot":
            if spec.bot_turns == "drop":
                counts["bot_dropped"] += 1
                continue
            role = "assistant"
            counts["bot_as_assistant"] += 1
        elif role == "tool" and not spec.keep_tool_turns:
            counts["tool_dropped"] += 1
            continue
        if role in ("user", "assistant"):
            content = clean_text(content, spec, counts)
        if not content.strip():
            counts["empty_dropped"] += 1
            continue
        if (spec.merge_consecutive and messages and messages[-1]["role"] == role
                and role != "tool"):
            messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n\n{content}"}
            counts["merged"] += 1
            continue
        messages.append({**msg, "role": role, "content": content})
    return replace(conv, messages=messages), counts


def clean(records: Iterable[Conversation], spec: TurnsSpec,
          stats: Counter | None = None) -> Iterator[Conversation]:
    """Streaming clean_turns; `stats` adds up the counts plus `records` and `changed`."""
    for conv in records:
        out, counts = clean_turns(conv, spec)
        if stats is not None:
            stats.update(counts)
            stats["records"] += 1
            stats["changed"] += out.messages != conv.messages
        yield out
