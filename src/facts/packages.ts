import { raw, sh } from '../core/shell.js'
import { defineFact } from './fact.js'

/** Installed Debian packages: name -> version (only fully installed ones: status "ii", or "hi" when held). */
export function parseDpkgQuery(out: string): Map<string, string> {
  const pkgs = new Map<string, string>()
  for (const line of out.split('\n')) {
    const [name, status, version] = line.split('\t')
    if (name && /^[ih]i/.test(status ?? '') && version) pkgs.set(name.replace(/:.*$/, ''), version)
  }
  return pkgs
}

export const debPackages = defineFact(
  'deb-packages',
  raw`dpkg-query -W -f '\${Package}\\t\${db:Status-Abbrev}\\t\${Version}\\n'`,
  parseDpkgQuery,
  // Only dpkg writes its database (package and command changes reach anything anyway): file writes leave it as read.
  { paths: ['/var/lib/dpkg/'], quick: true },
)

/** debconf answers of a package's questions: question -> value. */
export const debconfSelections = (pkg: string) =>
  defineFact(`debconf:${pkg}`, sh`debconf-show ${pkg} 2>/dev/null`, (out) => {
    const m = new Map<string, string>()
    for (const line of out.split('\n')) {
      const r = /^\*?\s*([^:]+):\s*(.*)$/.exec(line)
      if (r) m.set(r[1]!.trim(), r[2]!.trim())
    }
    return m
  })
