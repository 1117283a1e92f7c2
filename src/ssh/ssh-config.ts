import { readFile } from 'node:fs/promises'
import { homedir, userInfo } from 'node:os'
import { join } from 'node:path'
import { matchGlob } from './known-hosts.js'

/**
 * A minimal ~/.ssh/config reader (ssh_config(5)), for inventories whose address is an alias such as
 * `address: matrix-prod`. It understands `Host` blocks with `*`/`?` patterns and `!` negations and
 * the six keywords the transport needs; `Match` blocks and `Include` are not supported (a `Match`
 * block is skipped as if it did not match). As in OpenSSH, the first value obtained for a keyword
 * wins, so specific `Host` blocks go before `Host *`.
 */
export interface SshConfigBlock {
  /** Patterns of the `Host` line; null for lines before the first `Host` (they apply to every host). */
  patterns: string[] | null
  /** `Match` blocks are kept only to be skipped. */
  match: boolean
  options: { keyword: string; args: string[]; line: number }[]
}

export interface SshConfigHost {
  /** Whether any `Host` block with a pattern other than `*` named the alias. */
  isAlias: boolean
  hostName?: string
  user?: string
  port?: number
  /** IdentityFile may be given several times; all are kept, in order. */
  identityFiles: string[]
  /** `[user@]host[:port]` hops, comma-separated in the file; `none` gives undefined. */
  proxyJump?: string
  userKnownHostsFile?: string
}

const KEYWORDS = new Set(['hostname', 'user', 'port', 'identityfile', 'proxyjump', 'userknownhostsfile'])

/** Split a config line into words, honouring double quotes. */
function words(text: string): string[] {
  const out: string[] = []
  const re = /"([^"]*)"|(\S+)/g
  for (let m = re.exec(text); m; m = re.exec(text)) out.push(m[1] ?? m[2]!)
  return out
}

export function parseSshConfig(text: string): SshConfigBlock[] {
  const blocks: SshConfigBlock[] = [{ patterns: null, match: false, options: [] }]
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    // `Keyword value`, `Keyword=value` or `Keyword = value`.
    const m = /^(\S+?)(?:\s*=\s*|\s+)(.*)$/.exec(line)
    if (!m) return
    const keyword = m[1]!.toLowerCase()
    const args = words(m[2]!)
    if (keyword === 'host') blocks.push({ patterns: args, match: false, options: [] })
    else if (keyword === 'match') blocks.push({ patterns: [], match: true, options: [] })
    else blocks[blocks.length - 1]!.options.push({ keyword, args, line: index + 1 })
  })
  return blocks
}

function hostMatches(patterns: readonly string[], alias: string): boolean {
  let matched = false
  for (const pattern of patterns) {
    const negated = pattern.startsWith('!')
    const hit = matchGlob(negated ? pattern.slice(1) : pattern, alias)
    if (hit && negated) return false
    if (hit) matched = true
  }
  return matched
}

export interface ExpandContext {
  home?: string
  localUser?: string
}

/** `~` and the tokens OpenSSH allows in these keywords: %% %h %d %u %r %p (the last two once known). */
function expand(value: string, alias: string, ctx: Required<ExpandContext>, user?: string, port?: number): string {
  const withHome = value.startsWith('~/') ? join(ctx.home, value.slice(2)) : value === '~' ? ctx.home : value
  return withHome.replace(/%([%hdurp])/g, (whole, token: string) => {
    switch (token) {
      case '%':
        return '%'
      case 'h':
        return alias
      case 'd':
        return ctx.home
      case 'u':
        return ctx.localUser
      case 'r':
        return user ?? whole
      case 'p':
        return port === undefined ? whole : String(port)
      default:
        return whole
    }
  })
}

/** What the config says for one alias (first value wins for each keyword). */
export function resolveSshConfig(blocks: readonly SshConfigBlock[], alias: string, context: ExpandContext = {}): SshConfigHost {
  const ctx: Required<ExpandContext> = { home: context.home ?? homedir(), localUser: context.localUser ?? userInfo().username }
  const found: Record<string, string[]> = {}
  const identityFiles: string[] = []
  let isAlias = false
  for (const block of blocks) {
    if (block.match) continue
    if (block.patterns !== null) {
      if (!hostMatches(block.patterns, alias)) continue
      if (block.patterns.some((p) => p !== '*' && !p.startsWith('!'))) isAlias = true
    }
    for (const { keyword, args } of block.options) {
      if (!KEYWORDS.has(keyword) || args.length === 0) continue
      if (keyword === 'identityfile') identityFiles.push(args[0]!)
      else found[keyword] ??= args
    }
  }
  const user = found.user?.[0]
  const portText = found.port?.[0]
  const port = portText !== undefined && /^\d+$/.test(portText) ? Number(portText) : undefined
  const result: SshConfigHost = { isAlias, identityFiles: identityFiles.map((f) => expand(f, alias, ctx, user, port)) }
  if (found.hostname) result.hostName = expand(found.hostname[0]!, alias, ctx)
  if (user !== undefined) result.user = user
  if (port !== undefined) result.port = port
  const jump = found.proxyjump?.[0]
  if (jump !== undefined && jump.toLowerCase() !== 'none') result.proxyJump = jump
  // UserKnownHostsFile may list several files; the first is the one ssh also writes to.
  const knownHosts = found.userknownhostsfile?.[0]
  if (knownHosts !== undefined && knownHosts.toLowerCase() !== 'none')
    result.userKnownHostsFile = expand(knownHosts, alias, ctx, user, port)
  return result
}

/** Read ~/.ssh/config (or `file`); a missing file is an empty config. */
export async function loadSshConfig(file = join(homedir(), '.ssh', 'config')): Promise<SshConfigBlock[]> {
  try {
    return parseSshConfig(await readFile(file, 'utf8'))
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw error
  }
}
