import { createHash } from 'node:crypto'
import { appendFile, copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gunzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildElementStandin, elementStandinFiles, normalizeElementVersion } from '../../src/artifacts/element-standin.js'
import { verifyDetachedSignature } from '../../src/artifacts/gpg.js'
import { controller$ } from '../../src/artifacts/controller-shell.js'
import {
  buildWheelhouse,
  checkWheelhouse,
  defaultGlibc,
  pipPythonVersion,
  platformTags,
  pythonMinor,
  unsatisfiedRequirement,
  wheelhouseDirName,
} from '../../src/artifacts/wheelhouse.js'
import { lockPythonFloor } from '../../src/artifacts/lock-resolve.js'
import {
  WHEELHOUSE_MANIFEST,
  wheelhouseRequirements,
  WHEELHOUSE_REQUIREMENTS,
  type WheelhouseManifest,
} from '../../src/synapse/lock/wheelhouse-manifest.js'
import { parseLock } from '../../src/synapse/lock/lock-file.js'
import { fixtureLockText } from './fixtures/lock.js'
import { buildSignedAptRepo, buildUnrelatedKeyring, packagesStanza, releaseFile } from '../support/apt-repo.js'
import { stringContaining } from './fixtures/rendered.js'

let work: string
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'mp-artifacts-test-'))
})
afterAll(async () => {
  await rm(work, { recursive: true, force: true })
})

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex')

