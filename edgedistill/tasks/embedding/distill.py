"""Embedding distillation: a small student learns to reproduce the teacher's sentence embeddings."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edgedistill.assets import resolve
from edgedistill.contract import StageContext, StageResult
from edgedistill.data import RetrievalSet, draw_training_sentences, load_sts, sample
from edgedistill.errors import RecipeError
from edgedistill.precision import native_bf16
from edgedistill.stages.configs import DistillStage, StudentConfig
from edgedistill.tasks.embedding.encoders import TorchEncoder, load_encoder
from edgedistill.tasks.embedding.labelling import label_backend, teacher_labels

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from edgedistill.tasks.embedding.training import TrainJob

log = logging.getLogger(__name__)


def keep_layers(model: SentenceTransformer, layers: list[int]) -> None:
    """Layer reduction: keep only the chosen transformer layers (BERT and MPNet families)."""
    import torch

    auto = model[0].auto_model
    encoder_layers = auto.encoder.layer
    if layers[-1] >= len(encoder_layers):
        raise RecipeError(f"stages.distill.student.layers: {layers} asks for layer {layers[-1]} but the "
                          f"initial model has {len(encoder_layers)} (0..{len(encoder_layers) - 1})")
    auto.encoder.layer = torch.nn.ModuleList([encoder_layers[i] for i in layers])
    auto.config.num_hidden_layers = len(layers)


def ridge_projection(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
    """Least squares ``y ~ x @ w + b`` with an L2 penalty on w.

    Plain least squares is ill-conditioned here: pooled LayerNorm outputs are nearly collinear with the
    bias column, giving huge weights that any later update of the body wrecks. The ridge term keeps the
    weights small, so the projection starts well and trains stably.
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    gram = xc.T @ xc + lam * len(x) * np.eye(x.shape[1])
    w = np.linalg.solve(gram, xc.T @ yc)
    b = y_mean - x_mean @ w
    return w.astype(np.float32), b.astype(np.float32)


