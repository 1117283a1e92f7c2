import { createHash } from 'node:crypto'
import { existsSync, readdirSync } from 'node:fs'
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { createEphemeralSigningKey } from '../../src/artifacts/gpg.js'
import { controller$ } from '../../src/artifacts/controller-shell.js'
import { artefactDir } from './packages.js'

/**
 * A real, signed apt repository standing in for packages.matrix.org (unreachable here): one tiny
 * architecture-independent package in `pool/main/`, `dists/<suite>/main/binary-amd64/Packages(.gz)`,
 * a `Release` with MD5Sum/SHA256 lines, signed as `InRelease` and `Release.gpg` by a fresh ed25519
 * key. The public key is exported as a binary keyring (what `signed-by=/usr/share/keyrings/*.gpg`
 * expects) both at `<dir>/<keyring>` (served with the repository, like matrix-org-archive-keyring.gpg)
 * and returned as a path. Serve `dir` over HTTP (`python3 -m http.server`) and use the line
 *   deb [signed-by=/usr/share/keyrings/<name>.gpg] http://HOST:PORT/ <suite> main
 */
export interface SignedAptRepo {
  dir: string
  /** Binary keyring (gpg --export) of the repository's signing key. */
  keyringGpg: string
  fingerprint: string
  packageName: string
  packageVersion: string
  suite: string
}

export const PROBE_PACKAGE = 'matrix-provision-keyring-probe'
export const PROBE_VERSION = '1.0'
export const REPO_KEYRING_NAME = 'matrix-provision-test-archive-keyring.gpg'
/** Fixed timestamps keep the .deb and the indexes byte-stable between builds (only the signatures differ). */
const SOURCE_DATE_EPOCH = '1700000000'

const digest = (algorithm: string, data: Buffer) => createHash(algorithm).update(data).digest('hex')

/** The control file of the probe package. */
export function probeControl(packageName = PROBE_PACKAGE, version = PROBE_VERSION): string {
  return [
    `Package: ${packageName}`,
    `Version: ${version}`,
    'Architecture: all',
    'Maintainer: matrix-provision tests <tests@matrix-provision.invalid>',
    'Section: misc',
    'Priority: optional',
    'Description: probe package of the matrix-provision test apt repository',
    ` Installs /usr/share/${packageName}/probe; proves that apt trusted the repository key.`,
    '',
  ].join('\n')
}

/** A `Packages` stanza: the control fields plus where the file is and its size and hashes. */
export function packagesStanza(control: string, filename: string, deb: Buffer): string {
  return [
    control.trimEnd(),
    `Filename: ${filename}`,
    `Size: ${deb.length}`,
    `MD5sum: ${digest('md5', deb)}`,
    `SHA256: ${digest('sha256', deb)}`,
    '',
  ].join('\n')
}

/** A `Release` file listing each index with its size under MD5Sum and SHA256 (paths relative to dists/<suite>/). */
export function releaseFile(suite: string, indexes: ReadonlyMap<string, Buffer>, date: Date): string {
  const lines = (algorithm: string) =>
    [...indexes].map(([path, content]) => ` ${digest(algorithm, content)} ${String(content.length).padStart(8)} ${path}`)
  return [
    'Origin: matrix-provision',
    'Label: matrix-provision test repository',
    `Suite: ${suite}`,
    `Codename: ${suite}`,
    `Date: ${date.toUTCString().replace('GMT', 'UTC')}`,
    'Architectures: amd64',
    'Components: main',
    'Description: local stand-in for packages.matrix.org (tests only)',
    'MD5Sum:',
    ...lines('md5'),
    'SHA256:',
    ...lines('sha256'),
    '',
  ].join('\n')
}

