/**
 * A homeserver built by hand as the guide says, with the REAL matrix-synapse-py3 package (the guide's
 * own install path): the repository's keyring and source written by hand, debconf's two questions
 * answered (preseeded), a plain `apt-get install` (its postinst starts main on the package's SQLite
 * configuration: a stray homeserver.db), the Postgres role and database, homeserver.yaml edited in
 * place (database, 127.0.0.1 only: no IPv6 on the containers' loopback, the replication listener,
 * Redis, instance_map: Synapse 1.88 removed worker_replication_*), the guide's two workers in today's
 * form, upstream's systemd-with-workers units (with conf.d: server_name lives there), the guide's
 * Apache vhost; then users, a room and messages through Apache. The stand-in `provision adopt` takes over.
 */
import { randomBytes } from 'node:crypto'
import type { SignedAptRepo } from './apt-repo.js'
import { guideVhost, TARGET_UNIT } from './guide-host.js'
import type { TestHost } from './hosts.js'
import { MatrixClient } from './matrix-client.js'

const VENV = '/opt/venvs/matrix-synapse'
const CONFIG = `--config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/`

const WORKER_UNIT = `[Unit]
Description=Synapse %i
AssertPathExists=/etc/matrix-synapse/workers/%i.yaml
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target
After=matrix-synapse.service

[Service]
Type=notify
NotifyAccess=main
User=matrix-synapse
WorkingDirectory=/var/lib/matrix-synapse
EnvironmentFile=-/etc/default/matrix-synapse
ExecStart=${VENV}/bin/python -m synapse.app.generic_worker ${CONFIG} --config-path=/etc/matrix-synapse/workers/%i.yaml
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
SyslogIdentifier=matrix-synapse-%i

[Install]
WantedBy=matrix-synapse.target
`
const FEDERATION_READER_YAML = `worker_app: synapse.app.generic_worker
worker_name: federation_reader
worker_listeners:
- type: http
  port: 32902
  bind_addresses: ['127.0.0.1']
  resources:
  - names:
    - client
    - federation
- type: metrics
  port: 32981
  bind_addresses: ['127.0.0.1']
`
const FEDERATION_SENDER_YAML = `worker_app: synapse.app.generic_worker
worker_name: federation_sender
worker_listeners:
- type: metrics
  port: 32980
  bind_addresses: ['127.0.0.1']
`

export interface PackageGuideHost {
  ca: string
  dbPassword: string
  users: { name: string; password: string }[]
  token: string
  roomId: string
  messages: string[]
  signingKeySha256: string
}

const sh = async (host: TestHost, command: string, what: string) => {
  const r = await host.exec(`set -e\n${command}`)
  if (r.exitCode !== 0) throw new Error(`package guide host: ${what} failed (${r.exitCode}):\n${r.output.slice(-3000)}`)
  return r.stdout
}

