"""Tiny random-init sentence-transformers models and data built in code (no network)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ["a", "the", "man", "woman", "child", "dog", "cat", "is", "are", "was", "playing", "running", "eating", "sitting", "walking", "on", "in", "at", "with", "park", "street", "beach", "table", "guitar", "ball", "food", "water", "car", "house", "red", "blue", "small", "big", "two", "three", "people", "girl", "boy", "music", "soccer", "bike", "horse", "grass", "field", "kitchen", "river", "bread", "apple", "young", "old", "happy", "quickly"]


def write_vocab(path: Path) -> Path:
    """A small WordPiece vocabulary: special tokens, the words above and some suffix pieces."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>", "<pad>", "<mask>"]
    tokens += [".", ",", "!", "?"] + WORDS
    tokens += ["##s", "##ing", "##ed", "##er", "##ly"] + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz"]
    tokens += list("abcdefghijklmnopqrstuvwxyz")
    path.write_text("\n".join(tokens) + "\n")
    return path


def make_sentences(n: int, seed: int = 0) -> list[str]:
    """Random short sentences over the tiny vocabulary (some with unknown words)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(3, 14))]
        if rng.random() < 0.1:
            words.append("zebrafish")
        out.append(" ".join(words).capitalize() + ".")
    return out


def build_st_model(
    out: Path,
    *,
    family: str = "bert",
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    pooling: str = "mean",
    dense_out: int | None = None,
    normalize: bool = True,
    dropout: float = 0.1,
    seed: int = 0,
) -> Path:
    """Save a random-init sentence-transformers model (Transformer, Pooling, [Dense], [Normalize])."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast, MPNetConfig, MPNetModel, MPNetTokenizerFast

    torch.manual_seed(seed)
    tmp = out.with_name(out.name + "-hf")
    tmp.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(tmp / "vocab.txt")
    tokens = vocab.read_text().split()
    vocab_map = {t: i for i, t in enumerate(tokens)}
    n_vocab = len(tokens)
    common = dict(
        vocab_size=n_vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if family == "bert":
        BertModel(BertConfig(**common)).save_pretrained(tmp)
        BertTokenizerFast(vocab=vocab_map, do_lower_case=True).save_pretrained(tmp)
    elif family == "mpnet":
        MPNetModel(MPNetConfig(**common)).save_pretrained(tmp)
        MPNetTokenizerFast(vocab=vocab_map, do_lower_case=True).save_pretrained(tmp)
    else:
        raise ValueError(family)
    transformer = Transformer(str(tmp), max_seq_length=64)
    modules = [transformer, Pooling(hidden, pooling_mode=pooling)]
    if dense_out:
        modules.append(Dense(hidden, dense_out, activation_function=torch.nn.Identity()))
    if normalize:
        modules.append(Normalize())
    SentenceTransformer(modules=modules, device="cpu").save(str(out))
    return out


def write_sts(dir_: Path, n: int = 60, seed: int = 1) -> Path:
    """An STS-b-shaped directory (tab-separated; score in column 4, sentences in 5 and 6)."""
    rng = random.Random(seed)
    dir_.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        lines = []
        a = make_sentences(n, seed=seed + hash(split) % 100)
        b = make_sentences(n, seed=seed + 7 + hash(split) % 100)
        for i in range(n):
            score = rng.uniform(0, 5)
            s2 = a[i] if score > 4.5 else b[i]
            lines.append(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{score:.3f}\t{a[i]}\t{s2}")
        (dir_ / f"sts-{split}.csv").write_text("\n".join(lines) + "\n")
    return dir_


def write_retrieval(dir_: Path, n_queries: int = 12, seed: int = 2) -> Path:
    """A retrieval set shaped like snli-retrieval: each query's relevant document shares most of its words."""
    import json

    dir_.mkdir(parents=True, exist_ok=True)
    queries = make_sentences(n_queries, seed=seed)
    docs = [" ".join(q.split()[:-1]) + " today." for q in queries] + make_sentences(20, seed=seed + 1)
    rows = {
        "queries.jsonl": [{"id": f"q{i}", "text": q} for i, q in enumerate(queries)],
        "corpus.jsonl": [{"id": f"d{i}", "text": d} for i, d in enumerate(docs)],
        "qrels.jsonl": [{"query_id": f"q{i}", "doc_id": f"d{i}"} for i in range(n_queries)],
    }
    for name, items in rows.items():
        (dir_ / name).write_text("".join(json.dumps(r) + "\n" for r in items))
    return dir_


def write_snli(dir_: Path, n: int = 40, seed: int = 3) -> Path:
    """An SNLI-shaped folder (train subset jsonl) with entailment and contradiction hypotheses per premise."""
    import json

    dir_.mkdir(parents=True, exist_ok=True)
    premises = make_sentences(n, seed=seed)
    rows = []
    for i, premise in enumerate(premises):
        rows.append({"sentence1": premise, "sentence2": " ".join(premise.split()[:3]) + ".", "gold_label": "entailment"})
        rows.append({"sentence1": premise, "sentence2": make_sentences(1, seed=seed + 100 + i)[0],
                     "gold_label": "contradiction"})
    (dir_ / "snli_1.0_train_subset.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dir_


def build_seqcls_model(
    out: Path,
    *,
    family: str = "bert",
    num_labels: int = 3,
    labels: list[str] | None = None,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 2,
    dropout: float = 0.1,
    seed: int = 0,
) -> Path:
    """Save a random-init *ForSequenceClassification folder (BERT or MPNet) with a tiny WordPiece tokenizer."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertTokenizerFast,
        MPNetConfig,
        MPNetForSequenceClassification,
        MPNetTokenizerFast,
    )

    torch.manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    vocab = write_vocab(out / "vocab.txt")
    tokens = vocab.read_text().split()  # some words repeat (a letter is a word too): ids run to len(tokens)
    vocab_map = {t: i for i, t in enumerate(tokens)}
    names = labels or [f"class_{i}" for i in range(num_labels)]
    common = dict(vocab_size=len(tokens), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                  intermediate_size=hidden * 4, max_position_embeddings=128, hidden_dropout_prob=dropout,
                  attention_probs_dropout_prob=dropout, num_labels=num_labels,
                  id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)})
    if family == "bert":
        BertForSequenceClassification(BertConfig(**common)).save_pretrained(out)
        BertTokenizerFast(vocab=vocab_map, do_lower_case=True).save_pretrained(out)
    elif family == "mpnet":
        MPNetForSequenceClassification(MPNetConfig(**common)).save_pretrained(out)
        MPNetTokenizerFast(vocab=vocab_map, do_lower_case=True).save_pretrained(out)
    else:
        raise ValueError(family)
    return out


def make_labelled(n: int, seed: int = 0, pairs: bool = False) -> list[tuple]:
    """Learnable tiny classification data: the label is which of three word groups the text mentions most
    (for pairs: whether the second text repeats the first's opening words, shares none, or is random)."""
    rng = random.Random(seed)
    groups = [["dog", "cat", "horse"], ["guitar", "music", "ball"], ["river", "beach", "water"]]
    rows: list[tuple] = []
    for i in range(n):
        label = i % 3
        words = [rng.choice(WORDS) for _ in range(rng.randint(2, 6))] + [rng.choice(groups[label])] * 3
        rng.shuffle(words)
        text = " ".join(words) + "."
        if not pairs:
            rows.append((text, label))
            continue
        if label == 0:
            second = " ".join(text.split()[:4]) + "."
        elif label == 1:
            second = " ".join(rng.choice(["kitchen", "bread", "apple", "old"]) for _ in range(4)) + "."
        else:
            second = make_sentences(1, seed=seed * 1000 + i)[0]
        rows.append(((text, second), label))
    return rows
