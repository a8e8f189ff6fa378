// Validates Kubernetes objects against the API schema of the kubernetes-models package (pinned by
// package-lock.json; installed by scripts/install_schema_validator.sh).
//   node validate.mjs NODE_MODULES < objects.json
// stdin: a JSON array of objects (deploy_test.py renders the overlays and converts them). Prints one
// line per object that fails (or whose apiVersion/kind has no schema) and exits 1 if any did.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
if (!modules) {
  console.error("usage: node validate.mjs NODE_MODULES < objects.json");
  process.exit(2);
}
const objects = JSON.parse(fs.readFileSync(0, "utf8"));
let failures = 0;
for (const object of objects) {
  const name = `${object.kind}/${object.metadata?.name} (${object.apiVersion})`;
  // "apps/v1" -> kubernetes-models/apps/v1/Deployment.mjs; the core group "v1" -> kubernetes-models/v1/...
  const file = path.join(modules, "kubernetes-models", object.apiVersion ?? "", `${object.kind}.mjs`);
  if (!object.apiVersion || !object.kind || !fs.existsSync(file)) {
    console.log(`${name}: no Kubernetes API schema for this apiVersion and kind`);
    failures++;
    continue;
  }
  const exported = await import(pathToFileURL(file).href);
  try {
    new exported[object.kind](object).validate();
  } catch (error) {
    const details = (error.errors ?? []).map((e) => `${e.instancePath || "/"} ${e.message}` +
      (e.params?.additionalProperty ? ` (${e.params.additionalProperty})` : ""));
    console.log(`${name}: ${details.length ? details.join("; ") : error.message}`);
    failures++;
  }
}
console.log(`schema: ${objects.length - failures} of ${objects.length} objects valid`);
process.exit(failures ? 1 : 0);
