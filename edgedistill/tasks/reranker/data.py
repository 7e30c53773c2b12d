"""Reranker training data: labelled (query, passage) pairs and (query, positive, negative) triplets.

From SNLI (an SNLI-format folder or catalog name; only its *train* subset is read): the premise is the query,
its entailed hypothesis is relevant, its neutral and contradicted hypotheses are not. From an STS-benchmark folder's
*train* split: scored pairs (score / 5) for a regression cross-encoder. From a JSON-lines file: rows with
``query``/``passage`` (or ``sentence1``/``sentence2``) and ``label`` (or SNLI's ``gold_label``).
Held-out text (the evaluation's queries and corpus) never enters training.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.assets import resolve
from edgedistill.errors import RecipeError

RELEVANT = "entailment"
NOT_RELEVANT = ("neutral", "contradiction")
SNLI_LABELS = (RELEVANT, *NOT_RELEVANT)


@dataclass(frozen=True)
class LabelledPair:
    """A (query, passage) pair with a relevance target in [0, 1] (1 relevant; STS-b: score / 5)."""

    query: str
    passage: str
    label: float


@dataclass
class QueryGroup:
    """One query's passages by SNLI label (or 'relevant'/'not relevant' for plain labelled rows)."""

    query: str
    passages: dict[str, list[str]] = field(default_factory=dict)

    @property
    def positives(self) -> list[str]:
        return self.passages.get(RELEVANT, [])

    @property
    def negatives(self) -> list[str]:
        return [p for label in NOT_RELEVANT for p in self.passages.get(label, [])]


def _pairs_file(spec: str, field_name: str) -> Path:
    from edgedistill.catalog import SNLI_TRAIN

    path = resolve(spec)
    if path.is_dir():
        path = path / SNLI_TRAIN
    if not path.is_file():
        raise RecipeError(f"{field_name}: {path} not found; give an SNLI-format folder (holding {SNLI_TRAIN}), "
                          "a .jsonl file of labelled pairs, or the catalog name snli")
    return path


def _label(row: dict, path: Path, line: int, field_name: str) -> str | None:
    """The row's SNLI label name ('entailment', 'neutral', 'contradiction'); None for SNLI's unlabelled '-'."""
    if "gold_label" in row:
        gold = row["gold_label"]
        return gold if gold in SNLI_LABELS else None
    if "label" in row:
        value = row["label"]
        if value in SNLI_LABELS:
            return value
        if value in (1, 1.0, True, "1", "relevant"):
            return RELEVANT
        if value in (0, 0.0, False, "0", "not_relevant"):
            return "contradiction"
    raise RecipeError(f"{field_name}: {path} line {line} has no label (fields: {', '.join(sorted(row))}); "
                      "finetuning needs labelled pairs: add 'label' (1 relevant / 0 not) or SNLI 'gold_label', "
                      "or drop the finetune stage and give a fine-tuned cross-encoder as the teacher")


def load_groups(spec: str, exclude: Collection[str] = (), field_name: str = "data.pairs") -> list[QueryGroup]:
    """Queries with their labelled passages, in file order, without any pair touching ``exclude``."""
    path = _pairs_file(spec, field_name)
    groups: dict[str, QueryGroup] = {}
    with path.open(encoding="utf-8") as f:
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                row = json.loads(text)
            except json.JSONDecodeError as e:
                raise RecipeError(f"{field_name}: {path} line {line} is not JSON ({e.msg}); expected one object "
                                  "per line with query/passage/label (or SNLI's sentence1/sentence2/gold_label)") from None
            query = str(row.get("query", row.get("sentence1", ""))).strip()
            passage = str(row.get("passage", row.get("sentence2", ""))).strip()
            if not query or not passage:
                raise RecipeError(f"{field_name}: {path} line {line} lacks the query or the passage (fields "
                                  f"{', '.join(sorted(row))}); expected query/passage or sentence1/sentence2")
            label = _label(row, path, line, field_name)
            if label is None or query in exclude or passage in exclude:
                continue
            group = groups.setdefault(query, QueryGroup(query))
            bucket = group.passages.setdefault(label, [])
            if passage not in bucket:
                bucket.append(passage)
    return list(groups.values())


