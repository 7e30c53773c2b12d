// Drive the demo page (examples/web/index.html) in headless Chromium and embed sentences in it, per precision.
// usage: node browser.mjs PAGE_URL SENTENCES_JSON  -> JSON {fp32: {alone, batched, batched_raw, ranked, status}, int8: ...}
// PLAYWRIGHT_CORE: file URL of playwright-core's index.mjs; CHROMIUM: the browser binary.
import { readFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const [pageUrl, sentencesFile] = process.argv.slice(2);
const { chromium } = await import(process.env.PLAYWRIGHT_CORE);
const sentences = JSON.parse(readFileSync(sentencesFile, 'utf8'));
const profile = mkdtempSync(path.join(os.tmpdir(), 'edgedistill-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM, headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync'],
});
const result = {};
try {
  for (const precision of ['fp32', 'int8']) {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(`${pageUrl}?precision=${precision}`);
    await page.waitForFunction(() => document.body.dataset.ready || document.body.dataset.error, null,
                               { timeout: 60000 });
    const error = await page.evaluate(() => document.body.dataset.error);
    if (error) throw new Error(`page failed: ${error}; ${errors.join('; ')}`);
    result[precision] = await page.evaluate(async (texts) => {
      const alone = [];
      for (const t of texts) alone.push((await window.demo.run([t]))[0]);
      return { alone, batched_raw: await window.demo.run(texts), batched: await window.demo.embed(texts),
               rows_separately: window.demo.rowsSeparately,
               ranked: [...document.querySelectorAll('#results li')].map((li) => li.textContent),
               status: document.getElementById('status').textContent };
    }, sentences);
    await page.close();
  }
  process.stdout.write(JSON.stringify(result));
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
