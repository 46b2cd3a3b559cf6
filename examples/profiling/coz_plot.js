// Render a coz profile with coz's own viewer (Debian's coz-profiler ships it
// in /usr/share/coz-profiler/viewer) in headless Chromium, to a PNG.
// usage: NODE_PATH=build/node/node_modules node coz_plot.js PROFILE.coz OUT.png [MINPOINTS]
const { chromium } = require('playwright-core');
const fs = require('fs');

(async () => {
  const [profile, out, minpoints = '2'] = process.argv.slice(2);
  if (!profile || !out) {
    console.error('usage: coz_plot.js PROFILE.coz OUT.png [MINPOINTS]');
    process.exit(2);
  }
  const text = fs.readFileSync(profile, 'utf8');
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
           '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto('file:///usr/share/coz-profiler/viewer/index.htm');
    await page.evaluate(([t, m]) => {
      document.getElementById('minpoints_field').value = m;
      const d = document.getElementById('minpoints_display');
      if (d) d.textContent = m;
      // ui.js's globals: what its "Open" button does with a file's text
      current_profile = new Profile(t, d3.select('#plot-area'),
                                    d3.select('#legend'), get_min_points,
                                    display_warning);
      update();
    }, [text, minpoints]);
    await page.waitForTimeout(1500);
    await page.screenshot({ path: out, fullPage: true });
  } finally {
    await browser.close();
  }
})().catch((e) => { console.error(e); process.exit(1); });