/** `host` was started from guideImage() (Postgres, Redis, Apache installed) and serves `repo` at `url`. */
export async function buildPackageGuideHost(
  host: TestHost,
  opts: { serverName: string; publicHost: string; repo: SignedAptRepo; url: string; debVersion: string },
): Promise<PackageGuideHost> {
  const { serverName, publicHost } = opts
  const dbPassword = `guide-db-${randomBytes(6).toString('hex')}`
  await sh(
    host,
    `install -m 0644 /srv/repo/${opts.repo.keyringGpg.replace(/^.*\//, '')} /usr/share/keyrings/matrix-org-archive-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/matrix-org-archive-keyring.gpg] ${opts.url} ${opts.repo.suite} main" > /etc/apt/sources.list.d/matrix-org.list
apt-get update -q -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/matrix-org.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >/dev/null
printf '%s\\n' 'matrix-synapse-py3 matrix-synapse/server-name string ${serverName}' 'matrix-synapse-py3 matrix-synapse/report-stats boolean false' | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -q matrix-synapse-py3=${opts.debVersion} >/dev/null 2>&1
runuser -u postgres -- psql -q -c "CREATE ROLE synapse_user LOGIN PASSWORD '${dbPassword}'"
runuser -u postgres -- psql -q -c "CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' template=template0 OWNER synapse_user"
python3 - <<'PY'
import re
p = '/etc/matrix-synapse/homeserver.yaml'
t = open(p).read()
t = re.sub(r'^database:\\n(?:[ ].*\\n)+', '''database:
  name: psycopg2
  args:
    user: synapse_user
    password: ${dbPassword}
    database: synapse
    host: localhost
    cp_min: 5
    cp_max: 10
''', t, flags=re.M)
t = t.replace('    - ::1\\n', '')
# The replication listener, and the metrics one of the guide's monitoring section.
t = t.replace('listeners:\\n', '''listeners:
  - port: 32993
    bind_addresses: ['127.0.0.1']
    type: http
    resources:
      - names: [replication]
  - port: 32982
    bind_addresses: ['127.0.0.1']
    type: metrics
''', 1)
t += '''
# redis pub/sub main -> worker
redis:
  enabled: true
  port: 32992
instance_map:
  main:
    host: 127.0.0.1
    port: 32993
enable_metrics: true
send_federation: false
federation_sender_instances: [federation_sender]
'''
open(p, 'w').write(t)
PY
sed -i 's/^port 6379$/port 32992/' /etc/redis/redis.conf && systemctl restart redis-server`,
    'the guide: repository, apt-get install matrix-synapse-py3, Postgres, homeserver.yaml',
  )
  const files: [string, string][] = [
    ['/etc/matrix-synapse/workers/federation_reader.yaml', FEDERATION_READER_YAML],
    ['/etc/matrix-synapse/workers/federation_sender.yaml', FEDERATION_SENDER_YAML],
    ['/etc/systemd/system/matrix-synapse-worker@.service', WORKER_UNIT],
    ['/etc/systemd/system/matrix-synapse.target', TARGET_UNIT],
    [`/etc/apache2/sites-available/${publicHost}.conf`, guideVhost(serverName, publicHost)],
    [`/var/www/${serverName}/.well-known/matrix/server`, JSON.stringify({ 'm.server': `${publicHost}:443` })],
    [`/var/www/${serverName}/.well-known/matrix/client`, JSON.stringify({ 'm.homeserver': { base_url: `https://${publicHost}` } })],
  ]
  await host.container.copyContentToContainer(files.map(([target, content]) => ({ target, content, mode: 0o644 })))
  await sh(
    host,
    `chmod 0755 /etc/matrix-synapse/workers
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=${publicHost} -addext subjectAltName=DNS:${publicHost},DNS:${serverName} -keyout /etc/ssl/private/${publicHost}.key -out /etc/ssl/certs/${publicHost}.pem 2>/dev/null
a2enmod -q ssl proxy proxy_http headers && a2ensite -q ${publicHost}
systemctl daemon-reload
systemctl enable -q matrix-synapse.service matrix-synapse-worker@federation_reader.service matrix-synapse-worker@federation_sender.service matrix-synapse.target
systemctl restart matrix-synapse.service
systemctl start matrix-synapse-worker@federation_reader.service matrix-synapse-worker@federation_sender.service
systemctl reload apache2
for i in $(seq 1 120); do curl -sf http://127.0.0.1:8008/health >/dev/null && curl -sf http://127.0.0.1:32902/health >/dev/null && break; sleep 1; done
curl -sf http://127.0.0.1:8008/health && curl -sf http://127.0.0.1:32902/health`,
    'workers, units, Apache; start',
  )
  const ca = await sh(host, `cat /etc/ssl/certs/${publicHost}.pem`, 'read certificate')
  const users = [
    { name: 'alice', password: `alice-${randomBytes(6).toString('hex')}` },
    { name: 'bob', password: `bob-${randomBytes(6).toString('hex')}` },
  ]
  // The package's homeserver.yaml has no registration_shared_secret: the guide registers through the admin's own user... here a shared secret in conf.d for the two registrations, removed after.
  await sh(
    host,
    `printf 'registration_shared_secret: guide-bootstrap\\n' > /etc/matrix-synapse/conf.d/zz-bootstrap.yaml && systemctl restart matrix-synapse.service && for i in $(seq 120); do curl -sf http://127.0.0.1:8008/health >/dev/null && break; sleep 1; done`,
    'bootstrap secret',
  )
  for (const u of users)
    await sh(
      host,
      `printf '%s' '${u.password}' | ${VENV}/bin/register_new_matrix_user -k guide-bootstrap -u ${u.name} --password-file /dev/stdin ${u.name === 'alice' ? '--admin' : '--no-admin'} http://127.0.0.1:8008`,
      `register ${u.name}`,
    )
  await sh(
    host,
    `rm /etc/matrix-synapse/conf.d/zz-bootstrap.yaml && systemctl restart matrix-synapse.service && for i in $(seq 120); do curl -sf http://127.0.0.1:8008/health >/dev/null && break; sleep 1; done; curl -sf http://127.0.0.1:8008/health`,
    'bootstrap secret removed',
  )
  const alice = new MatrixClient({ port: host.port(443), hostname: publicHost, ca })
  await alice.login('alice', users[0]!.password)
  const bob = new MatrixClient({ port: host.port(443), hostname: publicHost, ca })
  await bob.login('bob', users[1]!.password)
  const room = await alice.call<{ room_id: string }>('POST', '/_matrix/client/v3/createRoom', {
    name: 'guide',
    preset: 'private_chat',
    invite: [`@bob:${serverName}`],
  })
  if (room.status !== 200) throw new Error(`createRoom: ${room.status} ${room.text}`)
  const join = await bob.call('POST', `/_matrix/client/v3/rooms/${encodeURIComponent(room.json.room_id)}/join`, {})
  if (join.status !== 200) throw new Error(`join: ${join.status} ${join.text}`)
  const messages = ['Hallo aus dem Paket', 'Antwort von bob']
  for (const [i, body] of messages.entries()) {
    const sent = await (i ? bob : alice).call(
      'PUT',
      `/_matrix/client/v3/rooms/${encodeURIComponent(room.json.room_id)}/send/m.room.message/pkg-${i}`,
      { msgtype: 'm.text', body },
    )
    if (sent.status !== 200) throw new Error(`send: ${sent.status} ${sent.text}`)
  }
  const signingKeySha256 = (
    await sh(host, `sha256sum /etc/matrix-synapse/homeserver.signing.key | cut -d' ' -f1`, 'hash signing key')
  ).trim()
  return { ca, dbPassword, users, token: alice.token!, roomId: room.json.room_id, messages, signingKeySha256 }
}