export async function buildSignedAptRepo(opts: { dir: string; suite: string; packageName?: string }): Promise<SignedAptRepo> {
  const packageName = opts.packageName ?? PROBE_PACKAGE
  const { dir, suite } = opts
  await rm(join(dir, 'dists'), { recursive: true, force: true })
  await rm(join(dir, 'pool'), { recursive: true, force: true })

  // The package: one file, root-owned, fixed mtimes.
  await mkdir(dir, { recursive: true })
  const staging = await mkdtemp(join(tmpdir(), 'mp-deb-'))
  let deb: Buffer
  const control = probeControl(packageName)
  try {
    await mkdir(join(staging, 'DEBIAN'), { recursive: true })
    await writeFile(join(staging, 'DEBIAN', 'control'), control)
    await mkdir(join(staging, 'usr', 'share', packageName), { recursive: true })
    await writeFile(join(staging, 'usr', 'share', packageName, 'probe'), `${packageName} ${PROBE_VERSION}\n`)
    await chmod(staging, 0o755)
    const debPath = join(staging, 'probe.deb')
    const $ = await controller$({ env: { ...process.env, SOURCE_DATE_EPOCH } })
    await $`dpkg-deb --root-owner-group -Zgzip --build ${staging} ${debPath}`
    deb = await readFile(debPath)
  } finally {
    await rm(staging, { recursive: true, force: true })
  }

  const poolPath = `pool/main/${packageName.slice(0, 1)}/${packageName}/${packageName}_${PROBE_VERSION}_all.deb`
  await mkdir(join(dir, poolPath, '..'), { recursive: true })
  await writeFile(join(dir, poolPath), deb)

  return publish(dir, suite, [packagesStanza(control, poolPath, deb)], { packageName, packageVersion: PROBE_VERSION })
}

/** Packages(.gz), a Release listing them, signed (InRelease, Release.gpg) by a fresh key exported beside them. */
async function publish(
  dir: string,
  suite: string,
  stanzas: string[],
  what: { packageName: string; packageVersion: string },
): Promise<SignedAptRepo> {
  const packages = Buffer.from(stanzas.join('\n'))
  const indexes = new Map<string, Buffer>([
    ['main/binary-amd64/Packages', packages],
    ['main/binary-amd64/Packages.gz', gzipSync(packages, { level: 9 })],
  ])
  const dists = join(dir, 'dists', suite)
  await mkdir(join(dists, 'main', 'binary-amd64'), { recursive: true })
  for (const [path, content] of indexes) await writeFile(join(dists, path), content)
  const release = join(dists, 'Release')
  await writeFile(release, releaseFile(suite, indexes, new Date(Number(SOURCE_DATE_EPOCH) * 1000)))

  const key = await createEphemeralSigningKey('matrix-provision test archive <apt@matrix-provision.invalid>')
  try {
    await key.clearSign(release, join(dists, 'InRelease'))
    await key.signDetachedBinary(release, join(dists, 'Release.gpg'))
    const keyringGpg = join(dir, REPO_KEYRING_NAME)
    await key.exportBinary(keyringGpg)
    return { dir, keyringGpg, fingerprint: key.fingerprint, suite, ...what }
  } finally {
    await key.dispose()
  }
}

/**
 * Where the real matrix-synapse-py3 .deb files are (../shared/packages/matrix-synapse-py3/README.md):
 * SYNAPSE_DEB_DIR, else matrix-synapse-py3/ of the upstream artefacts (test/support/packages.ts). Point
 * it at packages downloaded from packages.matrix.org to test those.
 */
export const synapseDebDir = (env: NodeJS.ProcessEnv = process.env) => artefactDir('matrix-synapse-py3', env.SYNAPSE_DEB_DIR || undefined)

export interface SynapseDebRepo extends SignedAptRepo {
  /** Debian versions in the repository, oldest first (e.g. 1.156.0+bookworm1). */
  versions: string[]
}

/** Upstream version of a Debian one: 1.157.0+bookworm1 -> 1.157.0. */
export const upstreamVersion = (debian: string) => debian.replace(/^\d+:/, '').replace(/[+~-].*$/, '')

/**
 * The real Synapse packages of `debDir` in a signed repository (the same layout and key flow as the probe
 * repository). A missing or empty directory fails, naming the setting: the apt tests never skip.
 */
