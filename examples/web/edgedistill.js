// Load an edgedistill deploy bundle in the browser and embed text with it.
//
// Tokenizer: @huggingface/tokenizers (transformers.js's tokenizer) over the bundle's tokenizer.json and
// tokenizer_config.json. Model: onnxruntime-web (WebAssembly) over onnx/model.onnx or onnx/model_quantized.onnx.
// The graph returns the pooled, projected, L2-normalised embedding (manifest.output): no pooling here.
import * as ort from 'onnxruntime-web';
import { Tokenizer } from '@huggingface/tokenizers';

const getJson = async (url) => {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
};

/**
 * @param {string} base URL of the bundle folder, ending in '/'
 * @param {{precision?: 'fp32'|'int8', wasmPaths?: string}} options precision: which graph (default: the
 *   bundle's final one, manifest.model)
 */
export async function loadBundle(base, { precision, wasmPaths } = {}) {
  const manifest = await getJson(base + 'manifest.json');
  const [tokenizerJson, tokenizerConfig] = await Promise.all([
    getJson(base + manifest.tokenizer), getJson(base + 'tokenizer_config.json')]);
  const tokenizer = new Tokenizer(tokenizerJson, tokenizerConfig);
  const file = precision ? manifest.models?.[precision] : manifest.model;
  if (!file) throw new Error(`bundle has no ${precision} graph (has ${Object.keys(manifest.models ?? {})})`);
  if (wasmPaths) ort.env.wasm.wasmPaths = wasmPaths;
  ort.env.wasm.numThreads = 1;  // no cross-origin isolation needed
  const session = await ort.InferenceSession.create(base + file, { executionProviders: ['wasm'] });
  // A dynamically quantized graph computes activation scales over the whole batch: the manifest then asks for
  // one sentence per run, so a sentence's vector never depends on its batch mates.
  const rowsSeparately = file === manifest.model && !!manifest.batch_invariance?.run_rows_separately;
  const maxLength = manifest.max_seq_length;

  function encodeOne(text) {
    let ids = tokenizer.encode(text, { return_token_type_ids: true });
    if (ids.ids.length > maxLength) {  // keep the leading tokens and the closing special token
      const keep = (a) => a.slice(0, maxLength - 1).concat(a.slice(-1));
      ids = { ids: keep(ids.ids), attention_mask: keep(ids.attention_mask),
              token_type_ids: keep(ids.token_type_ids ?? ids.ids.map(() => 0)) };
    }
    return ids;
  }

  async function run(texts) {
    const encoded = texts.map(encodeOne);
    const width = Math.max(...encoded.map((e) => e.ids.length));
    const columns = { input_ids: 'ids', attention_mask: 'attention_mask', token_type_ids: 'token_type_ids' };
    const feeds = {};
    for (const name of manifest.inputs) {
      const data = new BigInt64Array(texts.length * width);  // padded with 0 = pad type / mask
      encoded.forEach((e, row) => e[columns[name]].forEach((v, i) => {
        data[row * width + i] = BigInt(v);
      }));
      if (name === 'input_ids') {
        encoded.forEach((e, row) => data.fill(BigInt(manifest.pad_token_id), row * width + e.ids.length,
          (row + 1) * width));
      }
      feeds[name] = new ort.Tensor('int64', data, [texts.length, width]);
    }
    const out = (await session.run(feeds))[manifest.output];
    const dim = manifest.dimension;
    return texts.map((_, row) => Array.from(out.data.slice(row * dim, (row + 1) * dim)));
  }

  /** Embeddings of ``texts`` (arrays of numbers, L2-normalised), batched unless the manifest says otherwise. */
  async function embed(texts, { batchSize = 32 } = {}) {
    const size = rowsSeparately ? 1 : batchSize;
    const out = [];
    for (let i = 0; i < texts.length; i += size) out.push(...await run(texts.slice(i, i + size)));
    return out;
  }

  return { manifest, file, rowsSeparately, embed, run };
}

/** Cosine of two L2-normalised vectors. */
export const dot = (a, b) => a.reduce((sum, v, i) => sum + v * b[i], 0);
