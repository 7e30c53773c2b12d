"""Intel Neural Compressor worker: runs INC's autotune inside its own virtualenv (numpy<2).

Started by edgedistill.quant.inc as ``<venv>/bin/python inc_worker.py JOB.json``. It imports nothing from
edgedistill (the package is not installed in that virtualenv), only INC, onnx, onnxruntime and numpy.

Protocol, one JSON object per line: the worker writes requests to the file descriptor it inherits as its
original stdout ({"event": "evaluate", ...}, {"event": "done", ...}); the parent answers evaluations on
stdin ({"score": float}). Everything INC prints goes to stderr, so logs never corrupt the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback


def _send(channel, message: dict) -> None:
    channel.write(json.dumps(message) + "\n")
    channel.flush()


def _read_feeds(path: str) -> list[dict]:
    import numpy as np

    data = np.load(path)
    batches: dict[int, dict] = {}
    for key in data.files:
        index, name = key.split("__", 1)
        batches.setdefault(int(index), {})[name] = data[key]
    return [batches[i] for i in sorted(batches)]


def _configs(job: dict, reader) -> list:
    """INC configuration objects for the candidate settings the parent passed (lists are INC tuning axes)."""
    from onnx_neural_compressor import quantization
    from onnx_neural_compressor.quantization import config

    qtype = {"int8": quantization.QuantType.QInt8, "uint8": quantization.QuantType.QUInt8}
    # Names, not CalibrationMethod members: INC 1.0's OperatorConfig.update keeps an enum member as is and
    # its calibrator registry then fails to find it ("Calibration method ... is not registered").
    calib = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
    out = []
    for c in job["candidates"]:
        common = {"weight_type": qtype[c["weight_type"]], "op_types_to_quantize": list(c["op_types"]),
                  "nodes_to_exclude": list(job.get("exclude", [])), "reduce_range": c["reduce_range"],
                  "execution_provider": "CPUExecutionProvider"}
        if c["method"] == "dynamic":
            out.append(config.DynamicQuantConfig(per_channel=[c["per_channel"], not c["per_channel"]],
                                                 quant_last_matmul=[True, False], **common))
            continue
        static = dict(calibration_data_reader=reader, quant_format=quantization.QuantFormat.QDQ,
                      activation_type=qtype[c["activation_type"]], per_channel=c["per_channel"],
                      calibration_sampling_size=job["calibration_size"],
                      extra_options={"ActivationSymmetric": c["activation_symmetric"], "WeightSymmetric": True},
                      **common)
        first = c["calibration"] or "minmax"
        for name in [first] + [k for k in calib if k != first]:  # one config each: INC 1.0 fails on a list here
            out.append(config.StaticQuantConfig(calibrate_method=calib[name], **static))
        # INC's own remedy for activation outliers: SmoothQuant moves them into the weights first.
        out.append(config.SmoothQuantConfig(alpha=[0.5, 0.75], calibrate_method=calib["minmax"], **static))
    return out


def main(job_path: str) -> int:
    proto = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # INC and onnxruntime print to stdout; keep it for logs only
    with open(job_path) as f:
        job = json.load(f)
    status = {"event": "done", "status": "exhausted"}
    try:
        import onnx
        from onnx_neural_compressor import data_reader
        from onnx_neural_compressor.quantization import tuning

        class Reader(data_reader.CalibrationDataReader):
            def __init__(self, batches: list[dict]) -> None:
                self.batches = batches
                self.rewind()

            def get_next(self):
                return next(self._it, None)

            def rewind(self) -> None:
                self._it = iter(self.batches)

        reader = Reader(_read_feeds(job["calibration"]))
        current: dict = {}
        real_quantize = tuning._quantize

        def recording_quantize(model_input, quant_config, calibration_data_reader=None):
            # autotune does not tell eval_fn which config it is scoring; remember it here.
            current["config"] = {"name": getattr(quant_config, "name", type(quant_config).__name__),
                                 "params": _plain(quant_config.to_dict())}
            current["t0"] = time.perf_counter()
            return real_quantize(model_input, quant_config, calibration_data_reader=calibration_data_reader)

        tuning._quantize = recording_quantize
        trial = {"n": 0}

        def eval_fn(model_path: str) -> float:
            if "config" not in current:  # the fp32 baseline: scores are 1 - worst relative drop, so 1.0
                return 1.0
            trial["n"] += 1
            out = os.path.join(job["out_dir"], f"inc-{trial['n']}.onnx")
            model = onnx.load(model_path)  # with its external data
            onnx.save(model, out)
            _send(proto, {"event": "evaluate", "model": out, "config": current.pop("config"),
                          "quantize_seconds": round(time.perf_counter() - current.pop("t0"), 2)})
            reply = json.loads(sys.stdin.readline())
            return float(reply["score"])

        tune = tuning.TuningConfig(config_set=_configs(job, reader), tolerable_loss=job["tolerable_loss"],
                                   max_trials=job["max_trials"])
        try:
            best = tuning.autotune(job["model"], tune, eval_fn=eval_fn, calibration_data_reader=reader)
            # INC hands back its last trial when max_trials runs out, not its best: the parent picks.
            status["status"] = "returned" if best is not None else "exhausted"
        except SystemExit as e:  # autotune calls exit() when no config meets the goal
            status.update(status="exit", message=f"autotune called exit({e.code}): no config met the goal")
    except Exception as e:  # noqa: BLE001 - reported to the parent, which decides
        status.update(status="error", message=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    _send(proto, status)
    return 0


def _plain(value):
    """JSON-safe copy of an INC config dict."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
