// The playground: POST /ask with "stream": true, read as server-sent events (citations, token,
// done, error) through fetch and a ReadableStream. Server text only ever reaches the page as
// text nodes (textContent, createTextNode): never as HTML. It keeps a conversation: each
// follow-up sends the earlier questions and answers as "history"; citation numbers continue
// across turns, so the cards of every turn stay listed by number; "New chat" starts over.
import { MARK, citedSpans, markNumbers } from "./citing.js";

const KEY_STORAGE = "rag-playground.api-key";
const $ = (id) => document.getElementById(id);
let citations = []; // the current answer's
let answer = "";
let turns = []; // the conversation so far: {question, answer}, oldest first
const cards = new Map(); // every turn's passages, by number
let settled = new Map(); // the cards of the turns that were answered (not stopped or failed)
let controller = null;

// --- the key, kept in local storage --------------------------------------------------------

function storedKey() {
  try { return localStorage.getItem(KEY_STORAGE) || ""; } catch { return ""; }
}

function keepKey(value) {
  try {
    if (value) localStorage.setItem(KEY_STORAGE, value); else localStorage.removeItem(KEY_STORAGE);
  } catch { /* storage disabled: the key lasts as long as the page */ }
}

function keyHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// --- indexes: a select when the service lists them (GET /v1/models), else a text field -----

async function loadIndexes() {
  let names = [];
  try {
    const response = await fetch("/v1/models", { headers: keyHeaders() });
    if (response.ok) {
      const body = await response.json();
      names = (body.data || []).map((m) => String(m.id))
        .filter((id) => id.startsWith("rag:")).map((id) => id.slice(4));
    }
  } catch { /* no list: the text field stays */ }
  const current = $("index");
  let field;
  if (names.length) {
    field = document.createElement("select");
    field.add(new Option("the service's default", ""));
    for (const name of names) field.add(new Option(name, name));
    field.value = names.includes(current.value) ? current.value : "";
  } else {
    if (current.tagName === "INPUT") return;
    field = document.createElement("input");
    field.type = "text";
    field.placeholder = "the service's default";
    field.value = current.value;
  }
  field.id = "index";
  current.replaceWith(field);
}

// --- the request ------------------------------------------------------------------------------

function askBody() {
  const body = { question: $("question").value, stream: true };
  if (turns.length) {
    body.history = turns.flatMap((t) => [
      { role: "user", content: t.question },
      { role: "assistant", content: t.answer },
    ]);
  }
  const index = $("index").value.trim();
  if (index) body.index = index;
  if ($("top-k-auto").checked) body.top_k = "auto";
  else if ($("top-k").value !== "") body.top_k = Number($("top-k").value);
  if ($("max-tokens").value !== "") body.max_tokens = Number($("max-tokens").value);
  const filters = {};
  const prefix = $("path-prefix").value.trim();
  if (prefix) filters.path_prefix = prefix;
  const types = [...document.querySelectorAll("input[name=file-type]:checked")].map((e) => e.value);
  if (types.length) filters.file_types = types;
  if ($("modified-after").value) filters.modified_after = `${$("modified-after").value}T00:00:00Z`;
  if ($("modified-before").value) filters.modified_before = `${$("modified-before").value}T00:00:00Z`;
  if (Object.keys(filters).length) body.filters = filters;
  return body;
}

async function* serverEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value.replace(/\r\n/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // nothing more is read once the caller stops
  }
}

const HINTS = {
  401: "Enter a valid API key at the top of the page.",
  403: "This key may not read that index.",
  413: "Ask a shorter question, or fewer passages (top_k).",
};

async function statusMessage(response) {
  let kind = "http_error";
  let message = response.statusText || "the request failed";
  try {
    const body = await response.json();
    if (body && body.error) ({ type: kind, message } = body.error);
  } catch { /* not the service's envelope */ }
  const lines = [`${response.status} ${kind}: ${message}`];
  const retry = response.headers.get("Retry-After");
  if (retry) lines.push(`Try again in ${retry} s.`);
  if (HINTS[response.status]) lines.push(HINTS[response.status]);
  return lines.join("\n");
}

