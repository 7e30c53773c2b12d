"""A self-contained HTML report: headline numbers, a quality-versus-latency chart, retention bars, tables.

No external URLs: styles and the chart script are inline; tables and bars are static HTML (readable without
JavaScript); the script draws the chart as inline SVG from JSON embedded in the page, then marks the page
``data-rendered="1"`` (errors are counted in ``data-errors``) so a headless browser can check it.
"""

from __future__ import annotations

import html
import json
from typing import Any

from edgedistill.tasks import get_task

COLOURS = ["#2563eb", "#dc2626", "#059669", "#7c3aed"]

CSS = """
:root { --fg:#111827; --muted:#6b7280; --line:#e5e7eb; --bg:#ffffff; --soft:#f9fafb; --accent:#2563eb; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg);
       margin: 0 auto; max-width: 1400px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; } h3 { font-size: 15px; margin: 18px 0 6px; }
.muted { color: var(--muted); } .small { font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 10px; margin: 16px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; background: var(--soft); }
.card .v { font-size: 22px; font-weight: 650; } .card .k { color: var(--muted); font-size: 12px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 5px 8px; text-align: right; white-space: nowrap; }
th { font-weight: 600; background: var(--soft); } td:first-child, th:first-child, td.l, th.l { text-align: left; }
.scroll { overflow-x: auto; }
.q { display: flex; align-items: center; justify-content: flex-end; gap: 8px; }
.bar { position: relative; height: 18px; width: 72px; background: #eef2ff; border-radius: 3px; text-align: left; }
.bar > span { position: absolute; left: 0; top: 0; bottom: 0; background: #93c5fd; border-radius: 3px; }
.bar > b { position: relative; font-weight: 500; font-size: 12px; padding: 0 4px; }
.warn { border-left: 4px solid #f59e0b; background: #fffbeb; padding: 8px 12px; margin: 8px 0; }
.controls button { font: inherit; border: 1px solid var(--line); background: var(--bg); border-radius: 6px;
                   padding: 4px 10px; margin: 0 4px 4px 0; cursor: pointer; }
.controls button.on { background: var(--accent); color: #fff; border-color: var(--accent); }
#chart svg { width: 100%; height: auto; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
#chart text { font: 12px system-ui, sans-serif; fill: var(--fg); }
#errors { color: #b91c1c; white-space: pre-wrap; }
#legend span { margin-right: 16px; } #legend i { display: inline-block; width: 10px; height: 10px; border-radius: 50%;
  margin-right: 6px; }
pre.md { background: var(--soft); padding: 10px; overflow-x: auto; font-size: 12px; }
"""

