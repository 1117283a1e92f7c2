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
 *
 * With `install: { method: 'apt' }` the guide's own install path instead, with the REAL matrix-synapse-py3
 * package: the repository's keyring and source written by hand, debconf's two questions preseeded, a
 * plain `apt-get install` (its postinst starts main on the package's SQLite configuration: a stray
 * homeserver.db), the package's homeserver.yaml edited in place (database, 127.0.0.1 only, the
 * replication and metrics listeners, Redis, instance_map: Synapse 1.88 removed worker_replication_*), the
 * guide's two workers in today's form, upstream's worker units reading conf.d (server_name lives there).
 */
import { createHash, randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { SignedAptRepo } from './apt-repo.js'
import { join } from 'node:path'
import { withCacheLock } from '../../src/artifacts/cache-lock.js'
import { CACHE_DIR, synapseWheelhouse } from './artifacts.js'
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
  const have = () =>
    run('docker', ['image', 'inspect', image]).then(
      () => true,
      () => false,
    )
  if (await have()) return guideSuite
  // Test files running at once (adopt, move...) build it once: the second waits for the first's commit.
  await withCacheLock(join(CACHE_DIR, `.${guideSuite}-image.lock`), async () => {
    if (await have()) return
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
  })
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

/** The same file as a package-era admin writes it: instance_map's form, generic_worker, bind_addresses. */
const todayForm = (yaml: string, name: string) =>
  toInstanceMap(yaml, name)
    .replace(/^worker_app: .*$/m, 'worker_app: synapse.app.generic_worker')
    .replace(/bind_address: '127\.0\.0\.1'/g, "bind_addresses: ['127.0.0.1']")

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

/**
 * upstream docs/systemd-with-workers (2021), which the guide links for starting the workers; the
 * package's host adds conf.d to the worker's configuration (the package keeps server_name there).
 */
const workerUnit = (confD: boolean) => `[Unit]
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
ExecStart=${VENV}/bin/python -m synapse.app.generic_worker --config-path=/etc/matrix-synapse/homeserver.yaml${confD ? ' --config-path=/etc/matrix-synapse/conf.d/' : ''} --config-path=/etc/matrix-synapse/workers/%i.yaml
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
SyslogIdentifier=matrix-synapse-%i

[Install]
WantedBy=matrix-synapse.target
`
const TARGET_UNIT = `[Unit]
Description=Synapse parent target
After=network.target

[Install]
WantedBy=multi-user.target
`

function guideVhost(serverName: string, publicHost: string): string {
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

/** How the guide's Synapse gets onto the host. */
export type GuideInstall =
  /** Synapse 1.87.0 with pip into the package's venv and layout, from its release-date wheelhouse; `instanceMap`: its workers converted by hand for 1.88+. */
  | { method: 'pip'; wheelhouse: string; instanceMap?: boolean }
  /** The real matrix-synapse-py3 package of `debVersion`, from `repo` served at `url` (the host was started from guideImage()). */
  | { method: 'apt'; repo: SignedAptRepo; url: string; debVersion: string }

/** homeserver.yaml's generated SQLite block replaced by the guide's Postgres one (`indent`: the generated file's). */
const databaseBlock = (password: string, indent: string) =>
  `database:\n${indent}name: psycopg2\n${indent}args:\n${[
    'user: synapse_user',
    `password: ${password}`,
    'database: synapse',
    'host: localhost',
    'cp_min: 5',
    'cp_max: 10',
  ]
    .map((l) => `${indent}${indent}${l}\n`)
    .join('')}`

/** Synapse installed and configured the guide's way; the database, Redis and homeserver.yaml edits are the method's. */
async function installSynapse(host: TestHost, install: GuideInstall, serverName: string, dbPassword: string): Promise<void> {
  if (install.method === 'pip') {
    // 1. Packages (Synapse's from packages.matrix.org replaced by pip below), 2. Postgres, plus Apache and
    // Redis: already in the host's image when it was started from guideImage().
    await sh(
      host,
      `dpkg -s ${GUIDE_PACKAGES.join(' ')} >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${GUIDE_PACKAGES.join(' ')} >/dev/null; }`,
      'apt-get install',
    )
    // The package's layout and virtualenv, from the release-date wheelhouse.
    await host.container.copyDirectoriesToContainer([{ source: install.wheelhouse, target: '/root/synapse-wheels' }])
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
  } else {
    await sh(
      host,
      `install -m 0644 /srv/repo/${install.repo.keyringGpg.replace(/^.*\//, '')} /usr/share/keyrings/matrix-org-archive-keyring.gpg
echo "deb [signed-by=/usr/share/keyrings/matrix-org-archive-keyring.gpg] ${install.url} ${install.repo.suite} main" > /etc/apt/sources.list.d/matrix-org.list
apt-get update -q -o Dir::Etc::sourcelist=/etc/apt/sources.list.d/matrix-org.list -o Dir::Etc::sourceparts=- -o APT::Get::List-Cleanup=0 >/dev/null
printf '%s\\n' 'matrix-synapse-py3 matrix-synapse/server-name string ${serverName}' 'matrix-synapse-py3 matrix-synapse/report-stats boolean false' | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install -y -q matrix-synapse-py3=${install.debVersion} >/dev/null 2>&1`,
      'the guide: repository, apt-get install matrix-synapse-py3',
    )
  }
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
  // No IPv6 loopback in the test containers: the listeners bind 127.0.0.1 only, as reverse_proxy.md advises.
  const edits =
    install.method === 'pip'
      ? `t = re.sub(r'^database:\\n(?:[ ].*\\n)+', '''${databaseBlock(dbPassword, '    ')}''', t, flags=re.M)
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
          install.instanceMap
            ? `
t += '''instance_map:
  main:
    host: 127.0.0.1
    port: 32993
'''`
            : ''
        }`
      : `t = re.sub(r'^database:\\n(?:[ ].*\\n)+', '''${databaseBlock(dbPassword, '  ')}''', t, flags=re.M)
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
'''`
  await sh(
    host,
    `python3 - <<'PY'
import re
p = '/etc/matrix-synapse/homeserver.yaml'
t = open(p).read()
${edits}
open(p, 'w').write(t)
PY
sed -i 's/^port 6379$/port 32992/' /etc/redis/redis.conf && systemctl restart redis-server`,
    'edit homeserver.yaml and redis.conf',
  )
}

/** The guide's two workers as this install has them. */
function workerFiles(install: GuideInstall): [string, string][] {
  const [reader, sender] =
    install.method === 'apt'
      ? [todayForm(FEDERATION_READER_YAML, 'federation_reader'), todayForm(FEDERATION_SENDER_YAML, 'federation_sender')]
      : install.instanceMap
        ? [toInstanceMap(FEDERATION_READER_YAML, 'federation_reader'), toInstanceMap(FEDERATION_SENDER_YAML, 'federation_sender')]
        : [FEDERATION_READER_YAML, FEDERATION_SENDER_YAML]
  return [
    ['/etc/matrix-synapse/workers/federation_reader.yaml', reader],
    ['/etc/matrix-synapse/workers/federation_sender.yaml', sender],
  ]
}

/** Two users: pip's 1.87 reads the generated shared secret (and has no --password-file); the package's config has none, so a bootstrap one in conf.d, removed after. */
async function registerUsers(host: TestHost, install: GuideInstall, users: { name: string; password: string }[]): Promise<void> {
  const admin = (u: { name: string }) => (u.name === 'alice' ? '--admin' : '--no-admin')
  const restartMain = `systemctl restart matrix-synapse.service && for i in $(seq 120); do curl -sf http://127.0.0.1:8008/health >/dev/null && break; sleep 1; done; curl -sf http://127.0.0.1:8008/health`
  if (install.method === 'pip') {
    // A test password on the command line of a test container.
    for (const u of users)
      await sh(
        host,
        `${VENV}/bin/register_new_matrix_user -c /etc/matrix-synapse/homeserver.yaml -u ${u.name} -p '${u.password}' ${admin(u)} http://127.0.0.1:8008`,
        `register ${u.name}`,
      )
    return
  }
  await sh(
    host,
    `printf 'registration_shared_secret: guide-bootstrap\\n' > /etc/matrix-synapse/conf.d/zz-bootstrap.yaml && ${restartMain}`,
    'bootstrap secret',
  )
  for (const u of users)
    await sh(
      host,
      `printf '%s' '${u.password}' | ${VENV}/bin/register_new_matrix_user -k guide-bootstrap -u ${u.name} --password-file /dev/stdin ${admin(u)} http://127.0.0.1:8008`,
      `register ${u.name}`,
    )
  await sh(host, `rm /etc/matrix-synapse/conf.d/zz-bootstrap.yaml && ${restartMain}`, 'bootstrap secret removed')
}

/**
 * Build the guide's homeserver on `host` (a target container with port 443 mapped; for apt, started from
 * guideImage() and serving the repository) and fill it with two users, a room with messages and an
 * uploaded file, through the client API over Apache.
 */
export async function buildGuideHost(
  host: TestHost,
  opts: { serverName: string; publicHost: string; install: GuideInstall },
): Promise<GuideHost> {
  const step = (what: string) => console.log(`[guide host] ${what} (${((Date.now() - t0) / 1000).toFixed(0)} s)`)
  const t0 = Date.now()
  const { serverName, publicHost, install } = opts
  const dbPassword = `guide-db-${randomBytes(6).toString('hex')}`
  await installSynapse(host, install, serverName, dbPassword)
  step(`Synapse installed (${install.method}) and configured`)

  // Workers, units, Apache.
  const files: [string, string][] = [
    ...workerFiles(install),
    // pip: the Debian package's unit, as the package would have put it, and the admin's daemonize drop-in.
    ...(install.method === 'pip'
      ? ([
          ['/lib/systemd/system/matrix-synapse.service', DEBIAN_UNIT],
          [
            '/etc/systemd/system/matrix-synapse.service.d/daemonize.conf',
            '[Service]\nType=forking\nPIDFile=/var/lib/matrix-synapse/homeserver.pid\n',
          ],
        ] as [string, string][])
      : []),
    ['/etc/systemd/system/matrix-synapse-worker@.service', workerUnit(install.method === 'apt')],
    ['/etc/systemd/system/matrix-synapse.target', TARGET_UNIT],
    [`/etc/apache2/sites-available/${publicHost}.conf`, guideVhost(serverName, publicHost)],
    [`/var/www/${serverName}/.well-known/matrix/server`, JSON.stringify({ 'm.server': `${publicHost}:443` })],
    [`/var/www/${serverName}/.well-known/matrix/client`, JSON.stringify({ 'm.homeserver': { base_url: `https://${publicHost}` } })],
  ]
  await host.container.copyContentToContainer(files.map(([target, content]) => ({ target, content, mode: 0o644 })))
  // restart: the package's postinst started main already (on its SQLite configuration).
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
    'start Synapse, workers and Apache',
  )
  step('Synapse, workers and Apache running')
  const ca = await sh(host, `cat /etc/ssl/certs/${publicHost}.pem`, 'read certificate')

  // Users, a room, messages and media, through the client API over Apache.
  const users = [
    { name: 'alice', password: `alice-${randomBytes(6).toString('hex')}` },
    { name: 'bob', password: `bob-${randomBytes(6).toString('hex')}` },
  ]
  await registerUsers(host, install, users)
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
  // --generate-config names the key after the server; the package's postinst, homeserver.signing.key.
  const key = install.method === 'pip' ? `${serverName}.signing.key` : 'homeserver.signing.key'
  const signingKeySha256 = (await sh(host, `sha256sum /etc/matrix-synapse/${key} | cut -d' ' -f1`, 'hash signing key')).trim()
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
