"""Accuracy-aware INT8 quantization of exported bundles.

Modules: ``presets`` (target presets and the resolved settings), ``graph`` (which nodes can be quantized and
where they sit in the model), ``calibration`` (in-domain calibration data), ``ort`` (onnxruntime dynamic and
static QDQ), ``embedding`` (INT8 word-embedding table), ``measure`` (cheap proxy quality and latency),
``search`` (sensitivity scan and the search for the fastest setting within budget), ``inc`` (Intel Neural
Compressor backend run in its own virtualenv).
"""