# The chart: x = batch-1 p50 latency (log scale, whisker to p90), y = the chosen quality metric.
SCRIPT = r"""
(function () {
  var errors = [];
  window.onerror = function (msg, src, line, col) {
    errors.push(msg + ' (' + line + ':' + col + ')');
    document.body.dataset.errors = String(errors.length);
    var el = document.getElementById('errors'); if (el) el.textContent = errors.join('\n');
  };
  document.body.dataset.errors = '0';
  var data = JSON.parse(document.getElementById('report-data').textContent);
  var metric = data.metrics[0].key;
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) {
    return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
  function fmt(v, d) { return v == null ? '–' : Number(v).toFixed(d); }
  function draw() {
    var W = 900, H = 440, L = 64, R = 24, T = 20, B = 52;
    var pts = [];
    data.series.forEach(function (s, si) { s.points.forEach(function (p) {
      if (p.x != null && p.y[metric] != null) pts.push({s: si, p: p}); }); });
    var svg = ['<svg viewBox="0 0 ' + W + ' ' + H + '" role="img" aria-label="quality versus latency">'];
    if (!pts.length) {
      svg.push('<text x="' + W / 2 + '" y="' + H / 2 + '" text-anchor="middle">no artifact has both ' + esc(metric) +
               ' and a latency</text></svg>');
      document.getElementById('chart').innerHTML = svg.join('');
      return 0;
    }
    var xs = [], ys = [];
    pts.forEach(function (q) { xs.push(q.p.x); if (q.p.x90 != null) xs.push(q.p.x90); ys.push(q.p.y[metric]); });
    data.series.forEach(function (s) { if (s.teacher[metric] != null) ys.push(s.teacher[metric]); });
    var lx0 = Math.floor(Math.log10(Math.min.apply(null, xs)) * 4) / 4, lx1 = Math.ceil(Math.log10(Math.max.apply(null, xs)) * 4) / 4;
    if (lx1 - lx0 < 0.5) { lx0 -= 0.25; lx1 += 0.25; }
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys), pad = Math.max((y1 - y0) * 0.12, Math.abs(y1) * 0.01, 1e-3);
    y0 -= pad; y1 += pad;
    function X(v) { return L + (Math.log10(v) - lx0) / (lx1 - lx0) * (W - L - R); }
    function Y(v) { return T + (1 - (v - y0) / (y1 - y0)) * (H - T - B); }
    svg.push('<rect x="' + L + '" y="' + T + '" width="' + (W - L - R) + '" height="' + (H - T - B) + '" fill="#fcfcfd" stroke="#e5e7eb"/>');
    for (var e = Math.floor(lx0); e <= Math.ceil(lx1); e++) {
      [1, 2, 5].forEach(function (m) {
        var v = m * Math.pow(10, e), lv = Math.log10(v);
        if (lv < lx0 - 1e-9 || lv > lx1 + 1e-9) return;
        var x = X(v);
        svg.push('<line x1="' + x + '" x2="' + x + '" y1="' + T + '" y2="' + (H - B) + '" stroke="#eef0f3"/>');
        svg.push('<text x="' + x + '" y="' + (H - B + 16) + '" text-anchor="middle">' + (v >= 1 ? v : v.toPrecision(1)) + '</text>');
      });
    }
    for (var i = 0; i <= 5; i++) {
      var v = y0 + (y1 - y0) * i / 5, y = Y(v);
      svg.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + y + '" y2="' + y + '" stroke="#eef0f3"/>');
      svg.push('<text x="' + (L - 6) + '" y="' + (y + 4) + '" text-anchor="end">' + fmt(v, Math.abs(y1 - y0) < 2 ? 3 : 1) + '</text>');
    }
    svg.push('<text x="' + ((L + W - R) / 2) + '" y="' + (H - 12) + '" text-anchor="middle">batch-1 latency, p50 ms (log scale; whisker to p90) — lower is faster</text>');
    svg.push('<text transform="translate(16 ' + ((T + H - B) / 2) + ') rotate(-90)" text-anchor="middle">' + esc(data.metricNames[metric]) + ' — higher is better</text>');
    data.series.forEach(function (s, si) {
      var c = s.colour;
      if (s.teacher[metric] != null) {
        var ty = Y(s.teacher[metric]);
        svg.push('<line x1="' + L + '" x2="' + (W - R) + '" y1="' + ty + '" y2="' + ty + '" stroke="' + c + '" stroke-dasharray="5 4" opacity="0.5"/>');
      }
      var chain = s.points.filter(function (p) { return p.x != null && p.y[metric] != null; });
      if (chain.length > 1) svg.push('<polyline fill="none" stroke="' + c + '" stroke-opacity="0.35" stroke-width="2" points="' +
        chain.map(function (p) { return X(p.x) + ',' + Y(p.y[metric]); }).join(' ') + '"/>');
      chain.forEach(function (p, k) {
        var x = X(p.x), y = Y(p.y[metric]);
        if (p.x90 != null) svg.push('<line x1="' + x + '" x2="' + X(p.x90) + '" y1="' + y + '" y2="' + y + '" stroke="' + c + '" stroke-width="2" opacity="0.6"/>');
        var ret = p.retention[metric];
        svg.push('<circle class="pt" cx="' + x + '" cy="' + y + '" r="6" fill="' + c + '" stroke="#fff" stroke-width="1.5"><title>' +
          esc((data.series.length > 1 ? s.label + ': ' : '') + p.label) + '\n' + esc(data.metricNames[metric]) + ' ' + fmt(p.y[metric], 3) +
          (ret != null ? ' (' + fmt(ret, 1) + '% of teacher)' : '') + '\np50 ' + fmt(p.x, 2) + ' ms, p90 ' + fmt(p.x90, 2) + ' ms</title></circle>');
        var above = (k + si) % 2 === 0, right = x > W - R - 170;
        svg.push('<text x="' + (right ? x - 9 : x + 9) + '" y="' + (y + (above ? -9 : 17)) + '" text-anchor="' +
          (right ? 'end' : 'start') + '" fill="' + c + '">' + esc(p.short) +
          (ret != null && p.short !== 'teacher' ? ' · ' + fmt(ret, 1) + '%' : '') + '</text>');
      });
    });
    svg.push('</svg>');
    document.getElementById('chart').innerHTML = svg.join('');
    return pts.length;
  }
  if (data.series.length > 1) document.getElementById('legend').innerHTML = data.series.map(function (s) {
    return '<span><i style="background:' + s.colour + '"></i>' + esc(s.label) + '</span>'; }).join('');
  var controls = document.getElementById('metric-controls');
  data.metrics.forEach(function (m) {
    var b = document.createElement('button');
    b.textContent = m.name; b.dataset.metric = m.key;
    b.onclick = function () { metric = m.key; update(); };
    controls.appendChild(b);
  });
  function update() {
    Array.prototype.forEach.call(controls.children, function (b) { b.className = b.dataset.metric === metric ? 'on' : ''; });
    document.body.dataset.points = String(draw());
  }
  update();
  document.body.dataset.rendered = '1';
})();
"""