async function ask() {
  if (controller) return; // one ask at a time: Stop ends the current one
  const mine = (controller = new AbortController());
  showError("");
  setState("asking", "Asking…");
  renderConversation();
  cards.clear(); // an answer stopped or failed is no turn: its cards go
  for (const [n, c] of settled) cards.set(n, c);
  renderCards();
  citations = [];
  answer = "";
  renderAnswer();
  $("usage").textContent = "";
  const body = askBody();
  try {
    const response = await fetch("/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "text/event-stream", ...keyHeaders() },
      body: JSON.stringify(body),
      signal: mine.signal,
    });
    if (!response.ok) {
      showError(await statusMessage(response));
      setState("error", "");
    } else if (!(await readAnswer(response, body.question))) {
      showError("The answer stream ended before the service said it was done (connection lost?).");
      setState("error", "");
    }
  } catch (exc) {
    if (mine.signal.aborted) {
      setState("stopped", "Stopped.");
    } else if (exc instanceof TypeError) { // what fetch and stream reads throw for the network
      showError(`Could not reach the service at ${location.origin}: ${exc.message}`);
      setState("error", "");
    } else {
      showError(`The page could not read the answer: ${exc}`);
      setState("error", "");
    }
  } finally {
    controller = null;
  }
}

/** Shows the events of one answer as they come; whether the stream ended with done or error.
 * An answer that is done becomes a turn of the conversation. */
async function readAnswer(response, question) {
  for await (const { event, data } of serverEvents(response)) {
    if (event === "citations") {
      citations = data.citations || [];
      for (const c of citations) cards.set(c.n, c);
      renderCards();
      setState("streaming", data.notice || `${citations.length} passages; answering…`);
    } else if (event === "token") {
      answer += data.text;
      renderAnswer();
    } else if (event === "done") {
      highlightCited();
      turns.push({ question, answer }); // shown with the conversation once the next is asked
      settled = new Map(cards);
      showUsage(data);
      setState("done", data.notice || "");
      return true;
    } else if (event === "error") {
      showError(`${data.type}: ${data.message}`);
      setState("error", "The answer stopped early.");
      return true;
    }
  }
  return false;
}

// --- rendering (text nodes only) -------------------------------------------------------------

