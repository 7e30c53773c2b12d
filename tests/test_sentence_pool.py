"""The training pool's Wikipedia extraction and held-out removal (built from small files made here)."""

from __future__ import annotations

import bz2
import json
from pathlib import Path
from types import SimpleNamespace

from edgedistill.catalog import _build_sentence_pool as build_sentence_pool
from edgedistill.sentence_pool import prose_sentences, strip_wikitext, wiki_articles

WIKITEXT = """{{Infobox person|name=Ada|born={{birth date|1815|12|10}}}}
'''Ada Lovelace''' was an English [[mathematician]] and [[Writer|writer]] known for her work on the engine.<ref>{{cite book|title=X}}</ref> She was the first to publish an algorithm for such a machine, Dr. Smith wrote.
== Early life ==
* a list item that is not prose at all here
{| class="wikitable"
| cell || cell
|}
[[File:Ada.jpg|thumb|A portrait of [[Ada Lovelace]].]]
Her father was the poet [http://example.org Lord Byron], who left when she was one month old.
Too short.
[[Category:Mathematicians]]"""


def test_wikitext_becomes_plain_sentences(tmp_path: Path) -> None:
    text = strip_wikitext(WIKITEXT)
    assert "{{" not in text and "[[" not in text and "<ref" not in text and "wikitable" not in text
    assert list(prose_sentences(text)) == [
        "Ada Lovelace was an English mathematician and writer known for her work on the engine.",
        "She was the first to publish an algorithm for such a machine, Dr. Smith wrote.",
        "Her father was the poet Lord Byron, who left when she was one month old.",
    ]
    dump = tmp_path / "wiki.xml.bz2"
    pages = [("0", WIKITEXT), ("0", "#REDIRECT [[Ada Lovelace]]"), ("4", "Project page text.")]
    xml = "<mediawiki>" + "".join(f"<page><title>t</title><ns>{ns}</ns><revision><text>{t.replace('&', '&amp;').replace('<', '&lt;')}"
                                  "</text></revision></page>" for ns, t in pages) + "</mediawiki>"
    dump.write_bytes(bz2.compress(xml.encode()))
    assert list(wiki_articles(dump)) == [WIKITEXT]


def test_the_pool_is_deduplicated_and_holds_no_held_out_sentence(tmp_path: Path) -> None:
    def folder(name: str, lines: list[str]) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "sentences.txt").write_text("\n".join(lines) + "\n")
        return tmp_path / name

    stsb = tmp_path / "stsb"
    stsb.mkdir()
    row = "genre\tfile\tyear\t0\t{score}\t{a}\t{b}\n"
    (stsb / "sts-train.csv").write_text(row.format(score=1, a="A train pair one.", b="A train pair two."))
    (stsb / "sts-dev.csv").write_text(row.format(score=2, a="A dev sentence.", b="Another dev one."))
    (stsb / "sts-test.csv").write_text(row.format(score=3, a="A test sentence.", b="Another test one."))
    snli = tmp_path / "snli"
    snli.mkdir()
    (snli / "snli_1.0_test.jsonl").write_text(json.dumps({"sentence1": "An SNLI test premise.",
                                                          "sentence2": "A hypothesis.", "gold_label": "neutral"}))
    deps = {"stsb": stsb, "snli": snli,
            "stsb-train-sentences": folder("st", ["A train pair one.", "An SNLI test premise"]),
            "snli-sentences": folder("sn", ["A dog runs.", "a train pair one"]),
            "enwiki-sentences": folder("wk", ["Wikipedia prose here.", "a dev sentence."])}
    out = tmp_path / "pool"
    out.mkdir()
    info = build_sentence_pool(SimpleNamespace(deps=deps, out=out))
    assert (out / "sentences.txt").read_text().splitlines() == ["A train pair one.", "A dog runs.",
                                                                 "Wikipedia prose here."]
    assert info["duplicates_removed"] == 1 and info["removed_as_held_out"] == 2