def procrustes_projection(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Orthonormal rows ``w`` (d_student x d_teacher) best rotating normalised ``x`` onto ``y``.

    A map with orthonormal rows and no bias keeps every cosine similarity of the student, so the projected
    student starts with exactly its own STS quality, already aligned with the teacher's space.
    """
    xn = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    u, _, vt = np.linalg.svd(xn.T @ y, full_matrices=False)
    return (u @ vt).astype(np.float32)


def build_student(cfg: StudentConfig, max_seq_length: int, teacher_dim: int, sentences: list[str],
                  labels: np.ndarray, device: str, teacher: Path | None = None) -> tuple[SentenceTransformer, dict]:
    """Initial student: a pretrained model (or the teacher), optionally layer-reduced and vocabulary-trimmed,
    projected into the teacher's space when the dimensions differ."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling

    from edgedistill.trust import load_sentence_transformer

    source = teacher if cfg.init == "teacher" else resolve(cfg.init)
    model = load_sentence_transformer(source, device)
    info: dict = {"init_layers": len(model[0].auto_model.encoder.layer)}
    if cfg.layers is not None:
        keep_layers(model, cfg.layers)
    if cfg.trim_vocab:
        info.update(trim_vocabulary(model, sentences))
    model.max_seq_length = max_seq_length
    body = [m for m in model if not isinstance(m, Normalize)]
    dim = int(model.get_embedding_dimension())
    if dim != teacher_dim and cfg.projection == "none":
        raise RecipeError(f"stages.distill.student.projection: the student gives {dim}-d embeddings and the "
                          f"teacher {teacher_dim}-d; set projection: procrustes, ridge, random or pca")
    if dim == teacher_dim and cfg.projection_fit_epochs:
        raise RecipeError(f"stages.distill.student.projection_fit_epochs: the student already gives the teacher's "
                          f"{dim}-d embeddings, so it has no projection to fit; set projection_fit_epochs: 0")
    if dim != teacher_dim and cfg.projection in ("ridge", "procrustes", "random"):
        dense = Dense(dim, teacher_dim, activation_function=torch.nn.Identity())
        if cfg.projection in ("ridge", "procrustes"):
            n = min(cfg.projection_sentences, len(sentences))
            pooled = SentenceTransformer(modules=body, device=device).encode(
                sentences[:n], batch_size=64, convert_to_numpy=True, normalize_embeddings=False)
            x, y = pooled.astype(np.float64), labels[:n].astype(np.float64)
            if cfg.projection == "ridge":
                w, b = ridge_projection(x, y, cfg.ridge_lambda)
            else:
                w, b = procrustes_projection(x, y), np.zeros(teacher_dim, dtype=np.float32)
            with torch.no_grad():
                dense.linear.weight.copy_(torch.from_numpy(w.T))
                dense.linear.bias.copy_(torch.from_numpy(b))
            info["projection_weight_norm"] = float(np.linalg.norm(w))
        body.append(dense)
    if not any(isinstance(m, Pooling) for m in body):
        raise RecipeError(f"stages.distill.student.init: {cfg.init} has no pooling module; "
                          "use a sentence-transformers model")
    student = SentenceTransformer(modules=[*body, Normalize()], device=device)
    info["params"] = sum(p.numel() for p in student.parameters())
    return student, info


def trim_vocabulary(model: SentenceTransformer, sentences: list[str]) -> dict:
    """Keep the tokens ``sentences`` use, every special token and every single (## ) character.

    Any word still tokenises (into characters at worst), so nothing becomes [UNK] that didn't before.
    Written here because tokenizers has no vocabulary-pruning API; only WordPiece (BERT-family) is supported.
    """
    import json as _json

    import torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    hf = model[0].tokenizer
    spec = _json.loads(hf.backend_tokenizer.to_str())
    if spec["model"]["type"] != "WordPiece":
        raise RecipeError("stages.distill.student.trim_vocab: only WordPiece (BERT-family) vocabularies can be "
                          f"trimmed; this tokenizer is {spec['model']['type']}")
    vocab: dict[str, int] = spec["model"]["vocab"]
    used = {i for ids in hf(sentences, add_special_tokens=False)["input_ids"] for i in ids}
    keep_tokens = {t for t, i in vocab.items() if i in used or len(t) == 1 or (t.startswith("##") and len(t) == 3)}
    keep_tokens |= set(hf.all_special_tokens)
    old_ids = sorted(vocab[t] for t in keep_tokens if t in vocab)
    remap = {old: new for new, old in enumerate(old_ids)}
    inverse = {i: t for t, i in vocab.items()}
    spec["model"]["vocab"] = {inverse[old]: new for old, new in remap.items()}
    for added in spec.get("added_tokens", []):
        added["id"] = remap[added["id"]]
    post = spec.get("post_processor") or {}
    for entry in (post.get("special_tokens") or {}).values():
        entry["ids"] = [remap[i] for i in entry["ids"]]
    for field in ("cls", "sep"):
        if isinstance(post.get(field), list):
            post[field][1] = remap[post[field][1]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = remap[spec["padding"]["pad_id"]]
    new_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_json.dumps(spec)),
        **{k: getattr(hf, k) for k in ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")},
        model_max_length=hf.model_max_length,
    )
    auto = model[0].auto_model
    old = auto.get_input_embeddings().weight.data
    new = torch.nn.Embedding(len(old_ids), old.shape[1], padding_idx=new_tokenizer.pad_token_id)
    new.weight.data.copy_(old[old_ids])
    auto.set_input_embeddings(new)
    auto.config.vocab_size = len(old_ids)
    auto.config.pad_token_id = new_tokenizer.pad_token_id
    model[0].processor = new_tokenizer  # the Transformer module's tokenizer is its processor
    removed = len(vocab) - len(old_ids)
    log.info("vocabulary trimmed: %d -> %d tokens (%.1fM parameters, %.1f MB fp32 saved)", len(vocab),
             len(old_ids), removed * old.shape[1] / 1e6, removed * old.shape[1] * 4 / 1e6)
    return {"vocab_before": len(vocab), "vocab_after": len(old_ids),
            "vocab_params_saved": removed * old.shape[1], "vocab_bytes_saved_fp32": removed * old.shape[1] * 4}


def load_triplets(spec: str, n: int, seed: int, exclude: set[str]) -> list[tuple[str, str, str]]:
    """(premise, entailed hypothesis, contradicted hypothesis) triplets from the SNLI train subset."""
    import json

    from edgedistill.catalog import SNLI_TRAIN

    path = resolve(spec) / SNLI_TRAIN
    by_premise: dict[str, dict[str, str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        label, premise, hypothesis = row.get("gold_label"), row["sentence1"].strip(), row["sentence2"].strip()
        if label in ("entailment", "contradiction") and not {premise, hypothesis} & exclude:
            by_premise.setdefault(premise, {}).setdefault(label, hypothesis)
    triplets = [(p, h["entailment"], h["contradiction"]) for p, h in by_premise.items() if len(h) == 2]
    return sample(triplets, n, seed)


def build_dev_retrieval(spec: str, queries: int, corpus: int, seed: int, exclude: set[str]) -> RetrievalSet:
    """A dev retrieval set from SNLI *training* pairs: premises as queries, their entailed hypotheses relevant,
    other hypotheses as distractors. Sentences in ``exclude`` (evaluation sets, by catalog.sentence_key) are left
    out; the caller removes the dev sentences from training."""
    from edgedistill.catalog import SNLI_TRAIN, clean_sentence, read_snli, sentence_key

    entailed: dict[str, list[str]] = {}
    hypotheses: dict[str, str] = {}
    for row in read_snli(resolve(spec) / SNLI_TRAIN):
        premise, hypothesis = clean_sentence(row["sentence1"]), clean_sentence(row["sentence2"])
        if not premise or not hypothesis or {sentence_key(premise), sentence_key(hypothesis)} & exclude:
            continue
        hypotheses.setdefault(sentence_key(hypothesis), hypothesis)
        if row.get("gold_label") == "entailment":
            docs = entailed.setdefault(premise, [])
            if hypothesis not in docs:
                docs.append(hypothesis)
    chosen = sample(sorted(entailed), queries, seed)
    needed = list(dict.fromkeys(h for q in chosen for h in entailed[q]))
    needed_keys = {sentence_key(h) for h in needed} | {sentence_key(q) for q in chosen}
    others = [h for k, h in sorted(hypotheses.items()) if k not in needed_keys]
    docs = needed + sample(others, max(0, corpus - len(needed)), seed + 1)
    index = {d: i for i, d in enumerate(docs)}
    return RetrievalSet(queries=chosen, corpus=docs, relevant=[{index[h] for h in entailed[q]} for q in chosen])


def pca_reduce(labels: np.ndarray, dim: int) -> np.ndarray:
    """Project teacher embeddings onto their top principal components (then re-normalise)."""
    centered = labels - labels.mean(axis=0)
    _, _, vt = np.linalg.svd(centered[: min(len(labels), 20000)], full_matrices=False)
    reduced = labels @ vt[:dim].T
    return (reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def cross_encoder_margins(cfg: DistillStage, ctx: StageContext, sentences: list[str], triplet_rows: np.ndarray,
                          labels: np.ndarray) -> tuple[np.ndarray, dict]:
    """margin_mse targets from a cross-encoder (cached logits): score(a, pos) - score(a, neg) per triplet, rescaled
    so their spread is the bi-encoder teacher's cosine margins' on the same triplets (a cosine margin lies in
    [-2, 2], a logit margin does not; the ranking the student learns is the cross-encoder's)."""
    from edgedistill.tasks.seqcls.teacher_cache import teacher_logits

    pairs = [(sentences[a], sentences[b]) for a, p, n in triplet_rows for b in (p, n)]
    logits = teacher_logits(resolve(cfg.margin_teacher), pairs, batch_size=cfg.teacher_batch_size, device=ctx.device,
                            field="stages.distill.margin_teacher", num_labels=1)[:, 0].reshape(-1, 2)
    ce = logits[:, 0] - logits[:, 1]
    t = labels[triplet_rows].astype(np.float64)
    cosine = (t[:, 0] * t[:, 1]).sum(-1) - (t[:, 0] * t[:, 2]).sum(-1)
    scale = float(cosine.std() / max(ce.std(), 1e-9))
    agree = float(np.mean(np.sign(ce) == np.sign(cosine)))
    log.info("margin_teacher: %d cross-encoder margins (x%.4f to the teacher's spread); same sign as the bi-encoder "
             "teacher's on %.1f%% of triplets", len(ce), scale, 100 * agree)
    return (ce * scale).astype(np.float32), {"margin_teacher_scale": scale, "margin_sign_agreement": agree}


def _train(job: TrainJob, processes: int, work: Path) -> dict:
    """Train in this process, or data-parallel in ``processes`` torchrun workers."""
    import json
    import subprocess
    import sys

    if processes == 1:
        from edgedistill.tasks.embedding.training import train

        return train(job)
    job_file = work / "train-job.json"
    job.save(job_file)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "edgedistill.tasks.embedding.training", str(job_file)]
    log.info("training with %d data-parallel processes: %s", processes, " ".join(cmd))
    result = subprocess.run(cmd, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"torchrun training failed with exit code {result.returncode}")
    return json.loads((Path(job.output_dir) / "train_stats.json").read_text())


def run(cfg: DistillStage, ctx: StageContext) -> StageResult:
    from edgedistill.tasks.embedding.training import FITTED, TrainJob

    inputs = ctx.inputs
    if inputs.train is None:
        raise RecipeError("stages.distill: no training text; set data.train in the recipe")
    seed = inputs.seed if cfg.seed is None else cfg.seed
    sentences = draw_training_sentences(inputs.train, cfg.train_sentences, seed=inputs.seed)
    if len(sentences) < cfg.train_sentences:
        log.warning("data.train has only %d sentences (train_sentences asks %d)", len(sentences),
                    cfg.train_sentences)
    dev_set = None
    if cfg.dev.queries:
        from edgedistill.catalog import sentence_key

        data = ctx.evaluator.data
        evaluation = set(data.heldout) | (set(data.sts.first) | set(data.sts.second) if data.sts else set())
        if data.retrieval is not None:
            evaluation |= set(data.retrieval.queries) | set(data.retrieval.corpus)
        dev_set = build_dev_retrieval(cfg.dev.source, cfg.dev.queries, cfg.dev.corpus, seed,
                                      {sentence_key(s) for s in evaluation})
        dev_keys = {sentence_key(s) for s in [*dev_set.queries, *dev_set.corpus]}
        kept = [s for s in sentences if sentence_key(s) not in dev_keys]
        log.info("dev retrieval set: %d queries, %d documents from SNLI training pairs; %d training sentences "
                 "removed as dev sentences", len(dev_set.queries), len(dev_set.corpus), len(sentences) - len(kept))
        sentences = kept
    triplet_rows = None
    if cfg.triplets:
        heldout = set(ctx.evaluator.data.heldout)
        triplets = load_triplets(cfg.triplet_source, cfg.triplets, seed, heldout)
        index = {s: i for i, s in enumerate(sentences)}
        for triplet in triplets:
            for s in triplet:
                if s not in index:
                    index[s] = len(sentences)
                    sentences.append(s)
        triplet_rows = np.array([[index[s] for s in t] for t in triplets], dtype=np.int64)

    hidden_layers = sorted({t for loss in cfg.losses if loss.type == "hidden" for t in loss.layer_map.values()})
    t0 = time.perf_counter()
    dev_sentences = [*dev_set.queries, *dev_set.corpus] if dev_set else []
    labels, hidden = teacher_labels(ctx.teacher, sentences + dev_sentences, cfg.teacher_batch_size, ctx.device,
                                    hidden_layers=hidden_layers, processes=cfg.label_processes,
                                    backend=cfg.label_backend, bf16=cfg.bf16)
    label_s = time.perf_counter() - t0
    dev_labels = labels[len(sentences):]
    labels = labels[:len(sentences)]
    hidden = hidden[:len(sentences)] if hidden is not None else None
    teacher_dim = labels.shape[1]
    margins = None
    if cfg.margin_teacher and triplet_rows is not None:
        margins, info_margins = cross_encoder_margins(cfg, ctx, sentences, triplet_rows, labels)

    student, info = build_student(cfg.student, cfg.max_seq_length, teacher_dim, sentences, labels, ctx.device,
                                  teacher=ctx.teacher)
    if cfg.student.projection == "pca" and student.get_embedding_dimension() != teacher_dim:
        labels = pca_reduce(labels, student.get_embedding_dimension())
        info["pca_dimension"] = int(labels.shape[1])
    from edgedistill.progress import Progress, TrackedEncoder

    progress = Progress("evaluating the student before training", ctx.evaluator.data.sentence_count(), "sentences")
    before = ctx.evaluator.quality(TrackedEncoder(TorchEncoder(student), progress))
    progress.close()
    log.info("student before training: %s", {k: round(v, 4) for k, v in before.items()})

    work = ctx.work_dir
    init_dir = work / "init"
    student.save(str(init_dir))
    (work / "sentences.txt").write_text("\n".join(sentences), encoding="utf-8")
    np.save(work / "labels.npy", labels)
    if hidden is not None:
        np.save(work / "hidden.npy", hidden)
    dev_retrieval = None
    if dev_set is not None:
        np.save(work / "dev-labels.npy", dev_labels)
        dev_retrieval = {"queries": dev_set.queries, "corpus": dev_set.corpus,
                         "relevant": [sorted(r) for r in dev_set.relevant], "labels_file": str(work / "dev-labels.npy")}
    if triplet_rows is not None:
        np.save(work / "triplets.npy", triplet_rows)
    if margins is not None:
        np.save(work / "margins.npy", margins)
        info.update(info_margins)
    dev = load_sts(inputs.selection, "dev") if inputs.selection else None
    # Checkpoints live beside the stage's temp folder, so a killed run resumes mid-training.
    checkpoints = work.parent / (".ckpt-" + work.name.removeprefix(".tmp-"))
    job = TrainJob(
        student_dir=str(init_dir), output_dir=str(ctx.artifact_dir), checkpoint_dir=str(checkpoints),
        sentences_file=str(work / "sentences.txt"), labels_file=str(work / "labels.npy"),
        config=cfg.model_dump(), seed=seed, device=ctx.device,
        hidden_file=str(work / "hidden.npy") if hidden is not None else None,
        triplets_file=str(work / "triplets.npy") if triplet_rows is not None else None,
        margins_file=str(work / "margins.npy") if margins is not None else None,
        teacher_dir=str(ctx.teacher),
        dev_sts={"first": dev.first, "second": dev.second, "scores": dev.scores} if dev else None,
        dev_retrieval=dev_retrieval,
    )
    stats = _train(job, cfg.processes, work)
    fitted = {}
    if (work / FITTED).is_dir():  # the student after its projection fit, before the body trained
        progress = Progress("evaluating the student after the projection fit", ctx.evaluator.data.sentence_count(),
                            "sentences")
        fitted = ctx.evaluator.quality(TrackedEncoder(load_encoder("sentence-transformer", work / FITTED,
                                                                   device=ctx.device), progress))
        progress.close()
        log.info("student after the projection fit: %s", {k: round(v, 4) for k, v in fitted.items()})
    for name in ("init", FITTED, "sentences.txt", "labels.npy", "hidden.npy", "triplets.npy", "margins.npy",
                 "dev-labels.npy", "train-job.json"):
        target = work / name
        shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    shutil.rmtree(checkpoints, ignore_errors=True)
    (ctx.artifact_dir / "train_stats.json").unlink(missing_ok=True)
    backend = label_backend(cfg.label_backend, ctx.device, hidden_layers, cfg.bf16)
    return StageResult(metrics={
        **info, **stats, "train_sentences": len(sentences), "triplets": int(cfg.triplets),
        "dev_queries": len(dev_set.queries) if dev_set else 0, "dev_corpus": len(dev_set.corpus) if dev_set else 0,
        "label_s": round(label_s, 1), "label_backend": backend,
        "label_bf16": bool(cfg.bf16 and backend == "torch" and native_bf16(ctx.device)),
        "before_training": before, **({"after_projection_fit": fitted} if fitted else {}), "device": ctx.device,
    })
