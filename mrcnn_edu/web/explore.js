// The explorer page of `mrcnn-edu explore`. It draws what mrcnn_edu/explore.py computed (the JSON in
// #explorer-data) and recomputes no stage. Each canvas keeps a short summary of what it drew in its
// data-drawn attribute (read by the browser tests, handy in the console too).
"use strict";

(function () {
  const data = JSON.parse(document.getElementById("explorer-data").textContent);
  const cfg = data.config;
  const LEVEL_COLORS = { P2: "#e6194b", P3: "#3cb44b", P4: "#4363d8", P5: "#f58231", P6: "#911eb4" };
  const MAX_WIDTH = 640; // CSS pixels of the large views

  // ------------------------------------------------------------------------------ small helpers
  const $ = (id) => document.getElementById(id);
  const fmt = (v, digits = 1) => Number(v).toFixed(digits);
  const boxText = (b, digits = 1) => "(" + b.map((v) => fmt(v, digits)).join(", ") + ")";
  const levelName = (k) => "P" + k;

  function element(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attributes || {})) {
      if (key === "style") node.style.cssText = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) node.append(child instanceof Node ? child : String(child));
    return node;
  }

  function table(node, header, rows, onClick) {
    node.replaceChildren(element("tr", {}, ...header.map((h) => element("th", {}, h))));
    rows.forEach((row, i) => {
      const tr = element("tr", onClick ? { class: "clickable", onclick: () => onClick(i) } : {},
        ...row.map((cell) => element("td", typeof cell === "number" ? { class: "num" } : {}, cell)));
      node.append(tr);
    });
  }

  function bytes(b64) {
    const text = atob(b64);
    const out = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) out[i] = text.charCodeAt(i);
    return out;
  }

  // An 8-bit array stored by explore._quantised: value = lo + code / 255 * (hi - lo).
  function dequantise(packed) {
    const codes = bytes(packed.b64);
    const span = packed.hi > packed.lo ? packed.hi - packed.lo : 1;
    const out = new Float32Array(codes.length);
    for (let i = 0; i < codes.length; i++) out[i] = packed.lo + (codes[i] / 255) * span;
    return out;
  }

  function loadImage(uri) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error("an embedded image could not be decoded"));
      image.src = uri;
    });
  }

  // Colour maps: t in [0, 1] -> [r, g, b].
  const SEQUENTIAL = [[48, 18, 59], [65, 69, 171], [57, 162, 252], [27, 229, 181], [164, 252, 60],
    [251, 185, 56], [240, 72, 11], [122, 4, 3]];
  function sequential(t) {
    const x = Math.min(Math.max(t, 0), 1) * (SEQUENTIAL.length - 1);
    const i = Math.min(Math.floor(x), SEQUENTIAL.length - 2);
    const f = x - i;
    return SEQUENTIAL[i].map((v, k) => Math.round(v + f * (SEQUENTIAL[i + 1][k] - v)));
  }
  function diverging(t) { // t in [-1, 1]: blue, white, red
    const a = Math.min(Math.abs(t), 1);
    const fade = Math.round(255 * (1 - a));
    return t < 0 ? [fade, fade, 255] : [255, fade, fade];
  }
  function grey(t) { const v = Math.round(255 * Math.min(Math.max(t, 0), 1)); return [v, v, v]; }

  // A canvas of h x w cells painted with a colour map (scaled up with crisp cells by the caller).
  function cellCanvas(values, h, w, colour, alpha = 255) {
    const canvas = element("canvas", { width: w, height: h });
    const ctx = canvas.getContext("2d");
    const pixels = ctx.createImageData(w, h);
    for (let i = 0; i < h * w; i++) {
      const [r, g, b] = colour(values[i]);
      pixels.data.set([r, g, b, alpha], 4 * i);
    }
    ctx.putImageData(pixels, 0, 0);
    return canvas;
  }

  // A small map (pooled features, mask logits) shown at `zoom` CSS pixels per cell.
  function smallMap(values, h, w, colour, zoom, caption) {
    const cells = cellCanvas(values, h, w, colour);
    const canvas = element("canvas", { class: "small-map", width: w * zoom, height: h * zoom });
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(cells, 0, 0, w * zoom, h * zoom);
    return element("figure", {}, canvas, element("figcaption", {}, caption));
  }

  // ------------------------------------------------------------------------------ a view of an image
  // Draws on `canvas` in the pixel coordinates of an image of size [height, width] (a frame).
  class View {
    constructor(canvas, height, width, maxWidth = MAX_WIDTH) {
      this.canvas = canvas;
      this.scale = Math.min(maxWidth / width, 4);
      canvas.width = Math.round(width * this.scale);
      canvas.height = Math.round(height * this.scale);
      this.ctx = canvas.getContext("2d");
    }
    background(image, dim = 0) {
      const ctx = this.ctx;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.globalAlpha = 1;
      ctx.imageSmoothingEnabled = this.scale < 1;
      ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
      ctx.drawImage(image, 0, 0, this.canvas.width, this.canvas.height);
      if (dim > 0) {
        ctx.fillStyle = `rgba(0, 0, 0, ${dim})`;
        ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
      }
    }
    frame() { this.ctx.setTransform(this.scale, 0, 0, this.scale, 0, 0); }
    box(b, colour, { width = 1.5, dash = false, alpha = 1 } = {}) {
      const ctx = this.ctx;
      this.frame();
      ctx.globalAlpha = alpha;
      ctx.lineWidth = width / this.scale;
      ctx.setLineDash(dash ? [5 / this.scale, 4 / this.scale] : []);
      ctx.strokeStyle = colour;
      ctx.strokeRect(b[0], b[1], b[2] - b[0], b[3] - b[1]);
      ctx.setLineDash([]);
      ctx.globalAlpha = 1;
    }
    arrow(x0, y0, x1, y1, colour) {
      const ctx = this.ctx;
      this.frame();
      const s = this.scale;
      ctx.strokeStyle = ctx.fillStyle = colour;
      ctx.lineWidth = 2 / s;
      ctx.beginPath(); ctx.moveTo(x0, y0); ctx.lineTo(x1, y1); ctx.stroke();
      const angle = Math.atan2(y1 - y0, x1 - x0);
      const head = 9 / s;
      ctx.beginPath();
      ctx.moveTo(x1, y1);
      ctx.lineTo(x1 - head * Math.cos(angle - 0.4), y1 - head * Math.sin(angle - 0.4));
      ctx.lineTo(x1 - head * Math.cos(angle + 0.4), y1 - head * Math.sin(angle + 0.4));
      ctx.closePath(); ctx.fill();
    }
    dot(x, y, radius, colour) {
      const ctx = this.ctx;
      this.frame();
      ctx.fillStyle = colour;
      ctx.beginPath(); ctx.arc(x, y, radius / this.scale, 0, 2 * Math.PI); ctx.fill();
    }
    label(text, x, y, colour) {
      const ctx = this.ctx;
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.font = "12px system-ui, sans-serif";
      const px = x * this.scale, py = Math.max(y * this.scale, 14);
      const w = ctx.measureText(text).width + 6;
      ctx.fillStyle = colour; ctx.fillRect(px, py - 14, w, 14);
      ctx.fillStyle = "#fff"; ctx.fillText(text, px + 3, py - 3);
    }
    // Image coordinates of a mouse event.
    point(event) {
      const rect = this.canvas.getBoundingClientRect();
      const x = ((event.clientX - rect.left) * (this.canvas.width / rect.width)) / this.scale;
      const y = ((event.clientY - rect.top) * (this.canvas.height / rect.height)) / this.scale;
      return [x, y];
    }
    drawn(summary) { this.canvas.dataset.drawn = summary; }
  }

  const frameText = (view) => {
    const f = data.frames[view];
    return `Frame: ${f.text} (TRACE_STAGES["${f.stage}"].frame = "${f.frame}")`;
  };

  // ------------------------------------------------------------------------------ state
  const P = data.proposals;
  const D = data.detections;
  const numClasses = data.class_names.length;
  const classProbs = dequantise(P.class_probs);
  const pooled = P.pooled.values.map(dequantise);
  const maskLogits = dequantise(D.mask_logits);
  const rankOf = new Array(P.boxes.length);
  P.order.forEach((index, rank) => { rankOf[index] = rank; });
  const state = { selected: -1, redrawProposals: null, redrawDetections: null };
  const className = (label) => data.class_names[label] ?? String(label);
  const classColour = (label) => data.class_colors[label % data.class_colors.length];

  // ------------------------------------------------------------------------------ 1 molded image
  function moldedView(original, molded) {
    const im = data.image;
    const [H, W] = im.original_size, [h, w] = im.molded_size;
    const left = new View($("original-canvas"), H, W, 300);
    left.background(original);
    left.drawn(`original ${W}x${H}`);
    $("original-caption").textContent = `original image, ${W} × ${H} px (frame: original-image pixels)`;
    const right = new View($("molded-canvas"), h, w, 300);
    right.background(molded);
    const [x1, y1, x2, y2] = im.window;
    // padding: hatch everything outside the window
    const ctx = right.ctx;
    right.frame();
    ctx.save();
    ctx.beginPath(); ctx.rect(0, 0, w, h); ctx.rect(x1, y1, x2 - x1, y2 - y1);
    ctx.clip("evenodd");
    ctx.fillStyle = "rgba(255, 255, 255, 0.25)"; ctx.fillRect(0, 0, w, h);
    ctx.strokeStyle = "rgba(255, 255, 255, 0.6)"; ctx.lineWidth = 1 / right.scale;
    for (let d = -h; d < w; d += 8 / right.scale * 2) {
      ctx.beginPath(); ctx.moveTo(d, 0); ctx.lineTo(d + h, h); ctx.stroke();
    }
    ctx.restore();
    right.box(im.window, "#28c840", { width: 2.5 });
    right.drawn(`molded ${w}x${h} window ${im.window.join(",")}`);
    $("molded-caption").textContent = `molded image, ${w} × ${h} px (frame: molded-image pixels)`;
    const [top, bottom, padLeft, padRight] = im.padding;
    table($("meta-table"), ["", "value"], [
      ["resize mode", `${im.mode} (min_dim ${cfg.min_dim}, max_dim ${cfg.max_dim})`],
      ["original size (h × w)", `${H} × ${W}`],
      ["resized size (h × w)", `${im.resized_size[0]} × ${im.resized_size[1]}`],
      ["scale", fmt(im.scale, 4)],
      ["padding (top, bottom, left, right)", `${top}, ${bottom}, ${padLeft}, ${padRight}`],
      ["window (x1, y1, x2, y2), molded px", im.window.join(", ")],
      ["molded size (h × w)", `${h} × ${w}`],
    ]);
  }

  // ------------------------------------------------------------------------------ 2 anchors
  function anchorsView(molded) {
    const [h, w] = data.image.molded_size;
    const view = new View($("anchors-canvas"), h, w);
    const shown = new Set(data.levels.map((l) => l.name));
    let point = [w / 2, h / 2];
    const nearestCell = (level, [x, y]) => {
      const [gh, gw] = level.grid;
      const c = level.step[0] > 0 ? Math.min(Math.max(Math.round((x - level.origin[0]) / level.step[0]), 0), gw - 1) : 0;
      const r = level.step[1] > 0 ? Math.min(Math.max(Math.round((y - level.origin[1]) / level.step[1]), 0), gh - 1) : 0;
      return [r, c, level.origin[0] + c * level.step[0], level.origin[1] + r * level.step[1]];
    };
    const controls = $("anchor-levels");
    for (const level of data.levels) {
      const input = element("input", { type: "checkbox", checked: "", "data-level": level.name });
      input.addEventListener("change", () => {
        if (input.checked) shown.add(level.name); else shown.delete(level.name);
        draw();
      });
      controls.append(element("label", {}, input, element("span", { class: "swatch", style: `background:${LEVEL_COLORS[level.name]}` }), level.name));
    }
    function draw() {
      view.background(molded, 0.35);
      let count = 0;
      for (const level of data.levels) {
        if (!shown.has(level.name)) continue;
        const colour = LEVEL_COLORS[level.name];
        const [gh, gw] = level.grid;
        if (Math.min(level.step[0], level.step[1]) * view.scale >= 6 && gh * gw <= 20000) {
          for (let r = 0; r < gh; r++) {
            for (let c = 0; c < gw; c++) view.dot(level.origin[0] + c * level.step[0], level.origin[1] + r * level.step[1], 1.2, colour);
          }
        }
        const [, , cx, cy] = nearestCell(level, point);
        for (const b of level.base) {
          view.box([cx + b[0], cy + b[1], cx + b[2], cy + b[3]], colour, { width: 2 });
          count += 1;
        }
        view.dot(cx, cy, 3, colour);
      }
      const names = data.levels.filter((level) => shown.has(level.name)).map((level) => level.name);
      view.drawn(`levels=${names.join(",") || "none"} anchors=${count} point=${fmt(point[0])},${fmt(point[1])}`);
      table($("anchor-table"), ["level", "feature map", "cell step (x, y)", "anchor size", "anchors of the cell (w × h)", "anchors", "cell at the point (row, col): centre"],
        data.levels.map((level) => {
          const [r, c, cx, cy] = nearestCell(level, point);
          return [level.name, `${level.feature_size[0]} × ${level.feature_size[1]}`, `${fmt(level.step[0], 0)}, ${fmt(level.step[1], 0)}`,
            level.scale, level.base.map((b) => `${fmt(b[2] - b[0])} × ${fmt(b[3] - b[1])}`).join(", "),
            level.count, `(${r}, ${c}): (${fmt(cx)}, ${fmt(cy)})`];
        }));
    }
    view.canvas.addEventListener("click", (event) => { point = view.point(event); draw(); });
    draw();
  }

  // ------------------------------------------------------------------------------ 3 objectness
  // Top-left corner of feature cell (0, 0) in molded pixels: its anchors sit anchor_offset steps into it.
  const cellCorner = (level) => [level.origin[0] - cfg.anchor_offset * level.step[0], level.origin[1] - cfg.anchor_offset * level.step[1]];

  function objectnessView(molded) {
    const [h, w] = data.image.molded_size;
    const view = new View($("objectness-canvas"), h, w);
    const ratios = cfg.anchor_ratios;
    const maps = data.levels.map((level) => dequantise(level.objectness));
    // start on the level of the best anchor overall
    let levelIndex = 0;
    data.levels.forEach((level, i) => {
      if (level.top.length && level.top[0].score > (data.levels[levelIndex].top[0]?.score ?? -1)) levelIndex = i;
    });
    let ratio = -1; // -1: the best of the cell's anchors
    const cellValues = (i) => {
      const [gh, gw] = data.levels[i].grid;
      const R = ratios.length;
      const out = new Float32Array(gh * gw);
      for (let k = 0; k < gh * gw; k++) {
        let v = ratio >= 0 ? maps[i][k * R + ratio] : 0;
        if (ratio < 0) for (let a = 0; a < R; a++) v = Math.max(v, maps[i][k * R + a]);
        out[k] = v;
      }
      return out;
    };
    const group = $("objectness-levels");
    data.levels.forEach((level, i) => {
      const input = element("input", { type: "radio", name: "objectness-level", value: level.name });
      input.checked = i === levelIndex;
      input.addEventListener("change", () => { levelIndex = i; draw(); });
      group.append(element("label", {}, input, " " + level.name + " "));
    });
    const select = $("objectness-ratio");
    select.append(element("option", { value: "-1" }, "best of the cell"));
    ratios.forEach((r, a) => select.append(element("option", { value: String(a) }, `${r} (w / h)`)));
    select.addEventListener("change", () => { ratio = Number(select.value); draw(); });
    function draw() {
      const level = data.levels[levelIndex];
      const [gh, gw] = level.grid;
      view.background(molded);
      const heat = cellCanvas(cellValues(levelIndex), gh, gw, sequential, 170);
      const ctx = view.ctx;
      view.frame();
      ctx.imageSmoothingEnabled = false;
      // feature cell (r, c) covers molded pixels [c, c + 1) x [r, r + 1) times the step
      const [left, top] = cellCorner(level);
      ctx.drawImage(heat, left, top, gw * level.step[0], gh * level.step[1]);
      level.top.forEach((t, rank) => {
        view.box(t.anchor, LEVEL_COLORS[level.name], { width: 2, dash: true });
        view.box(t.decoded, "#ffffff", { width: 2 });
        view.arrow((t.anchor[0] + t.anchor[2]) / 2, (t.anchor[1] + t.anchor[3]) / 2, (t.decoded[0] + t.decoded[2]) / 2, (t.decoded[1] + t.decoded[3]) / 2, "#ffffff");
        view.label(`#${rank + 1} ${fmt(t.score, 2)}`, t.decoded[0], t.decoded[1], LEVEL_COLORS[level.name]);
      });
      view.drawn(`level=${level.name} ratio=${ratio < 0 ? "best" : ratios[ratio]} cells=${gh}x${gw} top=${level.top.length}`);
      table($("top-anchors"), ["rank", "cell (row, col, ratio)", "objectness", "anchor (molded px)", "decoded box (molded px)"],
        level.top.map((t, rank) => [rank + 1, `(${t.cell[0]}, ${t.cell[1]}, ${ratios[t.cell[2]]})`, fmt(t.score, 3), boxText(t.anchor), boxText(t.decoded)]));
    }
    view.canvas.addEventListener("mousemove", (event) => {
      const level = data.levels[levelIndex];
      const [x, y] = view.point(event);
      const [left, top] = cellCorner(level);
      const c = Math.floor((x - left) / (level.step[0] || 1));
      const r = Math.floor((y - top) / (level.step[1] || 1));
      const [gh, gw] = level.grid;
      if (r < 0 || c < 0 || r >= gh || c >= gw) return;
      const R = ratios.length;
      const values = ratios.map((_, a) => fmt(maps[levelIndex][(r * gw + c) * R + a], 3)).join(" / ");
      const [x0, y0] = [left + c * level.step[0], top + r * level.step[1]];
      $("objectness-readout").textContent = `${level.name} cell (row ${r}, col ${c}) = molded pixels x ${fmt(x0, 0)}–${fmt(x0 + level.step[0], 0)}, y ${fmt(y0, 0)}–${fmt(y0 + level.step[1], 0)}; its anchors' objectness ${values} (ratios ${ratios.join(" / ")})`;
    });
    draw();
  }

  // ------------------------------------------------------------------------------ 4 proposals
  function proposalsView(molded) {
    const [h, w] = data.image.molded_size;
    const view = new View($("proposals-canvas"), h, w);
    const count = $("proposal-count");
    const most = Math.max(P.boxes.length, data.pre_nms.boxes.length, 1);
    count.max = String(most);
    count.value = String(Math.min(20, Math.max(P.boxes.length, 1)));
    const index = $("proposal-index");
    index.max = String(Math.max(P.boxes.length - 1, 0));
    let mode = "after";
    let drawnAfter = [];
    document.querySelectorAll('input[name="proposal-mode"]').forEach((input) => {
      input.addEventListener("change", () => { mode = input.value; draw(); });
    });
    count.addEventListener("input", () => draw());
    index.addEventListener("change", () => {
      const i = Number(index.value);
      if (Number.isInteger(i) && i >= 0 && i < P.boxes.length) select(i);
    });
    const levelsPresent = [...new Set(P.levels)].sort();
    $("level-legend").replaceChildren(`all ${P.boxes.length} proposals by level: `, ...levelsPresent.map((k) => element("span", {},
      element("span", { class: "swatch", style: `background:${LEVEL_COLORS[levelName(k)]}` }),
      `${levelName(k)}: ${P.levels.filter((v) => v === k).length}`)));
    const rule = cfg.level_rounding === "floor" ? "floor(4 + log2(√(w·h) / 224) + 1e-6)" : "4 + round(log2(√(w·h) / 224))";
    $("level-rule").textContent = `Level of a proposal (FPN paper, eq. 1; level_rounding = "${cfg.level_rounding}", canonical size ${cfg.canonical_size}): ${rule.replaceAll("224", String(cfg.canonical_size))}, clamped to P2…P5: a 224-pixel box is pooled from P4.`;
    function draw() {
      const k = Number(count.value);
      $("proposal-count-out").textContent = `${k}`;
      view.background(molded, 0.2);
      let before = 0;
      if (mode !== "after") {
        before = Math.min(k, data.pre_nms.boxes.length);
        for (let i = before - 1; i >= 0; i--) view.box(data.pre_nms.boxes[i], "#d0d0d0", { width: 1, alpha: 0.7 });
      }
      drawnAfter = [];
      const perLevel = {};
      if (mode !== "before") {
        drawnAfter = P.order.slice(0, Math.min(k, P.boxes.length));
        for (let r = drawnAfter.length - 1; r >= 0; r--) {
          const i = drawnAfter[r];
          const name = levelName(P.levels[i]);
          perLevel[name] = (perLevel[name] || 0) + 1;
          view.box(P.boxes[i], LEVEL_COLORS[name], { width: 1.5 });
        }
      }
      const s = state.selected;
      if (s >= 0) {
        const b = P.boxes[s], r = P.refined[s];
        view.box(b, "#ffffff", { width: 3.5 });
        view.box(b, LEVEL_COLORS[levelName(P.levels[s])], { width: 2 });
        view.box(r, classColour(P.best_class[s]), { width: 2, dash: true });
        view.arrow((b[0] + b[2]) / 2, (b[1] + b[3]) / 2, (r[0] + r[2]) / 2, (r[1] + r[3]) / 2, "#ffef5a");
      }
      const levels = Object.entries(perLevel).sort().map(([n, c]) => `${n}:${c}`).join(",");
      view.drawn(`after=${drawnAfter.length}/${P.boxes.length} before=${before}/${data.pre_nms.boxes.length} levels=${levels} selected=${s}`);
    }
    view.canvas.addEventListener("click", (event) => {
      const [x, y] = view.point(event);
      // the drawn proposal whose outline is nearest to the click (within a few screen pixels), else the
      // smallest one under the click: any box can be picked, small ones inside big ones too
      let best = -1, bestScore = Infinity;
      for (const i of drawnAfter) {
        const b = P.boxes[i];
        const inside = x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3];
        const outline = inside ? Math.min(x - b[0], b[2] - x, y - b[1], b[3] - y)
          : Math.hypot(Math.max(b[0] - x, 0, x - b[2]), Math.max(b[1] - y, 0, y - b[3]));
        const area = (b[2] - b[0]) * (b[3] - b[1]);
        const score = outline * view.scale <= 4 ? outline * view.scale - 1e9 : inside ? area : Infinity;
        if (score < bestScore) { best = i; bestScore = score; }
      }
      if (best >= 0) select(best);
    });
    state.redrawProposals = draw;
    draw();
  }

  // ------------------------------------------------------------------------------ 5 the heads on one proposal
  function pastedView(original, masks, j) {
    const [H, W] = data.image.original_size;
    const canvas = element("canvas", {});
    const view = new View(canvas, H, W, 260);
    view.background(original);
    const label = D.results.labels[j];
    if (masks[j]) {
      const m = D.results.masks[j];
      view.frame();
      view.ctx.globalAlpha = 0.55;
      view.ctx.drawImage(masks[j], m.x, m.y, m.w, m.h);
      view.ctx.globalAlpha = 1;
    }
    view.box(D.results.boxes[j], classColour(label), { width: 2 });
    view.drawn(`detection ${j} pasted`);
    return element("figure", {}, canvas, element("figcaption", {}, "pasted into the image (original-image pixels)"));
  }

  function select(i) {
    state.selected = i;
    showDetail(i);
    if (state.redrawProposals) state.redrawProposals();
    if (state.redrawDetections) state.redrawDetections();
  }

  let showDetail = () => {};
  function detailPanel(original, masks) {
    const panel = $("detail");
    showDetail = (i) => {
      panel.dataset.proposal = String(i);
      $("proposal-index").value = String(i);
      const b = P.boxes[i];
      const bw = b[2] - b[0], bh = b[3] - b[1];
      const level = P.levels[i];
      const size = Math.sqrt(Math.max(bw * bh, 0));
      const parts = [];
      parts.push(element("h3", {}, `Proposal #${i} (objectness rank ${rankOf[i] + 1} of ${P.boxes.length}, score ${fmt(P.scores[i], 3)})`));
      parts.push(element("p", {}, `box ${boxText(b)} molded px, ${fmt(bw)} × ${fmt(bh)}; √(w·h) = ${fmt(size)} px, log2(${fmt(size)} / ${cfg.canonical_size}) = ${fmt(Math.log2(size / cfg.canonical_size), 2)} → pooled from `,
        element("strong", { style: `color:${LEVEL_COLORS[levelName(level)]}` }, levelName(level)), "."));
      // pooled features
      const [ph, pw] = P.pooled.size;
      const stride = data.levels[level - 2] ? data.levels[level - 2].step[0] : 2 ** level;
      parts.push(element("h3", {}, `${ph}×${pw} pooled features (${P.pooled.channels.length} of ${P.pooled.of} channels)`));
      parts.push(element("p", { class: "frame" }, `Frame: ${data.frames.pooled.text}: ${ph}×${pw} bins over the box on ${levelName(level)}, i.e. box / ${fmt(stride, 0)} = ${boxText(b.map((v) => v / stride), 2)} cells`));
      const maps = element("div", { class: "maps" });
      P.pooled.channels.forEach((channel, k) => {
        const packed = P.pooled.values[k];
        const values = pooled[k].subarray(i * ph * pw, (i + 1) * ph * pw);
        const span = packed.hi > packed.lo ? packed.hi - packed.lo : 1;
        const scaled = Array.from(values, (v) => (v - packed.lo) / span);
        maps.append(smallMap(scaled, ph, pw, grey, 8, `ch ${channel}`));
      });
      parts.push(maps);
      // class scores
      const probs = Array.from({ length: numClasses }, (_, c) => [c, classProbs[i * numClasses + c]]);
      probs.sort((a, b2) => b2[1] - a[1]);
      parts.push(element("h3", {}, "Class scores (softmax of the box head's logits)"));
      const bars = element("div", { class: "bars" });
      for (const [c, p] of probs.slice(0, 6)) {
        bars.append(element("span", {}, className(c)),
          element("div", { class: "bar", style: `width:${Math.max(p * 100, 0.5)}%;background:${c === 0 ? "#999" : classColour(c)}` }),
          element("span", { class: "num" }, fmt(p, 3)));
      }
      parts.push(bars);
      // box refinement
      const best = P.best_class[i];
      const r = P.refined[i];
      parts.push(element("h3", {}, "Box refinement"));
      parts.push(element("p", {}, `For its best class, ${className(best)}, the box head predicts deltas (dx, dy, dw, dh) = ${boxText(P.deltas[i], 3)}; decoded with box_weights (${cfg.box_weights.join(", ")}) they move the box to ${boxText(r)} (dashed in view 4, the arrow joins the centres; the detection layer then clips it).`));
      // detection?
      const j = P.detection[i];
      if (j >= 0) {
        const label = D.labels[j];
        parts.push(element("p", { class: "verdict" }, `It became detection #${j}: ${className(label)} ${fmt(D.scores[j], 3)}, box ${boxText(D.boxes[j])} molded px = ${boxText(D.results.boxes[j])} original px.`));
        const [mh, mw] = D.mask_logits.shape.slice(1);
        const logits = maskLogits.subarray(j * mh * mw, (j + 1) * mh * mw);
        const bound = D.mask_logits.hi || 1;
        parts.push(element("h3", {}, `Mask head: ${mh}×${mw} logits of class ${className(label)}`));
        parts.push(element("div", { class: "maps" },
          smallMap(Array.from(logits, (v) => v / bound), mh, mw, diverging, 5, `logits (blue < 0 < red, ±${fmt(bound, 1)}), ${mh}×${mw} cells over the box`),
          pastedView(original, masks, j)));
      } else if (P.candidates.includes(i)) {
        parts.push(element("p", { class: "verdict no" }, `Not a detection: a class passed detection_min_confidence (${cfg.detection_min_confidence}), but NMS per class (IoU ${cfg.detection_nms_threshold}) or the cut to ${cfg.detection_max_instances} detections removed it.`));
      } else {
        const why = cfg.detection_candidates === "argmax" ? "its most likely class is the background or scores below" : "no class scores at least";
        parts.push(element("p", { class: "verdict no" }, `Not a detection: ${why} detection_min_confidence = ${cfg.detection_min_confidence} (detection_candidates = "${cfg.detection_candidates}").`));
      }
      panel.replaceChildren(...parts);
    };
  }

  // ------------------------------------------------------------------------------ 6 detections
  function detectionsView(original, masks) {
    const [H, W] = data.image.original_size;
    const view = new View($("detections-canvas"), H, W);
    const slider = $("score-threshold");
    slider.value = String(Math.max(0.5, cfg.detection_min_confidence));
    const gt = $("show-gt");
    if (!data.ground_truth) $("gt-label").style.display = "none";
    const R = D.results;
    let shown = [];
    function draw() {
      const threshold = Number(slider.value);
      $("score-threshold-out").textContent = fmt(threshold, 2);
      view.background(original);
      shown = R.scores.map((s, j) => j).filter((j) => R.scores[j] >= threshold);
      if ($("show-masks").checked) {
        view.frame();
        view.ctx.globalAlpha = 0.5;
        for (const j of shown) {
          const m = R.masks[j];
          if (m && masks[j]) view.ctx.drawImage(masks[j], m.x, m.y, m.w, m.h);
        }
        view.ctx.globalAlpha = 1;
      }
      if (data.ground_truth && gt.checked) {
        data.ground_truth.boxes.forEach((b) => view.box(b, "#ffffff", { width: 1.5, dash: true }));
      }
      const selectedDetection = state.selected >= 0 ? P.detection[state.selected] : -1;
      for (const j of shown) {
        view.box(R.boxes[j], classColour(R.labels[j]), { width: j === selectedDetection ? 4 : 2 });
        view.label(`${className(R.labels[j])} ${fmt(R.scores[j], 2)}`, R.boxes[j][0], R.boxes[j][1], classColour(R.labels[j]));
      }
      view.drawn(`detections=${shown.length}/${R.boxes.length} masks=${$("show-masks").checked} gt=${Boolean(data.ground_truth && gt.checked)}`);
      table($("detections-table"), ["#", "class", "score", "box, original px", "box, molded px", "proposal"],
        shown.map((j) => [j, className(R.labels[j]), fmt(R.scores[j], 3), boxText(R.boxes[j]), boxText(D.boxes[j]), `#${D.roi_index[j]}`]),
        (row) => select(D.roi_index[shown[row]]));
    }
    slider.addEventListener("input", draw);
    $("show-masks").addEventListener("change", draw);
    gt.addEventListener("change", draw);
    view.canvas.addEventListener("click", (event) => {
      const [x, y] = view.point(event);
      const hit = shown.filter((j) => { const b = R.boxes[j]; return x >= b[0] && x <= b[2] && y >= b[1] && y <= b[3]; });
      if (hit.length) select(D.roi_index[hit[0]]);
    });
    state.redrawDetections = draw;
    draw();
  }

  // A mask image (white where the mask is) recoloured with its class colour, on its own canvas.
  function tinted(image, colour) {
    const canvas = element("canvas", { width: image.width, height: image.height });
    const ctx = canvas.getContext("2d");
    ctx.drawImage(image, 0, 0);
    ctx.globalCompositeOperation = "source-in";
    ctx.fillStyle = colour;
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    return canvas;
  }

  // ------------------------------------------------------------------------------ start
  async function start() {
    $("subtitle").textContent = `${data.source} · model: ${data.model} · preset "${cfg.name}" · mrcnn_edu ${data.version}`;
    $("notes").replaceChildren(...data.notes.map((n) => element("li", {}, n)));
    $("anchor-offset").textContent = cfg.anchor_offset === 0
      ? "anchor_offset = 0: the cell's top-left corner, as in matterport and torchvision"
      : `anchor_offset = ${cfg.anchor_offset} of a cell from its top-left corner`;
    document.querySelectorAll(".frame[data-view]").forEach((node) => { node.textContent = frameText(node.dataset.view); });
    $("footer").textContent = `Made by mrcnn-edu explore (mrcnn_edu ${data.version}) from one call of model.trace(). No network, no kernel: everything is in this file.`;
    const [original, molded, ...maskImages] = await Promise.all([
      loadImage(data.image.original), loadImage(data.image.molded),
      ...D.results.masks.map((m) => (m ? loadImage(m.uri) : Promise.resolve(null))),
    ]);
    const masks = maskImages.map((image, j) => (image ? tinted(image, classColour(D.results.labels[j])) : null));
    moldedView(original, molded);
    anchorsView(molded);
    objectnessView(molded);
    detailPanel(original, masks);
    proposalsView(molded);
    detectionsView(original, masks);
    document.body.dataset.ready = "true";
  }

  start().catch((err) => {
    document.body.prepend(element("p", { id: "error" }, `This page could not start: ${err.message}`));
    throw err;
  });
})();
