"""Accuracy-aware search: the fastest INT8 configuration whose quality stays within the budget.

1. Every candidate setting of the target preset is tried with all nodes quantized (proxy quality, latency,
   size). Candidates are visited fastest first.
2. A candidate that misses the budget gets a sensitivity scan: each group of nodes (a node, a layer or a
   role) is quantized alone and scored by the proxy (1 - cosine to fp32). Groups are then kept in fp32,
   most sensitive first: 1, 2, 4, ... groups until the budget is met, then a bisection back down to the
   fewest groups that meet it.
3. Every configuration whose quality is confirmed with the full evaluator and meets the budget (and the
   size cap) is eligible; eligible trials and the fp32 input are then timed again side by side, and the
   fastest at batch 1 wins. Configurations more than 10% slower than an eligible one are not evaluated
   (fp32 nodes only add time), and neither are ones whose proxy is no better than a failure's.

Only full-evaluator results decide the budget; the proxy orders and prunes. Every trial is recorded.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgedistill.quant.graph import QuantNode, quantizable_nodes
from edgedistill.quant.presets import QuantSettings

log = logging.getLogger(__name__)

B1 = "latency_ms_p50"


def relative_drop(reference: float, value: float) -> float:
    """Fractional loss of a higher-is-better metric (0.01 = lost 1%)."""
    return (reference - value) / abs(reference) if reference else 0.0


@dataclass
class Budget:
    """Largest relative drop allowed on each metric versus the fp32 reference, and an optional size cap."""

    reference: dict[str, float]
    metrics: list[str]
    max_drop: float
    max_size_mb: float | None = None

    def check(self, quality: dict[str, float], size_mb: float) -> tuple[dict[str, float], float, bool]:
        """(drop per metric, worst drop, within budget). Metrics missing on either side are skipped."""
        drops = {m: relative_drop(self.reference[m], quality[m])
                 for m in self.metrics if self.reference.get(m) and m in quality}
        worst = max(drops.values(), default=0.0)
        ok = worst <= self.max_drop + 1e-12 and (self.max_size_mb is None or size_mb <= self.max_size_mb)
        return drops, worst, ok


@dataclass
class Trial:
    """One quantized configuration and what was measured on it."""

    id: int
    settings: QuantSettings
    excluded: list[str]
    excluded_groups: list[str]
    bundle: Path
    backend: str = "onnxruntime"
    proxy_cosine: float | None = None
    latency: dict[str, float] = field(default_factory=dict)
    size_mb: float = 0.0
    quality: dict[str, float] | None = None
    drops: dict[str, float] = field(default_factory=dict)
    drop: float | None = None
    within_budget: bool | None = None
    note: str = ""
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        fp32 = f", {len(self.excluded_groups)} group(s) fp32" if self.excluded_groups else ""
        inc = self.extra.get("inc_config")
        prefix = f"INC {inc.get('name')}: " if inc else ""
        if inc and inc.get("params", {}).get("quant_last_matmul") is False:
            fp32 += ", last MatMul fp32"  # an INC tuning axis: the projection left unquantized
        return prefix + self.settings.label() + fp32

    def record(self) -> dict[str, Any]:
        return {
            "trial": self.id, "backend": self.backend, "setting": self.label, "config": self.settings.model_dump(),
            "excluded_groups": self.excluded_groups, "excluded_nodes": self.excluded, "proxy_cosine": self.proxy_cosine,
            **(self.quality or {}), "drops": self.drops, "relative_drop": self.drop, "within_budget": self.within_budget,
            **self.latency, "size_mb": self.size_mb, "note": self.note, "seconds": round(self.seconds, 1),
            **self.extra,
        }


@dataclass
class SearchConfig:
    granularity: str = "auto"  # auto | node | layer | role | off
    max_evaluations: int = 10
    auto_node_limit: int = 40
    # A trial timed up to this much slower than the fastest one within budget is still evaluated: one timing
    # per trial is noisy, and the final side-by-side timing of all eligible trials decides.
    latency_margin: float = 0.10


@dataclass
class SearchResult:
    trials: list[Trial]
    chosen: Trial | None
    within_budget: bool
    sensitivity: dict[str, list[dict[str, Any]]]
    fp32_latency: dict[str, float]
    evaluations: int


def groups_of(nodes: list[QuantNode], granularity: str, node_limit: int = 40) -> list[tuple[str, list[str]]]:
    """Nodes grouped for the sensitivity scan: one per node, per layer or per role (auto: per node when
    there are at most ``node_limit``, else per role). Nodes outside the layers stay on their own."""
    if granularity == "auto":
        granularity = "node" if len(nodes) <= node_limit else "role"
    groups: dict[str, list[str]] = {}
    for n in nodes:
        if granularity == "node" or n.layer is None:
            key = n.group if granularity == "node" else n.role
        elif granularity == "layer":
            key = f"layer {n.layer}"
        else:
            key = f"all {n.role}"
        groups.setdefault(key, []).append(n.name)
    return list(groups.items())


class Search:
    """Runs the search for one source bundle. ``evaluate`` maps a bundle folder to full quality metrics."""

    def __init__(self, source: Path, work: Path, candidates: list[QuantSettings], *, budget: Budget,
                 evaluate: Callable[[Path], dict[str, float]], proxy, calibration_feeds: list[dict] | None,
                 latency_fn: Callable[[Path], dict[str, float]], exclude: list[str] | None = None,
                 config: SearchConfig | None = None,
                 final_timing: Callable[[dict[str, Path]], dict[str, dict[str, float]]] | None = None) -> None:
        from edgedistill.quant.ort import prepare

        self.source, self.work = Path(source), Path(work)
        self.candidates = candidates
        self.budget, self.evaluate_fn, self.proxy, self.latency_fn = budget, evaluate, proxy, latency_fn
        self.final_timing = final_timing
        self.user_exclude = list(exclude or [])
        self.config = config or SearchConfig()
        self.calibration_feeds = calibration_feeds
        self.work.mkdir(parents=True, exist_ok=True)
        self.prepared = self.work / "prepared.onnx"
        prepare(self.source / "model.onnx", self.prepared)
        op_types = sorted({t for c in candidates for t in c.op_types})
        self.nodes = [n for n in quantizable_nodes(self.prepared, op_types) if n.name not in self.user_exclude]
        self.embedding_node = next((n.name for n in self.nodes if n.role == "embedding"), None)
        self.trials: list[Trial] = []
        self.evaluations = 0
        self.sensitivity: dict[str, list[dict[str, Any]]] = {}

    # -- building and measuring ----------------------------------------------------------------------
    def _nodes_for(self, settings: QuantSettings) -> list[QuantNode]:
        """The nodes a setting quantizes: the table only when it asks for INT8 embeddings, fused Attention
        only in dynamic mode (onnxruntime's QDQ quantizer has no Attention)."""
        return [n for n in self.nodes if (n.role != "embedding" or settings.embedding == "int8")
                and (n.op_type != "Attention" or settings.method == "dynamic")]

    def build(self, settings: QuantSettings, exclude: list[str], folder: Path) -> Path:
        from edgedistill.quant.calibration import FeedsReader
        from edgedistill.quant.ort import quantize_file

        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for f in self.source.iterdir():
            if f.is_file() and f.name != "model.onnx" and f.suffix != ".onnx":
                shutil.copy2(f, folder / f.name)
        reader = cache = None
        if settings.method == "static":
            if not self.calibration_feeds:
                raise ValueError("static quantization needs calibration sentences")
            reader = FeedsReader(self.calibration_feeds)
            cache = self.work / f"calibration-{settings.calibration}-{settings.percentile}.json"
        quantize_file(self.prepared, folder / "model.onnx", settings, sorted(set(exclude) | set(self.user_exclude)),
                      embedding_node=self.embedding_node, calibration=reader, calibration_cache=cache)
        return folder

    def trial(self, settings: QuantSettings, groups: list[tuple[str, list[str]]]) -> Trial:
        from edgedistill.contract import artifact_size_mb

        t0 = time.perf_counter()
        excluded = sorted({n for _, names in groups for n in names})
        trial_id = len(self.trials)
        bundle = self.build(settings, excluded, self.work / "trials" / f"trial-{trial_id}")
        trial = Trial(trial_id, settings, excluded, [g for g, _ in groups], bundle)
        trial.proxy_cosine = self.proxy.cosine(bundle)
        trial.latency = self.latency_fn(bundle)
        trial.size_mb = artifact_size_mb(bundle)
        trial.seconds = time.perf_counter() - t0
        self.trials.append(trial)
        log.info("quantize trial %d (%s): proxy cosine %.5f, batch-1 %.3f ms, %.1f MB", trial.id, trial.label,
                 trial.proxy_cosine, trial.latency.get(B1, float("nan")), trial.size_mb)
        return trial

    def evaluate(self, trial: Trial) -> bool:
        t0 = time.perf_counter()
        trial.quality = self.evaluate_fn(trial.bundle)
        self.evaluations += 1
        trial.drops, trial.drop, trial.within_budget = self.budget.check(trial.quality, trial.size_mb)
        trial.seconds += time.perf_counter() - t0
        log.info("quantize trial %d: %s; worst drop %.2f%% (budget %.2f%%)%s", trial.id,
                 ", ".join(f"{k}={v:.3f}" for k, v in trial.quality.items() if k in self.budget.metrics),
                 100 * trial.drop, 100 * self.budget.max_drop,
                 "" if self.budget.max_size_mb is None or trial.size_mb <= self.budget.max_size_mb
                 else f"; {trial.size_mb:.1f} MB over the {self.budget.max_size_mb:g} MB cap")
        return bool(trial.within_budget)

    def scan(self, settings: QuantSettings) -> list[tuple[str, list[str], float]]:
        """Proxy error of quantizing each group alone, most sensitive first."""
        nodes = self._nodes_for(settings)
        groups = groups_of(nodes, self.config.granularity, self.config.auto_node_limit)
        everything = [n.name for n in nodes]
        scored = []
        folder = self.work / "scan"
        for label, names in groups:
            keep = [n for n in everything if n not in names]
            bundle = self.build(settings, keep, folder)
            error = 1.0 - self.proxy.cosine(bundle)
            scored.append((label, names, error))
            log.info("sensitivity (%s): %s -> 1 - cosine %.2e", settings.label(), label, error)
        shutil.rmtree(folder, ignore_errors=True)
        scored.sort(key=lambda g: -g[2])
        self.sensitivity[settings.label()] = [{"group": g, "nodes": n, "proxy_error": e} for g, n, e in scored]
        return scored

    # -- the search ----------------------------------------------------------------------------------
    def _eligible(self) -> list[Trial]:
        return [t for t in self.trials if t.within_budget]

    def _fastest(self) -> Trial | None:
        ok = self._eligible()
        return min(ok, key=lambda t: (t.latency.get(B1, float("inf")), t.drop or 0.0)) if ok else None

    def _worth_evaluating(self, trial: Trial) -> bool:
        """False (with a note) when a trial cannot win or is no better than a known failure."""
        if self.evaluations >= self.config.max_evaluations:
            trial.note = f"not evaluated: evaluation budget ({self.config.max_evaluations}) used up"
            return False
        best = self._fastest()
        margin = 1 + self.config.latency_margin
        if best is not None and trial.latency.get(B1, 0) >= margin * best.latency.get(B1, 0):
            trial.note = f"not evaluated: slower than trial {best.id}, which meets the budget"
            return False
        failed = [t.proxy_cosine for t in self.trials if t.within_budget is False and t.proxy_cosine is not None]
        if failed and trial.proxy_cosine is not None and trial.proxy_cosine <= max(failed):
            trial.note = "not evaluated: proxy no better than a trial that missed the budget"
            return False
        return True

    def _try(self, settings: QuantSettings, groups: list[tuple[str, list[str], float]], k: int) -> bool | None:
        """Build and (when worth it) evaluate the trial keeping the k most sensitive groups in fp32.
        Returns True/False when evaluated, None when skipped."""
        trial = self.trial(settings, [(g, names) for g, names, _ in groups[:k]])
        if not self._worth_evaluating(trial):
            log.info("quantize trial %d: %s", trial.id, trial.note)
            return None
        return self.evaluate(trial)

    def run(self) -> SearchResult:
        fp32_latency = self.latency_fn(self.source)
        first = [self.trial(s, []) for s in self.candidates]
        for base in sorted(first, key=lambda t: t.latency.get(B1, float("inf"))):
            if not self._worth_evaluating(base):
                log.info("quantize trial %d: %s", base.id, base.note)
                if self.evaluations >= self.config.max_evaluations or "slower" in base.note:
                    continue
            elif self.evaluate(base) or self.config.granularity == "off":
                continue
            groups = self.scan(base.settings)
            self._ladder(base.settings, groups)
        fp32_latency = self.retime(fp32_latency)
        chosen = self._fastest()
        passed = chosen is not None
        if chosen is None:
            evaluated = [t for t in self.trials if t.drop is not None]
            chosen = min(evaluated, key=lambda t: t.drop) if evaluated else None
        return SearchResult(self.trials, chosen, passed, self.sensitivity, fp32_latency, self.evaluations)

    def retime(self, fp32_latency: dict[str, float]) -> dict[str, float]:
        """Time the fp32 input and every trial within budget again, side by side, so the choice of the
        fastest does not hang on when each trial happened to be timed. The search-time figures are kept
        as ``search_latency_ms_p50``."""
        eligible = self._eligible()
        if self.final_timing is None or not eligible:
            return fp32_latency
        timed = self.final_timing({"fp32": self.source, **{f"trial-{t.id}": t.bundle for t in eligible}})
        for t in eligible:
            t.latency = {**timed[f"trial-{t.id}"], "search_latency_ms_p50": t.latency.get(B1)}
        return timed["fp32"]

    def _ladder(self, settings: QuantSettings, groups: list[tuple[str, list[str], float]]) -> None:
        """Exclude 1, 2, 4, ... of the most sensitive groups until the budget is met, then bisect down."""
        n = len(groups)
        lo, hi, k = 0, None, 1
        while k <= n and self.evaluations < self.config.max_evaluations:
            best = self._fastest()
            result = self._try(settings, groups, k)
            if result is None and best is not None and "slower" in self.trials[-1].note:
                return  # keeping more groups in fp32 only gets slower
            if result:
                hi = k
                break
            lo = k
            k = n if k < n and 2 * k > n else 2 * k
        while hi is not None and hi - lo > 1 and self.evaluations < self.config.max_evaluations:
            mid = (lo + hi) // 2
            result = self._try(settings, groups, mid)
            if result:
                hi = mid
            else:
                lo = mid


def cleanup(result: SearchResult, keep: Trial | None) -> None:
    """Delete every trial bundle except ``keep``."""
    for t in result.trials:
        if t is not keep:
            shutil.rmtree(t.bundle, ignore_errors=True)
