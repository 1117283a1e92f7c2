/** What the install method adds around conf.d/: the pip method's unit and empty homeserver.yaml, the apt package unit's drop-in, the sandbox the workers share. */
import { SYNAPSE_USER, SYNAPSE_DATA_DIR, SYNAPSE_PYTHON, HOMESERVER_YAML, SYNAPSE_CONF_D } from '../../../src/synapse/paths.js'
import { FILE_HEADER } from './yaml.js'

const CONFIG_ARGS = `--config-path=${HOMESERVER_YAML} --config-path=${SYNAPSE_CONF_D}/`

/**
 * The systemd sandbox of upstream's units (docs/systemd-with-workers). Shared by the main unit
 * (pip) and the worker template.
 */
const SANDBOX = `# The following directives give the synapse service R/W access to:
# - /run/matrix-synapse
# - /var/lib/matrix-synapse
# - /var/log/matrix-synapse

RuntimeDirectory=matrix-synapse
# Shared by main and every worker: without this, one unit's stop removes /run/matrix-synapse while
# another sets up its mount namespace, which then fails with 226/NAMESPACE (3 of 12 restarts, reproduced).
RuntimeDirectoryPreserve=yes
StateDirectory=matrix-synapse
StateDirectoryMode=0750
LogsDirectory=matrix-synapse
LogsDirectoryMode=0750

######################
## Security Sandbox ##
######################

PrivateTmp=true
PrivateDevices=true
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ProtectKernelTunables=true
ProtectKernelModules=true
ProtectControlGroups=true
ProtectClock=true
ProtectHostname=true
ProtectHome=tmpfs
ProtectKernelLogs=true
ProtectProc=invisible
ProcSubset=pid
PrivateNetwork=false
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
IPAddressAllow=any
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources @obsolete
RestrictSUIDSGID=true
RemoveIPC=true
NoNewPrivileges=true
RestrictRealtime=true
RestrictNamespaces=true
LockPersonality=true
PrivateUsers=true
# Python needs writable and executable memory.
MemoryDenyWriteExecute=false
`

/** The systemd sandbox, for the worker template (tasks/workers). */
export const SYNAPSE_SANDBOX = SANDBOX

/**
 * /etc/systemd/system/matrix-synapse.service for the pip install method: the Debian package's unit
 * in upstream's systemd-with-workers form (PartOf/WantedBy matrix-synapse.target), without the
 * package's `ExecStartPre=... --generate-keys`: the signing-key resource (signing-key.ts) has Synapse
 * generate the key before the first start, so that second interpreter (Synapse's imports and config
 * load, 1-3 s) only lengthened every start, the upgrade's client-API gap included. A key deleted by
 * hand then stops the start instead of silently giving the server a new identity. ProtectSystem=strict
 * keeps /etc (the key and config) read-only to the service.
 */
export function renderSynapseUnit(): string {
  return `# Managed by matrix-provision: changes here are overwritten on the next run.
[Unit]
Description=Synapse Matrix homeserver
# Restarted and reloaded with matrix-synapse.target (which the workers are part of too).
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target

[Service]
Type=notify
NotifyAccess=main
User=${SYNAPSE_USER}
WorkingDirectory=${SYNAPSE_DATA_DIR}
EnvironmentFile=-/etc/default/matrix-synapse
ExecStart=${SYNAPSE_PYTHON} -m synapse.app.homeserver ${CONFIG_ARGS}
ExecReload=/bin/kill -HUP $MAINPID
Restart=always
RestartSec=3
SyslogIdentifier=matrix-synapse

${SANDBOX}
[Install]
WantedBy=matrix-synapse.target
`
}

/**
 * apt install method: a drop-in on the package's own matrix-synapse.service. It joins it to
 * matrix-synapse.target, so `systemctl restart matrix-synapse.target` restarts the main process with
 * the workers (the package unit keeps WantedBy=multi-user.target; [Install] cannot be changed from a
 * drop-in), it empties the package's ExecStartPre (`--generate-keys`): the synapse task makes the
 * key before main's first start, so that step would only add 1.3 s of CPU to every start; and it gives
 * main the sandbox of the pip unit and the workers (the package's unit has none). ProtectSystem=strict
 * is safe only because of that empty ExecStartPre (it wrote the key into /etc).
 */
export function renderSynapseServiceDropIn(): string {
  return `# Managed by matrix-provision: changes here are overwritten on the next run.
[Unit]
PartOf=matrix-synapse.target
ReloadPropagatedFrom=matrix-synapse.target

[Service]
ExecStartPre=

${SANDBOX}`
}

/**
 * /etc/matrix-synapse/homeserver.yaml for the pip install method: everything is in conf.d/, so this
 * holds no key at all. It is `{}` rather than empty because Synapse prints "File ... is empty or
 * doesn't parse into a key-value map. IGNORING." for an empty file.
 */
export function renderBaseHomeserverYaml(): string {
  return `${FILE_HEADER}#
# Synapse reads this file first, then ${SYNAPSE_CONF_D}/*.yaml in name order (later
# top-level keys replace earlier ones). Every setting lives in conf.d/, as with the Debian
# package, so this file holds none: an empty mapping.
{}
`
}
