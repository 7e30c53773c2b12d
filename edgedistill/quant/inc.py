"""Intel Neural Compressor backend: INC's autotune, driven by our evaluator, in its own virtualenv.

``onnx-neural-compressor`` (Intel's ONNX quantizer; ``neural-compressor`` 3.x has no ONNX code) pins numpy<2,
so it never enters the project's environment: the pins of the ``inc`` extra in pyproject.toml are installed
into a cached virtualenv under ``$EDGEDISTILL_CACHE/inc-venv/<hash>`` on first use, and INC runs there as a
worker process (inc_worker.py). The worker asks this process to score every model INC proposes, with the
same full evaluator, proxy, latency and size measurements as the onnxruntime search, so trials are recorded
and chosen the same way: the fastest within budget, not INC's last trial. INC's ``exit()`` when nothing meets
the goal only ends the worker, which reports it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgedistill.errors import EdgedistillError
from edgedistill.quant.presets import QuantSettings
from edgedistill.quant.search import B1, Search, SearchResult, Trial

log = logging.getLogger(__name__)

EXTRA = "inc"
WORKER = Path(__file__).with_name("inc_worker.py")
IMPORT_CHECK = "import onnx_neural_compressor.quantization.tuning"


class IncError(EdgedistillError):
    """The INC backend could not be set up or failed."""


def requirements() -> list[str]:
    """The pins of the ``inc`` extra: from pyproject.toml in a source checkout, else the installed metadata."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    if pyproject.is_file():
        import tomllib

        extras = tomllib.loads(pyproject.read_text())["project"].get("optional-dependencies", {})
        if EXTRA in extras:
            return list(extras[EXTRA])
    from importlib.metadata import requires

    marker = re.compile(r";\s*extra\s*==\s*['\"]" + EXTRA + r"['\"]")
    reqs = [r.split(";")[0].strip() for r in (requires("edgedistill") or []) if marker.search(r)]
    if not reqs:
        raise IncError(f"the '{EXTRA}' extra is not declared in edgedistill's metadata; reinstall with pip install -e .")
    return reqs


def venv_dir(reqs: list[str]) -> Path:
    from edgedistill.assets import cache_dir
    from edgedistill.contract import content_key

    return cache_dir() / "inc-venv" / content_key(sorted(reqs), sys.version_info[:2])


