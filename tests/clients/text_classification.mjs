// transformers.js in Node, local files only: a sequence-classification bundle (classifier or cross-encoder
// reranker) as shipped.
// usage: node text_classification.mjs BUNDLE_DIR INPUTS_JSON   (INPUTS_JSON: {texts: [...], pairs: [[a, b], ...]})
//   -> JSON {fp32: {pipeline, pipeline_alone, logits, pair_logits}, q8: {...}, config}
// TRANSFORMERS_JS: file URL of @huggingface/transformers (examples/web/node_modules; ESM ignores NODE_PATH).
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [bundleDir, inputsFile] = process.argv.slice(2);
const { AutoModelForSequenceClassification, AutoTokenizer, env, pipeline } = await import(process.env.TRANSFORMERS_JS);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = path.dirname(path.resolve(bundleDir)) + path.sep;
const name = path.basename(path.resolve(bundleDir));
const { texts, pairs } = JSON.parse(readFileSync(inputsFile, 'utf8'));
const result = {};

for (const dtype of ['fp32', 'q8']) {
  // The pipeline: softmax over the labels (sigmoid for multi_label_classification), every label's score.
  const classifier = await pipeline('text-classification', name, { dtype });
  const batched = await classifier(texts, { top_k: null });
  const alone = [];
  for (const t of texts) alone.push((await classifier([t], { top_k: null }))[0]);
  await classifier.dispose();
  // The model itself: raw logits, for single texts and for (query, document) pairs as a cross-encoder scores them.
  const tokenizer = await AutoTokenizer.from_pretrained(name);
  const model = await AutoModelForSequenceClassification.from_pretrained(name, { dtype });
  const logits = (await model(tokenizer(texts, { padding: true, truncation: true }))).logits.tolist();
  const pairLogits = (await model(tokenizer(pairs.map((p) => p[0]), {
    text_pair: pairs.map((p) => p[1]), padding: true, truncation: true,
  }))).logits.tolist();
  result[dtype] = { pipeline: batched, pipeline_alone: alone, logits, pair_logits: pairLogits };
  result.config = { id2label: model.config.id2label, problem_type: model.config.problem_type };
  await model.dispose();
}
process.stdout.write(JSON.stringify(result));
