// Makes real constraint violations through a real Prisma 7 client (driver adapter pg)
// and logs each error once, the way a Next.js app does. LOG_STYLE says how:
//   pino   (default) pino JSON lines to LOG_FILE, the error under `err` (pino's
//          serializer), under `error` / `e` (no serializer: code, meta, ... only),
//          or logged as the object itself (`logger.error(e)`)
//   events Prisma `log: [{ emit: 'event', level: 'error' }]`: each event
//          ({message, target, timestamp}) as a JSON line to LOG_FILE
//   stdout Prisma `log: ['error']`: multi-line `prisma:error ...` text on stdout
// Ordinary app lines are logged in between (the exporter must ignore them).
// Writes to MANIFEST_FILE what it did: one {code, kind, constraint, model} per error,
// which is what the exporter must count.
// Usage: DATABASE_URL=postgresql://... LOG_FILE=... MANIFEST_FILE=... node violate.js
'use strict';

const fs = require('fs');
const { PrismaClient } = require('@prisma/client');
const { PrismaPg } = require('@prisma/adapter-pg');
const pino = require('pino');

const style = process.env.LOG_STYLE || 'pino';
const adapter = new PrismaPg({ connectionString: process.env.DATABASE_URL });
const log = { pino: [], events: [{ emit: 'event', level: 'error' }], stdout: ['error'] }[style];
const prisma = new PrismaClient({ adapter, log });
const logger = style === 'pino'
  ? pino(pino.destination({ dest: process.env.LOG_FILE, sync: true }))
  : pino({ enabled: style === 'events' }, pino.destination({ dest: process.env.LOG_FILE || 1, sync: true }));
if (style === 'events') {
  prisma.$on('error', (event) => fs.appendFileSync(process.env.LOG_FILE, JSON.stringify(event) + '\n'));
}

const done = [];
let round = 0;

// Expect `action` to fail; with pino, log the error the way `how` says.
async function violate(expected, how, action) {
  try {
    await action();
  } catch (e) {
    if (style === 'pino') {
      if (how === 'err') logger.error({ err: e }, 'database write failed');
      else if (how === 'error') logger.error({ error: e }, 'database write failed');
      else if (how === 'e') logger.warn({ e, route: '/api/inventory' }, 'write rejected');
      else logger.error(e); // pino puts it under `err`, msg = e.message
    }
    // Log events and prisma:error text carry no code: the exporter counts them as "unknown".
    done.push({ ...expected, code: style === 'pino' ? expected.code : 'unknown', prismaCode: e.code ?? null });
    return;
  }
  throw new Error(`expected a failure: ${JSON.stringify(expected)}`);
}

function appLine(route) {
  if (style === 'stdout') process.stdout.write(`GET ${route} 200 in 12ms\n`);
  else logger.info({ route }, 'request served');
}

async function main() {
  await prisma.$executeRawUnsafe('TRUNCATE "LocationInventory", "Item", "Location", "Practice" CASCADE');
  await prisma.practice.create({ data: { id: 'p1', name: 'Clinic', slug: 'clinic' } });
  await prisma.location.create({ data: { id: 'l1', practiceId: 'p1', name: 'Main', description: 'main room' } });
  await prisma.item.create({ data: { id: 'i1', practiceId: 'p1', name: 'Gauze' } });
  await prisma.locationInventory.create({ data: { locationId: 'l1', itemId: 'i1', quantity: 5 } });
  appLine('/api/items');

  const unique = { code: 'P2002', kind: 'unique', constraint: 'Item_practiceId_name_key', model: 'Item' };
  for (const how of ['err', 'error', 'plain']) {
    round += 1;
    await violate(unique, how, () => prisma.item.create({ data: { id: `dup${round}`, practiceId: 'p1', name: 'Gauze' } }));
  }

  const fk = { code: 'P2003', kind: 'foreign_key', constraint: 'Item_practiceId_fkey', model: 'Item' };
  await violate(fk, 'err', () => prisma.item.create({ data: { id: 'orphan1', practiceId: 'nope', name: 'X' } }));
  await violate(fk, 'e', () => prisma.item.create({ data: { id: 'orphan2', practiceId: 'nope', name: 'Y' } }));

  const check = { code: 'P2039', kind: 'check', constraint: 'check_quantity_non_negative', model: 'LocationInventory' };
  const where = { locationId_itemId: { locationId: 'l1', itemId: 'i1' } };
  await violate(check, 'err', () => prisma.locationInventory.update({ where, data: { quantity: -1 } }));
  await violate(check, 'plain', () => prisma.locationInventory.update({ where, data: { quantity: { decrement: 10 } } }));
  appLine('/api/inventory');

  const notNull = { code: 'P2011', kind: 'not_null', constraint: 'none', model: 'Location' };
  await violate(notNull, 'err', () => prisma.location.create({ data: { id: 'l2', practiceId: 'p1', name: 'Back', description: null } }));

  // A raw query names no model; the database text names the table.
  const raw = { code: 'P2010', kind: 'check', constraint: 'check_quantity_non_negative', model: 'LocationInventory' };
  await violate(raw, 'err', () => prisma.$executeRaw`UPDATE "LocationInventory" SET "quantity" = -3`);

  fs.writeFileSync(process.env.MANIFEST_FILE, JSON.stringify(done) + '\n');
}

main()
  .catch((e) => { console.error(e); process.exitCode = 1; })
  .finally(() => prisma.$disconnect());
