import { readFileSync } from 'node:fs'
import type { Task, TaskContext } from '../../src/engine/task.js'
import { command } from '../../src/resources/command.js'
import { file } from '../../src/resources/file.js'
import type { Resource } from '../../src/resources/resource.js'
import { controller$ } from '../../src/artifacts/controller-shell.js'
import { Secret } from '../../src/core/secret.js'
import { raw, sh, type ShellWord } from '../../src/core/shell.js'
import { supportedTarget } from '../common/checks.js'

export const KEYRING = '/usr/share/keyrings/matrix-org-archive-keyring.gpg'
export const SOURCES = '/etc/apt/sources.list.d/matrix-org.list'

/** Credentials of a repository URL (https://user:password@host/path) live here, 0600, not in the sources list. */
export const AUTH = '/etc/apt/auth.conf.d/matrix-provision.conf'

/** The repository URL without its credentials, and apt's auth.conf entry for them (a Secret) when it has some. */
export function repositoryAccess(url: string): { url: string; auth?: Secret } {
  const parsed = new URL(url)
  if (!parsed.username && !parsed.password) return { url }
  const login = decodeURIComponent(parsed.username)
  const password = decodeURIComponent(parsed.password)
  parsed.username = ''
  parsed.password = ''
  // apt_auth.conf(5): "machine host[:port][/path] login L password P"; the scheme is left out to match both.
  const machine = `${parsed.host}${parsed.pathname.replace(/\/$/, '')}`
  return {
    url: parsed.toString(),
    auth: new Secret(`machine ${machine} login ${login} password ${password}\n`, 'aptRepository.url credentials'),
  }
}

export function sourcesLine(ctx: TaskContext): string {
  const repo = ctx.host.vars.aptRepository
  const suite = repo.suite ?? ctx.os.codename
  return `deb [signed-by=${KEYRING}] ${repositoryAccess(repo.url).url} ${suite} ${repo.components.join(' ')}\n`
}

/** Fingerprints in a keyring file on the host, one per line (gpg works on binary and armored keys). */
const fingerprints = (path: ShellWord) => sh`gpg --batch --show-keys --with-colons ${path} 2>/dev/null | awk -F: '$1=="fpr" {print $10}'`

/** Fingerprints of the keys in a keyring file on the controller (gpg reads binary and armored keyrings). */
export async function controllerFingerprints(path: string): Promise<string[]> {
  const $ = await controller$()
  const out = await $`gpg --batch --show-keys --with-colons ${path}`
  return out.stdout
    .split('\n')
    .filter((l) => l.startsWith('fpr:'))
    .map((l) => l.split(':')[9]!)
}

export const aptKeyringTask: Task = {
  name: 'apt-keyring',
  title: 'matrix.org apt keyring and repository (signed-by)',
  before: (ctx) => {
    const repo = ctx.host.vars.aptRepository
    const fpr = repo.fingerprint?.replace(/\s+/g, '').toUpperCase()
    if (!repo.keyringFile || !fpr) return [supportedTarget]
    return [
      supportedTarget,
      {
        // The uploaded keyring must hold the expected key, checked on the controller before anything is sent.
        name: 'keyring file has the expected fingerprint',
        evaluate: async () => {
          let found: string[]
          try {
            found = await controllerFingerprints(repo.keyringFile!)
          } catch {
            return { ok: false, detail: `cannot read ${repo.keyringFile} with gpg: is it a keyring, and is gpg installed on this machine?` }
          }
          return found.includes(fpr)
            ? { ok: true, detail: fpr }
            : {
                ok: false,
                detail: `${repo.keyringFile} holds ${found.join(', ') || 'no key'}, not the expected ${fpr}: fix aptRepository.fingerprint or the file`,
              }
        },
      },
    ]
  },
  resources(ctx) {
    const repo = ctx.host.vars.aptRepository
    const fpr = repo.fingerprint?.replace(/\s+/g, '').toUpperCase()
    const resources: Resource[] = []
    if (repo.keyringFile) {
      // From the controller (mirrors, air-gapped hosts): the file itself is the desired state.
      resources.push(file({ path: KEYRING, content: readFileSync(repo.keyringFile), mode: 0o644 }))
    } else if (repo.keyringUrl) {
      // Downloaded by the host, as in the guide; installed only when its fingerprint is the expected one.
      const verify = fpr
        ? sh`${fingerprints(raw`"$tmp"`)} | grep -qx ${fpr} || { echo ${`the key at ${repo.keyringUrl} does not have fingerprint ${fpr}`} >&2; exit 1; }; `
        : raw``
      resources.push(
        command({
          name: 'download the matrix.org keyring',
          summary: `download ${repo.keyringUrl} to ${KEYRING}${fpr ? ` (fingerprint ${fpr} checked first)` : ''}`,
          unless: fpr ? sh`${fingerprints(KEYRING)} | grep -qx ${fpr}` : sh`test -s ${KEYRING}`,
          command: sh`set -e; tmp=$(mktemp); trap 'rm -f "$tmp"' EXIT; curl -fsSL --max-time 60 ${repo.keyringUrl} -o "$tmp"; ${verify}if head -c 40 "$tmp" | grep -q 'BEGIN PGP'; then gpg --batch --yes --dearmor -o "$tmp.bin" "$tmp" && mv "$tmp.bin" "$tmp"; fi; install -m 0644 -o root -g root "$tmp" ${KEYRING}`,
          touches: [KEYRING],
        }),
      )
    }
    const { auth } = repositoryAccess(ctx.host.vars.aptRepository.url)
    if (auth) resources.push(file({ path: AUTH, content: auth, owner: 'root', group: 'root', mode: 0o600 }))
    resources.push(file({ path: SOURCES, content: sourcesLine(ctx), mode: 0o644 }))
    return resources
  },
  after(ctx) {
    const repo = ctx.host.vars.aptRepository
    return [
      {
        name: 'apt sees the repository and its signature verifies',
        async run(conn) {
          // Update only this source, so a broken unrelated mirror does not decide the check.
          const r = await conn.run(
            sh`apt-get update -o ${`Dir::Etc::sourcelist=${SOURCES}`} -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 2>&1`,
            { timeoutMs: 180_000, allowFailure: true },
          )
          const out = r.stdout
          if (r.code !== 0 || /NO_PUBKEY|not signed|BADSIG|EXPKEYSIG|is not signed|NOSPLIT|Err:/.test(out)) {
            return {
              ok: false,
              detail: `apt-get update of ${repositoryAccess(repo.url).url} failed: ${
                out
                  .trim()
                  .split('\n')
                  .filter((l) => /^(Err|W|E):/.test(l))
                  .join(' | ') || out.trim().slice(-300)
              }`,
            }
          }
          return { ok: true, detail: `${repositoryAccess(repo.url).url} verified` }
        },
      },
    ]
  },
}
