"""fastembed over an edgedistill bundle folder, offline (run by the client virtualenv's Python, .venv-clients).

usage: python fastembed_client.py BUNDLE_DIR SENTENCES_JSON  -> JSON {precision: {alone, batched, batched_raw}}
"""

import json
import sys
from pathlib import Path

from fastembed import TextEmbedding
from fastembed.common.model_description import ModelSource, PoolingType

bundle, sentences_file = sys.argv[1:3]
manifest = json.loads(Path(bundle, "manifest.json").read_text())
sentences = json.loads(Path(sentences_file).read_text())
rows = manifest.get("batch_invariance", {}).get("run_rows_separately", False)
result = {}
for precision, model_file in manifest["models"].items():
    name = f"edgedistill/bundle-{precision}"
    # The graph returns the pooled, L2-normalised embedding: no pooling or normalisation in fastembed.
    TextEmbedding.add_custom_model(model=name, pooling=PoolingType.DISABLED, normalization=False,
                                   sources=ModelSource(hf=name), dim=manifest["dimension"], model_file=model_file,
                                   output_name=manifest["output"])
    model = TextEmbedding(name, specific_model_path=bundle, local_files_only=True, threads=1)
    alone = [next(iter(model.embed([s]))).tolist() for s in sentences]
    raw = [v.tolist() for v in model.embed(sentences, batch_size=len(sentences))]
    separately = rows and model_file == manifest["model"]  # the bundle asks for one sentence per run
    result[precision] = {"alone": alone, "batched_raw": raw, "batched": alone if separately else raw,
                         "rows_separately": separately}
print(json.dumps(result))