function setState(state, status) {
  $("answer-section").dataset.state = state;
  $("status").textContent = status;
  const busy = state === "asking" || state === "streaming";
  $("answer").setAttribute("aria-busy", String(busy));
  $("ask").disabled = busy;
  $("stop").disabled = !busy;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function showUsage(done) {
  const parts = [];
  if (done.usage) {
    parts.push(`${done.usage.prompt_tokens} prompt tokens`,
               `${done.usage.completion_tokens} answer tokens`);
  }
  if (done.timings) {
    if (done.timings.ttft_ms != null) parts.push(`first token ${Math.round(done.timings.ttft_ms)} ms`);
    parts.push(`total ${(done.timings.total_ms / 1000).toFixed(1)} s`);
  }
  if (done.model) parts.push(done.model);
  if (done.finish_reason === "length") parts.push("cut at max_tokens");
  $("usage").textContent = parts.join(" · ");
}

/** The answer's text with its [n] marks as links to the cards (marks of no passage: text). */
function renderAnswer() {
  renderMarked($("answer"), answer);
}

function highestNumber() {
  return Math.max(0, ...cards.keys());
}

function renderMarked(box, answer) {
  box.replaceChildren();
  let last = 0;
  for (const match of answer.matchAll(MARK)) {
    const numbers = markNumbers(match[1], highestNumber()).filter((n) => cards.has(n));
    if (!numbers.length) continue; // "[7]" with five passages, or "[2024]": plain text
    box.append(document.createTextNode(answer.slice(last, match.index)));
    numbers.forEach((n) => {
      const link = document.createElement("a");
      link.className = "mark";
      link.href = `#cite-${n}`;
      link.textContent = numbers.length === 1 ? match[0] : `[${n}]`;
      link.setAttribute("aria-label", `citation ${n}: ${cards.get(n).source}`);
      box.append(link);
    });
    last = match.index + match[0].length;
  }
  box.append(document.createTextNode(answer.slice(last)));
}

// "mail.eml/report.pdf · page 2 · OCR", "budget.xlsx · sheet Budget, rows 2–40"
function whereText(c) {
  const parts = [c.source];
  if (c.page != null) parts.push(`page ${c.page}`);
  if (c.location) parts.push(c.location);
  if (c.ocr) parts.push("OCR");
  return parts.join(" · ");
}

/** The earlier turns, oldest first: each question and the answer it got. */
function renderConversation() {
  const list = $("conversation");
  list.replaceChildren();
  for (const turn of turns) {
    const item = document.createElement("li");
    const question = document.createElement("p");
    question.className = "asked";
    question.textContent = turn.question;
    const answered = document.createElement("p");
    answered.className = "answered";
    renderMarked(answered, turn.answer);
    item.append(question, answered);
    list.append(item);
  }
  $("conversation-section").hidden = !turns.length;
}

function newChat() {
  if (controller) controller.abort();
  turns = [];
  cards.clear();
  settled = new Map();
  citations = [];
  answer = "";
  renderConversation();
  renderAnswer();
  renderCards();
  showError("");
  setState("idle", "");
  $("usage").textContent = "";
  $("question").value = "";
  $("question").focus();
}

function renderCards() {
  const list = $("citations");
  list.replaceChildren();
  for (const c of [...cards.values()].sort((x, y) => x.n - y.n)) {
    const card = document.createElement("li");
    card.className = "card";
    card.id = `cite-${c.n}`;
    card.tabIndex = -1;
    const title = document.createElement("h3");
    title.id = `cite-${c.n}-title`;
    card.setAttribute("aria-labelledby", title.id);
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = `[${c.n}]`;
    const source = document.createElement("span");
    source.className = "source";
    source.textContent = whereText(c);
    title.append(n, source);
    card.append(title);
    if (c.heading && c.heading.length) {
      const heading = document.createElement("p");
      heading.className = "heading";
      heading.textContent = c.heading.join(" › ");
      card.append(heading);
    }
    const passage = document.createElement("blockquote");
    passage.className = "passage";
    passage.textContent = c.text;
    const score = document.createElement("p");
    score.className = "score";
    score.textContent = `score ${Number(c.score).toFixed(3)} · characters ${c.char_start}–${c.char_end}`;
    card.append(passage, score);
    list.append(card);
  }
}

// --- the cited span (see citing.js) ------------------------------------------------------------

function highlightCited() {
  const texts = Array.from({ length: highestNumber() }, (_, i) => cards.get(i + 1)?.text ?? "");
  const spans = citedSpans(answer, texts);
  for (const [n, ranges] of spans) {
    const card = $(`cite-${n}`);
    if (!card) continue;
    if (!card.querySelector(".cited")) {
      const badge = document.createElement("span");
      badge.className = "cited";
      badge.textContent = "cited";
      card.querySelector("h3").append(badge);
    }
    markRanges(card.querySelector(".passage"), cards.get(n).text, ranges);
  }
}

function markRanges(element, text, ranges) {
  const sorted = [...new Set(ranges.map(String))].map((r) => r.split(",").map(Number))
    .sort((x, y) => x[0] - y[0]);
  element.replaceChildren();
  let last = 0;
  for (const [a, b] of sorted) {
    if (a < last) continue;
    const start = a + (text.slice(a, b).length - text.slice(a, b).trimStart().length);
    element.append(document.createTextNode(text.slice(last, start)));
    const mark = document.createElement("mark");
    mark.textContent = text.slice(start, b);
    element.append(mark);
    last = b;
  }
  element.append(document.createTextNode(text.slice(last)));
}

// --- wiring --------------------------------------------------------------------------------------

function followMark(event) {
  const link = event.target.closest("a.mark");
  if (!link) return;
  const card = $(link.getAttribute("href").slice(1));
  if (!card) return;
  for (const other of document.querySelectorAll(".card.active")) other.classList.remove("active");
  card.classList.add("active");
  card.focus({ preventScroll: true });
}

function start() {
  $("api-key").value = storedKey();
  $("api-key").addEventListener("input", () => keepKey($("api-key").value.trim()));
  $("api-key").addEventListener("change", loadIndexes);
  $("top-k-auto").addEventListener("change", () => {
    $("top-k").disabled = $("top-k-auto").checked;
  });
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    ask();
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("ask-form").requestSubmit();
  });
  $("stop").addEventListener("click", () => controller && controller.abort());
  $("new-chat").addEventListener("click", newChat);
  $("answer").addEventListener("click", followMark);
  $("conversation").addEventListener("click", followMark);
  loadIndexes();
}

start(); // a module runs once the page is parsed: no DOMContentLoaded needed
