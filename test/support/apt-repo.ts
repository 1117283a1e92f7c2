import { createHash } from 'node:crypto'
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { createEphemeralSigningKey } from '../../src/artifacts/gpg.js'
import { controller$ } from '../../src/artifacts/controller-shell.js'

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

  const packages = Buffer.from(packagesStanza(control, poolPath, deb))
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
    return { dir, keyringGpg, fingerprint: key.fingerprint, packageName, packageVersion: PROBE_VERSION, suite }
  } finally {
    await key.dispose()
  }
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
