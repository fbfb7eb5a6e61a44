// Which numbered passages an answer cites, and which of their sentences it cites them for.
//
// "The cited span" of a passage: for each answer sentence that carries its mark, the passage
// sentence sharing the most content words with it (shared words / sqrt(sentence words), so a
// long sentence does not win by length alone); none when no content word is shared. Pure text
// in, offsets out: no DOM here.

export const MARK = /\[(\d+(?:\s*,\s*\d+)*)\]/g; // [1], [2][3] (two marks), [1, 2]
const LEADING_MARKS = /^[ \t]*((?:\[\d+(?:\s*,\s*\d+)*\][ \t]*)+)(?![[:\-–])/;
const WORD = /[\p{L}\p{N}]+/gu;
const STOPWORDS = new Set(
  ("the and for are but not you all any can had her was one our out has his how its may new " +
   "now see who did get him let say she too use that with have this will your from they been " +
   "were said each which their there what about would these other into than then them some " +
   "could only also more most such over when where does document documents passage passages")
    .split(" "));

/** The passage numbers written inside one mark ("2" or "1, 2"), those of a passage only. */
export function markNumbers(inside, passages) {
  return inside.split(",").map((s) => Number(s.trim())).filter((n) => n >= 1 && n <= passages);
}

/** [start, end) of each sentence of text (a paragraph break ends one too). */
export function sentences(text) {
  const spans = [];
  const end = /[.!?]+["')\]]*(?=\s)|\n\s*\n/g;
  let start = 0;
  for (const m of text.matchAll(end)) {
    spans.push([start, m.index + m[0].length]);
    start = m.index + m[0].length;
  }
  if (start < text.length) spans.push([start, text.length]);
  return spans.filter(([a, b]) => text.slice(a, b).trim());
}

function words(text) {
  const found = new Set();
  for (const [w] of text.toLowerCase().matchAll(WORD)) {
    if ((w.length > 2 || /\d/.test(w)) && !STOPWORDS.has(w)) found.add(w);
  }
  return found;
}

/** Each answer sentence's content words and the passage numbers it cites. A mark after the
 * full stop on the same line ("... 60. [1]") belongs to the sentence before it; one opening a
 * line or followed by a colon ("[2]: ...") labels the sentence it opens. */
function citingSentences(answer, passages) {
  const cited = [];
  for (const [a, b] of sentences(answer)) {
    let text = answer.slice(a, b);
    const lead = text.match(LEADING_MARKS);
    if (lead && cited.length) {
      for (const m of lead[1].matchAll(MARK)) cited.at(-1).numbers.push(...markNumbers(m[1], passages));
      text = text.slice(lead[0].length);
    }
    const numbers = [...text.matchAll(MARK)].flatMap((m) => markNumbers(m[1], passages));
    cited.push({ words: words(text.replace(MARK, " ")), numbers });
  }
  return cited;
}

/** Passage number -> the [start, end) ranges of its text to highlight, for every cited passage
 * (an empty list when the citing sentences share no word with it). */
export function citedSpans(answer, texts) {
  const spans = new Map();
  for (const { words: asked, numbers } of citingSentences(answer, texts.length)) {
    for (const n of new Set(numbers)) {
      const text = texts[n - 1];
      let best = null;
      let bestScore = 0;
      for (const [a, b] of sentences(text)) {
        const own = words(text.slice(a, b));
        const shared = [...own].filter((w) => asked.has(w)).length;
        const score = shared / Math.sqrt(own.size || 1);
        if (shared > 0 && score > bestScore) [best, bestScore] = [[a, b], score];
      }
      if (!spans.has(n)) spans.set(n, []);
      if (best) spans.get(n).push(best);
    }
  }
  return spans;
}