def rss_cell(d: dict[str, Any]) -> str:
    """Memory a process gains by loading and running the model: at batch 1 / at the largest batch."""
    if d.get("model_rss_mb") is None:
        return "–"
    b1 = d.get("model_rss_batch1_mb")
    return f"{b1:.0f} / {d['model_rss_mb']:.0f}" if b1 is not None else f"{d['model_rss_mb']:.0f}"


def quality(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, name) of a report's quality metrics (its task's; reports from before tasks: the embedding ones)."""
    columns = report.get("columns") or [{"key": m.key, "label": m.label} for m in get_task("embedding").metrics]
    return [(c["key"], c["label"]) for c in columns]


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def table(header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """An HTML table from already-escaped cells; the first ``left`` columns are left-aligned."""
    th = "".join(f'<th class="{"l" if i < left else ""}">{h}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i < left else ""}">{c}</td>' for i, c in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<div class="scroll"><table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


def bar(pct: float | None) -> str:
    if pct is None:
        return "–"
    width = max(0.0, min(pct, 100.0))
    return f'<div class="bar"><span style="width:{width:.1f}%"></span><b>{pct:.1f}%</b></div>'


def _series(label: str, report: dict[str, Any], colour: str) -> dict[str, Any]:
    points = []
    for row in report["rows"]:
        if row.get("passthrough") or row.get("before_training"):  # the untrained student has no latency
            continue
        points.append({"label": row.get("label") or row["stage"], "short": row.get("short") or row["stage"],
                       "x": row.get("latency_ms_p50"), "x90": row.get("latency_ms_p90"),
                       "y": {k: row.get(k) for k, _ in quality(report)}, "retention": row.get("retention", {})})
    return {"label": label, "colour": colour, "points": points,
            "teacher": {k: report["teacher"].get(k) for k, _ in quality(report)}}


def _cards(report: dict[str, Any]) -> str:
    final = report.get("final") or {}
    if not final:
        return ""
    ret = final.get("retention", {})
    cards = [("STS-b retention", fmt(ret.get("sts_spearman"), 1, "%")),
             ("nDCG@10 retention", fmt(ret.get("retrieval_ndcg10"), 1, "%")),
             ("batch-1 p50", fmt(final.get("latency_ms_p50"), 2, " ms")),
             ("speed-up vs teacher", fmt(final.get("speedup"), 1, "×")),
             ("file size", fmt(final.get("size_mb"), 1, " MB")),
             ("cold start", fmt(final.get("cold_start_ms"), 0, " ms")),
             ("model memory, batch 1", fmt(final.get("model_rss_batch1_mb"), 0, " MB"))]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="v">{esc(v)}</div><div class="k">{esc(k)}</div></div>'
        for k, v in cards if v != "–") + "</div>"


def _retention_table(report: dict[str, Any]) -> str:
    digits = {c["key"]: c.get("digits", 2) for c in report.get("columns") or []}
    columns = [(key, name, digits.get(key, 4 if key == "teacher_cosine_mean" else 2)) for key, name in quality(report)]
    rows = []
    for row in report["rows"]:
        if row.get("passthrough"):
            continue
        cells = [esc(row["stage"]), esc(row.get("model") or "")]
        for key, _, digits in columns:
            value = fmt(row.get(key), digits)
            cells.append(f'<div class="q"><span>{value}</span>{bar(row.get("retention", {}).get(key))}</div>')
        rows.append(cells)
    header = ["stage", "model"] + [f"{esc(name)} (retention)" for _, name, _ in columns]
    return table(header, rows, left=2)


def _speed_table(report: dict[str, Any]) -> str:
    rows = []
    for row in report["rows"]:
        if row.get("passthrough") or row.get("before_training"):
            continue
        rows.append([esc(row["stage"]), esc(row.get("model") or ""), fmt(row.get("latency_ms_p50")),
                     fmt(row.get("latency_ms_p90")), fmt(row.get("latency_ms_p99")), fmt(row.get("spread_pct"), 1),
                     fmt(row.get("other_cores"), 2), fmt(row.get("speedup"), 1, "×"), fmt(row.get("throughput_per_s"), 0),
                     fmt(row.get("cold_start_ms"), 0), esc(rss_cell(row)), fmt(row.get("size_mb"), 1),
                     fmt(row.get("params_m"), 1)])
    return table(["stage", "model", "p50 ms", "p90 ms", "p99 ms", "spread %", "others' CPU", "speed-up", "sentences/s",
                  "cold start ms", "model RSS MB (batch 1 / largest)", "size MB", "params M"], rows, left=2)


def _targets_table(report: dict[str, Any]) -> str:
    rows = []
    for t in report.get("targets", []):
        h = t.get("host", {})
        rows.append([esc(t["target"]), esc(t.get("source", "")), esc(h.get("cpu", "")), esc(h.get("machine", "")),
                     esc(h.get("cores", "")), esc(" ".join(h.get("isa", [])) or "–"), esc(h.get("onnxruntime", "")),
                     fmt(t.get("latency_ms_p50")), fmt(t.get("latency_ms_p90")), fmt(t.get("latency_ms_p99")),
                     fmt(t.get("spread_pct"), 1), fmt(t.get("throughput_per_s"), 0), fmt(t.get("cold_start_ms"), 0),
                     esc(rss_cell(t))])
    if not rows:
        return ""
    return "<h2>Targets</h2>" + table(["target", "source", "CPU", "arch", "cores", "ISA", "onnxruntime", "p50 ms",
                                       "p90 ms", "p99 ms", "spread %", "sentences/s", "cold start ms",
                                       "model RSS MB (batch 1 / largest)"], rows, left=3)


def render(runs: list[tuple[str, dict[str, Any]]], title: str, markdown: str = "") -> str:
    """The HTML page for one run, or for several runs compared side by side."""
    series = [_series(label, rep, COLOURS[i % len(COLOURS)]) for i, (label, rep) in enumerate(runs)]
    metrics = list(dict.fromkeys(m for _, rep in runs for m in quality(rep)))
    available = [(k, n) for k, n in metrics if any(p["y"].get(k) is not None for s in series for p in s["points"])]
    data = {"series": series, "metrics": [{"key": k, "name": n} for k, n in available or metrics[:1]],
            "metricNames": dict(metrics)}
    payload = json.dumps(data, default=str).replace("</", "<\\/")
    parts = [f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{esc(title)}</title>",
             '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<style>{CSS}</style></head>",
             "<body>", f"<h1>{esc(title)}</h1>"]
    for label, rep in runs:
        prefix = f"<b>{esc(label)}</b>: " if len(runs) > 1 else ""
        if rep.get("summary"):
            parts.append(f'<p>{prefix}{esc(rep["summary"])}</p>')
        for warning in rep.get("warnings", []):
            parts.append(f'<div class="warn">{prefix}{esc(warning)}</div>')
        if len(runs) == 1:
            parts.append(_cards(rep))
    parts += ["<h2>Quality versus latency</h2>",
              ('<p class="muted small">Each point is one artifact of the chain (teacher, student fp32, ONNX, '
               "INT8), its batch-1 latency measured side by side on the same host and sentences. Dashed line: "
               "the teacher's score. Choose the quality metric:</p>"),
              '<div class="controls" id="metric-controls"></div><div id="legend"></div><div id="chart"></div>',
              "<noscript><p>The chart needs JavaScript; the tables below hold every number.</p></noscript>"]
    for label, rep in runs:
        suffix = f" — {esc(label)}" if len(runs) > 1 else ""
        parts += [f"<h2>Retention per stage{suffix}</h2>", _retention_table(rep),
                  f"<h2>Speed per stage{suffix}</h2>", f'<p class="muted small">{esc(rep.get("speed_note", ""))}</p>',
                  _speed_table(rep), _targets_table(rep)]
        if rep.get("host_line"):
            parts.append(f'<p class="muted small">Host: {esc(rep["host_line"])}</p>')
    if markdown:
        parts.append("<details><summary>Markdown report</summary>"
                     f'<pre class="md">{esc(markdown)}</pre></details>')
    parts += ['<pre id="errors"></pre>',
              f'<script type="application/json" id="report-data">{payload}</script>',
              f"<script>{SCRIPT}</script></body></html>"]
    return "\n".join(parts)
