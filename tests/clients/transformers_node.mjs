// transformers.js in Node, local files only: load an edgedistill bundle as shipped and embed sentences.
// usage: node transformers_node.mjs BUNDLE_DIR SENTENCES_JSON
//   -> JSON {fp32: {alone, batched, batched_raw}, q8: {...}, pipeline: {fp32: {ok, alone, batched_raw}, q8}, fits}
// TRANSFORMERS_JS: file URL of @huggingface/transformers (examples/web/node_modules; ESM ignores NODE_PATH).
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [bundleDir, sentencesFile] = process.argv.slice(2);
const { AutoModel, AutoTokenizer, Tensor, env, pipeline } = await import(process.env.TRANSFORMERS_JS);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(bundleDir)) + path.sep;
const name = path.basename(path.resolve(bundleDir));
const sentences = JSON.parse(readFileSync(sentencesFile, 'utf8'));
const tokenizer = await AutoTokenizer.from_pretrained(name);
const result = {};

// transformers.js truncates after adding special tokens, which drops the closing [SEP] / </s> of an over-long
// input; the Rust tokenizers (and so our runtime) truncate the text and keep it. Tokenize, then truncate the
// same way (docs/clients.md), and pad: single sentences, so token types are all 0.
function tokenize(texts, inputs) {
  const max = tokenizer.model_max_length;
  const ids = texts.map((t) => {
    const all = tokenizer.encode(t);
    return all.length > max ? [...all.slice(0, max - 1), all.at(-1)] : all;
  });
  const width = Math.max(...ids.map((r) => r.length));
  const pad = BigInt(tokenizer.pad_token_id ?? 0);
  const make = (fill) => new Tensor('int64', BigInt64Array.from(ids.flatMap((r) => fill(r, width))), [ids.length, width]);
  const columns = {
    input_ids: make((r, w) => [...r.map(BigInt), ...Array(w - r.length).fill(pad)]),
    attention_mask: make((r, w) => [...r.map(() => 1n), ...Array(w - r.length).fill(0n)]),
    token_type_ids: make((r, w) => Array(w).fill(0n)),
  };
  return Object.fromEntries(inputs.map((n) => [n, columns[n]]));
}

// What the tokenizer's own truncation gives for each sentence (the test checks it differs only when over-long).
result.own_truncation_lengths = sentences.map((t) => tokenizer(t, { truncation: true }).input_ids.dims[1]);

for (const dtype of ['fp32', 'q8']) {
  const model = await AutoModel.from_pretrained(name, { dtype });
  const contract = model.config.edgedistill;  // written by edgedistill from its manifest
  const embed = async (texts) => (await model(tokenize(texts, contract.inputs)))[contract.output].tolist();
  const alone = [];
  for (const s of sentences) alone.push((await embed([s]))[0]);
  const batchedRaw = await embed(sentences);
  // A dynamically quantized graph is batch-dependent: the bundle asks for one sentence per run.
  const rows = dtype === 'q8' && contract.run_rows_separately;
  result[dtype] = { alone, batched_raw: batchedRaw, batched: rows ? alone : batchedRaw, rows_separately: rows };
  await model.dispose();
}

// The feature-extraction pipeline pools a per-token output itself (last_hidden_state / logits / token_embeddings).
// Where the bundle's graph has token_embeddings (config.edgedistill.token_embeddings), mean pooling and
// normalisation reproduce the sentence embedding; elsewhere the pipeline is expected to refuse. The pipeline
// tokenizes with the tokenizer's own truncation, so only sentences that fit are compared (result.fits).
result.fits = result.own_truncation_lengths.map((n) => n < tokenizer.model_max_length);
const fitting = sentences.filter((_, i) => result.fits[i]);
result.pipeline = {};
for (const dtype of ['fp32', 'q8']) {
  try {
    const extractor = await pipeline('feature-extraction', name, { dtype });
    const options = { pooling: 'mean', normalize: true };
    const alone = [];
    for (const s of fitting) alone.push((await extractor([s], options)).tolist()[0]);
    result.pipeline[dtype] = { ok: true, alone, batched_raw: (await extractor(fitting, options)).tolist() };
    await extractor.dispose();
  } catch (e) {
    result.pipeline[dtype] = { ok: false, error: String(e.message ?? e).slice(0, 300) };
  }
}
process.stdout.write(JSON.stringify(result));
