/**
 * A homeserver built by hand, step by step as the librechurch guide says (the seed text, rev. 28), on
 * a Debian 12 container: the server that `provision adopt` takes over in the tests.
 *
 * Where the guide cannot be followed literally here, the stand-in keeps what matters to adoption:
 * - packages.matrix.org is unreachable: Synapse 1.87.0 (the last release that accepts
 *   worker_replication_host/_http_port; removed in 1.88) is installed with pip into the package's
 *   virtualenv /opt/venvs/matrix-synapse, from its dependencies as of its release date (the wheelhouse
 *   of the committed lock inventories/synapse-lock/1.87.0.txt, hash-checked), with the package's layout:
 *   user matrix-synapse, /etc/matrix-synapse (+ conf.d/ as the postinst writes it), /var/lib/matrix-synapse,
 *   the Debian unit in /lib/systemd/system.
 * - homeserver.yaml is what `--generate-config` writes (secrets in it, the signing key named
 *   `<server_name>.signing.key`, media in /var/lib/matrix-synapse/media_store), then edited in place
 *   as the guide says: its Postgres block (synapse_user / synapse, `database:` key, host localhost),
 *   the replication listener, Redis on 32992, `worker_app`, `daemonize: true`, `send_federation: false`.
 * - the workers: the guide's two files verbatim under /etc/matrix-synapse/workers/, started with the
 *   units of upstream's systemd-with-workers of that time (the guide links them).
 * - `daemonize: true` under the package's Type=notify unit fails to start (the parent exits before
 *   READY=1); the admin's fix, kept here, is a drop-in with Type=forking and the pid file.
 * - Apache: reverse_proxy.md's vhost with the guide's federation ProxyPass list in front, self-signed TLS.
 */
