/// The page's inline style sheet and script (see `FlameGraphPage`), written for this project.
///
/// The script draws an SVG icicle (root at the top) from the data block `FlameGraphPage` embeds. Drawing is
/// linear in the nodes it visits, and it visits only frames at least `minimumWidth` pixels wide: a page of
/// 10 000 call sites stays a few thousand rectangles however many nodes it holds. Names reach the document only
/// through `textContent` and `setAttribute`, never as markup, so a name is always text.
enum _FlameGraphAssets {
    static let style = #"""
        body { font: 13px/1.4 system-ui, sans-serif; margin: 0; color: #1d1d1f; background: #fff; }
        header { padding: 10px 14px 4px; border-bottom: 1px solid #ddd; }
        h1 { font-size: 17px; margin: 0 0 2px; }
        header p { margin: 2px 0; }
        #source { color: #555; }
        .note { color: #8a4b00; }
        #summary { font-weight: 600; }
        #controls { display: flex; flex-wrap: wrap; gap: 10px; align-items: center; margin: 6px 0; }
        #controls input { width: 18em; }
        #matched { color: #7a1fa2; font-weight: 600; }
        #legend .grew { color: #c0392b; } #legend .shrank { color: #2957c4; }
        #chart { padding: 6px 14px 14px; }
        #flame { display: block; width: 100%; }
        #flame g { cursor: pointer; }
        #flame rect { stroke: #fff; stroke-width: 0.5; }
        #flame g:hover rect { stroke: #222; stroke-width: 1; }
        #flame g.ancestor rect { opacity: 0.55; }
        #flame g.match rect { fill: #d44cf0; }
        #flame text { font: 11px ui-monospace, monospace; fill: #000; pointer-events: none; }
        #tooltip { position: fixed; max-width: 640px; padding: 6px 8px; background: #fffff4; border: 1px solid #999;
                   box-shadow: 0 2px 6px rgba(0,0,0,.2); pointer-events: none; white-space: pre-wrap;
                   word-break: break-all; font: 12px/1.35 ui-monospace, monospace; z-index: 10; }
        #tooltip b { font-weight: 700; }
        """#

    static let script = #"""
        "use strict";
        (function () {
          const data = JSON.parse(document.getElementById("flame-data").textContent);
          const METRICS = [["live bytes", true], ["live blocks", false], ["allocated bytes", true], ["allocated blocks", false]];
          const ROW = 18, MIN_WIDTH = 0.5, LABEL_MIN = 28, CHAR = 6.7;
          const nodes = data.nodes, frames = data.frames;
          const count = nodes.depth.length, frameOf = nodes.frame, depth = nodes.depth;
          const diff = nodes.base !== null;
          const fileOf = (f) => frames.file[f] < 0 ? null : data.files[frames.file[f]];
          const imageOf = (f) => frames.image[f] < 0 ? null : data.images[frames.image[f]];
          const inlined = new Set(frames.inlined);
          const otherLines = new Map(frames.otherLines.map((entry) => [entry[0], entry.slice(1)]));

          // Parents from the preorder and the depths (a node's parent is the last node one level up), and
          // children as first-child / next-sibling links (siblings come sorted).
          const parent = new Int32Array(count).fill(-1), firstChild = new Int32Array(count).fill(-1);
          const nextSibling = new Int32Array(count).fill(-1), lastChild = new Int32Array(count).fill(-1);
          const lastAtDepth = [0];
          for (let i = 1; i < count; i++) {
            const p = lastAtDepth[depth[i] - 1];
            parent[i] = p;
            lastAtDepth[depth[i]] = i;
            if (lastChild[p] < 0) firstChild[p] = i; else nextSibling[lastChild[p]] = i;
            lastChild[p] = i;
          }
          // Each node's own values (the stacks that end there), four per node.
          const own = new Float64Array(count * 4), baseOwn = new Float64Array(count * 4);
          nodes.ends.forEach(function (node, i) {
            for (let m = 0; m < 4; m++) {
              own[node * 4 + m] = nodes.values[i * 4 + m];
              if (diff) baseOwn[node * 4 + m] = nodes.base[i * 4 + m];
            }
          });

          let metric = 0, zoomed = 0, term = "";
          const history = [];
          const total = new Float64Array(count), baseTotal = new Float64Array(count), width = new Float64Array(count);
          const matchedFrame = new Uint8Array(frames.name.length);
          let maxChange = 0;

          // Each node's value is its own stacks' plus its children's: one backward pass over the preorder.
          function computeTotals() {
            for (let i = 0; i < count; i++) {
              total[i] = own[i * 4 + metric];
              baseTotal[i] = baseOwn[i * 4 + metric];
              width[i] = diff ? Math.max(total[i], baseTotal[i]) : total[i];
            }
            for (let i = count - 1; i > 0; i--) {
              total[parent[i]] += total[i]; baseTotal[parent[i]] += baseTotal[i]; width[parent[i]] += width[i];
            }
            maxChange = 0;
            for (let i = 1; i < count; i++) maxChange = Math.max(maxChange, Math.abs(total[i] - baseTotal[i]));
          }

          function format(value, isBytes) {
            const sign = value < 0 ? "-" : "";
            let v = Math.abs(value);
            if (!isBytes) return sign + Math.round(v).toLocaleString("en-US") + (v === 1 ? " block" : " blocks");
            const units = ["B", "KiB", "MiB", "GiB", "TiB"];
            let u = 0;
            while (v >= 1024 && u < units.length - 1) { v /= 1024; u++; }
            return sign + (u === 0 ? Math.round(v) : v.toFixed(1)) + " " + units[u];
          }
          function signed(value, isBytes) { return (value > 0 ? "+" : "") + format(value, isBytes); }
          function percent(part, whole) { return whole === 0 ? "0%" : (100 * part / whole).toFixed(2) + "%"; }

          function frameName(node) { return node === 0 ? "all" : frames.name[frameOf[node]]; }
          function location(node) {
            if (node === 0) return "";
            const f = frameOf[node], file = fileOf(f);
            return file === null ? "" : file + ":" + [frames.line[f]].concat(otherLines.get(f) || []).join(", ");
          }

          // flamegraph.pl's warm palette, a colour per name (the same function has the same colour everywhere).
          const colours = new Map();
          function warmColour(name) {
            let c = colours.get(name);
            if (c === undefined) {
              let h = 2166136261;
              for (let i = 0; i < name.length; i++) { h ^= name.charCodeAt(i); h = Math.imul(h, 16777619); }
              const a = (h >>> 0) / 4294967296, b = ((h >>> 8) & 0xffff) / 65536;
              c = "rgb(" + (205 + Math.round(50 * a)) + "," + Math.round(80 + 150 * b) + "," + Math.round(55 * a) + ")";
              colours.set(name, c);
            }
            return c;
          }
          function changeColour(node) {
            const change = total[node] - baseTotal[node];
            if (change === 0 || maxChange === 0) return "rgb(236,236,236)";
            const t = Math.min(1, Math.abs(change) / maxChange), light = Math.round(226 - 170 * t);
            return change > 0 ? "rgb(255," + light + "," + light + ")" : "rgb(" + light + "," + light + ",255)";
          }

          const svg = document.getElementById("flame"), NS = "http://www.w3.org/2000/svg";
          const tooltip = document.getElementById("tooltip");

          function drawFrame(target, node, x, y, w, className) {
            const g = document.createElementNS(NS, "g");
            g.setAttribute("data-node", String(node));
            g.setAttribute("aria-label", frameName(node));
            if (className) g.setAttribute("class", className);
            const rect = document.createElementNS(NS, "rect");
            rect.setAttribute("x", x.toFixed(2)); rect.setAttribute("y", String(y));
            rect.setAttribute("width", Math.max(w, 0.1).toFixed(2)); rect.setAttribute("height", String(ROW - 1));
            rect.setAttribute("fill", diff ? changeColour(node) : (node === 0 ? "rgb(225,225,225)" : warmColour(frameName(node))));
            g.appendChild(rect);
            if (w >= LABEL_MIN) {
              const chars = Math.floor((w - 6) / CHAR), name = frameName(node);
              const text = document.createElementNS(NS, "text");
              text.setAttribute("x", (x + 3).toFixed(2)); text.setAttribute("y", String(y + ROW - 5));
              text.textContent = name.length <= chars ? name : name.slice(0, Math.max(chars - 1, 1)) + "…";
              g.appendChild(text);
            }
            target.appendChild(g);
          }

          function isMatch(node) { return node !== 0 && term !== "" && matchedFrame[frameOf[node]] === 1; }

          function render() {
            const full = Math.max(svg.clientWidth || 0, 300);
            const fragment = document.createDocumentFragment();
            // The path from the root to the zoomed frame, full width.
            const path = [];
            for (let n = parent[zoomed]; n >= 0; n = parent[n]) path.push(n);
            for (const n of path) drawFrame(fragment, n, 0, depth[n] * ROW, full, isMatch(n) ? "ancestor match" : "ancestor");
            // The zoomed frame and what it calls, scaled to the width.
            const scale = width[zoomed] > 0 ? full / width[zoomed] : 0;
            let deepest = depth[zoomed];
            const stack = [[zoomed, 0]];
            while (stack.length > 0) {
              const [node, x] = stack.pop();
              const w = node === zoomed ? full : width[node] * scale;
              drawFrame(fragment, node, x, depth[node] * ROW, w, isMatch(node) ? "match" : "");
              if (depth[node] > deepest) deepest = depth[node];
              let childX = x;
              const children = [];
              for (let c = firstChild[node]; c >= 0; c = nextSibling[c]) {
                const cw = width[c] * scale;
                if (cw >= MIN_WIDTH) children.push([c, childX]);
                childX += cw;
              }
              for (let i = children.length - 1; i >= 0; i--) stack.push(children[i]);
            }
            svg.replaceChildren(fragment);
            svg.setAttribute("height", String((deepest + 1) * ROW + 2));
            svg.setAttribute("viewBox", "0 0 " + full + " " + ((deepest + 1) * ROW + 2));
            document.getElementById("back").disabled = history.length === 0;
            document.getElementById("reset").disabled = zoomed === 0;
            summarise();
          }

          function summarise() {
            const [label, isBytes] = METRICS[metric];
            let text;
            if (diff) {
              text = label + ": " + format(data.baseTotals[metric], isBytes) + " → " + format(data.totals[metric], isBytes) +
                " (" + signed(data.totals[metric] - data.baseTotals[metric], isBytes) + ")";
            } else {
              text = label + ": " + format(data.totals[metric], isBytes) + " in total";
            }
            if (zoomed !== 0) text += "; zoomed into " + frameName(zoomed) + ": " + format(total[zoomed], isBytes);
            document.getElementById("summary").textContent = text;
            const matched = document.getElementById("matched");
            if (term === "") { matched.textContent = ""; return; }
            // A match under another match is already counted in it.
            let sum = 0, frameCount = 0;
            const covered = new Uint8Array(count);
            for (let i = 1; i < count; i++) {
              const m = matchedFrame[frameOf[i]] === 1;
              if (m && !covered[parent[i]]) { sum += total[i]; frameCount++; }
              covered[i] = covered[parent[i]] || (m ? 1 : 0);
            }
            matched.textContent = frameCount === 0 ? "no match" :
              "matched: " + percent(sum, total[0]) + " of " + label + " (" + format(sum, isBytes) + ")";
          }

          function search(text) {
            term = text.trim().toLowerCase();
            for (let f = 0; f < matchedFrame.length; f++) {
              matchedFrame[f] = term !== "" && (frames.name[f].toLowerCase().includes(term) ||
                (fileOf(f) !== null && fileOf(f).toLowerCase().includes(term)) ||
                (imageOf(f) !== null && imageOf(f).toLowerCase().includes(term))) ? 1 : 0;
            }
            render();
          }

          function zoom(node) {
            if (node === zoomed) return;
            history.push(zoomed);
            zoomed = node;
            render();
          }

          function showTooltip(node, event) {
            const [label, isBytes] = METRICS[metric];
            tooltip.replaceChildren();
            const name = document.createElement("b");
            name.textContent = frameName(node);
            tooltip.appendChild(name);
            const lines = [];
            if (node !== 0) {
              const f = frameOf[node];
              const where = location(node);
              lines.push(where === "" ? "(no source location)" : where);
              if (imageOf(f) !== null) lines.push("in " + imageOf(f) + (inlined.has(f) ? " (inlined)" : ""));
            }
            if (diff) {
              lines.push(label + ": " + format(baseTotal[node], isBytes) + " → " + format(total[node], isBytes) +
                " (" + signed(total[node] - baseTotal[node], isBytes) + ", " + percent(total[node] - baseTotal[node], data.baseTotals[metric]) + " of before)");
            } else {
              lines.push(label + ": " + format(total[node], isBytes) + ", " + percent(total[node], total[0]) + " of all" +
                (zoomed !== 0 && node !== zoomed ? ", " + percent(total[node], total[zoomed]) + " of " + frameName(zoomed) : ""));
              const itself = own[node * 4 + metric];
              if (itself !== 0 && itself !== total[node]) lines.push("in the frame itself: " + format(itself, isBytes));
            }
            tooltip.appendChild(document.createTextNode("\n" + lines.join("\n")));
            tooltip.hidden = false;
            moveTooltip(event);
          }
          function moveTooltip(event) {
            const margin = 14, box = tooltip.getBoundingClientRect();
            let x = event.clientX + margin, y = event.clientY + margin;
            if (x + box.width > window.innerWidth) x = Math.max(0, event.clientX - margin - box.width);
            if (y + box.height > window.innerHeight) y = Math.max(0, event.clientY - margin - box.height);
            tooltip.style.left = x + "px"; tooltip.style.top = y + "px";
          }

          function nodeAt(event) {
            const g = event.target.closest && event.target.closest("g[data-node]");
            return g ? Number(g.getAttribute("data-node")) : -1;
          }
          let hovered = -1;
          svg.addEventListener("mousemove", function (event) {
            const node = nodeAt(event);
            if (node < 0) { tooltip.hidden = true; hovered = -1; return; }
            if (node !== hovered) { hovered = node; showTooltip(node, event); } else moveTooltip(event);
          });
          svg.addEventListener("mouseleave", function () { tooltip.hidden = true; hovered = -1; });
          svg.addEventListener("click", function (event) {
            const node = nodeAt(event);
            if (node >= 0) { tooltip.hidden = true; hovered = -1; zoom(node); }
          });
          function back() { if (history.length > 0) { zoomed = history.pop(); render(); } }
          function reset() { if (zoomed !== 0) { history.push(zoomed); zoomed = 0; render(); } }
          document.getElementById("back").addEventListener("click", back);
          document.getElementById("reset").addEventListener("click", reset);
          document.addEventListener("keydown", function (event) {
            if (event.key === "Escape" && event.target.id !== "search") back();
          });
          document.getElementById("metric").addEventListener("change", function (event) {
            metric = Number(event.target.value); computeTotals();
            // A frame zoomed into that has nothing of the new metric (all freed, for live bytes) shows nothing.
            if (width[zoomed] === 0) { zoomed = 0; history.length = 0; }
            render();
          });
          document.getElementById("search").addEventListener("input", function (event) { search(event.target.value); });
          let resizeTimer = 0;
          window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(render, 100); });

          computeTotals();
          render();
          // For tests and tools: when the first picture was on screen.
          document.documentElement.setAttribute("data-rendered", String(Math.round(performance.now())));
        })();
        """#
}
