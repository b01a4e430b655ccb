// page_test.js — the page of `kvlab trace --html` in headless Chromium, driven by
// playwright-core: no console error, the step slider and the layer and head menus
// work, and what the page shows for a few tokens equals trace.npz.
//   node page_test.js PAGE.html EXPECTED.json SCREENSHOT.png
// EXPECTED.json (expected_values.py): per check, the selection (layer index, head
// index, query index, its position) and, per token, the values in trace.npz.
// Prints "ok NAME" / "FAIL NAME ..." lines and "RESULT page_test passed=N failed=N".
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const [pagePath, expectedPath, shotPath] = process.argv.slice(2);
const expected = JSON.parse(fs.readFileSync(expectedPath, "utf8"));
let passed = 0, failed = 0;
const ok = name => { passed++; console.log("ok    " + name); };
const fail = (name, why) => { failed++; console.log("FAIL  " + name + (why ? "\n      " + why : "")); };
const check = (name, cond, why) => (cond ? ok(name) : fail(name, why));

// Float32 values reach the page and this test as the same double (both sides read the
// same 4 bytes), so they are compared exactly; NaN (not cached, no score) is null.
const same = (shown, want) => (want === null ? shown === "" : shown !== "" && Number(shown) === want);

async function hoverToken(page, p) {
  await page.hover(`#text span[data-pos="${p}"]`);
  return page.$eval("#tip", t => ({ hidden: t.hidden, ...t.dataset }));
}

