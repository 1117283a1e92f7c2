// The floor: what any Node SSH tool pays at least. One process: Node start-up, then per host (all at
// once) one SSH connection (host key checked against known_hosts, key auth) and one `true` round trip.
//   node bench/floor.js <hosts.json>     hosts.json: { keyFile, knownHostsFile, hosts: [{ name, port }] }
import { readFileSync } from 'node:fs'
import ssh2 from 'ssh2'

const spec = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const privateKey = readFileSync(spec.keyFile)
const known = new Map()
for (const line of readFileSync(spec.knownHostsFile, 'utf8').split('\n')) {
  const [host, type, b64] = line.split(' ')
  if (type === 'ssh-ed25519') known.set(host, b64)
}

function once(host) {
  return new Promise((resolve, reject) => {
    const c = new ssh2.Client()
    c.on('error', reject)
    // BENCH_FLOOR_NODELAY=1: the floor without ssh2's Nagle stall in the handshake, as matrix-provision connects since
    // issue 22's sixth pass (bench/README.md): for that section's comparison; the bench's floor stays plain ssh2.
    if (process.env.BENCH_FLOOR_NODELAY === '1') c.on('connect', () => c.setNoDelay(true))
    c.on('ready', () => {
      c.exec('true', (err, ch) => {
        if (err) return reject(err)
        ch.on('exit', (code) => (code === 0 ? undefined : reject(new Error(`true exited ${code}`))))
        ch.on('close', () => {
          c.end()
          resolve()
        })
        ch.resume()
      })
    })
    c.connect({
      host: '127.0.0.1',
      port: host.port,
      username: 'root',
      privateKey,
      algorithms: { serverHostKey: ['ssh-ed25519'] },
      hostVerifier: (key) => key.toString('base64') === known.get(`[127.0.0.1]:${host.port}`),
    })
  })
}

await Promise.all(spec.hosts.map(once))
