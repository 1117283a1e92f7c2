/**
 * Role mas: the Matrix Authentication Service beside Synapse. Release tarball verified (SHA-256) before
 * it is unpacked into releases/v<version>, switched with one symlink; config.yaml, its secrets and
 * signing keys; `database migrate`; a hardened unit restarted only after `config check`, `templates
 * check` and our own key checks pass (config check reads neither the key files nor the templates).
 */
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import type { Task, TaskContext } from '../../src/engine/task.js'
import { defineFact } from '../../src/facts/fact.js'
import { Secret } from '../../src/core/secret.js'
import { joinShell, raw, sh } from '../../src/core/shell.js'
import { command } from '../../src/resources/command.js'
import { directory, file, symlink } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { service } from '../../src/resources/systemd-service.js'
import { curlVhost } from '../apache/index.js'
import { MAS_SITE_PATH } from '../apache/templates.js'
import { fetchTo, verifiedTarball } from '../common/release-tarball.js'
import { addressOf } from '../common/topology.js'
import {
  MAS_ADMIN_CLIENT_SECRET,
  MAS_CLI,
  MAS_CONFIG,
  MAS_CURRENT,
  MAS_ENCRYPTION_KEY,
  MAS_ETC,
  MAS_KEYS_DIR,
  MAS_ROOT,
  MAS_SIGNING_KEYS,
  MAS_SYNAPSE_SECRET,
  MAS_UNIT,
  MAS_UNIT_PATH,
  MAS_USER,
  masEncryptionKeyHex,
  masPublicBase,
  renderMasConfig,
  renderMasUnit,
} from './templates.js'

const CACHE = '/var/cache/matrix-provision/mas'
const RELEASES = `${MAS_ROOT}/releases`
/** mas-cli calls: short errors (a set RUST_BACKTRACE prints 15 lines of backtrace per error). */
const CLI = sh`RUST_BACKTRACE=0 ${MAS_CLI}`

/** glibc of the host: the MAS binary needs 2.34 or newer (Debian 12, Ubuntu 22.04). */
export const glibcVersion = defineFact(
  'glibc-version',
  raw`ldd --version 2>&1 | head -n 1`,
  (out) => /(\d+)\.(\d+)\s*$/.exec(out.trim())?.slice(1, 3).map(Number) ?? [],
)

export function masTag(ctx: TaskContext): string {
  return `v${ctx.host.vars.mas.version}`
}

/** Validation before MAS (re)starts: what `config check` alone lets through (research-24 §2). */
export const MAS_VALIDATE = sh`${CLI} config check --config ${MAS_CONFIG} >/dev/null && ${CLI} templates check --config ${MAS_CONFIG} >/dev/null && [ "$(wc -c < ${MAS_ENCRYPTION_KEY})" = 64 ] && grep -qxE '[0-9a-f]{64}' ${MAS_ENCRYPTION_KEY} && ${joinShell(
  MAS_SIGNING_KEYS.map((k) => sh`openssl pkey -in ${k} -noout`),
  ' && ',
)}`

