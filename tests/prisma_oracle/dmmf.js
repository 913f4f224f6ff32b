// Prints Prisma's own parse of a schema file (the DMMF datamodel) as JSON on stdout.
// Usage: node dmmf.js path/to/schema.prisma
// Exit 1 with Prisma's error text on stderr when the schema does not validate.
const fs = require("fs");
const wasm = require("@prisma/prisma-schema-wasm");

const schema = fs.readFileSync(process.argv[2], "utf8");
try {
  const dmmf = JSON.parse(wasm.get_dmmf(JSON.stringify({ prismaSchema: schema })));
  process.stdout.write(JSON.stringify(dmmf.datamodel));
} catch (err) {
  // get_dmmf throws a JSON string {error_code, message} for invalid schemas.
  process.stderr.write(String(err && err.message ? err.message : err) + "\n");
  process.exit(1);
}
