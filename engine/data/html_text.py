"""HTML → plain text for chat-widget and e-mail bodies (stdlib html.parser; no network, no DOM).

`looks_like_html` is deliberately strict (a known tag or an entity), so ticket text such as
"a < b" or "<EMAIL>" placeholders is never touched. `html_to_text` keeps the visible text: block
elements and <br> become line breaks, list items get "- ", script/style/head are dropped and
entities are unescaped.
"""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

_TAG = re.compile(r"</?(?:p|br|div|span|a|b|i|u|em|strong|ul|ol|li|table|tr|td|th|tbody|thead|"
                  r"h[1-6]|html|body|head|font|img|blockquote|pre|code|hr|section|article|"
                  r"header|footer|meta|style|script|center|small|sup|sub)\b[^>]*>", re.I)
_ENTITY = re.compile(r"&(?:[a-zA-Z]{2,8}|#\d{2,6}|#x[0-9a-fA-F]{2,6});")
_BLOCK = {"p", "div", "br", "li", "tr", "table", "ul", "ol", "h1", "h2", "h3", "h4", "h5", "h6",
          "blockquote", "pre", "hr", "section", "article", "header", "footer"}
_SKIP = {"script", "style", "head", "title"}


def looks_like_html(text: str) -> bool:
    return bool(_TAG.search(text) or _ENTITY.search(text))


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP:
            self.skip += 1
        elif tag in _BLOCK:
            self.parts.append("\n")
            if tag == "li":
                self.parts.append("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag in _BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_to_text(text: str) -> str:
    """Visible text of an HTML fragment, one line per block; plain text comes back unescaped only."""
    if not _TAG.search(text):
        return unescape(text)
    parser = _Text()
    parser.feed(text)
    parser.close()
    out = "".join(parser.parts)
    lines = [" ".join(line.split()) for line in out.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
