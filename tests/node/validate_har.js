// Validate HAR files against the HAR 1.2 schema (har-validator), and print
// a one-line summary per entry for the calling test: "connection connect ssl".
// Usage: node validate_har.js FILE...   Exit 1 on the first invalid file.
'use strict';
const fs = require('fs');
const validator = require('har-validator');

(async () => {
  for (const f of process.argv.slice(2)) {
    let har;
    try {
      har = JSON.parse(fs.readFileSync(f, 'utf8'));
      await validator.har(har);
    } catch (e) {
      console.error(`${f}: ${e.message}`);
      if (e.errors) console.error(JSON.stringify(e.errors, null, 1));
      process.exit(1);
    }
    for (const e of har.log.entries)
      console.log(`${e.connection} ${e.timings.connect} ${e.timings.ssl} ${e.request.url}`);
  }
})();
