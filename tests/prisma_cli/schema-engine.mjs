#!/usr/bin/env node
// Stands in for Prisma's native `schema-engine` executable, which cannot be downloaded here:
// the CLI spawns this (PRISMA_SCHEMA_ENGINE_BINARY) and speaks its protocol, and every request
// goes to the same Rust engine compiled to WebAssembly (@prisma/schema-engine-wasm), which
// reaches PostgreSQL through @prisma/adapter-pg. Protocol and patches:
// tests/prisma_cli/README.md.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const { PrismaPg } = require('@prisma/adapter-pg');
const { bindMigrationAwareSqlAdapterFactory } = require('@prisma/driver-adapter-utils');
const bg = await import('@prisma/schema-engine-wasm/schema_engine_bg');

// -- arguments -------------------------------------------------------------------------------
const argv = process.argv.slice(2);
const datamodelPaths = [];
let datasource = null;
const positional = [];
for (let i = 0; i < argv.length; i++) {
  const a = argv[i];
  if (a === '--datamodels') datamodelPaths.push(argv[++i]);
  else if (a === '--datasource') datasource = JSON.parse(argv[++i]);
  else if (a.startsWith('--')) i++; // --enabled-preview-features X, --extension-types X: one value each
  else positional.push(a);
}
const url = datasource?.url ?? process.env.DATABASE_URL;

// -- the three adapter-pg patches (applied here, never in node_modules) ------------------------
const CHAR_OID = 18;
const TEXT_OID = 25;
function patchAdapter(adapter) {
  const adapterProto = Object.getPrototypeOf(adapter);
  if (adapterProto.__venzoryPatched) return;
  adapterProto.__venzoryPatched = true;
  // 1. executeScript splits on ';' (breaks DO $$ ... $$): send the script as one simple query,
  //    as the native engine does (PostgreSQL runs it as one implicit transaction).
  adapterProto.executeScript = async function executeScript(script) {
    try {
      await this.client.query(script);
    } catch (error) {
      this.onError(error);
    }
  };
  // 2. "char" columns (OID 18) are unsupported by the adapter: report them as text.
  const queryableProto = Object.getPrototypeOf(adapterProto);
  const performIO = queryableProto.performIO;
  queryableProto.performIO = async function patchedPerformIO(query) {
    const result = await performIO.call(this, query);
    for (const field of result?.fields ?? []) if (field.dataTypeID === CHAR_OID) field.dataTypeID = TEXT_OID;
    return result;
  };
}

class PatchedPg extends PrismaPg {
  async connect() {
    const adapter = await super.connect();
    patchAdapter(adapter);
    return adapter;
  }
  // 3. a shadow database: a scratch database with a unique name, dropped on dispose.
  async connectToShadowDb() {
    const admin = await this.connect();
    const database = `prisma_shadow_${process.pid}_${Date.now()}_${Math.floor(Math.random() * 1e9)}`;
    await admin.executeScript(`CREATE DATABASE "${database}"`);
    const u = new URL(url);
    u.pathname = `/${database}`;
    const shadow = await new PatchedPg({ connectionString: u.toString() }).connect();
    const dispose = shadow.dispose.bind(shadow);
    shadow.dispose = async () => {
      await dispose();
      await admin.executeScript(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
      await admin.dispose();
    };
    return shadow;
  }
}

async function makeEngine() {
  const bgPath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
  const wasmBytes = readFileSync(join(dirname(bgPath), 'schema_engine_bg.wasm'));
  const { instance } = await WebAssembly.instantiate(wasmBytes, { './schema_engine_bg.js': bg });
  bg.__wbg_set_wasm(instance.exports);
  instance.exports.__wbindgen_start();
  const datamodels = datamodelPaths.length ? datamodelPaths.map((p) => [p, readFileSync(p, 'utf8')]) : undefined;
  const factory = bindMigrationAwareSqlAdapterFactory(new PatchedPg({ connectionString: url }));
  return bg.SchemaEngine.new({ datamodels }, () => {}, factory);
}

function errorLine(message, code) {
  const fields = { message, error_code: code };
  process.stderr.write(JSON.stringify({ timestamp: new Date().toISOString(), level: 'ERROR', fields, target: 'schema_engine::logger' }) + '\n');
}

function errorCodeOf(e) {
  const text = String(e?.message ?? e);
  if (/does not exist/.test(text)) return 'P1003';
  if (/already exists/.test(text)) return 'P1009';
  return 'P1001';
}

// -- `cli` subcommands -----------------------------------------------------------------------
if (positional[0] === 'cli') {
  const command = positional[1];
  const pgFactory = new PatchedPg({ connectionString: url });
  try {
    if (command === 'can-connect-to-database') {
      const adapter = await pgFactory.connect();
      await adapter.executeScript('SELECT 1');
      await adapter.dispose();
    } else if (command === 'create-database') {
      const u = new URL(url);
      const name = decodeURIComponent(u.pathname.slice(1));
      u.pathname = '/postgres';
      const admin = await new PatchedPg({ connectionString: u.toString() }).connect();
      try {
        await admin.executeScript(`CREATE DATABASE "${name.replace(/"/g, '""')}"`);
      } finally {
        await admin.dispose();
      }
    } else {
      errorLine(`unsupported cli command ${command}`, 'P1001');
      process.exit(1);
    }
    process.exit(0);
  } catch (e) {
    const cause = e?.cause ?? {};
    errorLine(String(cause.originalMessage ?? e?.message ?? e), errorCodeOf(cause.originalMessage ?? e));
    process.exit(1);
  }
}

// -- JSON-RPC over stdin/stdout --------------------------------------------------------------
const engine = await makeEngine();
const pending = new Set();
const send = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');

function rpcError(id, e) {
  let data = { is_panic: false, message: String(e?.message ?? e), error_code: null, meta: null };
  // The wasm engine throws a JSON text or an object with the user-facing error.
  const raw = typeof e === 'string' ? e : e?.message;
  try {
    const parsed = JSON.parse(raw);
    data = { is_panic: false, message: parsed.message ?? data.message, error_code: parsed.error_code ?? null, meta: parsed.meta ?? null };
  } catch {
    if (e && typeof e === 'object' && ('error_code' in e || 'message' in e)) {
      data = { is_panic: false, message: e.message, error_code: e.error_code ?? null, meta: e.meta ?? null };
    }
  }
  send({ jsonrpc: '2.0', id, error: { code: 4466, message: 'An error happened. Check the data field for details.', data } });
}

async function handle(request) {
  const { id, method, params } = request;
  try {
    const name = method === 'getDatabaseVersion' ? 'version' : method;
    if (typeof engine[name] !== 'function') throw new Error(`unknown method ${method}`);
    let result = await engine[name](params ?? {});
    if (method === 'diff' && result && typeof result.stdout === 'string') {
      if (result.stdout.length) send({ jsonrpc: '2.0', id: `print-${id}`, method: 'print', params: { content: result.stdout.replace(/\n$/, '') } });
      result = { exitCode: result.exitCode };
    }
    send({ jsonrpc: '2.0', id, result: result ?? null });
  } catch (e) {
    rpcError(id, e);
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  if (!line.trim()) return;
  let request;
  try {
    request = JSON.parse(line);
  } catch {
    return;
  }
  if (!request.method) return; // an acknowledgement (e.g. of our print request)
  const p = handle(request);
  pending.add(p);
  p.finally(() => pending.delete(p));
});
rl.on('close', async () => {
  await Promise.allSettled([...pending]);
  process.exit(0);
});
