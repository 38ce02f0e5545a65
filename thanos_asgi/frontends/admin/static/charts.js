// Small line charts drawn as inline SVG (no library): chart(el, xs, [series...], format)
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  function node(name, attrs, parent) {
    const el = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (parent) parent.appendChild(el);
    return el;
  }
  function lineChart(el, xs, series, format) {
    const W = 400, H = 160, L = 44, B = 18, T = 8;
    el.textContent = "";
    const svg = node("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" }, el);
    const values = series.flat().filter((v) => v !== null && isFinite(v));
    const top = Math.max(1e-9, ...values, 0) * 1.1 || 1;
    const x = (i) => L + (i * (W - L - 4)) / Math.max(1, xs.length - 1);
    const y = (v) => H - B - ((H - B - T) * v) / top;
    node("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" }, svg);
    node("line", { x1: L, y1: T, x2: L, y2: H - B, class: "axis" }, svg);
    const auto = (v) => (top >= 20 ? v.toFixed(0) : top >= 2 ? v.toFixed(1) : v ? v.toPrecision(2) : "0");
    for (const v of [0, top / 2, top]) {
      node("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end", class: "tick" }, svg).textContent = (format || auto)(v);
    }
    if (xs.length) {
      for (const i of [0, xs.length - 1]) {
        const t = new Date(xs[i] * 1000).toISOString().slice(11, 16);
        node("text", { x: x(i), y: H - 4, "text-anchor": i ? "end" : "start", class: "tick" }, svg).textContent = t;
      }
    }
    series.forEach((points, s) => {
      const path = [];
      let first = -1, last = -1;
      points.forEach((v, i) => {
        if (v === null || !isFinite(v)) return;
        if (first < 0) first = i;
        last = i;
        path.push(`${path.length ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`);
      });
      if (!path.length) return;
      if (s === 0) node("path", { d: `${path.join("")}L${x(last)},${H - B}L${x(first)},${H - B}Z`, class: "area" }, svg);
      node("path", { d: path.join(""), class: `s${s}` }, svg);
    });
  }
  window.thanosCharts = { lineChart };
})();
