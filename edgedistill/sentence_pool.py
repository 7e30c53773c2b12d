"""Build functions of the larger training pool: sentences from gensim's English Wikipedia test excerpt, and the
de-duplicated union of every offline training source with every held-out sentence removed.

Held out, never in a pool: STS-b dev and test, SNLI test, gensim's Lee corpus (lee.cor, lee_background.cor;
reserved for evaluation). WordNet text is not a source here at all.
"""

from __future__ import annotations

import bz2
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

GENSIM_DATA = Path("gensim") / "test" / "test_data"
ENWIKI = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
ENWIKI_SHA256 = "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d"
LEE_FILES = ("lee.cor", "lee_background.cor")

_INNER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_INNER_TABLE = re.compile(r"\{\|(?:(?!\{\|)[\s\S])*?\|\}")
_REF = re.compile(r"<ref[^>/]*/>|<ref[^>]*>[\s\S]*?</ref>", re.IGNORECASE)
_COMMENT = re.compile(r"<!--[\s\S]*?-->")
_TAG = re.compile(r"<[^>]+>")
_LINK = re.compile(r"\[\[(?!(?:File|Image|Category|[a-z]{2,3}):)([^\[\]|]*\|)?([^\[\]]*)\]\]")
_NAMESPACE_LINK = re.compile(r"\[\[(?:File|Image|Category|[a-z]{2,3}):[^\[\]]*\]\]")
_EXTERNAL = re.compile(r"\[https?://[^\s\]]+ ?([^\]]*)\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_ABBREVIATION = re.compile(r"\b(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|vs|etc|e\.g|i\.e|c|ca|No)\.$")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wiki_articles(path: Path) -> Iterator[str]:
    """The wikitext of every article (namespace 0, not a redirect) of a MediaWiki XML dump (.bz2)."""
    with bz2.open(path, "rb") as f:
        namespace, text = None, None
        for _, elem in ET.iterparse(f, events=("end",)):
            tag = elem.tag.rsplit("}", 1)[-1]
            if tag == "ns":
                namespace = elem.text
            elif tag == "text":
                text = elem.text or ""
            elif tag == "page":
                if namespace == "0" and text and not text.lstrip().upper().startswith("#REDIRECT"):
                    yield text
                namespace, text = None, None
                elem.clear()


def strip_wikitext(text: str) -> str:
    """Plain prose from wikitext: templates, tables, references, tags, files and categories removed, links
    replaced by their text, list/heading/table lines dropped."""
    text = _COMMENT.sub("", text)
    text = _REF.sub("", text)
    for pattern in (_INNER_TEMPLATE, _INNER_TABLE):
        while True:
            text, n = pattern.subn("", text)
            if not n:
                break
    while True:
        text, n = _LINK.subn(lambda m: m.group(2), text)
        if not n:
            break
    text = _NAMESPACE_LINK.sub("", text)
    text = _EXTERNAL.sub(lambda m: m.group(1), text)
    text = _TAG.sub("", text).replace("'''", "").replace("''", "")
    lines = [line for line in text.split("\n") if line.strip() and line.lstrip()[0] not in "*#:;|!={}"]
    return "\n".join(lines)


def prose_sentences(text: str, min_words: int = 6, max_words: int = 50) -> Iterator[str]:
    """Sentence-like pieces of plain prose: split after . ! ? before a capital; kept when they end a sentence,
    have ``min_words``-``max_words`` words, no markup left and are mostly letters."""
    for paragraph in text.split("\n"):
        pieces = _SENTENCE_END.split(paragraph.strip())
        merged: list[str] = []
        for piece in pieces:  # "Dr. Smith" and "U.S. Army" are not sentence ends
            if merged and _ABBREVIATION.search(merged[-1]):
                merged[-1] += " " + piece
            else:
                merged.append(piece)
        for sentence in merged:
            sentence = " ".join(sentence.split())
            words = sentence.split()
            if not (min_words <= len(words) <= max_words) or sentence[-1] not in ".!?":
                continue
            if any(c in sentence for c in "{}[]|=<>_\\") or "http" in sentence:
                continue
            letters = sum(c.isalpha() for c in sentence)
            if letters < 0.7 * len(sentence.replace(" ", "")):
                continue
            yield sentence


def lee_sentences(data: Path) -> list[str]:
    """Every line of gensim's Lee corpus and every sentence in it: the held-out text a pool must not hold."""
    out: list[str] = []
    for name in LEE_FILES:
        path = data / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                out.append(line)
                out.extend(_SENTENCE_END.split(line.strip()))
    return out
