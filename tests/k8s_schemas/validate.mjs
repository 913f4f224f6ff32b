// Validates prometheus-operator resources (JSON documents, one per line on stdin) against
// the schemas of @kubernetes-models/prometheus-operator, generated from the operator's
// monitoring.coreos.com/v1 API types. Prints one line per problem; exit 1 when any.
import { createInterface } from "node:readline";
import { PrometheusRule, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const kinds = { PrometheusRule, ServiceMonitor };
let problems = 0;
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const doc = JSON.parse(line);
  const where = `${doc.kind}/${doc.metadata?.name}`;
  const Model = kinds[doc.kind];
  if (doc.apiVersion !== "monitoring.coreos.com/v1" || !Model) {
    console.log(`${where}: not a monitoring.coreos.com/v1 kind this validates`);
    problems++;
    continue;
  }
  try {
    new Model(doc).validate();
    console.log(`${where}: valid`);
  } catch (e) {
    console.log(`${where}: ${e.message}`);
    problems++;
  }
}
process.exit(problems ? 1 : 0);
