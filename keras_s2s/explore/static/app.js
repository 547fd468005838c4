// The attention explorer's page: reads the form (and /?text=... links), asks /api/translate,
// and draws one card per run. Every string from the server (the text, translations, vocabulary
// tokens, notes) is set with textContent, never parsed as HTML.
"use strict";

const FIELDS = ["beam_width", "alpha", "n_best", "temperature", "seed", "prefix"];
const $ = (id) => document.getElementById(id);

/** A new element; `props` are DOM properties (className, title, ...); strings become text. */
function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) {
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function note(text, error = false) {
  $("notes").append(el("p", { className: error ? "note error" : "note" }, text));
}

function strategy() {
  return document.querySelector("input[name=strategy]:checked").value;
}

function showStrategyFields() {
  $("form").className = strategy();
}

/** The constraints field's phrases: its non-blank lines. */
function phrases(text) {
  return text.split("\n").map((line) => line.trim()).filter((line) => line !== "");
}

/** The translate request of the form: the fields of the chosen strategy, and the guides given
 * (constraints whatever the strategy: the server says when they need beam search). */
function request() {
  const body = { text: $("text").value, strategy: strategy() };
  const fields = { beam: ["beam_width", "alpha", "n_best"], sample: ["temperature", "seed"] };
  for (const name of fields[body.strategy] || []) {
    if ($(name).value !== "") body[name] = Number($(name).value);
  }
  if ($("prefix").value !== "") body.prefix = $("prefix").value;
  const constraints = phrases($("constraints").value);
  if (constraints.length > 0) body.constraints = constraints;
  return body;
}

/** The page's URL for a request, so that a teacher can share the example. */
function linkTo(body) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(body)) {
    if (name === "constraints") query.set(name, value.join("\n"));
    else if (!(name === "strategy" && value === "greedy")) query.set(name, String(value));
  }
  return "/?" + query.toString();
}

function readLink() {
  const query = new URLSearchParams(window.location.search);
  if (query.has("strategy")) {
    const choice = document.querySelector(
      `input[name=strategy][value="${CSS.escape(query.get("strategy"))}"]`);
    if (choice) choice.checked = true;
  }
  for (const name of FIELDS) if (query.has(name)) $(name).value = query.get(name);
  if (query.has("constraints")) $("constraints").value = query.get("constraints");
  $("temperature_value").value = Number($("temperature").value).toFixed(2);
  showStrategyFields();
  if (query.has("text")) {
    $("text").value = query.get("text");
    return true;
  }
  return false;
}

