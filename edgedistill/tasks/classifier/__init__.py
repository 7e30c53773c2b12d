"""Text classifiers (single texts or text pairs, K classes): fine-tune a teacher, distil it into a small student
with soft labels at a temperature and TinyBERT-style layer losses, export, quantize, profile, report.

Built on the shared sequence-classification core (``edgedistill.tasks.seqcls``); the modules beside this one hold
the recipe sections (``config``), labelled data (``data``), losses, the finetune/distill stages (``train``), the
exported graph (``export``), the evaluation (``evaluate``) and the torch-free runtime (``runtime``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from edgedistill.contract import ONNX
from edgedistill.stages.configs import QuantizeStage
from edgedistill.tasks import Metric
from edgedistill.tasks.classifier.config import (
    ClassifierData,
    ClassifierDistillStage,
    ClassifierEvaluation,
    ClassifierExportStage,
    ClassifierFinetuneStage,
)

if TYPE_CHECKING:
    from edgedistill.contract import StageContext, StageResult

PRIMARY_METRIC = "accuracy"


class ClassifierQuantizeStage(QuantizeStage):
    """INT8 quantization, held to the classifier's accuracy by default."""

    budget_metrics: list[str] = Field(default_factory=lambda: ["accuracy", "agreement"],
                                      description="Metrics held to max_drop (accuracy, macro_f1, agreement).")


class ClassifierTask:
    """Text classification: accuracy, macro-F1, agreement with the teacher, KL to the teacher, calibration."""

    name: ClassVar[str] = "classifier"
    primary_metric: ClassVar[str] = PRIMARY_METRIC
    metrics: ClassVar[tuple[Metric, ...]] = (
        Metric(PRIMARY_METRIC, "accuracy", 2, description="accuracy = % of the held-out test split classified right"),
        Metric("macro_f1", "macro-F1", 2, description="macro-F1 = unweighted mean of the per-class F1 (x100)"),
        Metric("agreement", "agreement", 2, description="agreement = % of test inputs with the teacher's argmax"),
        Metric("kl_to_teacher", "KL to teacher", 4,
               description="KL to teacher = mean KL(teacher || model) of the class distributions, nats (lower is closer)"),
        Metric("ece", "ECE", 2, description="ECE = expected calibration error x100, 15 confidence bins (lower is "
               "better calibrated)"),
    )
    budget_metrics: ClassVar[tuple[str, ...]] = (PRIMARY_METRIC, "agreement")
    data_config = ClassifierData
    evaluation_config = ClassifierEvaluation
    stage_configs: ClassVar[dict[str, type]] = {"finetune": ClassifierFinetuneStage, "distill": ClassifierDistillStage,
                                                "export": ClassifierExportStage, "quantize": ClassifierQuantizeStage}
    # recipe inputs its stages read beyond the registry rows' (the data section), part of their keys
    stage_reads: ClassVar[dict[str, tuple[str, ...]]] = {"distill": ("data", "seed"),
                                                         "quantize": ("data", "seed", "threads", "evaluation")}

    def load(self, kind: str, path: Path, device: str = "cpu", threads: int = 0) -> Any:
        if kind == ONNX:
            from edgedistill.tasks.classifier.runtime import Classifier

            return Classifier(Path(path), threads=threads)
        from edgedistill.tasks.seqcls.models import load_classifier

        return load_classifier(Path(path), device=device, field="teacher" if kind == "teacher" else f"{kind} artifact")

    def eval_set(self, evaluation: ClassifierEvaluation) -> Any:
        from edgedistill.tasks.classifier.data import load_examples
        from edgedistill.tasks.classifier.evaluate import EvalSet

        examples = load_examples(evaluation.test, "test", evaluation, field="evaluation.test")
        idx = list(range(min(len(examples), evaluation.test_examples)))
        if len(examples) > evaluation.test_examples:
            import random

            idx = sorted(random.Random(0).sample(range(len(examples)), evaluation.test_examples))
        test = examples.take(idx)
        gold = [test.label_names[i] for i in test.labels]
        latency = [test.inputs[i % len(test)] for i in range(evaluation.latency_examples)]
        return EvalSet(inputs=test.inputs, gold=gold, latency_inputs=latency, batch_size=evaluation.batch_size,
                       ece_bins=evaluation.ece_bins)

    def evaluate_teacher(self, teacher: Path, data: Any, device: str) -> tuple[dict[str, float], dict[str, Any]]:
        import numpy as np

        from edgedistill.tasks.classifier.evaluate import Evaluator
        from edgedistill.tasks.seqcls.teacher_cache import compute_logits

        model = self.load("teacher", teacher, device=device)
        logits = compute_logits(model, data.inputs, data.batch_size, "evaluating the teacher")
        reference = {"logits": logits, "labels": np.array(model.labels)}
        metrics = Evaluator(data, reference).quality(model)
        metrics["params"] = float(sum(p.numel() for p in model.model.parameters()))
        return metrics, reference

    def evaluator(self, data: Any, reference: dict[str, Any]) -> Any:
        from edgedistill.tasks.classifier.evaluate import Evaluator

        return Evaluator(data, reference)

    def finetune(self, cfg: Any, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.classifier.train import finetune

        return finetune(cfg, ctx)

    def distill(self, cfg: Any, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.classifier.train import distill

        return distill(cfg, ctx)

    def export(self, cfg: Any, ctx: StageContext) -> StageResult:
        from edgedistill.tasks.classifier.export import run

        return run(cfg, ctx)

    def quality_proxy(self, reference_bundle: Path, texts: list, threads: int = 0) -> Any:
        from edgedistill.tasks.seqcls.runtime import LogitsProxy

        return LogitsProxy(reference_bundle, texts, threads=threads)

    def calibration_inputs(self, data: ClassifierData, calibration: int, proxy: int, seed: int) -> tuple[list, list]:
        """Two disjoint samples of the training file's inputs (labels unused): calibration and the proxy."""
        import random

        from edgedistill.tasks.classifier.data import load_examples

        inputs = load_examples(data.train, "train", data, labelled=False).inputs
        pool = random.Random(seed + 5).sample(inputs, min(len(inputs), calibration + proxy))
        return pool[:calibration], pool[calibration:] or pool

    def bundle_variants(self, bundle: Path, manifest: dict, texts: list[str]) -> dict[str, Any]:
        return {}

    def bundle_card(self, manifest: dict) -> str:
        from edgedistill.tasks.classifier.card import bundle_card

        return bundle_card(manifest)

    def sample_texts(self, data: Any) -> list[str]:
        """Held-out test inputs as single strings (a pair's texts joined: the profile stage times strings)."""
        from edgedistill.tasks.classifier.data import input_texts

        return input_texts(list(data.inputs))


TASK = ClassifierTask()
