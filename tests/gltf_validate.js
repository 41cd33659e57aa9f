// Validate a .glb with the Khronos glTF validator; print {errors, warnings, messages} as JSON.
const validator = require('gltf-validator');
const fs = require('fs');
const bytes = new Uint8Array(fs.readFileSync(process.argv[2]));
validator.validateBytes(bytes).then((report) => {
  const issues = report.issues;
  console.log(JSON.stringify({errors: issues.numErrors, warnings: issues.numWarnings,
                              messages: issues.messages.slice(0, 10)}));
}).catch((e) => { console.error(String(e)); process.exit(1); });