async function hoverColumn(page, p) {
  const box = await page.$eval("#strip", c => {
    const r = c.getBoundingClientRect();
    return { x: r.left, y: r.top, left: Number(c.dataset.left), cw: Number(c.dataset.colWidth) };
  });
  await page.mouse.move(box.x + box.left + (p + 0.5) * box.cw, box.y + 12);
  return page.$eval("#tip", t => ({ hidden: t.hidden, ...t.dataset }));
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 1500 } });
  const errors = [];
  page.on("console", m => { if (m.type() === "error") errors.push(m.text()); });
  page.on("pageerror", e => errors.push(String(e)));
  // nothing may be fetched: the page is one file
  const requests = [];
  page.on("request", r => { if (!r.url().startsWith("file:") && !r.url().startsWith("data:")) requests.push(r.url()); });
  await page.goto("file://" + path.resolve(pagePath));
  await page.waitForSelector("#text span");
  check("the page loads and draws the text (" + expected.n_positions + " tokens)",
        (await page.$$("#text span")).length === expected.n_positions);

  for (const c of expected.checks) {
    const what = `layer ${c.layer}, head ${c.head}, query at ${c.query_pos}`;
    await page.selectOption("#layer", String(c.li));
    await page.selectOption("#head", String(c.hi));
    // the slider, moved as a user would: Home, then the arrow key
    await page.focus("#step");
    await page.keyboard.press("Home");
    for (let i = 0; i < c.q; i++) await page.keyboard.press("ArrowRight");
    const label = await page.textContent("#step-label");
    check(`${what}: the slider and menus select it`, label.includes(`query at position ${c.query_pos} `) &&
          label.includes(`in layer ${c.layer},`), label);
    // the text box shows the step's query (the newest token), not the top of a long prompt
    const view = await page.$eval("#text", (box, p) => {
      const b = box.getBoundingClientRect(), s = box.querySelector(`span[data-pos="${p}"]`).getBoundingClientRect();
      return { inside: s.top >= b.top && s.bottom <= b.bottom, scrollTop: box.scrollTop };
    }, c.query_pos);
    check(`${what}: the text box has scrolled to the query`, view.inside, JSON.stringify(view));
    // the colour scale shows more than the sink: log scale from the row's smallest attention to its
    // largest, so the token of median attention (often a thousandth of the sink's) has the colour of
    // its place on that scale (a linear or square-root scale leaves it white)
    const green = await page.$eval("#strip", (cv, p) => {
      const k = cv.width / cv.getBoundingClientRect().width;
      const x = Math.floor((Number(cv.dataset.left) + (p + 0.5) * Number(cv.dataset.colWidth)) * k);
      return cv.getContext("2d").getImageData(x, Math.floor(17 * k), 1, 1).data[1];
    }, c.median_pos);
    // key norm bars span the range of this layer and KV head: 34 px x (0.08 + 0.92 (k - min) / (max - min)),
    // so a short key shows as a short bar (bars from 0 would all be 50-100 % high)
    const barHeight = p => page.$eval("#strip", (cv, p) => {
      const k = cv.width / cv.getBoundingClientRect().width, rowH = 34, top = rowH + 6;   // the key norm row
      const x = Math.floor((Number(cv.dataset.left) + (p + 0.5) * Number(cv.dataset.colWidth)) * k);
      const px = cv.getContext("2d").getImageData(x, Math.round(top * k), 1, Math.round(rowH * k)).data;
      let n = 0;
      for (let i = 0; i < px.length; i += 4) if (px[i + 3] > 0) n++;   // painted pixels of the column
      return n / k;
    }, p);
    const [shortBar, longBar] = [await barHeight(c.short_key_pos), await barHeight(c.long_key_pos)];
    const want = k => 34 * (0.08 + 0.92 * (k - c.key_min) / (c.key_max - c.key_min));
    check(`${what}: key norm bars of the shortest and longest key (positions ${c.short_key_pos}, ${c.long_key_pos}) ` +
          `${shortBar.toFixed(1)} and ${longBar.toFixed(1)} px = ${want(c.short_key).toFixed(1)} and ${want(c.long_key).toFixed(1)} ± 1.5`,
          Math.abs(shortBar - want(c.short_key)) <= 1.5 && Math.abs(longBar - want(c.long_key)) <= 1.5, `${shortBar} ${longBar}`);
    check(`${what}: the median-attention token (${c.median_pos}, ${c.median_attn.toExponential(2)} against ` +
          `the row's ${c.max_attn.toFixed(3)}) has its log-scale colour in the strip (green ${green}, ` +
          `numpy ${c.median_green.toFixed(1)})`, Math.abs(green - c.median_green) <= 2, String(green));
    for (const t of c.tokens) {
      for (const [how, tip] of [["token", await hoverToken(page, t.pos)], ["strip column", await hoverColumn(page, t.pos)]]) {
        const good = !tip.hidden && Number(tip.pos) === t.pos && same(tip.attn, t.attn) && same(tip.keyNorm, t.key_norm) &&
                     same(tip.valueNorm, t.value_norm) && (t.score === undefined || same(tip.score, t.score)) &&
                     (t.evicted_at === undefined || Number(tip.evictedAt) === t.evicted_at);
        check(`${what}, position ${t.pos} (hover ${how}): attention, key/value norm${t.score !== undefined ? ", score, evicted_at" : ""} = trace.npz`,
              good, `page ${JSON.stringify(tip)} vs npz ${JSON.stringify(t)}`);
      }
    }
    const rho = await page.$eval("#layers tr.current", tr => ({ layer: tr.dataset.layer, rho: tr.cells[1].dataset.value,
      alr: tr.cells[3].dataset.value, first: tr.cells[4].dataset.value, ratio: tr.cells[5].dataset.value }));
    check(`${what}: the table's current row is the layer, ρ = numpy's Spearman (${c.spearman.toFixed(6)})`,
          Number(rho.layer) === c.layer && Math.abs(Number(rho.rho) - c.spearman) < 1e-5, JSON.stringify(rho));
    const near = (shown, want) => want === null ? shown === "NaN" : Math.abs(Number(shown) - want) <= 1e-5 * Math.max(1, Math.abs(want));
    check(`${what}: ALR/n ${c.alr_per_n.toFixed(6)}, first-token attention ${c.first_attn}, first key / median ` +
          `${c.first_norm_ratio} = numpy's`, near(rho.alr, c.alr_per_n) && near(rho.first, c.first_attn) &&
          near(rho.ratio, c.first_norm_ratio), JSON.stringify(rho));
    if (c.kv_bytes !== undefined)
      check(`${what}: the KV bytes shown = trace.npz (${c.kv_bytes})`,
            Number(await page.$eval("#kv-label", e => e.dataset.bytes)) === c.kv_bytes);
  }
  // at 1280 px the scatter and the KV chart stand side by side
  const [scatterTop, kvTop] = await page.$$eval("#scatter, #kv", es => es.map(e => e.getBoundingClientRect().top));
  check(`the scatter and the KV chart side by side (tops ${scatterTop}, ${kvTop})`, Math.abs(scatterTop - kvTop) < 2);
  // the KV bytes chart names its x axis' steps: decode steps 0..n-1 (the README's example records every one)
  const ticks = await page.$$eval("#kv text.step-tick", ts => ts.map(t => t.textContent));
  check(`the KV chart labels its steps (${ticks.join(" ")})`, ticks.length >= 2 && ticks[0] === "0" &&
        ticks[ticks.length - 1] === String(expected.n_decode_steps - 1), JSON.stringify(ticks));
  // with a policy the KV line is a sawtooth: per step two points at one x, the second (after the
  // eviction) not above the first (when the query attends), lower exactly where trace.npz's kv_bytes drop
  if (expected.checks[0].kv_bytes !== undefined) {
    const pts = await page.$eval("#kv-line", l => l.getAttribute("points").trim().split(/\s+/).map(p => p.split(",").map(Number)));
    let pairs = pts.length === 2 * expected.n_decode_steps, drops = 0;
    for (let j = 0; pairs && j < pts.length; j += 2) {
      pairs = pts[j][0] === pts[j + 1][0] && pts[j + 1][1] >= pts[j][1];
      if (pts[j + 1][1] > pts[j][1]) drops++;
    }
    check(`the KV line rises with each step's token and drops at each of the ${expected.kv_drops} evicting steps ` +
          `(${pts.length} points)`, pairs && drops === expected.kv_drops, JSON.stringify(pts));
  }
  // play: while it runs, the slider, the label and what a hover reads are the same step
  await page.click("#play");
  await page.waitForTimeout(900);
  const playing = await page.evaluate(() => ({ slider: Number(document.getElementById("step").value), q: state.q,
                                               label: document.getElementById("step-label").textContent,
                                               pos: TRACE.query_pos[Number(document.getElementById("step").value)] }));
  if ((await page.textContent("#play")) === "stop") await page.click("#play");
  check(`play: the step shown is the step hovered (slider ${playing.slider}, state ${playing.q})`,
        playing.slider === playing.q && playing.label.includes(`query at position ${playing.pos} `), JSON.stringify(playing));
  // back to a state worth a picture: the last step of the layer given for it
  if (expected.screenshot) {
    await page.selectOption("#layer", String(expected.screenshot.li));
    await page.selectOption("#head", String(expected.screenshot.hi));
    await page.focus("#step");
    await page.keyboard.press("End");
    await page.mouse.move(0, 0);
    const p = expected.screenshot.hover;
    if (p !== undefined) await hoverColumn(page, p);
  }
  await page.screenshot({ path: shotPath, fullPage: true });
  check("no console error, no page error", errors.length === 0, errors.join(" | "));
  check("no network request", requests.length === 0, requests.join(" "));
  await browser.close();
  console.log(`RESULT page_test passed=${passed} failed=${failed}`);
  process.exit(failed ? 1 : 0);
})().catch(e => {
  console.log("FAIL  the browser test stopped: " + (e && e.stack || e));
  console.log(`RESULT page_test passed=${passed} failed=${failed + 1}`);
  process.exit(1);
});
