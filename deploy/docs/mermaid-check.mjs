// Parses every ```mermaid block of the Markdown files named on the command line with the real
// Mermaid library (the version pinned in package.json, installed by `mermaid.sh install` into the
// folder $KB_MERMAID_DIR), and prints one JSON line per block:
//   {"file", "line", "ok": true, "diagramType"} or {"file", "line", "ok": false, "error"}
// then exits 1 if any block failed to parse. Run it through `bash deploy/docs/mermaid.sh check`.
//
// Mermaid's parser runs in Node.js, but some diagram databases sanitize their labels with
// DOMPurify, which needs a DOM: jsdom provides the window before Mermaid is imported.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.env.KB_MERMAID_DIR;
if (!modules) {
  console.error("KB_MERMAID_DIR is not set: run this through deploy/docs/mermaid.sh check");
  process.exit(2);
}
const require = createRequire(join(modules, "package.json"));
const { JSDOM } = require("jsdom");
const dom = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import(pathToFileURL(require.resolve("mermaid")).href);
mermaid.initialize({ startOnLoad: false, securityLevel: "strict" });

// A fence opens with ``` or ~~~ (3 or more) and the info string "mermaid", possibly indented
// (inside a list item); it closes with the same character, at least as many times.
const OPEN = /^(\s*)(`{3,}|~{3,})\s*mermaid\s*$/;

function mermaidBlocks(text) {
  const lines = text.split(/\r?\n/);
  const blocks = [];
  for (let i = 0; i < lines.length; i++) {
    const open = OPEN.exec(lines[i]);
    if (!open) continue;
    const [, indent, fence] = open;
    const close = new RegExp(`^\\s*${fence[0] === "`" ? "`" : "~"}{${fence.length},}\\s*$`);
    const body = [];
    let j = i + 1;
    while (j < lines.length && !close.test(lines[j])) {
      body.push(lines[j].startsWith(indent) ? lines[j].slice(indent.length) : lines[j]);
      j++;
    }
    blocks.push({ line: i + 1, text: body.join("\n"), closed: j < lines.length });
    i = j;
  }
  return blocks;
}

let failed = 0;
for (const file of process.argv.slice(2)) {
  for (const block of mermaidBlocks(readFileSync(file, "utf8"))) {
    const where = { file, line: block.line };
    if (!block.closed) {
      failed++;
      console.log(JSON.stringify({ ...where, ok: false, error: "the mermaid fence is never closed" }));
      continue;
    }
    try {
      const parsed = await mermaid.parse(block.text);
      console.log(JSON.stringify({ ...where, ok: true, diagramType: parsed.diagramType }));
    } catch (error) {
      failed++;
      const message = String(error?.message ?? error);
      console.log(JSON.stringify({ ...where, ok: false, error: message }));
    }
  }
}
process.exit(failed ? 1 : 0);