def ensure_venv() -> Path:
    """The worker virtualenv's python, created (once, under a lock) from the extra's pins."""
    from edgedistill.assets import PIP_ARGS_ENV, _file_lock

    reqs = requirements()
    target = venv_dir(reqs)
    python = target / "bin" / "python"
    if python.is_file():
        return python
    with _file_lock(target.with_name(target.name + ".lock"), "INC virtualenv"):
        if python.is_file():
            return python
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
        log.info("creating the INC virtualenv (%s) in %s, once", ", ".join(reqs), target)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True, text=True)
            pip = [str(tmp / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                   *shlex.split(os.environ.get(PIP_ARGS_ENV, "")), *reqs]
            subprocess.run(pip, check=True, capture_output=True, text=True)
            subprocess.run([str(tmp / "bin" / "python"), "-c", IMPORT_CHECK], check=True, capture_output=True,
                           text=True)
        except subprocess.CalledProcessError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            tail = (e.stderr or e.stdout or "").strip().splitlines()[-5:]
            raise IncError(f"quantize (backend: inc): could not set up the INC virtualenv with {reqs}: "
                           + " | ".join(tail) + f". Check package-registry access ({PIP_ARGS_ENV} adds pip "
                           "options), or use backend: onnxruntime.") from None
        os.replace(tmp, target)
    return python


def settings_from_inc(config: dict, base: QuantSettings) -> QuantSettings:
    """The closest QuantSettings to an INC trial's config (for the record and the saved config)."""
    params = config.get("params", {})
    name = config.get("name", "")
    method = "dynamic" if "dynamic" in name else "static"
    calib = str(params.get("calibrate_method", "")).lower()
    calibration = next((c for c in ("minmax", "entropy", "percentile") if c in calib), "minmax")
    per_channel = params.get("per_channel", base.per_channel)
    return base.model_copy(update={
        "method": method, "per_channel": bool(per_channel) if isinstance(per_channel, bool) else base.per_channel,
        "calibration": calibration if method == "static" else None})


class IncSearch(Search):
    """INC's autotune in the worker; every model it proposes is measured and recorded here."""

    def __init__(self, source: Path, work: Path, candidates: list[QuantSettings], *, calibration_sentences: list[str],
                 python: Path | None = None, **kwargs) -> None:
        super().__init__(source, work, candidates, calibration_feeds=None, **kwargs)
        self.calibration_sentences = calibration_sentences
        self.python = python  # the worker's interpreter; default: the cached INC virtualenv

    def _write_job(self) -> Path:
        from edgedistill.quant.calibration import feeds

        arrays = {f"{i}__{k}": v for i, batch in enumerate(feeds(self.source, self.calibration_sentences))
                  for k, v in batch.items()}
        np.savez(self.work / "calibration.npz", **arrays)
        (self.work / "inc").mkdir(exist_ok=True)
        job = {"model": str(self.prepared), "calibration": str(self.work / "calibration.npz"),
               "calibration_size": len(self.calibration_sentences), "out_dir": str(self.work / "inc"),
               "candidates": [c.model_dump(mode="json") for c in self.candidates], "exclude": self.user_exclude,
               "tolerable_loss": self.budget.max_drop, "max_trials": self.config.max_evaluations}
        path = self.work / "job.json"
        path.write_text(json.dumps(job))
        return path

    def _score(self, model: Path, config: dict, seconds: float) -> float:
        """Measure and evaluate one INC model; INC's score is 1 - worst relative drop (fp32 = 1.0)."""
        from edgedistill.contract import artifact_size_mb
        from edgedistill.quant.ort import quantize_embedding

        t0 = time.perf_counter()
        settings = settings_from_inc(config, self.candidates[0])
        trial_id = len(self.trials)
        bundle = self.work / "trials" / f"trial-{trial_id}"
        shutil.rmtree(bundle, ignore_errors=True)  # a leftover of an earlier search in the same folder
        bundle.mkdir(parents=True)
        for f in self.source.iterdir():
            if f.is_file() and f.suffix != ".onnx":
                shutil.copy2(f, bundle / f.name)
        os.replace(model, bundle / "model.onnx")
        if settings.embedding == "int8" and self.embedding_node and self.embedding_node not in self.user_exclude:
            # INC optimises the graph first (node names change): find the table again.
            import onnx

            from edgedistill.quant.graph import word_embedding_gather

            table = word_embedding_gather(onnx.load(str(bundle / "model.onnx"), load_external_data=False))
            if table is not None:
                quantize_embedding(bundle / "model.onnx", table[0].name)
        trial = Trial(trial_id, settings, list(self.user_exclude), [], bundle, backend="inc")
        trial.extra["inc_config"] = config
        trial.proxy_cosine = self.proxy.cosine(bundle)
        trial.latency = self.latency_fn(bundle)
        trial.size_mb = artifact_size_mb(bundle)
        self.trials.append(trial)
        self.evaluate(trial)
        trial.seconds += seconds + time.perf_counter() - t0
        log.info("INC trial %d (%s): proxy %.5f, batch-1 %.3f ms, %.1f MB, drop %.2f%%", trial.id, config.get("name"),
                 trial.proxy_cosine, trial.latency.get(B1, float("nan")), trial.size_mb, 100 * (trial.drop or 0))
        drop = trial.drop or 0.0
        if not trial.within_budget and drop <= self.budget.max_drop:  # failed on size only: INC must go on
            drop = self.budget.max_drop + 1.0
        return 1.0 - drop

    def run(self) -> SearchResult:
        python = self.python or ensure_venv()
        fp32_latency = self.latency_fn(self.source)
        job = self._write_job()
        log_path = self.work / "inc-worker.log"
        env = {**os.environ, "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen([str(python), str(WORKER), str(job)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=log_file, text=True, env=env, cwd=self.work)
            done: dict = {}
            try:
                for line in proc.stdout:
                    message = json.loads(line)
                    if message.get("event") == "evaluate":
                        score = self._score(Path(message["model"]), message.get("config", {}),
                                            float(message.get("quantize_seconds", 0.0)))
                        proc.stdin.write(json.dumps({"score": score}) + "\n")
                        proc.stdin.flush()
                    elif message.get("event") == "done":
                        done = message
                        break
            finally:
                proc.stdin.close()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
        log.info("INC worker finished: %s %s", done.get("status", "no report"), done.get("message", ""))
        if done.get("status") == "error" or not done:
            if not self.trials:
                tail = log_path.read_text().strip().splitlines()[-8:]
                raise IncError(f"quantize (backend: inc): the INC worker failed before any trial: "
                               f"{done.get('message', 'no report')}. Log {log_path}: " + " | ".join(tail))
            log.warning("INC worker stopped early (%s); keeping its %d trials", done.get("message"), len(self.trials))
        self.inc_status = done
        fp32_latency = self.retime(fp32_latency)
        chosen = self._fastest()
        passed = chosen is not None
        if chosen is None:
            evaluated = [t for t in self.trials if t.drop is not None]
            chosen = min(evaluated, key=lambda t: t.drop) if evaluated else None
        return SearchResult(self.trials, chosen, passed, {}, fp32_latency, self.evaluations)
