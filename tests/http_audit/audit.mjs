// Runs graphql-http's server audits (GraphQL-over-HTTP conformance) against a running gateway.
// Usage: node audit.mjs URL  — prints one JSON line per audit, then a summary line; exits 1 when
// any MUST or SHOULD audit fails (MAY audits are reported, not required).
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs URL');
  process.exit(2);
}

const results = [];
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  const entry = { id: result.id, name: result.name, status: result.status };
  if (result.status !== 'ok') {
    entry.reason = result.reason;
    if (result.response) {
      entry.responseStatus = result.response.status;
      try {
        entry.responseBody = (await result.response.text()).slice(0, 500);
      } catch {
        // the audit already read the body
      }
    }
  }
  results.push(entry);
  console.log(JSON.stringify(entry));
}

const level = (name) => name.split(' ')[0]; // "MUST", "SHOULD" or "MAY"
const summary = {};
for (const r of results) {
  const key = level(r.name);
  summary[key] ??= { ok: 0, failed: 0 };
  summary[key][r.status === 'ok' ? 'ok' : 'failed'] += 1;
}
console.log(JSON.stringify({ summary }));
const required = results.filter((r) => r.status !== 'ok' && ['MUST', 'SHOULD'].includes(level(r.name)));
process.exit(required.length ? 1 : 0);
