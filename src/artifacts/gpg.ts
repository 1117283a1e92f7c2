import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { controller$ } from './controller-shell.js'

/**
 * An ephemeral OpenPGP signing key (ed25519, no passphrase) in its own GNUPGHOME, for the local
 * stand-ins of upstream releases (Element tarball, packages.matrix.org). Call dispose() when done:
 * it stops the gpg-agent of that home and deletes the secret key.
 */
export interface EphemeralSigningKey {
  readonly home: string
  readonly fingerprint: string
  readonly uid: string
  /** Public key, ASCII-armored (`.asc`, as Element publishes its release key). */
  exportArmored(out: string): Promise<void>
  /** Public key as a binary OpenPGP keyring (what apt's `signed-by=/usr/share/keyrings/*.gpg` and gpgv read). */
  exportBinary(out: string): Promise<void>
  /** Detached ASCII-armored signature (`file.asc`). */
  signDetachedArmored(file: string, out: string): Promise<void>
  /** Detached binary signature (apt's `Release.gpg`). */
  signDetachedBinary(file: string, out: string): Promise<void>
  /** Clear-signed copy (apt's `InRelease`). */
  clearSign(file: string, out: string): Promise<void>
  dispose(): Promise<void>
}

const batch = ['--batch', '--no-tty', '--pinentry-mode', 'loopback', '--passphrase', '']

export async function createEphemeralSigningKey(uid: string): Promise<EphemeralSigningKey> {
  // Short path under the system tmpdir: the agent's socket path must stay below 108 bytes.
  const home = await mkdtemp(join(tmpdir(), 'mp-gpg-'))
  const $ = await controller$()
  const gpg = async (...args: string[]) => await $`gpg --homedir ${home} ${batch} ${args}`
  try {
    await gpg('--quick-gen-key', uid, 'ed25519', 'sign', 'never')
    const { stdout } = await gpg('--with-colons', '--list-secret-keys', uid)
    const fingerprint = stdout
      .split('\n')
      .find((l) => l.startsWith('fpr:'))
      ?.split(':')[9]
    if (!fingerprint) throw new Error(`gpg created no key for ${uid}:\n${stdout}`)
    const sign = (mode: string[], file: string, out: string) =>
      gpg('--local-user', fingerprint, '--digest-algo', 'SHA512', '--yes', '--output', out, ...mode, file).then(() => undefined)
    return {
      home,
      fingerprint,
      uid,
      exportArmored: (out) => gpg('--yes', '--armor', '--output', out, '--export', fingerprint).then(() => undefined),
      exportBinary: (out) => gpg('--yes', '--output', out, '--export', fingerprint).then(() => undefined),
      signDetachedArmored: (file, out) => sign(['--armor', '--detach-sign'], file, out),
      signDetachedBinary: (file, out) => sign(['--detach-sign'], file, out),
      clearSign: (file, out) => sign(['--clearsign'], file, out),
      dispose: () => disposeHome(home),
    }
  } catch (error) {
    await disposeHome(home)
    throw error
  }
}

async function disposeHome(home: string): Promise<void> {
  const $ = await controller$()
  await $`gpgconf --homedir ${home} --kill all`.nothrow()
  await rm(home, { recursive: true, force: true })
}

export interface SignatureCheck {
  ok: boolean
  /** Fingerprint of the key that made a good signature (from gpg's VALIDSIG status line). */
  signer?: string
  /** gpg's human-readable output, for error messages. */
  output: string
}

/**
 * Checks a detached signature the way a target host does: import the published (armored or binary)
 * key into a fresh keybox, then `gpg --verify`. Nothing from the controller's own keyrings is used.
 * When `fingerprint` is given, a good signature by any other key counts as a failure.
 */
export async function verifyDetachedSignature(opts: {
  publicKey: string
  signature: string
  file: string
  fingerprint?: string
}): Promise<SignatureCheck> {
  const home = await mkdtemp(join(tmpdir(), 'mp-gpgv-'))
  const keybox = join(home, 'trusted.kbx')
  const $ = await controller$()
  // A failed import or verify is the answer (ok: false), not an error.
  const gpg = (...args: string[]) => $`gpg --homedir ${home} --batch --no-tty --no-default-keyring --keyring ${keybox} ${args}`.nothrow()
  try {
    const imported = await gpg('--import', opts.publicKey)
    if (!imported.ok) return { ok: false, output: imported.stderr || `gpg --import exited with ${imported.exitCode}` }
    const verified = await gpg('--status-fd', '1', '--verify', opts.signature, opts.file)
    if (!verified.ok) return { ok: false, output: verified.stderr || `gpg --verify exited with ${verified.exitCode}` }
    const signer = /^\[GNUPG:\] VALIDSIG (\S+)/m.exec(verified.stdout)?.[1]
    const ok = signer !== undefined && (!opts.fingerprint || signer.toUpperCase() === opts.fingerprint.replace(/\s/g, '').toUpperCase())
    return { ok, signer, output: verified.stderr }
  } finally {
    await disposeHome(home)
  }
}