async function translate() {
  const body = request();
  const link = linkTo(body);
  $("share").href = link;
  if (link.length < 8000) history.replaceState(null, "", link);
  $("translate").disabled = true;
  $("results").setAttribute("aria-busy", "true");
  try {
    const response = await fetch("/api/translate", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json();
    clearNotes();
    if (!response.ok) {
      note(answer.error || `the server answered ${response.status}`, true);
      return;
    }
    for (const text of answer.notes) note(text);
    $("results").replaceChildren(...answer.results.map(card));
  } catch (error) {
    clearNotes();
    note(`The explorer's server did not answer: ${error.message}`, true);
  } finally {
    $("translate").disabled = false;
    $("results").removeAttribute("aria-busy");
  }
}

let fontNotes = [];
function clearNotes() {
  $("notes").replaceChildren(...fontNotes.map((text) => el("p", { className: "note" }, text)));
}

function formatNumber(value, digits = 4) {
  return value === null ? "n/a" : value.toFixed(digits);
}

/** The score of one hypothesis: beam search's is the log-probability over the length penalty. */
function scoreLine(result) {
  if (result.length_penalty === null) return `score (log p) ${formatNumber(result.score)}`;
  return `score ${formatNumber(result.score)} = log p ${formatNumber(result.log_probability)}` +
    ` / length penalty ${formatNumber(result.length_penalty, 3)}`;
}

function card(result) {
  const section = el("section", { className: "run" },
    el("h2", {}, result.run, el("span", { className: "arch" }, result.arch)));
  const empty = result.translation === "";
  section.append(
    el("p", { className: empty ? "translation empty" : "translation", dir: "auto" },
      empty ? "(empty output)" : result.translation),
    el("p", { className: "meta" }, `${scoreLine(result)} · ${result.seconds.toFixed(3)} s`));
  for (const text of result.notes) section.append(el("p", { className: "note" }, text));
  if (result.attention === null) {
    section.append(
      el("p", { className: "no-attention" }, `This model has ${result.attention_note}.`));
  } else if (result.target_tokens.length > 0) {
    section.append(attentionView(result));
  }
  if (result.alternatives.length > 0) section.append(...nBest(result));
  return section;
}

function nBest(result) {
  const list = el("ol", { className: "nbest" });
  for (const hypothesis of [result, ...result.alternatives]) {
    list.append(el("li", {},
      el("span", { className: "hypothesis", dir: "auto" }, hypothesis.translation || "(empty)"),
      el("span", { className: "meta" }, scoreLine(hypothesis))));
  }
  return [el("p", { className: "nbest-title" }, "n-best list (beam search), best first"), list];
}

/** The weights `(outputs, sources)` of one layer: one head, or the mean of them (head -1). */
function weightsOf(attention, layer, head) {
  const heads = attention[layer];
  if (head >= 0) return heads[head];
  return heads[0].map((row, i) => row.map((_, j) =>
    heads.reduce((sum, weights) => sum + weights[i][j], 0) / heads.length));
}

function attentionView(result) {
  const attention = result.attention;  // (layers, heads, outputs, sources)
  const layers = attention.length, heads = attention[0].length;
  const view = el("div", { className: "attention" });
  const layerChoice = el("select", { title: "decoder layer" });
  const headChoice = el("select", { title: "attention head" });
  for (let l = 0; l < layers; l++) layerChoice.append(el("option", { value: l }, `layer ${l + 1}`));
  headChoice.append(el("option", { value: -1 }, "average of the heads"));
  for (let h = 0; h < heads; h++) headChoice.append(el("option", { value: h }, `head ${h + 1}`));
  layerChoice.value = String(layers - 1);
  const table = el("table", { className: "heatmap" });
  const draw = () => drawHeatmap(table, result,
    weightsOf(attention, Number(layerChoice.value), Number(headChoice.value)));
  layerChoice.addEventListener("change", draw);
  headChoice.addEventListener("change", draw);
  if (layers > 1 || heads > 1) {
    view.append(el("div", { className: "views" }, "cross-attention: ", layerChoice, headChoice));
  }
  view.append(table);
  draw();
  if (result.alignments !== null) view.append(alignmentsView(result, table));
  return view;
}

/** The word alignment pairs "source-target" of a result's Pharaoh string. */
function alignmentPairs(result) {
  return result.alignments.split(" ").filter((pair) => pair !== "");
}

/** The pair "s-t" whose words hold source token j and output token i, or null. */
function pairOfCell(result, pairs, i, j) {
  const pair = `${result.source_words[j]}-${result.target_words[i]}`;
  return result.source_words[j] !== null && result.target_words[i] !== null &&
    pairs.has(pair) ? pair : null;
}

/** The word alignments under the heat map; hovering a pair lights its framed cells. */
function alignmentsView(result, table) {
  const line = el("p", { className: "alignments",
    title: "each output word linked to the source word it attends to most (the last layer's " +
      "attention averaged over the heads), as translate --alignments prints them" },
  "word alignments (source-target): ");
  for (const pair of alignmentPairs(result)) {
    const span = el("span", { className: "pair" }, pair);
    const cells = () => table.querySelectorAll(`td[data-pair="${pair}"]`);
    span.addEventListener("mouseenter", () => cells().forEach((c) => c.classList.add("pair-lit")));
    span.addEventListener("mouseleave",
      () => cells().forEach((c) => c.classList.remove("pair-lit")));
    line.append(span);
  }
  return line;
}

function argmax(values) {
  return values.reduce((best, value, i) => (value > values[best] ? i : best), 0);
}

function drawHeatmap(table, result, weights) {
  const pairs = new Set(result.alignments === null ? [] : alignmentPairs(result));
  const sources = result.source_tokens.map((token) =>
    el("th", { className: "src", scope: "col", dir: "auto", title: token }, token));
  const outputs = result.target_tokens.map((token) =>
    el("th", { className: "out", scope: "row", dir: "auto", title: token }, token));
  const rows = weights.map((row, i) => {
    const tr = el("tr", {}, outputs[i]);
    row.forEach((weight, j) => {
      const cell = el("td", { title: `${result.target_tokens[i]} → ${result.source_tokens[j]}: ` +
        weight.toFixed(3) });
      cell.style.backgroundColor = `rgba(37, 99, 235, ${weight})`;
      const pair = pairOfCell(result, pairs, i, j);
      if (pair !== null) {
        cell.classList.add("aligned");
        cell.dataset.pair = pair;
        cell.title += ` (aligned: ${pair})`;
      }
      cell.addEventListener("mouseenter", () => highlightOutput(i));
      tr.append(cell);
    });
    return tr;
  });
  const column = (j) => weights.map((row) => row[j]);
  const light = (headers, values) => {
    const best = argmax(values);
    headers.forEach((header, k) => {
      header.classList.add("lit");
      header.classList.toggle("argmax", k === best);
      header.style.backgroundColor = `rgba(240, 160, 0, ${values[k]})`;
    });
  };
  const clear = () => {
    for (const header of [...sources, ...outputs]) {
      header.classList.remove("lit", "argmax");
      header.style.backgroundColor = "";
    }
    for (const tr of rows) tr.classList.remove("active");
  };
  function highlightOutput(i) {
    clear();
    rows[i].classList.add("active");
    light(sources, weights[i]);
    outputs[i].classList.add("argmax");
  }
  outputs.forEach((header, i) => header.addEventListener("mouseenter", () => highlightOutput(i)));
  sources.forEach((header, j) => header.addEventListener("mouseenter", () => {
    clear();
    light(outputs, column(j));
    header.classList.add("argmax");
  }));
  table.onmouseleave = clear;
  table.replaceChildren(el("thead", {}, el("tr", {}, el("th"), ...sources)),
    el("tbody", {}, ...rows));
}

async function start() {
  $("form").addEventListener("submit", (event) => { event.preventDefault(); translate(); });
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); translate(); }
  });
  for (const input of document.querySelectorAll("input[name=strategy]")) {
    input.addEventListener("change", showStrategyFields);
  }
  $("temperature").addEventListener("input", () => {
    $("temperature_value").value = Number($("temperature").value).toFixed(2);
  });
  const linked = readLink();
  try {
    const info = await (await fetch("/api/runs")).json();
    if (info.hangul_font === null) {
      fontNotes = ["No font with Hangul glyphs was found on this machine, so Korean may show " +
        "as boxes: install one (e.g. apt-get install fonts-nanum) and restart the explorer."];
    } else {
      const family = info.hangul_font.replace(/["\\]/g, "");
      document.body.style.fontFamily = `${getComputedStyle(document.body).fontFamily}, "${family}"`;
    }
    document.title = `attention explorer: ${info.runs.map((run) => run.name).join(", ")}`;
  } catch (error) {
    fontNotes = [`The explorer's server did not answer: ${error.message}`];
  }
  clearNotes();
  if (linked) translate();
}

start();
