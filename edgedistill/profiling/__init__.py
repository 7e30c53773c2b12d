"""Profiling on this machine and on devices over SSH.

- ``bench.py``: the self-contained profiler shipped to devices (python3, onnxruntime, numpy, tokenizers only);
- ``torch_bench.py``: the same measurements for PyTorch models (teacher, fp32 student) on this machine;
- ``bundle.py``: the bench bundle (model, tokenizer, sentences, settings, bench.py) and result checking;
- ``targets.py``: running a bundle locally or over SSH;
- ``profiler.py``: a profile across targets with the chain's earlier artifacts measured side by side.

Nothing here is imported at CLI start-up; onnxruntime and torch are imported only inside the workers.
"""
