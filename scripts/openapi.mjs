// Writes docs/openapi.json, the OpenAPI 3.1 document of the daemon's REST API, from the TypeBox
// schemas in src/api/ (the daemon serves the same document at GET /v1/openapi.json).
//   npm run openapi    (node --import tsx scripts/openapi.mjs)
// A unit test (test/unit/api-openapi.test.ts) fails when the committed copy is not what this writes.
import { writeFileSync } from 'node:fs';
import { format, resolveConfig } from 'prettier';
import { openApiDocument } from '../src/api/openapi.ts';

const file = 'docs/openapi.json';
const options = { ...(await resolveConfig(file)), parser: 'json' };
writeFileSync(file, await format(JSON.stringify(openApiDocument()), options));
console.log(`wrote ${file}`);