def split_groups(groups: list[QueryGroup], dev: int, seed: int) -> tuple[list[QueryGroup], list[QueryGroup]]:
    """A reproducible (train, dev) split by query: no query's passages are on both sides."""
    order = list(groups)
    random.Random(seed).shuffle(order)
    return order[dev:], order[:dev]


def labelled_pairs(groups: list[QueryGroup], n: int, seed: int) -> list[LabelledPair]:
    """Up to ``n`` pairs taken query by query (every labelled passage of a query), shuffled."""
    pairs: list[LabelledPair] = []
    for group in groups:
        if len(pairs) >= n:
            break
        pairs += [LabelledPair(group.query, p, 1.0) for p in group.positives]
        pairs += [LabelledPair(group.query, p, 0.0) for p in group.negatives]
    pairs = pairs[:n]
    random.Random(seed).shuffle(pairs)
    return pairs


@dataclass(frozen=True)
class RankingGroup:
    """One query and its passages, the relevant one first (listwise training: it should score highest)."""

    query: str
    passages: tuple[str, ...]


def ranking_groups(groups: list[QueryGroup], n_pairs: int, negatives: int,
                   mined: dict[str, list[str]]) -> list[RankingGroup]:
    """Query groups of one relevant passage, up to ``negatives`` of the query's own non-relevant ones and its
    ``mined`` ones, until ``n_pairs`` pairs. Every group has the same size (a query short of own negatives takes
    none of it; one short of mined ones is skipped), so a batch is one [queries, passages] block."""
    size = 1 + negatives + max((len(m) for m in mined.values()), default=0)
    out: list[RankingGroup] = []
    for group in groups:
        if len(out) * size + size > n_pairs:
            break
        own = group.negatives[:negatives]
        if not group.positives or len(own) < negatives:
            continue
        passages = (group.positives[0], *own, *mined.get(group.query, []))
        if len(passages) == size:
            out.append(RankingGroup(group.query, passages))
    return out


def triplets(groups: list[QueryGroup], n: int) -> list[tuple[str, str, str]]:
    """(query, entailed, contradicted) triplets from the queries that have both, at most ``n``."""
    out = []
    for group in groups:
        contradicted = group.passages.get("contradiction", [])
        if group.positives and contradicted:
            out.append((group.query, group.positives[0], contradicted[0]))
            if len(out) >= n:
                break
    return out


def sts_pairs(spec: str, n: int, seed: int, exclude: Collection[str] = ()) -> list[LabelledPair]:
    """Scored STS-benchmark *train* pairs (score / 5 in [0, 1]) for a regression cross-encoder."""
    from edgedistill.data import load_sts, sample

    sts = load_sts(spec, "train")
    pairs = [LabelledPair(a, b, s / 5.0) for a, b, s in zip(sts.first, sts.second, sts.scores, strict=True)
             if a not in exclude and b not in exclude]
    return sample(pairs, n, seed)


def mined_negatives(groups: list[QueryGroup], queries: list[str], per_query: int) -> dict[str, list[str]]:
    """``per_query`` hard negatives for each query: BM25's top passages of the other queries (all of ``groups``'
    passages), as a first stage would return them next to the relevant one."""
    from edgedistill.tasks.reranker.first_stage import mine_negatives

    by_query = {g.query: g for g in groups}
    pool = list(dict.fromkeys(p for g in groups for ps in g.passages.values() for p in ps))
    own = [{p for ps in by_query[q].passages.values() for p in ps} for q in queries]
    return dict(zip(queries, mine_negatives(queries, own, pool, per_query), strict=True))
