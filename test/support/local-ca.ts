import { execFile } from 'node:child_process'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** A locally issued CA and server certificates (the stand-in for a public CA such as Let's Encrypt). */
export async function createLocalCa(): Promise<{
  dir: string
  caFile: string
  issue(name: string, altNames: string[]): Promise<{ certFile: string; keyFile: string }>
}> {
  const dir = await mkdtemp(join(tmpdir(), 'mp-ca-'))
  const caKey = join(dir, 'ca.key')
  const caFile = join(dir, 'ca.pem')
  await run('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-sha256',
    '-days',
    '30',
    '-subj',
    '/CN=matrix-provision test CA',
    '-keyout',
    caKey,
    '-out',
    caFile,
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  return {
    dir,
    caFile,
    async issue(name, altNames) {
      const keyFile = join(dir, `${name}.key`)
      const csr = join(dir, `${name}.csr`)
      const certFile = join(dir, `${name}.crt`)
      const ext = join(dir, `${name}.ext`)
      await writeFile(
        ext,
        `basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=${altNames.map((n) => `DNS:${n}`).join(',')}\n`,
      )
      await run('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${altNames[0]}`, '-keyout', keyFile, '-out', csr])
      await run('openssl', [
        'x509',
        '-req',
        '-in',
        csr,
        '-CA',
        caFile,
        '-CAkey',
        caKey,
        '-CAcreateserial',
        '-days',
        '30',
        '-sha256',
        '-extfile',
        ext,
        '-out',
        certFile,
      ])
      return { certFile, keyFile }
    },
  }
}
