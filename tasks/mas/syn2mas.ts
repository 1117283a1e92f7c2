/**
 * MAS's syn2mas (mas-cli v1.22.0, `mas-cli syn2mas --help`; research-24 §7): moves Synapse's users,
 * passwords, devices and access tokens into an empty MAS database. It reads Synapse's database with the
 * credentials of Synapse's own config files (homeserver.yaml and every conf.d file) and never writes it.
 */
import { parse } from 'yaml'
import { raw, sh, type ShellCommand } from '../../src/core/shell.js'
import { HOMESERVER_YAML, SYNAPSE_CONF_D } from '../../src/synapse/paths.js'
import { MAS_CLI, MAS_CONFIG } from './templates.js'

export type Syn2masStep = 'check' | 'dry-run' | 'migrate'

/** The command of one step, as root on the homeserver (the config files are root:group 0640). */
export function syn2masCommand(step: Syn2masStep): ShellCommand {
  const sub = step === 'check' ? raw`check` : step === 'dry-run' ? raw`migrate --dry-run` : raw`migrate`
  // Every file Synapse reads, in its order: homeserver.yaml, then conf.d/*.yaml.
  return sh`set -- --synapse-config ${HOMESERVER_YAML}; for f in ${SYNAPSE_CONF_D}/*.yaml; do [ -e "$f" ] && set -- "$@" --synapse-config "$f"; done; RUST_BACKTRACE=0 ${MAS_CLI} syn2mas ${sub} --config ${MAS_CONFIG} "$@"`
}

export interface Syn2masOutcome {
  /** go: proceed; refused: syn2mas found errors (exit 10); failed: anything else (exit 1: e.g. MAS database not empty). */
  verdict: 'go' | 'refused' | 'failed'
  errors: string[]
  warnings: string[]
}

/** Exit codes of syn2mas: 0 fine, 11 warnings only (check), 10 errors, else a failure (its stderr says which). */
export function syn2masOutcome(code: number, output: string): Syn2masOutcome {
  const section = (name: string) => {
    const at = output.indexOf(`===== ${name} =====`)
    if (at < 0) return []
    const rest = output.slice(at).split('\n').slice(1)
    const end = rest.findIndex((l) => /^=====/.test(l))
    return (end < 0 ? rest : rest.slice(0, end))
      .map((l) => l.trim())
      .filter((l) => l.startsWith('•'))
      .map((l) => l.replace(/^\u2022\s*/, '')) // \u2022 is the bullet: escaped, the bundle stays ASCII (scripts/bundle.js)
  }
  const errors = section('Errors')
  const warnings = section('Warnings')
  if (code === 0 || code === 11) return { verdict: 'go', errors, warnings }
  if (code === 10) return { verdict: 'refused', errors, warnings }
  const last = output
    .trim()
    .split('\n')
    .filter((l) => /error/i.test(l))
    .slice(-3)
  return { verdict: 'failed', errors: errors.length ? errors : last.length ? last : [`exit ${code}`], warnings }
}

/**
 * What syn2mas does not refuse but MAS cannot take over (research-24 §7): password providers (LDAP and
 * the like: MAS has none), modules that authenticate, and SQLite. Input: the text of each config file.
 */
export function unsupportedAuth(files: { path: string; text: string }[]): string[] {
  const problems: string[] = []
  for (const { path, text } of files) {
    let doc: unknown
    try {
      doc = parse(text)
    } catch {
      problems.push(`${path} is not valid YAML`)
      continue
    }
    if (!doc || typeof doc !== 'object') continue
    const d = doc as { password_providers?: unknown; modules?: unknown; database?: { name?: unknown } }
    if (Array.isArray(d.password_providers) && d.password_providers.length)
      problems.push(
        `${path}: password_providers (${d.password_providers.map((p: { module?: unknown }) => (typeof p?.module === 'string' ? p.module : '?')).join(', ')}): MAS has no password providers (LDAP and the like); their users could not log in after the move`,
      )
    if (Array.isArray(d.modules))
      for (const m of d.modules as { module?: unknown }[]) {
        const name = typeof m?.module === 'string' ? m.module : ''
        if (/ldap|auth|password|login|sso/i.test(name))
          problems.push(`${path}: module ${name} authenticates users: MAS takes over every login and cannot run it`)
      }
    if (d.database?.name === 'sqlite3') problems.push(`${path}: database sqlite3: syn2mas reads PostgreSQL only (move to PostgreSQL first)`)
  }
  return problems
}
