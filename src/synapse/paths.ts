/**
 * Where Synapse and matrix-provision live on a host: the one definition of every path and unit name
 * that more than one place needs (tasks, verbs, the backup commands, the adoption of a server built by
 * hand). Plain values; nothing here reads a setting.
 */

export const SYNAPSE_USER = 'matrix-synapse'
/** Group that may read the configuration (the Debian postinst makes the user with group nogroup: the task adds this group). */
export const SYNAPSE_GROUP = 'matrix-synapse'
export const SYNAPSE_CONFIG_DIR = '/etc/matrix-synapse'
export const SYNAPSE_CONF_D = `${SYNAPSE_CONFIG_DIR}/conf.d`
export const SYNAPSE_WORKERS_DIR = `${SYNAPSE_CONFIG_DIR}/workers`
export const HOMESERVER_YAML = `${SYNAPSE_CONFIG_DIR}/homeserver.yaml`
export const SIGNING_KEY_PATH = `${SYNAPSE_CONFIG_DIR}/homeserver.signing.key`
export const SYNAPSE_DATA_DIR = '/var/lib/matrix-synapse'
export const MEDIA_STORE_PATH = `${SYNAPSE_DATA_DIR}/media`
export const SYNAPSE_LOG_DIR = '/var/log/matrix-synapse'
/** Used only when daemonizing (systemd never does); inside RuntimeDirectory so the sandboxed unit could write it. */
export const PID_FILE = '/run/matrix-synapse/homeserver.pid'
/** The Debian package's virtualenv; the pip method installs into the same path so units are shared. */
export const VENV_LINK = '/opt/venvs/matrix-synapse'
/** pip method: each version in its own venv, VENV_LINK a symlink to the active one (an upgrade switches it). */
export const versionedVenv = (version: string) => `${VENV_LINK}-${version}`
export const SYNAPSE_PYTHON = `${VENV_LINK}/bin/python`
export const SYNAPSE_UNIT = 'matrix-synapse.service'
export const SYNAPSE_UNIT_PATH = `/etc/systemd/system/${SYNAPSE_UNIT}`
/** apt method: joins the package's own unit to matrix-synapse.target (restart/reload propagate). */
export const SYNAPSE_UNIT_DROP_IN_PATH = '/etc/systemd/system/matrix-synapse.service.d/matrix-provision.conf'
export const WORKER_UNIT_PATH = '/etc/systemd/system/matrix-synapse-worker@.service'
export const SYNAPSE_TARGET_PATH = '/etc/systemd/system/matrix-synapse.target'

/** The name the main process has in log file names (Debian's default log file is homeserver.log). */
export const MAIN_PROCESS_LOG_NAME = 'homeserver'

/** The conf.d file that holds registration_shared_secret (register_new_matrix_user needs it as a -c argument). */
export const SECRETS_CONFIG_PATH = `${SYNAPSE_CONF_D}/30-secrets.yaml`

/** What matrix-provision keeps on each host, under one root-only directory. */
export const STATE_DIR = '/var/lib/matrix-provision'
export const SECRETS_DIR = `${STATE_DIR}/secrets`
export const PENDING_RESTARTS = `${STATE_DIR}/pending-restarts`
/** Written on the first apply: this host is set up (or adopted) by matrix-provision. */
export const HOST_RECORD = `${STATE_DIR}/host.json`
/** Copies of the files of a server built by hand, taken before adoption changed them. */
export const ADOPTED_FILES_DIR = `${STATE_DIR}/adopted`

/** The Matrix Authentication Service's database and role (role mas): made by the postgres task, read by Synapse's lockout check. */
export const MAS_DATABASE = 'mas'
export const MAS_DB_USER = 'mas'
