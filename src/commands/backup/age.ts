import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { BackupInputError } from './manifest.js'

/**
 * Encryption of backup files with age (https://age-encryption.org, Debian package `age`): to one or more
 * recipients' public keys, so taking a backup never needs a private key; restoring needs one of the
 * identities. The age binary runs on this machine, as a filter between the SSH stream and the file.
 */
export const AGE_SUFFIX = '.age'

/** `--encrypt-to` values: an age public key (age1…), an SSH public key line, or a recipients file. */
export function resolveRecipients(values: string[]): string[] {
  const out: string[] = []
  for (const v of values) {
    if (/^age1[0-9a-z]{20,}$/.test(v) || /^ssh-(ed25519|rsa) \S+/.test(v)) out.push(v)
    else if (existsSync(v)) {
      const lines = readFileSync(v, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#'))
      if (!lines.length)
        throw new BackupInputError(`--encrypt-to ${v}: the file holds no recipient (one age1… or ssh- public key per line)`)
      out.push(...lines)
    } else
      throw new BackupInputError(
        `--encrypt-to ${v}: not an age recipient (age1…), an SSH public key, nor a recipients file on this machine`,
      )
  }
  return out
}

/** Fails early, before any host is touched, when age is not installed here. */
export function requireAge(): void {
  const found = (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(`${dir}/age`))
  if (!found)
    throw new BackupInputError('encryption needs the age tool on this machine: apt-get install age (Debian/Ubuntu), brew install age')
}

// spawn, not zx: age sits in a stream pipeline (GBs of database and media through stdin/stdout, with
// backpressure); zx collects a command's whole output in memory.
/** age -e to the recipients: write plaintext to stdin, read ciphertext from stdout. */
export function ageEncrypt(recipients: string[]): ChildProcess {
  return spawn('age', ['--encrypt', ...recipients.flatMap((r) => ['--recipient', r])], { stdio: ['pipe', 'pipe', 'pipe'] })
}

/** age -d with an identity file (the private key): ciphertext on stdin, plaintext on stdout. */
export function ageDecrypt(identityFile: string): ChildProcess {
  return spawn('age', ['--decrypt', '--identity', identityFile], { stdio: ['pipe', 'pipe', 'pipe'] })
}

/** Resolves when the child exits 0; rejects with its stderr otherwise. */
export function childDone(child: ChildProcess, what: string): Promise<void> {
  let stderr = ''
  child.stderr?.setEncoding('utf8').on('data', (t: string) => (stderr += t))
  return new Promise((resolve, reject) => {
    child.once('error', (e) => reject(new Error(`${what}: ${e.message}`)))
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${what} failed (exit ${code}): ${stderr.trim()}`))))
  })
}