describe('wheelhouse', () => {
  const expected = { synapseVersion: '1.163.2', pythonVersion: '3.11', glibc: '2.36', lockDigest: 'd'.repeat(64) }
  const manifest = (): WheelhouseManifest => ({
    schema: 2,
    ...expected,
    lockFile: 'synapse-lock/1.163.2.txt',
    builtFromSource: ['psycopg2'],
    files: [
      { name: 'matrix_synapse-1.163.2-cp310-abi3-manylinux_2_28_x86_64.whl', size: 10, sha256: 'a' },
      { name: 'psycopg2-2.9.13-cp311-cp311-linux_x86_64.whl', size: 5, sha256: 'b' },
    ],
  })
  const present = new Map([
    ['matrix_synapse-1.163.2-cp310-abi3-manylinux_2_28_x86_64.whl', 10],
    ['psycopg2-2.9.13-cp311-cp311-linux_x86_64.whl', 5],
    [WHEELHOUSE_MANIFEST, 700],
    [WHEELHOUSE_REQUIREMENTS, 200],
  ])

  it('reuses a complete wheelhouse for the same version, Python, glibc and lock', () => {
    expect(checkWheelhouse(manifest(), expected, present)).toEqual({ complete: true })
  })

  it('rebuilds when the manifest is for something else, or absent', () => {
    expect(checkWheelhouse(undefined, expected, present)).toMatchObject({ complete: false, reason: 'no manifest' })
    expect(checkWheelhouse(manifest(), { ...expected, synapseVersion: '1.164.0' }, present)).toMatchObject({
      complete: false,
      reason: stringContaining('synapseVersion'),
    })
    expect(checkWheelhouse(manifest(), { ...expected, pythonVersion: '3.13' }, present)).toMatchObject({
      complete: false,
      reason: stringContaining('pythonVersion'),
    })
    expect(checkWheelhouse(manifest(), { ...expected, lockDigest: 'e'.repeat(64) }, present)).toMatchObject({
      complete: false,
      reason: stringContaining('lockDigest'),
    })
    expect(checkWheelhouse({ ...manifest(), schema: 0 }, expected, present)).toMatchObject({ complete: false })
  })

  it('rebuilds when a wheel is missing, truncated, or the list is not wheels', () => {
    const missing = new Map(present)
    missing.delete('psycopg2-2.9.13-cp311-cp311-linux_x86_64.whl')
    const noRequirements = new Map(present)
    noRequirements.delete(WHEELHOUSE_REQUIREMENTS)
    expect(checkWheelhouse(manifest(), expected, noRequirements)).toMatchObject({
      complete: false,
      reason: stringContaining(WHEELHOUSE_REQUIREMENTS),
    })
    expect(checkWheelhouse(manifest(), expected, missing)).toMatchObject({ complete: false, reason: stringContaining('missing') })
    const truncated = new Map(present).set('psycopg2-2.9.13-cp311-cp311-linux_x86_64.whl', 4)
    expect(checkWheelhouse(manifest(), expected, truncated)).toMatchObject({ complete: false, reason: stringContaining('4 bytes') })
    const sdist = { ...manifest(), files: [...manifest().files, { name: 'psycopg2-2.9.13.tar.gz', size: 1, sha256: 'c' }] }
    expect(checkWheelhouse(sdist, expected, new Map(present).set('psycopg2-2.9.13.tar.gz', 1))).toMatchObject({
      complete: false,
      reason: stringContaining('not a wheel'),
    })
    const noSynapse = { ...manifest(), files: manifest().files.slice(1) }
    expect(checkWheelhouse(noSynapse, expected, present)).toMatchObject({
      complete: false,
      reason: stringContaining('matrix-synapse'),
    })
  })

  it('lists every manylinux tag a glibc accepts, because pip does not expand them', () => {
    const tags = platformTags('2.36')
    expect(tags[0]).toBe('manylinux_2_36_x86_64')
    expect(tags).toContain('manylinux_2_28_x86_64') // Synapse's own wheel
    expect(tags).toContain('manylinux2014_x86_64')
    expect(tags).toContain('linux_x86_64') // wheels built on the controller
    expect(tags).not.toContain('manylinux_2_37_x86_64')
    expect(() => platformTags('236')).toThrow(/2\.NN/)
  })

  it("builds for Debian 11's Python 3.9.2 and glibc 2.31 (cryptography 46 excludes 3.9.0/3.9.1, which a bare 3.9 means to pip)", () => {
    expect(defaultGlibc('3.9')).toBe('2.31')
    expect(defaultGlibc('3.9.2')).toBe('2.31')
    expect(pipPythonVersion('3.9')).toBe('3.9.2')
    expect(pipPythonVersion('3.11')).toBe('3.11')
    expect(pipPythonVersion('3.9.18')).toBe('3.9.18')
    expect(pythonMinor('3.9.2')).toBe('3.9')
    expect(() => defaultGlibc('3.8')).toThrow(/no default glibc for Python 3\.8 \(known: 3\.9, 3\.10/)
    expect(() => pythonMinor('3')).toThrow(/looks like 3\.11 or 3\.9\.2/)
  })

  it("locks from the release's own Requires-Python lower bound, never below 3.9", () => {
    expect(lockPythonFloor('<4.0.0,>=3.9.0')).toBe('3.9') // 1.141.0
    expect(lockPythonFloor('>=3.10.0')).toBe('3.10') // 1.142.0 and later
    expect(lockPythonFloor('>=3.7.1')).toBe('3.9') // 1.87.0
    expect(lockPythonFloor(undefined)).toBe('3.9')
    expect(lockPythonFloor('>=4.1')).toBe('4.1')
  })

  it("finds the requirement that has no wheel in pip's error", () => {
    const stderr = [
      'ERROR: Could not find a version that satisfies the requirement psycopg2>=2.8; platform_python_implementation != "PyPy" and extra == "postgres" (from matrix-synapse[postgres,redis]) (from versions: none)',
      'ERROR: No matching distribution found for psycopg2>=2.8; platform_python_implementation != "PyPy" and extra == "postgres"',
    ].join('\n')
    expect(unsatisfiedRequirement(stderr)).toBe('psycopg2>=2.8')
    expect(unsatisfiedRequirement('ERROR: No matching distribution found for matrix-synapse==9.9.9')).toBe('matrix-synapse==9.9.9')
    expect(unsatisfiedRequirement('Successfully downloaded pip')).toBeUndefined()
  })

  it('pins every wheel by its own digest in requirements.txt (the host installs --require-hashes from it)', () => {
    expect(wheelhouseRequirements(manifest().files)).toBe('matrix-synapse==1.163.2 --hash=sha256:a\npsycopg2==2.9.13 --hash=sha256:b\n')
  })

  it('returns a complete cached wheelhouse without running pip or asking PyPI', async () => {
    const cacheDir = join(work, 'wheel-cache')
    const lock = parseLock(fixtureLockText(), 'synapse-lock/1.163.2.txt', '1.163.2')
    const dir = join(cacheDir, wheelhouseDirName('1.163.2', '3.11', '2.36', lock.digest))
    await mkdir(dir, { recursive: true })
    const m = { ...manifest(), lockDigest: lock.digest }
    for (const file of m.files) await writeFile(join(dir, file.name), 'x'.repeat(file.size))
    await writeFile(join(dir, WHEELHOUSE_REQUIREMENTS), wheelhouseRequirements(m.files))
    await writeFile(join(dir, WHEELHOUSE_MANIFEST), JSON.stringify(m))
    const lines: string[] = []
    const result = await buildWheelhouse({ lock, pythonVersion: '3.11', cacheDir, log: (l) => lines.push(l) })
    expect(result).toMatchObject({ dir, synapseVersion: '1.163.2', reused: true, bytes: 15 })
    expect(result.files).toEqual(m.files.map((f) => f.name))
    expect(lines.join('\n')).toMatch(/reusing/)
  })
})

describe('Element stand-in release', () => {
  it('has the upstream layout: index.html, config.sample.json, version, i18n, bundles/<hash>/', () => {
    const files = elementStandinFiles('v1.11.90')
    const names = [...files.keys()]
    expect(names).toEqual(expect.arrayContaining(['index.html', 'config.sample.json', 'version', 'i18n/en_EN.json']))
    const bundle = names.find((n) => /^bundles\/[0-9a-f]{20}\/app\.js$/.test(n))
    expect(bundle).toBeDefined()
    expect(files.get('version')).toBe('1.11.90\n')
    expect(files.get('index.html')).toContain('1.11.90')
    expect(files.get('index.html')).toContain(bundle)
    expect(files.get(bundle!)).toContain('config.json')
    expect(JSON.parse(files.get('config.sample.json')!)).toHaveProperty(['default_server_config', 'm.homeserver', 'base_url'])
    expect(() => normalizeElementVersion('latest')).toThrow()
  })

  it('packs element-v<version>/ deterministically, signs it, and verifies only the untouched tarball', async () => {
    const dirA = join(work, 'element-a')
    const dirB = join(work, 'element-b')
    const a = await buildElementStandin({ version: '1.11.90', dir: dirA })
    const b = await buildElementStandin({ version: 'v1.11.90', dir: dirB })
    expect(a.tarball).toBe(join(dirA, 'element-v1.11.90.tar.gz'))
    expect(a.signature).toBe(`${a.tarball}.asc`)
    expect(a.releaseKey).toBe(join(dirA, 'element-release-key.asc'))
    expect(a.sha256).toBe(sha256(await readFile(a.tarball)))
    expect(b.sha256).toBe(a.sha256) // same bytes, different key
    expect(b.fingerprint).not.toBe(a.fingerprint)

    const { stdout } = await (await controller$())`tar -tzf ${a.tarball}`
    const entries = stdout.trim().split('\n')
    expect(entries.every((e) => e.startsWith('element-v1.11.90/'))).toBe(true)
    expect(entries).toEqual(
      expect.arrayContaining([
        'element-v1.11.90/index.html',
        'element-v1.11.90/config.sample.json',
        'element-v1.11.90/version',
        'element-v1.11.90/i18n/en_EN.json',
      ]),
    )
    expect(gunzipSync(await readFile(a.tarball)).length).toBeGreaterThan(0)
    expect(await readFile(a.signature, 'utf8')).toMatch(/^-----BEGIN PGP SIGNATURE-----/)
    expect(await readFile(a.releaseKey, 'utf8')).toMatch(/^-----BEGIN PGP PUBLIC KEY BLOCK-----/)

    const good = await verifyDetachedSignature({
      publicKey: a.releaseKey,
      signature: a.signature,
      file: a.tarball,
      fingerprint: a.fingerprint,
    })
    expect(good).toMatchObject({ ok: true, signer: a.fingerprint })
    // Another release key (B's) must not vouch for A's signature, nor a pin on another fingerprint.
    expect((await verifyDetachedSignature({ publicKey: b.releaseKey, signature: a.signature, file: a.tarball })).ok).toBe(false)
    expect(
      (await verifyDetachedSignature({ publicKey: a.releaseKey, signature: a.signature, file: a.tarball, fingerprint: b.fingerprint })).ok,
    ).toBe(false)

    const tampered = join(work, 'tampered.tar.gz')
    await copyFile(a.tarball, tampered)
    await appendFile(tampered, 'x')
    const bad = await verifyDetachedSignature({ publicKey: a.releaseKey, signature: a.signature, file: tampered })
    expect(bad.ok).toBe(false)
    expect(bad.output).toMatch(/BAD signature/)
  })

  it('reuses a built release instead of re-signing it with a new key', async () => {
    const dir = join(work, 'element-reuse')
    const first = await buildElementStandin({ version: '1.11.91', dir })
    const mtime = (await stat(first.signature)).mtimeMs
    const second = await buildElementStandin({ version: '1.11.91', dir })
    expect(second).toEqual(first)
    expect((await stat(second.signature)).mtimeMs).toBe(mtime)
  })
})

describe('signed apt repository stand-in', () => {
  it('writes Packages and Release whose sizes and hashes match, signed by the exported keyring', async () => {
    const repo = await buildSignedAptRepo({ dir: join(work, 'apt'), suite: 'bookworm' })
    const dists = join(repo.dir, 'dists', 'bookworm')
    const packages = await readFile(join(dists, 'main/binary-amd64/Packages'))
    const release = await readFile(join(dists, 'Release'), 'utf8')
    expect(release).toContain('Codename: bookworm')
    expect(release).toContain(` ${sha256(packages)} ${String(packages.length).padStart(8)} main/binary-amd64/Packages\n`)
    const gz = await readFile(join(dists, 'main/binary-amd64/Packages.gz'))
    expect(gunzipSync(gz).equals(packages)).toBe(true)
    expect(release).toContain(` ${sha256(gz)} `)

    const filename = /^Filename: (.+)$/m.exec(packages.toString())?.[1]
    expect(filename).toBe('pool/main/m/matrix-provision-keyring-probe/matrix-provision-keyring-probe_1.0_all.deb')
    const deb = await readFile(join(repo.dir, filename!))
    expect(packages.toString()).toContain(`SHA256: ${sha256(deb)}`)
    const $ = await controller$()
    const { stdout: field } = await $`dpkg-deb --field ${join(repo.dir, filename!)} Package Version`
    expect(field).toBe('Package: matrix-provision-keyring-probe\nVersion: 1.0\n')

    // What apt does with signed-by: gpgv against exactly that (binary) keyring.
    await $`gpgv --keyring ${repo.keyringGpg} ${join(dists, 'InRelease')}`
    await $`gpgv --keyring ${repo.keyringGpg} ${join(dists, 'Release.gpg')} ${join(dists, 'Release')}`
    const keyring = await readFile(repo.keyringGpg)
    expect(keyring[0]! & 0x80).toBe(0x80) // binary OpenPGP packet, not ASCII armor

    const wrong = await buildUnrelatedKeyring(join(work, 'wrong.gpg'))
    expect(wrong.fingerprint).not.toBe(repo.fingerprint)
    await expect($`gpgv --keyring ${wrong.keyringGpg} ${join(dists, 'InRelease')}`).rejects.toThrow(
      /No public key|NO_PUBKEY|Can't check signature/,
    )
  })

  it('formats index stanzas the way apt reads them', () => {
    const stanza = packagesStanza('Package: p\nVersion: 1\n', 'pool/main/p/p/p_1_all.deb', Buffer.from('deb'))
    expect(stanza).toBe(
      `Package: p\nVersion: 1\nFilename: pool/main/p/p/p_1_all.deb\nSize: 3\nMD5sum: ${createHash('md5').update('deb').digest('hex')}\nSHA256: ${sha256('deb')}\n`,
    )
    const release = releaseFile('trixie', new Map([['main/binary-amd64/Packages', Buffer.from('x')]]), new Date(0))
    expect(release).toMatch(/^Date: Thu, 01 Jan 1970 00:00:00 UTC$/m)
    expect(release).toMatch(/^SHA256:\n [0-9a-f]{64} +1 main\/binary-amd64\/Packages$/m)
  })
})
