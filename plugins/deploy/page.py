"""The web page of ``mmcore serve``: one form generated from the model's slots (``/metadata``).

A file picker per image / audio slot (several files for a video's frames), a text box per text
slot, a number or category field per table column -- any may be left empty (a missing modality).
A ``mmcore fit`` run's fields are labelled and named by the user's own columns (``/metadata``'s
``columns``), exactly as the training table wrote them.
The form posts to ``/predict`` as multipart/form-data and shows the predicted class, the
probabilities as bars, and which modalities the prediction used; the answer's ``warnings`` (a category
never seen in training, read as unknown) under the prediction, and for a record without any input
(``"prediction": null``) ``no prediction: <the answer's "missing" note>``. Plain HTML, CSS and a few lines of
JavaScript; every value taken from the model is HTML-escaped.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

#: A colour per modality for the slot's tag (plain CSS: no icon font or emoji needed).
COLOURS = {"image": "#2f7d5b", "audio": "#8a4fb8", "video": "#b5641e", "text": "#3056d3", "tabular": "#6b7280"}

STYLE = """
:root { --ink: #1d2330; --muted: #5b6478; --line: #d9deea; --accent: #3056d3; --bg: #f5f7fb; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--bg); }
header { padding: 18px 28px; background: #fff; border-bottom: 1px solid var(--line); }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: var(--muted); font-size: 13px; }
main { display: grid; grid-template-columns: minmax(320px, 1fr) minmax(320px, 1fr); gap: 22px; padding: 22px 28px; max-width: 1100px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 20px; }
h2 { margin: 0 0 12px; font-size: 15px; text-transform: uppercase; letter-spacing: .04em; color: var(--muted); }
fieldset { border: 0; padding: 0; margin: 0 0 16px; }
legend { font-weight: 600; margin-bottom: 6px; }
legend .tag { font-size: 11px; font-weight: 600; color: #fff; border-radius: 4px; padding: 1px 6px; margin-left: 6px;
  text-transform: uppercase; letter-spacing: .04em; vertical-align: 1px; }
input[type=file], input[type=text], input[type=number], textarea { width: 100%; font: inherit; padding: 7px 9px;
  border: 1px solid var(--line); border-radius: 7px; background: #fbfcfe; }
textarea { min-height: 64px; resize: vertical; }
.columns { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr)); gap: 8px; }
.columns label { font-size: 13px; color: var(--muted); }
button { font: inherit; font-weight: 600; color: #fff; background: var(--accent); border: 0; border-radius: 7px;
  padding: 9px 18px; cursor: pointer; }
button:disabled { opacity: .6; cursor: wait; }
#result .class { font-size: 34px; font-weight: 700; margin: 4px 0 2px; }
#result .used { color: var(--muted); margin-bottom: 14px; }
.bar { display: grid; grid-template-columns: 90px 1fr 62px; align-items: center; gap: 8px; margin: 3px 0; font-size: 13px; }
.bar .track { background: #edf0f7; border-radius: 4px; height: 14px; overflow: hidden; }
.bar .fill { background: #9fb2ef; height: 100%; }
.bar.top .fill { background: var(--accent); }
.bar .p { text-align: right; font-variant-numeric: tabular-nums; }
.none { font-size: 18px; font-weight: 600; color: var(--muted); background: #f2f4f8; border: 1px dashed var(--line);
  border-radius: 7px; padding: 10px 12px; margin: 4px 0 14px; }
.warnings { color: #7a4b00; background: #fff8e6; border: 1px solid #f5d48a; border-radius: 7px; padding: 8px 12px;
  margin: 0 0 14px; font-size: 13px; }
.warnings ul { margin: 4px 0 0; padding-left: 18px; }
.error { color: #b42318; background: #fef3f2; border: 1px solid #fecdca; border-radius: 7px; padding: 10px 12px; }
.hint { color: var(--muted); font-size: 13px; }
"""

SCRIPT = """
const form = document.getElementById("predict-form");
const out = document.getElementById("result");
function esc(s) { const d = document.createElement("div"); d.textContent = String(s); return d.innerHTML; }
form.addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = form.querySelector("button"); button.disabled = true;
  out.innerHTML = '<p class="hint">Predicting…</p>';
  try {
    const body = new FormData(form);
    // A number field's value is always "1.234" (a dot, whatever the browser's language), but a fit run reads a
    // form's text cells as its training table was read -- decimal commas for a column read so, where "1.234" is
    // 1234. The numbers go as what they are: JSON numbers in the slot's JSON field (always a number).
    const numbers = {};
    for (const input of form.querySelectorAll("input[type=number][data-slot]")) {
      if (input.value === "") continue;  // left empty: a missing cell
      body.delete(input.name);
      (numbers[input.dataset.slot] = numbers[input.dataset.slot] || {})[input.dataset.column] = input.valueAsNumber;
    }
    for (const [slot, cells] of Object.entries(numbers)) body.append(slot, JSON.stringify(cells));
    const response = await fetch("predict", { method: "POST", body: body });
    const data = await response.json();
    if (!response.ok) {
      out.innerHTML = '<div class="error" id="error">' + (data.field ? "<b>" + esc(data.field) + "</b>: " : "") + esc(data.error) + "</div>";
      return;
    }
    const p = data.predictions[0];
    let html = "";
    if (p.prediction === null || p.prediction === undefined) {
      // a record with no input at all: the answer's note says why, never a blank or "null"
      html += '<div class="none" id="no-prediction">no prediction: ' + esc(p.missing || "the record gave the model no input") + "</div>";
    } else {
      html += '<div class="class" id="predicted-class">' + esc(Array.isArray(p.prediction) ? p.prediction.join(", ") : p.prediction) + "</div>";
      const used = p.modalities || [];
      html += '<div class="used" id="modalities">from ' + (used.length ? used.map(esc).join(", ") : "nothing") + "</div>";
      if (p.missing) { html += '<div class="hint" id="missing-note">read as missing: ' + esc(p.missing) + "</div>"; }
    }
    if (Array.isArray(p.warnings) && p.warnings.length) {
      // e.g. a category never seen in training: predicted, that value read as unknown -- the person is told
      html += '<div class="warnings" id="warnings"><b>' + (p.warnings.length === 1 ? "Warning" : p.warnings.length + " warnings") +
              "</b><ul>" + p.warnings.map((w) => "<li>" + esc(w) + "</li>").join("") + "</ul></div>";
    }
    if (p.probabilities && !Array.isArray(p.probabilities)) {
      const entries = Object.entries(p.probabilities).sort((a, b) => b[1] - a[1]);
      for (const [name, value] of entries) {
        const top = name === String(p.prediction) ? " top" : "";
        html += '<div class="bar' + top + '"><span>' + esc(name) + '</span><div class="track"><div class="fill" style="width:' +
                (100 * value).toFixed(1) + '%"></div></div><span class="p">' + (100 * value).toFixed(1) + "%</span></div>";
      }
    }
    out.innerHTML = html;
  } catch (err) {
    out.innerHTML = '<div class="error" id="error">' + esc(err) + "</div>";
  } finally { button.disabled = false; }
});
"""


def _field(slot: Mapping[str, Any], by_column: bool = False) -> str:
    """One slot's fieldset. ``by_column`` (a fit run): fields named by the user's own columns, exactly as
    the training table wrote them (the slot's name is only an alias the server also takes)."""
    modality, kind = slot["modality"], slot["input"]
    name = slot.get("column") or slot["name"]
    e = html.escape
    colour = COLOURS.get(modality, "#6b7280")
    legend = f'<legend>{e(name)} <span class="tag" style="background:{colour}">{e(modality)}</span></legend>'
    cell = (lambda c: c) if by_column else (lambda c: f"{name}.{c}")
    if kind == "file":
        body = f'<input type="file" id="{e(name)}" name="{e(name)}" accept="{e(slot.get("accept", ""))}">'
    elif kind == "frames":
        body = (f'<input type="file" id="{e(name)}" name="{e(name)}" accept="image/*" multiple>'
                '<div class="hint">one image per frame, in order</div>')
    elif kind == "text":
        body = f'<textarea id="{e(name)}" name="{e(name)}" placeholder="type text, or leave empty"></textarea>'
    else:
        cells = []
        # a fit run's number goes to the server as a JSON number of the slot's field (SCRIPT: a dot-decimal
        # field value is no table cell of a decimal-comma column)
        sent = (lambda c: f' data-slot="{e(slot["name"])}" data-column="{e(c)}"') if by_column else (lambda c: "")
        for c in slot.get("numeric", []):
            cells.append(f'<label>{e(c)}<input type="number" step="any" id="{e(cell(c))}" name="{e(cell(c))}"{sent(c)}></label>')
        for c in slot.get("categorical", []):
            options = "".join(f'<option value="{e(str(v))}">' for v in slot.get("categories", {}).get(c, [])[:200])
            cells.append(f'<label>{e(c)}<input type="text" list="{e(cell(c))}.values" id="{e(cell(c))}" '
                         f'name="{e(cell(c))}"><datalist id="{e(cell(c))}.values">{options}</datalist></label>')
        for d in slot.get("dates", []):  # a date/time column: text in the format fit read it with (said as a hint)
            c, hint = d["column"], d.get("hint", "")
            cells.append(f'<label>{e(c)}<input type="text" class="date" id="{e(cell(c))}" name="{e(cell(c))}" '
                         f'placeholder="{e(hint.split("e.g. ")[-1])}" title="{e(hint)}"><span class="hint">{e(hint)}</span></label>')
        body = f'<div class="columns">{"".join(cells)}</div>'
    return f"<fieldset>{legend}{body}</fieldset>"


def render_page(metadata: Mapping[str, Any]) -> str:
    """The page's HTML for a model described by ``metadata`` (what ``GET /metadata`` returns)."""
    e = html.escape
    slots = metadata["slots"]
    head = metadata.get("head") or {}
    model = metadata.get("model") or {}
    if model.get("kind") == "export":
        source = f"export {model.get('graph', '')} ({model.get('format', '')}) of {model.get('path', '')}"
    else:
        source = f"run {model.get('path', '')} ({model.get('checkpoint', 'best')} checkpoint)"
    classes = head.get("classes")
    subtitle = (f"{len(slots)} modalities ({', '.join(s.get('column') or s['name'] for s in slots)}) · "
                + (f"{len(classes)} classes · " if classes else "") + source)
    fields = "".join(_field(s, bool(metadata.get("columns"))) for s in slots)
    embedded = json.dumps(metadata).replace("</", "<\\/")  # no "</script>" can end the element early
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>mmcore · {e(str(head.get("name") or "model"))}</title><style>{STYLE}</style></head>
<body>
<header><h1>mmcore model</h1><p>{e(subtitle)} · <a href="docs">API docs</a> · <a href="metadata">metadata</a></p></header>
<main>
<section><h2>Inputs</h2>
<form id="predict-form" enctype="multipart/form-data">{fields}
<p class="hint">Any field may be left empty: the model predicts from the modalities it is given.</p>
<button type="submit" id="submit">Predict</button></form></section>
<section><h2>Prediction</h2><div id="result"><p class="hint">Fill in some inputs and press Predict.</p></div></section>
</main>
<script>{SCRIPT}</script>
<script type="application/json" id="metadata">{embedded}</script>
</body></html>"""