export async function buildSignedAptRepoFromDebs(opts: { dir: string; suite: string; debDir?: string }): Promise<SynapseDebRepo> {
  const debDir = opts.debDir ?? synapseDebDir()
  const debs = existsSync(debDir)
    ? readdirSync(debDir)
        .filter((f) => f.endsWith('.deb'))
        .sort()
    : []
  if (debs.length === 0)
    throw new Error(
      `no matrix-synapse-py3 .deb files in ${debDir}: set SYNAPSE_DEB_DIR (or MP_PACKAGES_DIR, see test/support/packages.ts) to a directory holding them`,
    )
  const { dir, suite } = opts
  await rm(join(dir, 'dists'), { recursive: true, force: true })
  await rm(join(dir, 'pool'), { recursive: true, force: true })
  const stanzas: string[] = []
  const found: { pkg: string; version: string }[] = []
  for (const f of debs) {
    const src = join(debDir, f)
    // The whole control file as dpkg-deb prints it (Depends, the multi-line Description...).
    const { stdout: control } = await (await controller$())`dpkg-deb --field ${src}`
    const pkg = /^Package: (\S+)/m.exec(control)![1]!
    const version = /^Version: (\S+)/m.exec(control)![1]!
    const poolPath = `pool/main/${pkg.slice(0, 1)}/${pkg}/${basename(f)}`
    await mkdir(join(dir, poolPath, '..'), { recursive: true })
    // A copy, not a link: a link would arrive dangling in the container.
    await copyFile(src, join(dir, poolPath))
    stanzas.push(packagesStanza(control, poolPath, await readFile(src)))
    found.push({ pkg, version })
  }
  const versions = found.map((f) => f.version).sort((a, b) => compareDebian(a, b))
  const repo = await publish(dir, suite, stanzas, { packageName: found[0]!.pkg, packageVersion: versions.at(-1)! })
  return { ...repo, versions }
}

/** Numeric comparison of the upstream parts (enough for Synapse's X.Y.Z+distN versions). */
function compareDebian(a: string, b: string): number {
  const pa = upstreamVersion(a).split('.').map(Number)
  const pb = upstreamVersion(b).split('.').map(Number)
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) if ((pa[i] ?? 0) !== (pb[i] ?? 0)) return (pa[i] ?? 0) - (pb[i] ?? 0)
  return a.localeCompare(b)
}

/** The port the e2e hosts serve their repository on, on their own loopback. */
export const LOOPBACK_REPO_PORT = 8089

/** Copies the repository onto a test host and serves it on 127.0.0.1 (what the inventory's aptRepository.url names). */
export async function serveOnLoopback(
  host: {
    container: { copyDirectoriesToContainer(d: { source: string; target: string }[]): Promise<void> }
    exec(c: string): Promise<{ exitCode: number; output: string }>
  },
  repo: SignedAptRepo,
  port = LOOPBACK_REPO_PORT,
): Promise<string> {
  await host.container.copyDirectoriesToContainer([{ source: repo.dir, target: '/srv/repo' }])
  const started = await host.exec(
    `systemd-run --unit mp-apt-repo python3 -m http.server ${port} --bind 127.0.0.1 --directory /srv/repo && for i in $(seq 300); do curl -sf http://127.0.0.1:${port}/dists/${repo.suite}/InRelease >/dev/null && exit 0; sleep 0.2; done; exit 1`,
  )
  if (started.exitCode !== 0) throw new Error(`the apt repository did not answer on 127.0.0.1:${port} within 60 s: ${started.output}`)
  return `http://127.0.0.1:${port}/`
}

/** A binary keyring with some other key: apt must refuse the repository with it (NO_PUBKEY). */
export async function buildUnrelatedKeyring(path: string): Promise<{ keyringGpg: string; fingerprint: string }> {
  const key = await createEphemeralSigningKey('unrelated key <unrelated@matrix-provision.invalid>')
  try {
    await key.exportBinary(path)
    return { keyringGpg: path, fingerprint: key.fingerprint }
  } finally {
    await key.dispose()
  }
}
