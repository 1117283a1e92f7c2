import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto'
import { defineFact } from '../facts/fact.js'
import { Secret } from '../core/secret.js'
import { raw, sh } from '../core/shell.js'
import type { Resource } from './resource.js'

const PSQL = raw`runuser -u postgres -- psql -X -A -t -q -v ON_ERROR_STOP=1`

export const sqlIdent = (name: string) => `"${name.replace(/"/g, '""')}"`
export const sqlLiteral = (value: string) => `'${value.replace(/'/g, "''")}'`

/** A Postgres query as a fact; `unavailable` when Postgres is not installed or not running yet. */
function psqlFact<T>(id: string, sql: string, parse: (rows: string[][]) => T) {
  return defineFact(id, sh`${PSQL} -F '\t' -c ${sql}`, (out, code) =>
    code === 0
      ? {
          available: true as const,
          value: parse(
            out
              .split('\n')
              .filter(Boolean)
              .map((l) => l.split('\t')),
          ),
        }
      : { available: false as const },
  )
}

/** SCRAM-SHA-256 verifier as Postgres stores it (RFC 5802/7677), so the cleartext never reaches the server. */
export function scramVerifier(password: string, salt = randomBytes(16), iterations = 4096): string {
  const salted = pbkdf2Sync(password.normalize('NFKC'), salt, iterations, 32, 'sha256')
  const clientKey = createHmac('sha256', salted).update('Client Key').digest()
  const storedKey = createHash('sha256').update(clientKey).digest()
  const serverKey = createHmac('sha256', salted).update('Server Key').digest()
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`
}

/** Does a stored rolpassword (SCRAM verifier or md5 hash) match this password? */
export function passwordMatches(stored: string, user: string, password: string): boolean {
  const scram = /^SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)$/.exec(stored)
  if (scram) return scramVerifier(password, Buffer.from(scram[2]!, 'base64'), Number(scram[1])) === stored
  if (stored.startsWith('md5'))
    return (
      stored ===
      `md5${createHash('md5')
        .update(password + user)
        .digest('hex')}`
    )
  return false
}

export function postgresRole(spec: { name: string; password: Secret }): Resource {
  const fact = psqlFact(
    `pg-role:${spec.name}`,
    `SELECT rolcanlogin, coalesce(rolpassword, '') FROM pg_authid WHERE rolname = ${sqlLiteral(spec.name)}`,
    (rows) => rows[0],
  )
  const id = `pg-role:${spec.name}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const f = ctx.facts.get(fact)
      if (!f.available) {
        return {
          resource: id,
          kind: 'database',
          action: 'create',
          summary: `create Postgres role ${spec.name} with a password`,
          uncertain: 'Postgres is not installed or not running yet; the role is checked again after it is',
          touches: [],
          backupPaths: [],
          reach: 'anything',
        }
      }
      const row = f.value
      if (!row)
        return {
          resource: id,
          kind: 'database',
          action: 'create',
          summary: `create Postgres role ${spec.name} (LOGIN, SCRAM password)`,
          touches: [],
          backupPaths: [],
          reach: 'anything',
        }
      const [canLogin, stored] = row
      if (canLogin === 't' && passwordMatches(stored ?? '', spec.name, spec.password.reveal())) return null
      return {
        resource: id,
        kind: 'database',
        action: 'update',
        summary: `update Postgres role ${spec.name} (${canLogin !== 't' ? 'LOGIN, ' : ''}password)`,
        touches: [],
        backupPaths: [],
        reach: 'anything',
      }
    },
    async apply(change, ctx) {
      const verb = change.action === 'create' ? 'CREATE' : 'ALTER'
      // Even on stdin, send the verifier rather than the password: it never reaches server logs in clear.
      const sql = `DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = ${sqlLiteral(spec.name)}) THEN ALTER ROLE ${sqlIdent(spec.name)} LOGIN PASSWORD ${sqlLiteral(scramVerifier(spec.password.reveal()))}; ELSE CREATE ROLE ${sqlIdent(spec.name)} LOGIN PASSWORD ${sqlLiteral(scramVerifier(spec.password.reveal()))}; END IF; END $$;`
      await ctx.conn.run(sh`${PSQL} -f -`, { stdin: sql, what: `${verb.toLowerCase()} role ${spec.name}` })
    },
  }
}

export interface DatabaseSpec {
  name: string
  owner: string
  encoding?: string
  collate?: string
  ctype?: string
}

export function postgresDatabase(spec: DatabaseSpec): Resource {
  const encoding = spec.encoding ?? 'UTF8'
  const collate = spec.collate ?? 'C'
  const ctype = spec.ctype ?? 'C'
  const fact = psqlFact(
    `pg-db:${spec.name}`,
    `SELECT pg_encoding_to_char(encoding), datcollate, datctype, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ${sqlLiteral(spec.name)}`,
    (rows) => rows[0],
  )
  const id = `pg-db:${spec.name}`
  return {
    id,
    facts: () => [fact],
    plan(ctx) {
      const f = ctx.facts.get(fact)
      const create = `create database ${spec.name} (ENCODING ${encoding}, LC_COLLATE ${collate}, LC_CTYPE ${ctype}, TEMPLATE template0, OWNER ${spec.owner})`
      if (!f.available)
        return {
          resource: id,
          kind: 'database',
          action: 'create',
          summary: create,
          uncertain: 'Postgres is not installed or not running yet',
          touches: [],
          backupPaths: [],
          reach: 'anything',
        }
      if (!f.value)
        return { resource: id, kind: 'database', action: 'create', summary: create, touches: [], backupPaths: [], reach: 'anything' }
      const [enc, coll, ct, owner] = f.value
      if (enc !== encoding || coll !== collate || ct !== ctype) {
        throw new Error(
          `database ${spec.name} exists with ENCODING ${enc}, LC_COLLATE ${coll}, LC_CTYPE ${ct}; Synapse needs ${encoding}/${collate}/${ctype}. ` +
            'This cannot be changed in place: dump, drop and recreate it (see Synapse docs/postgres.md), or choose another database name',
        )
      }
      if (owner === spec.owner) return null
      return {
        resource: id,
        kind: 'database',
        action: 'update',
        summary: `change owner of database ${spec.name}: ${owner} -> ${spec.owner}`,
        touches: [],
        backupPaths: [],
        reach: 'anything',
      }
    },
    async apply(change, ctx) {
      const sql =
        change.action === 'create'
          ? `CREATE DATABASE ${sqlIdent(spec.name)} ENCODING ${sqlLiteral(encoding)} LC_COLLATE ${sqlLiteral(collate)} LC_CTYPE ${sqlLiteral(ctype)} TEMPLATE template0 OWNER ${sqlIdent(spec.owner)};`
          : `ALTER DATABASE ${sqlIdent(spec.name)} OWNER TO ${sqlIdent(spec.owner)};`
      await ctx.conn.run(sh`${PSQL} -f -`, { stdin: sql, what: `database ${spec.name}` })
    },
  }
}