export const masTask: Task = {
  name: 'mas',
  title: 'Matrix Authentication Service: verified release, atomic switch, config and keys checked before a restart',
  before(ctx) {
    const v = ctx.host.vars
    const roles = ctx.host.roles
    return [
      {
        name: 'release can be verified',
        evaluate: () =>
          v.mas.sha256
            ? { ok: true, detail: 'SHA-256' }
            : {
                ok: false,
                detail:
                  'mas.sha256 is not set: the release tarball is never unpacked unverified (sha256sum of mas-cli-x86_64-linux.tar.gz)',
              },
      },
      {
        name: 'Synapse, Apache and PostgreSQL on the same host',
        // The shared secret and the database password are generated on this host and read by Synapse and Postgres.
        evaluate: () => {
          const missing = (['synapse', 'apache'] as const).filter((r) => !roles.includes(r))
          if (v.postgres.host !== ctx.host.name) missing.push('postgres' as never)
          return missing.length === 0
            ? { ok: true, detail: 'yes' }
            : { ok: false, detail: `the mas role runs beside Synapse, Apache and PostgreSQL; this host lacks ${missing.join(', ')}` }
        },
      },
      {
        name: 'glibc 2.34 or newer',
        facts: [glibcVersion],
        evaluate(facts) {
          const [major = 0, minor = 0] = facts.get(glibcVersion)
          return major > 2 || (major === 2 && minor >= 34)
            ? { ok: true, detail: `glibc ${major}.${minor}` }
            : {
                ok: false,
                detail: `the MAS binary needs glibc 2.34 or newer; this host has ${major ? `${major}.${minor}` : 'an unknown version'} (${ctx.os.prettyName ?? ctx.os.id}): use Debian 12 or 13, or Ubuntu 22.04 or newer`,
              }
        },
      },
    ]
  },
  resources(ctx) {
    const v = ctx.host.vars
    const tag = masTag(ctx)
    const dir = `${RELEASES}/${tag}`
    const tarball = `${CACHE}/mas-cli-${tag}-x86_64-linux.tar.gz`
    const url =
      v.mas.url ?? `https://github.com/element-hq/matrix-authentication-service/releases/download/${tag}/mas-cli-x86_64-linux.tar.gz`
    const out: Resource[] = [
      command({
        name: `system user ${MAS_USER}`,
        unless: sh`id -u ${MAS_USER}`,
        command: sh`useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin ${MAS_USER}`,
        summary: `create system user ${MAS_USER}`,
      }),
      directory({ path: '/var/cache/matrix-provision' }),
      directory({ path: CACHE }),
      directory({ path: MAS_ROOT }),
      directory({ path: RELEASES }),
      directory({ path: MAS_ETC, owner: 'root', group: MAS_USER, mode: 0o750 }),
      directory({ path: MAS_KEYS_DIR, owner: 'root', group: MAS_USER, mode: 0o750 }),
    ]
    if (v.mas.file) out.push(file({ path: tarball, content: readFileSync(v.mas.file), mode: 0o644 }))
    const verified = verifiedTarball(
      tarball,
      [{ test: sh`echo ${`${v.mas.sha256}  ${tarball}`} | sha256sum -c --quiet`, failure: `SHA-256 of ${tarball} is not ${v.mas.sha256}` }],
      v.mas.file ? [] : [fetchTo(url, tarball, 300)],
    )
    out.push(
      command({
        name: `unpack mas ${tag}`,
        summary: `verify (SHA-256) and unpack mas-cli ${tag} into ${dir}${v.mas.file ? '' : ` (downloaded from ${url})`}`,
        creates: `${dir}/mas-cli`,
        // Tarball layout: mas-cli, LICENSE and share/ at the top (no directory). Unpacked aside, renamed when whole.
        command: sh`set -e; t=''; trap 'rm -rf "$t"' EXIT; ${verified}; t=$(mktemp -d ${`${RELEASES}/.unpack-XXXXXX`}); tar -xzf ${tarball} -C "$t" --no-same-owner; [ -x "$t/mas-cli" ] && [ -f "$t/share/policy.wasm" ] || { echo 'the tarball has no mas-cli and share/policy.wasm at its top' >&2; exit 1; }; chmod -R u=rwX,go=rX "$t"; rm -rf ${dir}; mv "$t" ${dir}; t=''`,
        touches: [`${dir}/`],
        timeoutMs: 600_000,
      }),
      symlink({ path: MAS_CURRENT, target: `releases/${tag}` }),
    )
    // Secrets: the encryption key (64 hex digits, no newline) and the secret shared with Synapse.
    const encryption = new Secret(masEncryptionKeyHex(ctx.secret(v.mas.encryptionSecret).reveal()), 'derived from mas.encryptionSecret')
    out.push(
      file({ path: MAS_ENCRYPTION_KEY, content: encryption, owner: 'root', group: MAS_USER, mode: 0o640 }),
      file({ path: MAS_SYNAPSE_SECRET, content: ctx.secret(v.mas.synapseSecret), owner: 'root', group: MAS_USER, mode: 0o640 }),
      file({ path: MAS_ADMIN_CLIENT_SECRET, content: ctx.secret(v.mas.adminClientSecret), owner: 'root', group: MAS_USER, mode: 0o640 }),
    )
    const [rsa, ec] = MAS_SIGNING_KEYS
    for (const [path, gen] of [
      [rsa, sh`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out ${`${rsa}.new`}`],
      [ec, sh`openssl ecparam -name prime256v1 -genkey -noout -out ${`${ec}.new`}`],
    ] as const) {
      out.push(
        command({
          name: `mas signing key ${path}`,
          summary: `generate MAS signing key ${path} (once; kept)`,
          creates: path,
          command: sh`umask 077; ${gen}; chgrp ${MAS_USER} ${`${path}.new`}; chmod 0640 ${`${path}.new`}; mv ${`${path}.new`} ${path}`,
          touches: [path],
        }),
      )
    }
    const config = renderMasConfig(v, {
      databaseHost: addressOf(ctx, v.postgres.host),
      databasePassword: ctx.secret(v.mas.databasePassword).reveal(),
    })
    out.push(
      file({ path: config.path, content: config.content, owner: config.owner, group: config.group, mode: config.mode, sensitive: true }),
      // Migrations come with a release: applied once per version (the server would also apply them on start).
      command({
        name: `mas database migrate ${tag}`,
        summary: `mas-cli database migrate (${tag})`,
        creates: `${dir}/.migrated`,
        command: sh`${MAS_VALIDATE} && ${CLI} database migrate --config ${MAS_CONFIG} && touch ${`${dir}/.migrated`}`,
        touches: [`${dir}/.migrated`],
        timeoutMs: 600_000,
      }),
      file({ path: MAS_UNIT_PATH, content: renderMasUnit(), mode: 0o644 }),
      service({
        unit: MAS_UNIT,
        watch: [
          MAS_CONFIG,
          MAS_ENCRYPTION_KEY,
          MAS_SYNAPSE_SECRET,
          MAS_ADMIN_CLIENT_SECRET,
          `${MAS_KEYS_DIR}/`,
          MAS_UNIT_PATH,
          `${RELEASES}/`,
          MAS_CURRENT,
        ],
        validate: MAS_VALIDATE,
      }),
    )
    return out
  },
  after(ctx) {
    const v = ctx.host.vars
    const issuer = masPublicBase(v)
    return [
      {
        name: 'MAS /health answers ok',
        async run(conn, check) {
          const wait = check.waitS(60)
          const r = await conn.run(
            sh`for i in $(seq 0 ${wait}); do curl -fsS --max-time 5 ${`http://127.0.0.1:${v.mas.healthPort}/health`} && exit 0; sleep 1; done; exit 1`,
            { timeoutMs: (wait + 30) * 1000, allowFailure: true },
          )
          return r.code === 0 && r.stdout.trim() === 'ok'
            ? { ok: true, detail: `127.0.0.1:${v.mas.healthPort}/health: ok` }
            : {
                ok: false,
                detail: `MAS does not answer /health: ${(r.stdout + r.stderr).trim().slice(0, 200)} (journalctl -u ${MAS_UNIT})`,
              }
        },
      },
      {
        name: `OIDC discovery served at the issuer ${issuer}`,
        async run(conn) {
          // Through Apache once its vhost is there; before (mas-migrate installs MAS with Synapse untouched and
          // Apache unchanged until the switch), on MAS's own listener: the issuer it serves is checked either way.
          const proxied =
            (await conn.run(sh`test -e ${`/etc/apache2/sites-enabled/${basename(MAS_SITE_PATH)}`}`, { allowFailure: true })).code === 0
          const r = proxied
            ? await curlVhost(conn, ctx, v.mas.host, '/.well-known/openid-configuration')
            : await conn
                .run(sh`curl -fsS --max-time 20 ${`http://127.0.0.1:${v.mas.port}/.well-known/openid-configuration`}`, {
                  allowFailure: true,
                })
                .then((c) => ({
                  ok: c.code === 0,
                  body: c.stdout,
                  detail: `127.0.0.1:${v.mas.port} (not behind Apache yet): ${c.stderr.trim().slice(0, 300)}`,
                }))
          if (!r.ok) return { ok: false, detail: r.detail }
          let got: unknown
          try {
            got = (JSON.parse(r.body) as { issuer?: unknown }).issuer
          } catch {
            return { ok: false, detail: `the discovery document is not JSON: ${r.body.slice(0, 120)}` }
          }
          return got === issuer
            ? { ok: true, detail: `issuer ${issuer}${proxied ? '' : ` (on 127.0.0.1:${v.mas.port}; Apache serves it from the switch on)`}` }
            : { ok: false, detail: `issuer is ${String(got)}, expected ${issuer}` }
        },
      },
    ]
  },
}