import { createHash, randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { synapseWheelhouse } from './artifacts.js'
import { targetImage } from './docker.js'
import { startHosts } from './hosts.js'
import type { TestHost } from './hosts.js'

const run = promisify(execFile)
import { MatrixClient } from './matrix-client.js'

export const GUIDE_SYNAPSE_VERSION = '1.87.0'
const VENV = '/opt/venvs/matrix-synapse'

/**
 * Wheels of Synapse 1.87.0 and its dependencies as of its release date: the wheelhouse of the
 * committed lock inventories/synapse-lock/1.87.0.txt (built once per machine, like the tests' own).
 */
export async function guideWheelhouse() {
  return synapseWheelhouse('3.11', GUIDE_SYNAPSE_VERSION)
}

const GUIDE_PACKAGES = ['postgresql', 'redis-server', 'apache2', 'python3-venv', 'libpq5', 'curl', 'openssl']
/** startHosts' suite for a target image that has the guide's Debian packages installed (built once per machine). */
export const GUIDE_SUITE = 'bookworm-guide-packages'

/**
 * The target image of `suite` (bookworm; bullseye for the move's old host) with the guide's Debian
 * packages installed (from Debian's archive, the first time): saves the apt-get install on every run,
 * as the base images do for debootstrap.
 */
export async function guideImage(suite = 'bookworm'): Promise<string> {
  const guideSuite = `${suite.replace(/[^a-zA-Z0-9_.-]/g, '-')}-guide-packages`
  const image = targetImage(guideSuite)
  if (
    await run('docker', ['image', 'inspect', image]).then(
      () => true,
      () => false,
    )
  )
    return guideSuite
  const env = await startHosts(['guide-image'], { suite })
  try {
    const host = env.get('guide-image')
    await sh(
      host,
      `apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${GUIDE_PACKAGES.join(' ')} >/dev/null && systemctl stop apache2 redis-server postgresql && apt-get clean`,
      'apt-get install (image)',
    )
    await run('docker', ['commit', host.container.getId(), image])
  } finally {
    await env.stop()
  }
  return guideSuite
}

export interface GuideHost {
  serverName: string
  publicHost: string
  /** The guide's self-signed certificate (the CA clients trust before adoption). */
  ca: string
  dbPassword: string
  users: { name: string; password: string }[]
  /** Alice's access token, issued before adoption. */
  token: string
  roomId: string
  messages: string[]
  mediaUri: string
  mediaSha256: string
  signingKeySha256: string
}

const sh = async (host: TestHost, command: string, what: string) => {
  const r = await host.exec(`set -e\n${command}`)
  if (r.exitCode !== 0) throw new Error(`guide host: ${what} failed (${r.exitCode}):\n${r.output.slice(-3000)}`)
  return r.stdout
}

/** The guide's worker files, verbatim (rev. 28), plus nothing. */
const FEDERATION_READER_YAML = `worker_app: synapse.app.generic_worker
worker_name: federation_reader
worker_replication_host: 127.0.0.1
worker_replication_http_port: 32993
worker_listeners:
- type: http
  port: 32902
  bind_address: '127.0.0.1'
  resources:
  - names:
    - client
    - federation
- type: metrics
  port: 32981
  bind_address: '127.0.0.1'
`
const FEDERATION_SENDER_YAML = `worker_app: synapse.app.federation_sender
# The replication listener on the synapse to talk to.
worker_replication_host: 127.0.0.1
worker_replication_http_port: 32993
worker_listeners:
- type: metrics
  port: 32980
  bind_address: '127.0.0.1'
`

/**
 * A guide worker file converted by hand to instance_map, as its admin must for Synapse 1.88+ (1.141
 * refuses worker_replication_host/_http_port): those lines out, worker_name in; homeserver.yaml gets
 * instance_map.main (buildGuideHost's instanceMap).
 */
function toInstanceMap(yaml: string, name: string): string {
  const kept = yaml
    .split('\n')
    .filter((l) => !/^worker_replication_(host|http_port):/.test(l) && !l.startsWith('# The replication listener'))
  return kept.some((l) => l.startsWith('worker_name:')) ? kept.join('\n') : [kept[0], `worker_name: ${name}`, ...kept.slice(1)].join('\n')
}

/** The guide's Federation Reader ProxyPass list, verbatim. */
export const GUIDE_FEDERATION_PATHS = [
  '/_matrix/federation/v1/send/',
  '/_matrix/federation/v1/event/',
  '/_matrix/federation/v1/state/',
  '/_matrix/federation/v1/state_ids/',
  '/_matrix/federation/v1/backfill/',
  '/_matrix/federation/v1/get_missing_events/',
  '/_matrix/federation/v1/publicRooms',
  '/_matrix/federation/v1/query/',
  '/_matrix/federation/v1/make_join/',
  '/_matrix/federation/v1/make_leave/',
  '/_matrix/federation/v1/send_join/',
  '/_matrix/federation/v2/send_join/',
  '/_matrix/federation/v1/send_leave/',
  '/_matrix/federation/v2/send_leave/',
  '/_matrix/federation/v1/invite/',
  '/_matrix/federation/v2/invite/',
  '/_matrix/federation/v1/query_auth/',
  '/_matrix/federation/v1/event_auth/',
  '/_matrix/federation/v1/exchange_third_party_invite/',
  '/_matrix/federation/v1/user/devices/',
  '/_matrix/federation/v1/get_groups_publicised',
  '/_matrix/key/v2/query',
]

/** The Debian package's unit (debian/matrix-synapse.service), in /lib as the package installs it. */
const DEBIAN_UNIT = `[Unit]
Description=Synapse Matrix homeserver
After=network.target

[Service]
Type=notify
User=matrix-synapse
WorkingDirectory=/var/lib/matrix-synapse
EnvironmentFile=-/etc/default/matrix-synapse
ExecStartPre=${VENV}/bin/python -m synapse.app.homeserver --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/ --generate-keys
ExecStart=${VENV}/bin/python -m synapse.app.homeserver --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/conf.d/
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
SyslogIdentifier=matrix-synapse

[Install]
WantedBy=multi-user.target
`

/** upstream docs/systemd-with-workers (2021), which the guide links for starting the workers. */
const WORKER_UNIT = `[Unit]
Description=Synapse %i
AssertPathExists=/etc/matrix-synapse/workers/%i.yaml
# This service should be restarted when the synapse target is restarted.
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target
# if this is started at the same time as the main, let the main process start
# first, to initialise the database schema.
After=matrix-synapse.service

[Service]
Type=notify
NotifyAccess=main
User=matrix-synapse
WorkingDirectory=/var/lib/matrix-synapse
EnvironmentFile=-/etc/default/matrix-synapse
ExecStart=${VENV}/bin/python -m synapse.app.generic_worker --config-path=/etc/matrix-synapse/homeserver.yaml --config-path=/etc/matrix-synapse/workers/%i.yaml
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
SyslogIdentifier=matrix-synapse-%i

[Install]
WantedBy=matrix-synapse.target
`
export const TARGET_UNIT = `[Unit]
Description=Synapse parent target
After=network.target

[Install]
WantedBy=multi-user.target
`

export function guideVhost(serverName: string, publicHost: string): string {
  const fed = GUIDE_FEDERATION_PATHS.map((p) => `    ProxyPass "${p}" "http://127.0.0.1:32902${p}" nocanon`).join('\n')
  return `<VirtualHost *:443>
    SSLEngine on
    SSLCertificateFile /etc/ssl/certs/${publicHost}.pem
    SSLCertificateKeyFile /etc/ssl/private/${publicHost}.key
    ServerName ${publicHost}

    RequestHeader set "X-Forwarded-Proto" expr=%{REQUEST_SCHEME}
    AllowEncodedSlashes NoDecode
    ProxyPreserveHost on
    # Federation Reader
${fed}
    ProxyPass /_matrix http://127.0.0.1:8008/_matrix nocanon
    ProxyPassReverse /_matrix http://127.0.0.1:8008/_matrix
    ProxyPass /_synapse/client http://127.0.0.1:8008/_synapse/client nocanon
    ProxyPassReverse /_synapse/client http://127.0.0.1:8008/_synapse/client
</VirtualHost>

<VirtualHost *:443>
    SSLEngine on
    SSLCertificateFile /etc/ssl/certs/${publicHost}.pem
    SSLCertificateKeyFile /etc/ssl/private/${publicHost}.key
    ServerName ${serverName}
    DocumentRoot /var/www/${serverName}
    <Location /.well-known/matrix>
        Header set Access-Control-Allow-Origin "*"
        ForceType application/json
    </Location>
</VirtualHost>
`
}

/**
 * Build the guide's homeserver on `host` (a fresh target container with port 443 mapped) and fill it
 * with two users, a room with messages and an uploaded file, through the client API over Apache.
 */
export async function buildGuideHost(
  host: TestHost,
  opts: { serverName: string; publicHost: string; wheelhouse: string; instanceMap?: boolean },
): Promise<GuideHost> {
  const step = (what: string) => console.log(`[guide host] ${what} (${((Date.now() - t0) / 1000).toFixed(0)} s)`)
  const t0 = Date.now()
  const { serverName, publicHost } = opts
  const dbPassword = `guide-db-${randomBytes(6).toString('hex')}`

  // 1. Packages (Synapse's from packages.matrix.org replaced by pip below), 2. Postgres, plus Apache and
  // Redis: already in the host's image when it was started from guideImage().
  await sh(
    host,
    `dpkg -s ${GUIDE_PACKAGES.join(' ')} >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${GUIDE_PACKAGES.join(' ')} >/dev/null; }`,
    'apt-get install',
  )

  step('packages installed')
  // The package's layout and virtualenv, from the release-date wheelhouse.
  await host.container.copyDirectoriesToContainer([{ source: opts.wheelhouse, target: '/root/synapse-wheels' }])
  await sh(
    host,
    `adduser --quiet --system --group --home /var/lib/matrix-synapse --no-create-home matrix-synapse
install -d -o matrix-synapse -g matrix-synapse -m 0755 /etc/matrix-synapse /var/lib/matrix-synapse /var/log/matrix-synapse
install -d -m 0755 /etc/matrix-synapse/conf.d
python3 -m venv ${VENV}
${VENV}/bin/pip install -q --disable-pip-version-check --no-index --no-deps --require-hashes --find-links /root/synapse-wheels -r /root/synapse-wheels/requirements.txt`,
    'pip install of Synapse',
  )
  // --generate-config, as the package's postinst and INSTALL.md make it: secrets inside, key named after the server.
  await sh(
    host,
    `cd /var/lib/matrix-synapse && runuser -u matrix-synapse -- ${VENV}/bin/python -m synapse.app.homeserver --server-name ${serverName} --report-stats=no --generate-config --config-path /etc/matrix-synapse/homeserver.yaml --config-directory /etc/matrix-synapse --data-directory /var/lib/matrix-synapse
printf '%s\\n' '# This file is autogenerated, and will be recreated on upgrade if it is deleted.' '# Any changes you make will be preserved.' '' 'server_name: ${serverName}' > /etc/matrix-synapse/conf.d/server_name.yaml
printf '%s\\n' '# This file is autogenerated, and will be recreated on upgrade if it is deleted.' '# Any changes you make will be preserved.' '' 'report_stats: false' > /etc/matrix-synapse/conf.d/report_stats.yaml`,
    'synapse --generate-config',
  )

  step('Synapse installed and configured')
  // 3. Postgres as the guide has it: createuser --pwprompt synapse_user, CREATE DATABASE synapse ...
  await sh(
    host,
    `runuser -u postgres -- psql -q <<'SQL'
CREATE ROLE synapse_user LOGIN PASSWORD '${dbPassword}';
CREATE DATABASE synapse ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' template=template0 OWNER synapse_user;
SQL`,
    'createuser/createdb',
  )
  // homeserver.yaml edited in place: the guide's database block replaces the generated SQLite one,
  // the replication listener joins the listener list, Redis and the main process's worker settings.
  await sh(
    host,
    `python3 - <<'PY'
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
# No IPv6 loopback in the test containers: the listener binds 127.0.0.1 only, as reverse_proxy.md advises.
t = t.replace("bind_addresses: ['::1', '127.0.0.1']", "bind_addresses: ['127.0.0.1']")
t = t.replace('listeners:\\n', '''listeners:
  - port: 32993
    bind_address: '127.0.0.1'
    type: http
    resources:
      - names: [replication]
''', 1)
t += '''
# redis pub/sub main -> worker
redis:
  enabled: true
  port: 32992

## Worker ##
worker_app: synapse.app.homeserver
daemonize: true
# disable federation sending here, use worker for it
send_federation: false
'''${
      opts.instanceMap
        ? `
t += '''instance_map:
  main:
    host: 127.0.0.1
    port: 32993
'''`
        : ''
    }
open(p, 'w').write(t)
PY
sed -i 's/^port 6379$/port 32992/' /etc/redis/redis.conf && systemctl restart redis-server`,
    'edit homeserver.yaml and redis.conf',
  )

  // Workers, units, Apache.
  const files: [string, string][] = [
    [
      '/etc/matrix-synapse/workers/federation_reader.yaml',
      opts.instanceMap ? toInstanceMap(FEDERATION_READER_YAML, 'federation_reader') : FEDERATION_READER_YAML,
    ],
    [
      '/etc/matrix-synapse/workers/federation_sender.yaml',
      opts.instanceMap ? toInstanceMap(FEDERATION_SENDER_YAML, 'federation_sender') : FEDERATION_SENDER_YAML,
    ],
    ['/lib/systemd/system/matrix-synapse.service', DEBIAN_UNIT],
    [
      '/etc/systemd/system/matrix-synapse.service.d/daemonize.conf',
      '[Service]\nType=forking\nPIDFile=/var/lib/matrix-synapse/homeserver.pid\n',
    ],
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
systemctl start matrix-synapse.service
systemctl start matrix-synapse-worker@federation_reader.service matrix-synapse-worker@federation_sender.service
systemctl reload apache2
for i in $(seq 1 60); do curl -sf http://127.0.0.1:8008/health >/dev/null && curl -sf http://127.0.0.1:32902/health >/dev/null && break; sleep 1; done
curl -sf http://127.0.0.1:8008/health && curl -sf http://127.0.0.1:32902/health`,
    'start Synapse, workers and Apache',
  )
  step('Synapse, workers and Apache running')
  const ca = await sh(host, `cat /etc/ssl/certs/${publicHost}.pem`, 'read certificate')

  // Users, a room, messages and media, through the client API over Apache.
  const users = [
    { name: 'alice', password: `alice-${randomBytes(6).toString('hex')}` },
    { name: 'bob', password: `bob-${randomBytes(6).toString('hex')}` },
  ]
  for (const u of users) {
    // 1.87 has no --password-file (a test password on the command line of a test container).
    await sh(
      host,
      `${VENV}/bin/register_new_matrix_user -c /etc/matrix-synapse/homeserver.yaml -u ${u.name} -p '${u.password}' ${u.name === 'alice' ? '--admin' : '--no-admin'} http://127.0.0.1:8008`,
      `register ${u.name}`,
    )
  }
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
  const messages = ['Hallo aus dem Handbuch', 'Antwort von bob', 'noch eine Nachricht']
  for (const [i, body] of messages.entries()) {
    const who = i === 1 ? bob : alice
    const sent = await who.call('PUT', `/_matrix/client/v3/rooms/${encodeURIComponent(room.json.room_id)}/send/m.room.message/guide-${i}`, {
      msgtype: 'm.text',
      body,
    })
    if (sent.status !== 200) throw new Error(`send: ${sent.status} ${sent.text}`)
  }
  const media = randomBytes(1_100_000)
  const uploaded = await alice.upload(media, 'application/octet-stream', 'guide.bin')
  step('users, room, messages and media in place')
  const signingKeySha256 = (
    await sh(host, `sha256sum /etc/matrix-synapse/${serverName}.signing.key | cut -d' ' -f1`, 'hash signing key')
  ).trim()
  return {
    serverName,
    publicHost,
    ca,
    dbPassword,
    users,
    token: alice.token!,
    roomId: room.json.room_id,
    messages,
    mediaUri: uploaded,
    mediaSha256: createHash('sha256').update(media).digest('hex'),
    signingKeySha256,
  }
}
